"""The `producer` group (its options and the Context every command reads its settings from).
Commands are added to it in producer.cli.main."""

from __future__ import annotations

from typing import Any

import click

from producer.cli.exits import EXIT_CODES_HELP, FleetGroup
from shared.settings import Settings


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
