"""`producer`: submit batches, follow them, read results, adjust the account-wide limits.

A thin layer over producer.api; this module only parses options, prints and picks exit codes.

Exit codes: 0 every item succeeded (or the command did what it was asked), 1 some item failed,
was canceled or substituted (or another error), 2 bad input or usage, 3 Redis unreachable or
no worker consuming the queue (for `init`: the Replicate API unreachable), 130 stopped waiting
with Ctrl-C (the batch keeps running).
"""

from __future__ import annotations

import getpass
import json
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, replace
from functools import partial
from pathlib import Path
from typing import Any

import click
import redis

from producer import api
from producer.params import split_params
from producer.progress import Snapshot, batch_state, format_counts, format_duration
from shared.budget import price_micro, usd
from shared.budget.money import usd_number
from shared.common import format_usd
from shared.errors import (
    ApiUnreachableError,
    ConfigError,
    FleetError,
    InputError,
    NoWorkerError,
    Problem,
    RedisUnavailableError,
)
from shared.settings import Settings, api_base_url, output_location

EXIT_OK, EXIT_SOME_FAILED, EXIT_BAD_INPUT, EXIT_UNAVAILABLE, EXIT_INTERRUPTED = 0, 1, 2, 3, 130

EXIT_CODES_HELP = """\b
Exit codes:
  0  every item succeeded (or the command did what it was asked)
  1  some item failed, was canceled or substituted
  2  bad input or usage (every problem is listed, one per line)
  3  Redis cannot be reached, or no worker consumes the queue
     (init: the Replicate API cannot be reached)
  130  stopped waiting with Ctrl-C (the batch keeps running)"""

# Problems printed one per line before the rest is summed up by kind.
MAX_PROBLEM_LINES = 50


def format_problems(problems: Sequence[Problem], limit: int = MAX_PROBLEM_LINES) -> list[str]:
    """One `error:` line per problem, at most `limit`; the rest summed up, identical messages
    (ignoring which item) grouped: `... and 4950 more problems (4950 like: field 'prompt': ...)`."""
    lines = [f"error: {problem}" for problem in problems[:limit]]
    rest = problems[limit:]
    if rest:
        kinds = Counter(str(replace(p, index=None, item_id=None)) for p in rest)
        shown = "; ".join(f"{n} like: {message}" for message, n in kinds.most_common(3))
        if len(kinds) > 3:
            shown += f"; and {len(kinds) - 3} other kinds"
        lines.append(f"error: ... and {len(rest)} more problems ({shown})")
    if len(problems) > 1:
        lines.append(f"{len(problems)} problems; nothing was enqueued or written.")
    return lines


