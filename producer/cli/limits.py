"""`producer limits`: the account-wide limiter shown, and its limits set and reset at run time."""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any

import click

from producer import api
from producer.cli.app import Context, fleet_context, pass_context
from producer.cli.exits import EXIT_CODES_HELP
from shared.settings import Settings


@click.group(invoke_without_command=True, epilog=EXIT_CODES_HELP)
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
