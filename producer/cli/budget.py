"""`producer budget`: the daily budget and the batches' spending limits, shown and changed."""

from __future__ import annotations

import json
from typing import Any

import click

from producer import api
from producer.cli.app import Context, fleet_context, pass_context
from producer.cli.exits import EXIT_CODES_HELP
from shared.budget import usd
from shared.settings import Settings


@click.group(invoke_without_command=True, epilog=EXIT_CODES_HELP)
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