class FleetGroup(click.Group):
    """Turns the project's errors into one clear line each and the documented exit codes, for
    every subcommand (also under click's CliRunner)."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except InputError as exc:
            for line in format_problems(exc.problems):
                click.echo(line, err=True)
            ctx.exit(EXIT_BAD_INPUT)
        except ConfigError as exc:
            click.echo(f"error: configuration: {exc}", err=True)
            ctx.exit(EXIT_BAD_INPUT)
        except (RedisUnavailableError, NoWorkerError) as exc:
            click.echo(f"error: {exc}", err=True)
            ctx.exit(EXIT_UNAVAILABLE)
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            click.echo(f"error: cannot reach Redis: {exc}", err=True)
            ctx.exit(EXIT_UNAVAILABLE)
        except FleetError as exc:
            click.echo(f"error: {exc}", err=True)
            ctx.exit(EXIT_SOME_FAILED)


class Context:
    def __init__(self, redis_url: str | None, env_file: str):
        self.redis_url = redis_url
        self.env_file = env_file

    def settings(self, **overrides: Any) -> Settings:
        return Settings.load({"redis_url": self.redis_url, **overrides}, dotenv_path=self.env_file)


pass_context = click.make_pass_decorator(Context)


def fleet_context(ctx: click.Context) -> Context:
    """The group's Context, for a group callback (they take click's context to see whether a
    subcommand follows); `cli` sets it before any subcommand runs."""
    obj = ctx.find_object(Context)
    if obj is None:  # what pass_context raises too: invoked without the `producer` group
        raise RuntimeError("producer subcommand invoked without the producer group")
    return obj


@click.group(
    cls=FleetGroup,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
    epilog=EXIT_CODES_HELP,
)
@click.option(
    "--redis-url",
    metavar="URL",
    help="Redis of the fleet (default: REDIS_URL from the "
    "environment or .env, else redis://127.0.0.1:6379/0).",
)
@click.option(
    "--env-file",
    default=".env",
    show_default=True,
    metavar="PATH",
    help="dotenv file read under the environment.",
)
@click.pass_context
def cli(ctx: click.Context, redis_url: str | None, env_file: str) -> None:
    """Generate images with Replicate on a fleet of Celery workers that share one account-wide
    concurrency and rate limit.

    \b
    Quick start:
      producer init                          # store and check REPLICATE_API_TOKEN in .env
      producer submit prompts.json --wait    # validate, enqueue, follow with a progress bar
      producer results BATCH --json          # one record per image: status, model, files, attempts
    """
    ctx.obj = Context(redis_url, env_file)


# --- submit -------------------------------------------------------------------------------------
@cli.command(epilog=EXIT_CODES_HELP)
@click.argument("file", type=click.Path(dir_okay=False))
@click.option(
    "--model",
    "-m",
    metavar="OWNER/NAME",
    help="Model for items that name none; it goes before the "
    "file's \"model\". With neither, the registry's default model is used (black-forest-labs/flux-dev "
    "unless FLEET_MODELS_FILE says otherwise) and a note says so.",
)
@click.option(
    "--param",
    "-p",
    "params",
    multiple=True,
    metavar="KEY=VALUE",
    help="Model parameter for every item (items override); repeatable. Values are JSON when "
    'they parse (2, true, ["a.png"]), text otherwise (16:9).',
)
@click.option(
    "--output-dir",
    metavar="PATH|URL",
    help="Root of every output file: a folder or s3://bucket/prefix, "
    "gs://..., az://... (default OUTPUT_DIR, ./output). Recorded with the batch; every worker writes there.",
)
@click.option(
    "--batch-id",
    metavar="ID",
    help="Name the batch (default: time-based). Submitting the same id again enqueues nothing new.",
)
@click.option(
    "--again",
    is_flag=True,
    help="Submit even though a batch still in Redis has the same items "
    "(without it that is refused, naming the batch, so a file submitted twice is not paid twice).",
)
@click.option("--wait", "-w", is_flag=True, help="Follow the batch until it ends; exit 1 if any item failed.")
@click.option(
    "--json", "as_json", is_flag=True, help='Machine output: the last line is {"batch": ID, "items": N}.'
)
@click.option(
    "--dry-run",
    is_flag=True,
    help="Validate, print the routing plan and the estimated cost; record and enqueue nothing.",
)
@click.option("--overwrite", is_flag=True, help="Allow replacing files that exist already.")
@click.option(
    "--substitute-on-failure",
    is_flag=True,
    help="Write the black 1600x900 substitute for items "
    "that fail on every model (marked `substituted`, never `succeeded`).",
)
@click.option(
    "--fetch",
    "fetch_to",
    metavar="DIR",
    help="With --wait: copy the outputs, manifest and gallery "
    "into DIR once the batch ends (as `producer fetch BATCH --to DIR`).",
)
@click.option(
    "--no-fallback",
    "no_fallback",
    is_flag=True,
    help="Pay only for each item's first model: a model "
    "that fails for good fails the item instead of trying the next (paid) model of its route "
    '("fallback": false in the file does it for some items).',
)
@click.option(
    "--price-per-call",
    type=click.FloatRange(min=0),
    metavar="USD",
    help="Price of one call of a model whose price the registry does not know (models named by "
    "reference); shown in the plan, needed under a spending limit.",
)
@click.option(
    "--priority",
    type=click.Choice(["high", "normal", "low"]),
    default="normal",
    show_default=True,
    help="Higher priorities get the fleet's free slots first; batches of one priority share "
    "the fleet in turn, so a small one never waits behind a large one.",
)
@click.option(
    "--max-cost",
    metavar="USD",
    help="The batch's spending limit (or \"max_cost\" in the file's defaults): every attempt, "
    "retries and fallbacks included, reserves its price first; items that do not fit wait as "
    "held until `producer budget set --batch ID USD`.",
)
@pass_context
def submit(
    obj: Context,
    file: str,
    model: str | None,
    params: tuple[str, ...],
    output_dir: str | None,
    batch_id: str | None,
    again: bool,
    wait: bool,
    as_json: bool,
    dry_run: bool,
    overwrite: bool,
    substitute_on_failure: bool,
    fetch_to: str | None,
    no_fallback: bool,
    price_per_call: float | None,
    priority: str,
    max_cost: str | None,
) -> None:
    """Validate FILE (prompts.json), record a batch and enqueue one task per image.

    Every item is checked first; any problem is reported (item, id and field), exit 2, and
    nothing is enqueued or written. The routing plan and estimated cost are printed before
    anything is enqueued.

    The same items (after validation and routing, with the same options) submitted again while
    that batch is still in Redis are refused with exit 2, naming the batch: follow it with
    `producer status BATCH`, or pass --again to pay for them once more as a new batch.

    \b
    FILE is one of:
      ["a red fox", "a blue whale"]                       with --model and --param
      [{"prompt": "...", "model": "...", "params": {...}, "image_input": [...], "output": "x.png", "id": "x"}]
      {"model": "...", "params": {...}, "fallback": false, "items": [...]}   shared defaults, items override

    \b
    Examples:
      producer submit prompts.json --wait
      producer submit prompts.json --dry-run
      producer submit names.json -m black-forest-labs/flux-dev -p aspect_ratio=16:9 -p num_outputs=1
      producer submit prompts.json --batch-id catalog-v2 --json
      producer submit prompts.json --again          # the same file once more, on purpose
      producer submit urgent.json --priority high   # ahead of the normal batches running
      producer submit prompts.json --no-fallback    # never pay for a second model
      producer submit prompts.json --max-cost 20    # never more than $20 for this batch
    """
    if fetch_to is not None and not wait:
        raise click.UsageError("--fetch DIR needs --wait (or run `producer fetch BATCH --to DIR` later)")
    settings = obj.settings(output_dir=output_location(output_dir) if output_dir else None)
    param_values = _checked_params(
        params, file, settings, model=model, batch_id=batch_id, overwrite=overwrite, fallback=not no_fallback
    )
    err = as_json  # with --json, stdout carries only JSON
    batch = api.submit(
        file,
        settings=settings,
        model=model,
        params=param_values,
        batch_id=batch_id,
        overwrite=overwrite,
        substitute_on_failure=substitute_on_failure,
        dry_run=dry_run,
        again=again,
        priority=priority,
        on_plan=None if dry_run else partial(_show_plan, err=err),
        price_per_call=price_per_call,
        fallback=not no_fallback,
        max_cost=max_cost,
    )
    if dry_run:
        _print_dry_run(batch, as_json)
        return
    _print_submitted(batch, settings, priority, err=err)
    if not wait:
        _print_follow_up(batch, settings, as_json)
        return
    _wait_and_exit(batch, fetch_to, as_json)


def _checked_params(
    params: tuple[str, ...],
    file: str,
    settings: Settings,
    *,
    model: str | None,
    batch_id: str | None,
    overwrite: bool,
    fallback: bool,
) -> dict[str, Any]:
    """The --param values; InputError when one is malformed, together with every other problem
    of the input (validation writes nothing)."""
    param_values, param_problems = split_params(params)
    if not param_problems:
        return param_values
    try:
        api.validate(
            file,
            settings=settings,
            model=model,
            params=param_values,
            batch_id=batch_id,
            overwrite=overwrite,
            fallback=fallback,
        )
    except InputError as exc:
        raise InputError(param_problems + exc.problems) from None
    raise InputError(param_problems)


def _show_plan(plan: api.Batch, *, err: bool) -> None:
    """Before anything is recorded or enqueued: what will run, and what routing changed."""
    _print_notes(plan)
    _print_compact_plan(plan, err=err)
    if plan.max_cost is not None or plan.daily_limit is not None:
        from shared.routing import estimate_cost, max_cost

        requests, registry = plan.requests or [], plan.model_registry()
        for line in _limit_lines(plan, estimate_cost(requests, registry), max_cost(requests, registry)):
            click.echo(line, err=err)


def _print_dry_run(batch: api.Batch, as_json: bool) -> None:
    _print_notes(batch)
    if as_json:  # the text plan lists the warnings itself
        _print_warnings(batch.requests or [])
    _print_plan(batch, as_json)


def _print_submitted(batch: api.Batch, settings: Settings, priority: str, *, err: bool) -> None:
    """What the submission did: the items queued, or nothing new for a batch id that exists."""
    if batch.created:
        click.echo(
            f"batch {batch.id}: {len(batch.requests or [])} items queued on {settings.queue!r}"
            + (f", priority {priority}" if priority != "normal" else "")
            + (f", limit {usd(batch.max_cost)} USD" if batch.max_cost is not None else ""),
            err=err,
        )
    else:
        click.echo(
            f"batch {batch.id} exists already: nothing new was enqueued. Follow it with "
            f"`producer wait {batch.id}`; `producer retry {batch.id}` re-enqueues failed items.",
            err=True,
        )


def _print_follow_up(batch: api.Batch, settings: Settings, as_json: bool) -> None:
    """Without --wait: how to follow the batch, and a warning when no worker runs it."""
    if not as_json:
        click.echo(f"follow it: producer wait {batch.id}   results: producer results {batch.id} --json")
    else:
        click.echo(json.dumps({"batch": batch.id, "items": len(batch.requests or [])}))
    _warn_without_workers(settings)


def _wait_and_exit(batch: api.Batch, fetch_to: str | None, as_json: bool) -> None:
    """--wait: the progress until the batch ends, the outputs fetched (--fetch), the exit code."""
    snap = _wait(batch, progress_stream=sys.stderr if as_json else sys.stdout, as_json=as_json)
    fetched_all = True
    if fetch_to is not None:
        fetched_all = _fetch(batch, fetch_to, err=as_json)
    if as_json:
        click.echo(
            json.dumps(
                {
                    "batch": batch.id,
                    "items": len(batch.requests or []),
                    "counts": snap.counts,
                    "finished": snap.finished,
                    "held": snap.held,
                }
            )
        )
    sys.exit(_outcome(snap) if fetched_all else EXIT_SOME_FAILED)


def _warn_without_workers(settings: Settings) -> None:
    """A batch nobody works on should not look submitted-and-running: say so (on stderr; the exit
    code stays 0, the batch is recorded and runs once a worker starts)."""
    from workers.dispatch import workers_alive

    if not workers_alive(settings, timeout=1.0):
        click.echo(
            f"warning: no worker consumes queue {settings.queue!r} right now: the batch waits until one "
            f"starts (`celery -A workers worker -n w1@%h`)",
            err=True,
        )


def _print_warnings(requests) -> None:
    for request in requests:
        for warning in getattr(request, "warnings", ()) or ():
            click.echo(f"warning: item {request.index} (id {request.id!r}): {warning}", err=True)


def _print_notes(batch: api.Batch) -> None:
    for note in batch.notes:
        click.echo(f"note: {note}", err=True)
    same = batch.duplicate_of
    if same is not None:
        click.echo(
            f"note: the same items were submitted as batch {same.id} ({api.describe_batch(same)}); "
            "this new batch makes (and pays for) them again",
            err=True,
        )


def _print_compact_plan(batch: api.Batch, *, err: bool) -> None:
    """The dry run's plan without the route list, each section cut at a few lines."""
    from shared.routing import describe_plan

    for line in describe_plan(batch.requests or [], batch.registry, max_lines=10, routes=False):
        click.echo(line, err=err)


