"""`producer models`: the models the registry knows, and one model's parameters."""

from __future__ import annotations

import json

import click

from producer.cli.app import Context, fleet_context, pass_context
from producer.cli.exits import EXIT_CODES_HELP


@click.group(invoke_without_command=True, epilog=EXIT_CODES_HELP)
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
