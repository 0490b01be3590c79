"""`producer init`: a Replicate API token checked and stored in .env."""

from __future__ import annotations

import getpass
import sys

import click

from producer.cli.app import fleet_context
from producer.cli.exits import EXIT_CODES_HELP, EXIT_UNAVAILABLE
from shared.errors import ApiUnreachableError, ConfigError, InputError, Problem
from shared.settings import Settings, api_base_url


@click.command(epilog=EXIT_CODES_HELP)
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