def _print_plan(batch: api.Batch, as_json: bool) -> None:
    from shared.routing import describe_plan, estimate_cost, max_cost, unpriced_items

    requests = batch.requests or []
    registry = batch.model_registry()
    cost = estimate_cost(requests, registry)
    worst = max_cost(requests, registry)
    if as_json:
        click.echo(
            json.dumps(
                {
                    "batch": batch.id,
                    "items": len(requests),
                    "dry_run": True,
                    "estimated_cost_usd": round(cost, 4),
                    "max_cost_usd": round(worst, 4),
                    "price_unknown_items": unpriced_items(requests, registry),
                    "batch_limit_usd": usd_number(batch.max_cost),
                    "daily_budget_usd": usd_number(batch.daily_limit),
                    "plan": [r.to_dict() for r in requests],
                }
            )
        )
        return
    plan = describe_plan(requests, registry)
    click.echo(plan if isinstance(plan, str) else "\n".join(plan))
    for line in _limit_lines(batch, cost, worst):
        click.echo(line)
    click.echo("Dry run: nothing was recorded or enqueued.")


def _limit_lines(batch: api.Batch, cost: float, worst: float) -> list[str]:
    """The estimate against the spending limits in force (a dry run)."""
    lines = []
    for name, limit in (("batch limit (--max-cost)", batch.max_cost), ("daily budget", batch.daily_limit)):
        if limit is None:
            continue
        estimate, most = price_micro(cost), price_micro(worst)
        if most <= limit:
            verdict = "fits, fallbacks included"
        elif estimate <= limit:
            verdict = f"fits if few fallbacks run (up to {format_usd(worst)} with every fallback)"
        else:
            verdict = (
                f"does NOT fit: about {estimate * 100 // max(limit, 1) - 100}% over; the items past it "
                "would wait as held"
            )
        lines.append(f"{name}: {usd(limit)} USD; estimate {format_usd(cost)}: {verdict}")
    return lines


# --- following a batch ------------------------------------------------------------------------------
def _wait(batch: api.Batch, *, progress_stream, as_json: bool = False) -> Snapshot:
    try:
        snap = batch.wait(progress=progress_stream)
    except KeyboardInterrupt:
        click.echo(
            f"stopped waiting; batch {batch.id} keeps running (nothing was canceled). "
            f"Resume with: producer wait {batch.id}",
            err=True,
        )
        sys.exit(EXIT_INTERRUPTED)
    out = sys.stderr if as_json else sys.stdout
    if snap.stalled_on_budget:
        _say_held(batch, snap, out)
        return snap
    manifest = _manifest_quietly(batch)
    verdict = "all succeeded" if snap.all_succeeded else format_counts(snap.counts)
    click.echo(
        f"batch {batch.id} finished in {format_duration(snap.elapsed)}: {snap.total} items, {verdict}",
        file=out,
    )
    if manifest is not None:
        click.echo(f"files under {batch.output_root}; manifest {manifest}", file=out)
    if not snap.all_succeeded:
        click.echo(
            f"details: producer results {batch.id}"
            + (f"; retry failed items: producer retry {batch.id}" if snap.failed else ""),
            file=out,
        )
    return snap


def _say_held(batch: api.Batch, snap: Snapshot, out: Any) -> None:
    """--wait ended with items held by a spending limit: say which limit, and how to go on."""
    reasons = Counter(batch.held_items().values())
    click.echo(
        f"batch {batch.id}: {snap.held} of {snap.total} items HELD by a spending limit "
        f"({'; '.join(f'{n} x {why}' for why, n in reasons.most_common())}); "
        f"{format_counts({k: v for k, v in snap.counts.items() if k != 'held'})}",
        file=out,
    )
    click.echo(
        f"they resume by themselves when the limit is raised (`producer budget set --batch {batch.id} USD`, "
        "`producer budget set --daily USD`) or the UTC day turns; `producer cancel "
        f"{batch.id}` ends them; `producer wait {batch.id}` follows again",
        file=out,
    )


def _manifest_quietly(batch: api.Batch) -> Path | str | None:
    try:
        return batch.write_manifest()
    except (FleetError, OSError, AttributeError) as exc:
        click.echo(f"warning: could not write the manifest: {exc}", err=True)
        return None


