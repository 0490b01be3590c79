"""Reading batches: `producer status`, `producer results`, `producer list`."""

from __future__ import annotations

import json
import time
from typing import Any

import click

from producer import api
from producer.cli.app import Context, pass_context
from producer.cli.exits import EXIT_CODES_HELP
from producer.progress import batch_state, format_age, format_counts, format_duration
from shared.budget import usd


@click.command(epilog=EXIT_CODES_HELP)
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


@click.command(epilog=EXIT_CODES_HELP)
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


@click.command("list", epilog=EXIT_CODES_HELP)
@click.option("--limit", "-n", default=20, show_default=True, help="How many batches.")
@click.option("--json", "as_json", is_flag=True, help="JSON Lines, one batch per line.")
@pass_context
def list_(obj: Context, limit: int, as_json: bool) -> None:
    """The most recent batches, newest first, in 80 columns: id, age (3h: created 3 hours ago),
    priority (norm = normal),
    state (the words `status` uses: queued, running, held, canceling, finished, canceled), items
    done, spend in USD (spent + reserved) against the batch's limit, counts by state (ok =
    succeeded, subst = substituted, run = running, pend = pending). --json has every field in full.

    \b
    Example:
      producer list -n 5
    """
    overviews = api.batch_overviews(obj.settings(), limit=limit)
    if not overviews:
        if not as_json:
            click.echo("no batches yet")
        return
    if not as_json:
        click.echo(LIST_HEADER)
    now = time.time()
    for overview in overviews:
        click.echo(json.dumps(overview.to_dict()) if as_json else list_row(overview, now))


# `producer list` fits 80 columns for a default batch id (17 characters) and up to three states:
# an age, not a date, and short words. A longer id, more states or larger sums push the rest of
# a line right; nothing is cut.
LIST_HEADER = f"{'BATCH':<17} {'AGE':<4} {'PRIO':<4} {'STATE':<9} {'DONE':>9} {'USD':<9} ITEMS"
SHORT_PRIORITY = {"normal": "norm"}


def list_row(overview: api.BatchOverview, now: float) -> str:
    """One batch's line under LIST_HEADER."""
    info, snap, spend = overview.info, overview.snapshot, overview.spend
    try:
        age = format_age(now - float(info.created_at))
    except (AttributeError, TypeError, ValueError):  # as `status` says of a missing time
        age = "?"
    money = usd(spend.spent + spend.reserved) + "/" + ("-" if spend.limit is None else usd(spend.limit))
    return (
        f"{info.id:<17} {age:<4} {SHORT_PRIORITY.get(info.priority, info.priority):<4} "
        f"{overview.state:<9} {f'{snap.done}/{snap.total}':>9} {money:<9} "
        f"{format_counts(snap.counts, short=True)}"
    )
