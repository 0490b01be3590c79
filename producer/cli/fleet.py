"""Watching the fleet: `producer info` (one screen), `producer flower`, `producer metrics`."""

from __future__ import annotations

import json
import sys

import click

from producer import api
from producer.cli.app import Context, pass_context
from producer.cli.exits import EXIT_CODES_HELP


@click.command(epilog=EXIT_CODES_HELP)
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


@click.command(epilog=EXIT_CODES_HELP)
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


@click.command(epilog=EXIT_CODES_HELP)
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