def _outcome(snap: Snapshot) -> int:
    return EXIT_OK if snap.all_succeeded else EXIT_SOME_FAILED


@cli.command(epilog=EXIT_CODES_HELP)
@click.argument("batch_id", metavar="BATCH")
@click.option("--json", "as_json", is_flag=True, help="Progress on stderr, a JSON summary on stdout.")
@pass_context
def wait(obj: Context, batch_id: str, as_json: bool) -> None:
    """Follow BATCH until every item is done: a live bar on a terminal, a line every 10 s
    otherwise. Ctrl-C stops waiting; the batch keeps running.

    \b
    Examples:
      producer wait b-20250101-ab12cd
      producer wait catalog-v2 > progress.log
    """
    batch = api.open_batch(batch_id, obj.settings())
    snap = _wait(batch, progress_stream=sys.stderr if as_json else sys.stdout, as_json=as_json)
    if as_json:
        click.echo(json.dumps({"batch": batch.id, **snap.to_dict()}))
    sys.exit(_outcome(snap))


@cli.command(epilog=EXIT_CODES_HELP)
@click.argument("batch_id", metavar="[BATCH]", required=False)
@click.option("--json", "as_json", is_flag=True, help="One JSON object.")
@pass_context
def status(obj: Context, batch_id: str | None, as_json: bool) -> None:
    """Counts by state, rate, elapsed time and ETA of BATCH (default: the latest batch).
    BATCH is the id `submit` printed (b-YYYYMMDD-xxxxxx, or the --batch-id you gave);
    `producer list` shows the recent ones.

    \b
    Examples:
      producer status                      # the latest batch
      producer status b-20261204-af36d0
      producer status catalog-v2 --json | jq .counts
    """
    settings = obj.settings()
    batch = api.open_batch(batch_id, settings) if batch_id else api.latest_batch(settings)
    info = batch.info()
    snap = batch.status()
    spend = batch.spend()
    held = batch.held_items() if snap.held else {}
    if as_json:
        click.echo(
            json.dumps(
                {
                    **snap.to_dict(),
                    "state": batch_state(snap),
                    "created_at": getattr(info, "created_at", None),
                    "output_root": getattr(info, "output_root", None),
                    "spend": spend.to_dict(),
                    "held_items": [{"index": i, "reason": why} for i, why in sorted(held.items())],
                }
            )
        )
        return
    click.echo(f"batch {snap.batch_id}: {batch_state(snap)}")
    click.echo(
        f"  created  {_when(getattr(info, 'created_at', None))}   output {getattr(info, 'output_root', '?')}"
    )
    click.echo(f"  items    {snap.total}: {format_counts(snap.counts, keep_zero=('succeeded', 'failed'))}")
    if snap.running and snap.at_replicate is not None:
        at = min(snap.at_replicate, snap.running)
        click.echo(
            f"  running  {snap.running}: {at} at Replicate, {snap.running - at} waiting to be created "
            "(a slot, the rate, a pause) or saving their files"
        )
    rate = "-" if snap.per_minute is None else f"{snap.per_minute:.1f} images/min"
    eta = "" if snap.finished else f", ETA {format_duration(snap.eta)}"
    click.echo(f"  rate     {rate}, elapsed {format_duration(snap.elapsed)}{eta}")
    if snap.slots_limit:
        click.echo(f"  slots    {snap.slots_in_use}/{snap.slots_limit} in use account-wide")
    click.echo(f"  spend    {_spend_text(spend)}")
    if held:
        for why, indexes in _by_reason(held).items():
            shown = ", ".join(map(str, indexes[:20])) + (
                f" and {len(indexes) - 20} more" if len(indexes) > 20 else ""
            )
            click.echo(f"  held     {len(indexes)} item(s): {why} (items {shown})")
        click.echo(
            f"           raise it: producer budget set --batch {snap.batch_id} USD (or --daily USD); "
            f"end them: producer cancel {snap.batch_id}"
        )


def _spend_text(spend: Any) -> str:
    """'0.50 spent, 0.05 reserved of 0.50 USD (0.00 left)' or '... USD (no limit)'."""
    text = f"{usd(spend.spent)} spent, {usd(spend.reserved)} reserved"
    if spend.limit is None:
        return text + " USD (no limit)"
    return text + f" of {usd(spend.limit)} USD ({usd(max(spend.left, 0))} left)"


def _by_reason(held: dict[int, str]) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for index, why in sorted(held.items()):
        out.setdefault(why, []).append(index)
    return out


def _when(timestamp: Any) -> str:
    try:
        return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(float(timestamp)))
    except (TypeError, ValueError):
        return "?"


@cli.command(epilog=EXIT_CODES_HELP)
@click.argument("batch_id", metavar="BATCH")
@click.option("--json", "as_json", is_flag=True, help="JSON Lines: one manifest record per item.")
@pass_context
def results(obj: Context, batch_id: str, as_json: bool) -> None:
    """One record per item of BATCH, in submission order: status, the model that produced it,
    output files, every attempt and the error.

    \b
    Examples:
      producer results b-20250101-ab12cd
      producer results catalog-v2 --json | jq -r 'select(.status=="failed") | .id'
    """
    batch = api.open_batch(batch_id, obj.settings())
    records = batch.results()
    if as_json:
        for record in records:
            click.echo(json.dumps(record, default=str))
        return
    click.echo(f"{'index':>5}  {'id':<20}  {'status':<11}  {'model':<36}  files / error")
    for record in records:
        outputs = ", ".join(str(p) for p in record.get("outputs") or [])
        detail = (
            outputs
            if record.get("status") in ("succeeded", "substituted")
            else (record.get("error") or record.get("held_reason") or "")
        )
        click.echo(
            f"{record.get('index'):>5}  {str(record.get('id'))[:20]:<20}  {record.get('status'):<11}  "
            f"{record.get('model') or record.get('requested_model') or '':<36}  {detail}"
        )


@cli.command(epilog=EXIT_CODES_HELP)
@click.argument("batch_id", metavar="BATCH")
@click.option(
    "--to",
    "to",
    default=".",
    show_default=True,
    metavar="DIR",
    help="Where to put them: DIR/<batch>/manifest.json, DIR/<batch>/index.html and every output "
    "at its place under the output root.",
)
@click.option(
    "--from",
    "from_",
    metavar="PATH|URL",
    help="The output location to read, for a batch Redis "
    "no longer holds (default: the one recorded with the batch).",
)
@pass_context
def fetch(obj: Context, batch_id: str, to: str, from_: str | None) -> None:
    """Copy BATCH's outputs, manifest and gallery (index.html) from its output location (a bucket
    or a folder) to this machine. Parallel, resumable: files already there with the recorded
    size and checksum are skipped. Exit 0 only when every output of every succeeded item is
    there.

    \b
    Examples:
      producer fetch b-20261204-ab12cd                  # into ./b-20261204-ab12cd/
      producer fetch b-20261204-ab12cd --to ~/renders
      producer fetch b-20261204-ab12cd --from s3://renders/fleet
    """
    settings = obj.settings()
    if from_ is not None:
        report = api.fetch_from_store(
            batch_id, output_location(from_), to, progress=sys.stderr, settings=settings
        )
    else:
        report = api.open_batch(batch_id, settings).fetch(to, progress=sys.stderr)
    sys.exit(EXIT_OK if _print_fetch(report) else EXIT_SOME_FAILED)


