"""Following a batch until it ends (`producer wait`, and `submit --wait`, `retry --wait`): the
progress, the verdict, the manifest written, the exit code."""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import click

from producer import api
from producer.cli.app import Context, pass_context
from producer.cli.exits import EXIT_CODES_HELP, EXIT_INTERRUPTED, EXIT_OK, EXIT_SOME_FAILED
from producer.progress import Snapshot, format_counts, format_duration
from shared.errors import FleetError


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


@click.command(epilog=EXIT_CODES_HELP)
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
