"""`producer submit`: validate a prompts file, record a batch, enqueue it, and follow it with
--wait."""

from __future__ import annotations

import json
import sys
from functools import partial
from typing import Any

import click

from producer import api
from producer.cli.app import Context, pass_context
from producer.cli.exits import EXIT_CODES_HELP, EXIT_SOME_FAILED
from producer.cli.fetching import _fetch
from producer.cli.following import _outcome, _wait
from producer.cli.plan import _print_dry_run, _show_plan
from producer.params import split_params
from shared.budget import usd
from shared.errors import InputError
from shared.settings import Settings, output_location


@click.command(epilog=EXIT_CODES_HELP)
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
    # What validating and submitting FILE share (a malformed --param is reported together with
    # every other problem of the input, found by the same validation).
    inputs: dict[str, Any] = {
        "settings": settings,
        "model": model,
        "batch_id": batch_id,
        "overwrite": overwrite,
        "fallback": not no_fallback,
    }
    param_values = _checked_params(params, file, inputs)
    err = as_json  # with --json, stdout carries only JSON
    batch = api.submit(
        file,
        params=param_values,
        substitute_on_failure=substitute_on_failure,
        dry_run=dry_run,
        again=again,
        priority=priority,
        on_plan=None if dry_run else partial(_show_plan, err=err),
        price_per_call=price_per_call,
        max_cost=max_cost,
        **inputs,
    )
    if dry_run:
        _print_dry_run(batch, as_json)
        return
    _print_submitted(batch, settings, priority, err=err)
    if not wait:
        _print_follow_up(batch, settings, as_json)
        return
    _wait_and_exit(batch, fetch_to, as_json)


def _checked_params(params: tuple[str, ...], file: str, inputs: dict[str, Any]) -> dict[str, Any]:
    """The --param values; InputError when one is malformed, together with every other problem
    of the input (validation writes nothing). `inputs`: api.validate's other keyword arguments."""
    param_values, param_problems = split_params(params)
    if not param_problems:
        return param_values
    try:
        api.validate(file, params=param_values, **inputs)
    except InputError as exc:
        raise InputError(param_problems + exc.problems) from None
    raise InputError(param_problems)


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