def _fetch(batch: api.Batch, to: str, *, err: bool) -> bool:
    return _print_fetch(batch.fetch(to, progress=sys.stderr), err=err)


def _print_fetch(report: Any, *, err: bool = False) -> bool:
    click.echo(
        f"fetched {report.fetched} file(s) ({report.bytes / 1e6:.1f} MB), {report.present} already there; "
        f"gallery {report.to / report.batch_id / 'index.html'}",
        err=err,
    )
    for line in report.missing[:20]:
        click.echo(f"missing: {line}", err=True)
    if len(report.missing) > 20:
        click.echo(f"missing: ... and {len(report.missing) - 20} more", err=True)
    return report.complete


@cli.command(epilog=EXIT_CODES_HELP)
@click.argument("batch_id", metavar="BATCH")
@pass_context
def cancel(obj: Context, batch_id: str) -> None:
    """Cancel BATCH: queued items are marked canceled at once and their task messages revoked
    (best effort; a worker that gets one anyway finds the item canceled), running predictions
    are canceled at Replicate by the workers and their slots freed. `producer retry BATCH`
    (--include-canceled) runs items again later.

    \b
    Example:
      producer cancel b-20250101-ab12cd
    """
    batch = api.open_batch(batch_id, obj.settings())
    outcome = batch.cancel()
    if outcome.already_finished:
        click.echo(f"batch {batch.id} is finished: nothing to cancel (it stays {_state_of(batch)})")
        return
    revoked = f"{outcome.revoked} queued task message(s) revoked"
    if outcome.revoke_error:
        revoked += (
            f" (revoking stopped: {outcome.revoke_error}; workers that get the others "
            "find the items canceled and drop them)"
        )
    click.echo(f"batch {batch.id} canceled: {outcome.canceled} queued item(s) canceled now, {revoked}")
    if outcome.stopping:
        waiting = outcome.stopping - outcome.at_replicate
        click.echo(
            f"  {outcome.stopping} running item(s) are being stopped by their workers: "
            f"{outcome.at_replicate} prediction(s) at Replicate, canceled there as soon as their "
            "workers have their ids, "
            f"{waiting} waiting to be created or saving (nothing more is created); "
            "`producer status` shows when they are done"
        )
    click.echo(
        f"  `producer retry {batch.id}` runs failed items again, --include-canceled the canceled ones too."
    )


def _state_of(batch: api.Batch) -> str:
    return batch_state(batch.status(with_slots=False))


@cli.command(epilog=EXIT_CODES_HELP)
@click.argument("batch_id", metavar="BATCH")
@click.option("--include-canceled", is_flag=True, help="Also re-enqueue the canceled items.")
@click.option("--wait", "-w", is_flag=True, help="Follow the batch afterwards.")
@pass_context
def retry(obj: Context, batch_id: str, include_canceled: bool, wait: bool) -> None:
    """Re-enqueue the failed items of BATCH (only those, unless --include-canceled), each with a
    new attempt on the first model of its route. An item whose prediction succeeded but whose
    outputs could not be written resumes that prediction instead (downloaded again while its
    output URL is valid, an hour): it is not paid for twice.

    After `producer cancel`, retry lifts the batch's cancel so the re-enqueued items run (the
    canceled items stay canceled unless --include-canceled). It waits for nothing: while items
    are still being canceled it refuses (exit 2); run it again once `producer status` shows the
    batch finished.

    \b
    Examples:
      producer retry b-20250101-ab12cd
      producer retry catalog-v2 --wait
      producer retry catalog-v2 --include-canceled   # resume a canceled batch
    """
    batch = api.open_batch(batch_id, obj.settings())
    was_canceled = batch.info().canceled
    indexes = batch.retry(include_canceled=include_canceled)
    what = "failed or canceled" if include_canceled else "failed"
    if indexes:
        shown = ", ".join(map(str, indexes[:20])) + (" ..." if len(indexes) > 20 else "")
        click.echo(f"batch {batch.id}: {len(indexes)} {what} items enqueued again (items {shown})")
        if was_canceled:
            click.echo(
                f"batch {batch.id}: its cancel is lifted, so these items run"
                + ("" if include_canceled else "; its canceled items stay canceled")
            )
    else:
        click.echo(f"batch {batch.id}: no {what} items to retry")
        canceled = batch.status(with_slots=False).counts.get("canceled", 0)
        if canceled and not include_canceled:
            click.echo(
                f"{canceled} item(s) are canceled: `producer retry {batch.id} --include-canceled` "
                "runs them again"
            )
    if wait:
        sys.exit(_outcome(_wait(batch, progress_stream=sys.stdout)))


@cli.command("list", epilog=EXIT_CODES_HELP)
@click.option("--limit", "-n", default=20, show_default=True, help="How many batches.")
@click.option("--json", "as_json", is_flag=True, help="JSON Lines, one batch per line.")
@pass_context
def list_(obj: Context, limit: int, as_json: bool) -> None:
    """The most recent batches, newest first: id, creation time, priority, state (the words
    `status` uses: queued, running, held, canceling, finished, canceled), items done, spend
    (spent + reserved) against the batch's limit, counts by state.

    \b
    Example:
      producer list -n 5
    """
    from producer.progress import snapshot_from_info

    settings = obj.settings()
    infos = api.list_batches(settings, limit=limit)
    if not infos:
        if not as_json:
            click.echo("no batches yet")
        return
    spends = {b.batch_id: b for b in api.budget_status(settings, [info.id for info in infos]).batches}
    if not as_json:
        click.echo(
            f"{'BATCH':<24} {'CREATED':<23}  {'PRIORITY':<8} {'STATE':<9} {'DONE':>11}  "
            f"{'SPENT/LIMIT USD':<17}  ITEMS"
        )
    for info in infos:
        snap = snapshot_from_info(info)
        spend = spends[info.id]
        if as_json:
            click.echo(
                json.dumps(
                    {
                        **snap.to_dict(),
                        "state": batch_state(snap),
                        "created_at": getattr(info, "created_at", None),
                        "priority": info.priority,
                        "spend": spend.to_dict(),
                    }
                )
            )
        else:
            money = (
                usd(spend.spent + spend.reserved) + "/" + ("-" if spend.limit is None else usd(spend.limit))
            )
            click.echo(
                f"{info.id:<24} {_when(getattr(info, 'created_at', None)):<23}  {info.priority:<8} "
                f"{batch_state(snap):<9} {f'{snap.done}/{snap.total}':>11}  {money:<17}  "
                f"{format_counts(snap.counts)}"
            )


