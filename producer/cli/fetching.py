"""`producer fetch`: a batch's outputs, manifest and gallery brought to this machine."""

from __future__ import annotations

import sys
from typing import Any

import click

from producer import api
from producer.cli.app import Context, pass_context
from producer.cli.exits import EXIT_CODES_HELP, EXIT_OK, EXIT_SOME_FAILED
from shared.settings import output_location


@click.command(epilog=EXIT_CODES_HELP)
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