@cli.command(epilog=EXIT_CODES_HELP)
@click.option("--json", "as_json", is_flag=True, help="One JSON object.")
@pass_context
def info(obj: Context, as_json: bool) -> None:
    """The fleet on one screen (like `rq info`): queue depth per priority, the workers alive
    (host, pid, threads, busy), slots in use and waiting, the rate windows, a pause, and the
    active batches with their progress.

    \b
    Examples:
      producer info
      watch -n 2 producer info
      producer info --json | jq '.workers[] | {name, busy}'
    """
    from producer.info import info_lines

    fleet = api.fleet_info(obj.settings())
    if as_json:
        click.echo(json.dumps(fleet.to_dict(), default=str))
        return
    for line in info_lines(fleet):
        click.echo(line)


# --- budget -------------------------------------------------------------------------------------
@cli.group(invoke_without_command=True, epilog=EXIT_CODES_HELP)
@click.option("--batch", "batch_ids", multiple=True, metavar="ID", help="Only these batches (repeatable).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object.")
@click.pass_context
def budget(ctx: click.Context, batch_ids: tuple[str, ...], as_json: bool) -> None:
    """Spending limits: today's daily budget (UTC day, by Redis's clock) with what is spent,
    reserved (predictions being created or running) and left; and the same per batch (the recent
    ones, or --batch ID), with its held items. Every attempt reserves its price before it is
    created; items that do not fit wait as held and resume when a limit is raised or the day turns.

    \b
    Examples:
      producer budget
      producer budget --json | jq .left_today_usd
      producer budget set --daily 50            # the whole fleet, per UTC day
      producer budget set --batch b-20261205-ab12cd 2.50
      producer budget clear --daily             # no daily budget (whatever REPLICATE_DAILY_BUDGET says)
    """
    if ctx.invoked_subcommand is not None:
        return
    settings = fleet_context(ctx).settings()
    _print_budget(api.budget_status(settings, list(batch_ids) or None), as_json)


def _print_budget(status_: Any, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(status_.to_dict()))
        return
    source = {"redis": "set for the fleet", "settings": "REPLICATE_DAILY_BUDGET", "none": ""}[
        status_.daily_source
    ]
    limit = "none" if status_.daily_limit is None else f"{usd(status_.daily_limit)} USD ({source})"
    click.echo(f"today      {status_.day.isoformat()} (UTC)   daily budget {limit}")
    left = "" if status_.left_today is None else f", {usd(max(status_.left_today, 0))} left"
    click.echo(f"           {usd(status_.spent_today)} spent, {usd(status_.reserved_today)} reserved{left}")
    if not status_.batches:
        return
    click.echo("")
    click.echo(f"{'BATCH':<24} {'LIMIT':>10} {'SPENT':>10} {'RESERVED':>10} {'LEFT':>10}  HELD")
    for b in status_.batches:
        click.echo(
            f"{b.batch_id:<24} {'-' if b.limit is None else usd(b.limit):>10} {usd(b.spent):>10} "
            f"{usd(b.reserved):>10} {'-' if b.left is None else usd(max(b.left, 0)):>10}  {b.held or ''}"
        )


@budget.command("set", epilog=EXIT_CODES_HELP)
@click.option("--daily", metavar="USD", help="The fleet's budget per UTC day.")
@click.option("--batch", "batch_limit", nargs=2, metavar="ID USD", help="A batch's limit (its --max-cost).")
@click.option("--json", "as_json", is_flag=True, help="Print the new status as JSON.")
@pass_context
def budget_set(obj: Context, daily: str | None, batch_limit: tuple[str, str] | None, as_json: bool) -> None:
    """Change a spending limit for the whole fleet at once, without restarting workers. Items
    held by it that fit now are sent again at once.

    \b
    Examples:
      producer budget set --daily 50
      producer budget set --batch b-20261205-ab12cd 1.00
    """
    if daily is None and not batch_limit:
        raise click.UsageError("give --daily USD or --batch ID USD")
    settings = obj.settings()
    woken = 0
    if daily is not None:
        woken += api.set_daily_budget(settings, daily)
    if batch_limit:
        woken += api.set_batch_limit(settings, batch_limit[0], batch_limit[1])
    _after_change(settings, woken, [batch_limit[0]] if batch_limit else None, as_json)


@budget.command("clear", epilog=EXIT_CODES_HELP)
@click.option("--daily", is_flag=True, help="No daily budget (over REPLICATE_DAILY_BUDGET).")
@click.option("--batch", "batch_id", metavar="ID", help="No limit for this batch.")
@click.option("--json", "as_json", is_flag=True, help="Print the new status as JSON.")
@pass_context
def budget_clear(obj: Context, daily: bool, batch_id: str | None, as_json: bool) -> None:
    """Remove a spending limit; items held by it are sent again at once.

    \b
    Examples:
      producer budget clear --daily
      producer budget clear --batch b-20261205-ab12cd
    """
    if not daily and batch_id is None:
        raise click.UsageError("give --daily or --batch ID")
    settings = obj.settings()
    woken = 0
    if daily:
        woken += api.set_daily_budget(settings, None)
    if batch_id is not None:
        woken += api.set_batch_limit(settings, batch_id, None)
    _after_change(settings, woken, [batch_id] if batch_id else None, as_json)


def _after_change(settings: Settings, woken: int, batch_ids: list[str] | None, as_json: bool) -> None:
    if not as_json:
        click.echo(f"{woken} held item(s) sent again" if woken else "no held item fits yet")
    _print_budget(api.budget_status(settings, batch_ids), as_json)


# --- limits -------------------------------------------------------------------------------------
@cli.group(invoke_without_command=True, epilog=EXIT_CODES_HELP)
@click.option("--json", "as_json", is_flag=True, help="The full status as JSON.")
@click.pass_context
def limits(ctx: click.Context, as_json: bool) -> None:
    """Show the account-wide limiter: slots in use, waiters, holders, creations and reads in
    the current window, an active pause, and each limit with where it comes from (this
    environment's settings, or `producer limits set`, which overrides them until `producer
    limits reset`).

    \b
    Examples:
      producer limits
      producer limits --json | jq .holders
      producer limits set --concurrency-limit 20 --create-limit 300
      producer limits reset
    """
    if ctx.invoked_subcommand is not None:
        return
    settings = fleet_context(ctx).settings()
    _print_limits(settings, api.limits_status(settings), as_json)


def _print_limits(settings: Settings, status_: Any, as_json: bool) -> None:
    from producer.limits import holder_lines, limit_lines
    from shared.presence import describe

    sources = api.limit_sources(settings, status_)
    modes = api.worker_modes(settings)
    if as_json:
        click.echo(
            json.dumps(
                {
                    **status_.to_dict(),
                    "sources": {s.name: s.to_dict() for s in sources},
                    "workers": [asdict(m) for m in modes],
                },
                default=str,
            )
        )
        return
    s = status_
    click.echo(
        f"slots      {s.in_use}/{s.concurrency_limit} in use, {s.free} free, {s.waiters} waiting, "
        f"utilisation {s.utilisation:.0%}"
    )
    click.echo(f"creations  {s.creations_in_window}/{s.create_limit} in the last {s.rate_window:g} s")
    click.echo(f"reads      {s.reads_in_window}/{s.read_limit} in the last {s.rate_window:g} s")
    click.echo(f"wait mode  {describe(modes)}")
    if s.pause_seconds_left:
        click.echo(
            f"paused     creations paused for {s.pause_seconds_left:.1f} s more"
            + (f" ({s.pause_reason})" if s.pause_reason else "")
        )
    for line in [""] + limit_lines(sources) + ([""] if s.holders else []) + holder_lines(s.holders):
        click.echo(line)


@limits.command("set", epilog=EXIT_CODES_HELP)
@click.option("--concurrency-limit", type=click.IntRange(min=1), help="Predictions in flight account-wide.")
@click.option("--create-limit", type=click.IntRange(min=1), help="Creations per rate window.")
@click.option("--read-limit", type=click.IntRange(min=1), help="Other API calls per rate window.")
@click.option("--rate-window", type=click.FloatRange(min=0, min_open=True), help="Rate window in seconds.")
# The spellings of earlier versions, still accepted (scripts that use them keep working).
@click.option("--concurrency", "old_concurrency_limit", type=click.IntRange(min=1), hidden=True)
@click.option("--window", "old_rate_window", type=click.FloatRange(min=0, min_open=True), hidden=True)
@click.option("--json", "as_json", is_flag=True, help="Print the new status as JSON.")
@pass_context
def limits_set(
    obj: Context,
    concurrency_limit: int | None,
    create_limit: int | None,
    read_limit: int | None,
    rate_window: float | None,
    old_concurrency_limit: int | None,
    old_rate_window: float | None,
    as_json: bool,
) -> None:
    """Change the limits for every host at once, without restarting workers. Shrinking lets
    current holders finish and admits no one until in use is under the new limit. The values
    stay in Redis over every worker's settings (REPLICATE_GLOBAL_MAX_CONCURRENT, ...) until
    `producer limits reset`; `producer limits` shows which limits were set and when.

    \b
    Examples:
      producer limits set --concurrency-limit 10
      producer limits set --create-limit 300 --rate-window 60
    """
    concurrency_limit = _one_spelling(
        "--concurrency-limit", concurrency_limit, "--concurrency", old_concurrency_limit
    )
    rate_window = _one_spelling("--rate-window", rate_window, "--window", old_rate_window)
    if all(v is None for v in (concurrency_limit, create_limit, read_limit, rate_window)):
        raise click.UsageError(
            "give at least one of --concurrency-limit, --create-limit, --read-limit, --rate-window"
        )
    settings = obj.settings()
    status_ = api.set_limits(
        settings,
        concurrency_limit=concurrency_limit,
        create_limit=create_limit,
        read_limit=read_limit,
        rate_window=rate_window,
    )
    _print_limits(settings, status_, as_json)


@limits.command("reset", epilog=EXIT_CODES_HELP)
@click.argument(
    "names",
    nargs=-1,
    metavar="[LIMIT]...",
    type=click.Choice(["concurrency_limit", "create_limit", "read_limit", "rate_window"]),
)
@click.option("--json", "as_json", is_flag=True, help="Print the new status as JSON.")
@pass_context
def limits_reset(obj: Context, names: tuple[str, ...], as_json: bool) -> None:
    """Put the limits back to this environment's settings (REPLICATE_GLOBAL_MAX_CONCURRENT,
    REPLICATE_CREATE_LIMIT, REPLICATE_READ_LIMIT, REPLICATE_RATE_WINDOW, or .env) for every
    host, undoing `producer limits set`: all four, or only the LIMITs named.

    \b
    Examples:
      producer limits reset
      producer limits reset concurrency_limit
    """
    settings = obj.settings()
    _print_limits(settings, api.reset_limits(settings, names or None), as_json)


def _one_spelling(name: str, value: Any, old_name: str, old_value: Any) -> Any:
    """An option's value under its name or its old spelling (a usage error if both are given)."""
    if value is not None and old_value is not None:
        raise click.UsageError(f"{old_name} is the old spelling of {name}: give one of them")
    return value if value is not None else old_value


# --- models -------------------------------------------------------------------------------------
@cli.group(invoke_without_command=True, epilog=EXIT_CODES_HELP)
@click.option("--json", "as_json", is_flag=True, help="JSON Lines, one model per line.")
@click.pass_context
def models(ctx: click.Context, as_json: bool) -> None:
    """The models the registry knows: the curated ones (built-in and FLEET_MODELS_FILE) and
    entries that give a Replicate model a price, a route or aliases. Any other Replicate model
    works too, by reference: owner/name, owner/name:VERSION, deployments/owner/name.

    \b
    Examples:
      producer models
      producer models show stability-ai/sdxl        # its parameters, from its published schema
      producer models show deployments/acme/sdxl-prod --json
    """
    if ctx.invoked_subcommand is not None:
        return
    from producer.models import list_models

    for row in list_models(fleet_context(ctx).settings()):
        if as_json:
            click.echo(json.dumps(row))
            continue
        route = " -> ".join(row["fallback"]) if row["fallback"] else "no fallback"
        aliases = f"  (aliases: {', '.join(row['aliases'])})" if row["aliases"] else ""
        click.echo(
            f"{row['name']:<40} {row['kind'] or 'from schema':<11} {row['price'] or 'price unknown':<16} "
            f"{route}  [{row['source']}]{aliases}"
        )


@models.command("show", epilog=EXIT_CODES_HELP)
@click.argument("name", metavar="MODEL")
@click.option("--json", "as_json", is_flag=True, help="One JSON object.")
@pass_context
def models_show(obj: Context, name: str, as_json: bool) -> None:
    """Parameters (what each takes, its default), price, output and route of MODEL. A model the
    registry does not curate is described from its published schema (read once for the fleet,
    kept in Redis for FLEET_SCHEMA_TTL seconds).

    \b
    Examples:
      producer models show flux-dev
      producer models show stability-ai/sdxl:39ed52f2a78e934b3ba6e2a89f5b1c712de7dfea535525255b1aa35c5565e08b
    """
    from producer.models import describe_model

    info = describe_model(name, obj.settings())
    if as_json:
        click.echo(json.dumps(info, default=str))
        return
    click.echo(f"{info['name']}  ({info['source']})")
    outputs = "one file" if info["output"] == "single" else "a list of files"
    click.echo(f"  output     {info['kind']}, {outputs}, default format {info['default_format']}")
    click.echo(
        f"  price      {info['price_text']}"
        + ("" if info["price"] else "  (FLEET_MODELS_FILE can give one; or --price-per-call USD)")
    )
    click.echo(
        f"  route      {' -> '.join([info['name'], *info['fallback']]) if info['fallback'] else 'no fallback'}"
    )
    click.echo(
        f"  prompt     {'input ' + repr(info['prompt_param']) if info['prompt_param'] else 'not sent (the model takes none)'}"
    )
    if info["reference_param"]:
        click.echo(
            f"  references {info['reference_param']!r} (up to {info['max_references']}), from image_input / input_image"
        )
    if info["file_params"]:
        click.echo(f"  files      {', '.join(info['file_params'])} (a URL or a local file, uploaded)")
    required = set(info.get("required") or ())
    click.echo("  parameters:" if info["params"] else "  parameters: none")
    width = max((len(n) for n in info["params"]), default=0)
    for pname, param in info["params"].items():
        default = "" if param["default"] is None else f"  (default {param['default']!r})"
        need = "  REQUIRED" if pname in required else ""
        click.echo(f"    {pname:<{width}}  {param['allowed']}{default}{need}")


# --- init ---------------------------------------------------------------------------------------
@cli.command(epilog=EXIT_CODES_HELP)
@click.option("--token-stdin", is_flag=True, help="Read the token from standard input (for scripts).")
@click.option(
    "--base-url",
    metavar="URL",
    help="API base (default REPLICATE_BASE_URL, else Replicate); stored in .env when given.",
)
@click.pass_context
def init(ctx: click.Context, token_stdin: bool, base_url: str | None) -> None:
    """Check a Replicate API token against GET /v1/account and store it in .env (mode 600).
    The token is asked for without echo and never printed.

    \b
    Examples:
      producer init
      printf %s "$TOKEN" | producer init --token-stdin
      producer init --base-url http://127.0.0.1:8787     # the stand-in

    A second `producer init` replaces the token in .env (and says so).
    """
    from producer.account import check_token, stored_token, write_env

    obj = fleet_context(ctx)
    if token_stdin:
        token = sys.stdin.readline().strip()
    else:
        if not sys.stdin.isatty():
            raise click.UsageError("no terminal to ask for the token: pipe it with --token-stdin")
        token = getpass.getpass("Replicate API token (input hidden): ").strip()
    if not token:
        raise InputError(Problem("no token given", field="REPLICATE_API_TOKEN"))
    url, source = (api_base_url(base_url) if base_url else None), "--base-url"
    if url is None:
        try:
            url = Settings.load(dotenv_path=obj.env_file).replicate_base_url
        except ConfigError:
            url = None
        source = "REPLICATE_BASE_URL" if url else "Replicate's default address"
    try:
        account = check_token(token, url)
    except ApiUnreachableError as exc:
        click.echo(f"error: {exc}", err=True)
        click.echo(
            f"hint: the address came from {source}; check it, or give another with --base-url URL "
            "(or REPLICATE_BASE_URL in the environment or .env), e.g. --base-url "
            "http://127.0.0.1:8787 for the local stand-in. Nothing was written.",
            err=True,
        )
        sys.exit(EXIT_UNAVAILABLE)
    values = {"REPLICATE_API_TOKEN": token}
    if base_url:
        values["REPLICATE_BASE_URL"] = url
    replaced = stored_token(obj.env_file)
    path = write_env(obj.env_file, values)
    who = account.get("username") or account.get("name") or "?"
    if replaced is None:
        saved = f"saved in {path} (mode 600)"
    elif replaced == token:
        saved = f"the same token was in {path} already (mode 600)"
    else:
        saved = f"it replaces the token that was in {path} (mode 600)"
    click.echo(f"token accepted for account {who!r} ({account.get('type', 'account')}); {saved}")


# --- services other helpers built (thin wrappers) ---------------------------------------------------
@cli.command(epilog=EXIT_CODES_HELP)
@click.option("--port", default=5555, show_default=True)
@click.option(
    "--address",
    default="127.0.0.1",
    show_default=True,
    help="Interface to listen on; 0.0.0.0 = every interface (only behind a TLS proxy).",
)
@click.option(
    "--basic-auth",
    envvar="FLOWER_BASIC_AUTH",
    metavar="USER:PASS",
    help="Required; prefer FLOWER_BASIC_AUTH in the environment (a flag shows in `ps`).",
)
@click.option(
    "--persistent", "persistent_path", type=click.Path(dir_okay=False), help="Keep task history here."
)
@pass_context
def flower(
    obj: Context, port: int, address: str, basic_auth: str | None, persistent_path: str | None
) -> None:
    """Run Flower against the fleet's broker, with basic auth.

    \b
    Example:
      FLOWER_BASIC_AUTH=admin:secret producer flower --port 5555
    """
    from producer.flower import run_flower

    sys.exit(run_flower(obj.settings(), port, basic_auth, persistent_path, address=address))


@cli.command(epilog=EXIT_CODES_HELP)
@click.option("--port", default=9808, show_default=True)
@click.option(
    "--address",
    "--addr",
    "address",
    default="127.0.0.1",
    show_default=True,
    help="interface to listen on; the endpoint has no auth, so 0.0.0.0 only behind a proxy or firewall",
)
@pass_context
def metrics(obj: Context, port: int, address: str) -> None:
    """Serve Prometheus metrics (limiter, batches) read from Redis at each scrape.

    \b
    Example:
      producer metrics --port 9808
    """
    from producer.metrics_server import serve_metrics, where

    serve_metrics(
        obj.settings(), port, addr=address, on_ready=lambda server: click.echo(where(server), nl=True)
    )


def main(argv: list[str] | None = None) -> None:
    # Recorded text that UTF-8 cannot encode (a lone surrogate in a batch from before submit refused
    # it) is printed escaped (\ud83e) by `results` and friends, never a traceback.
    for stream in (sys.stdout, sys.stderr):
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")
    cli.main(args=argv, prog_name="producer")


if __name__ == "__main__":
    main()
