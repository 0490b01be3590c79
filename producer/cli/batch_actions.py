"""Acting on a batch: `producer cancel`, `producer retry`."""

from __future__ import annotations

import sys

import click

from producer import api
from producer.cli.app import Context, pass_context
from producer.cli.exits import EXIT_CODES_HELP
from producer.cli.following import _outcome, _wait
from producer.progress import batch_state


@click.command(epilog=EXIT_CODES_HELP)
@click.argument("batch_id", metavar="BATCH")
@pass_context
def cancel(obj: Context, batch_id: str) -> None:
    """Cancel BATCH: queued items are marked canceled at once and their task messages revoked
    (best effort; a worker that gets one anyway finds the item canceled), running predictions
    are canceled at Replicate by the workers and their slots freed. `producer retry BATCH`
    (--include-canceled) runs items again later.

    \b
    Example:
      producer cancel b-20250101-ab12cd
    """
    batch = api.open_batch(batch_id, obj.settings())
    outcome = batch.cancel()
    if outcome.already_finished:
        click.echo(f"batch {batch.id} is finished: nothing to cancel (it stays {_state_of(batch)})")
        return
    revoked = f"{outcome.revoked} queued task message(s) revoked"
    if outcome.revoke_error:
        revoked += (
            f" (revoking stopped: {outcome.revoke_error}; workers that get the others "
            "find the items canceled and drop them)"
        )
    click.echo(f"batch {batch.id} canceled: {outcome.canceled} queued item(s) canceled now, {revoked}")
    if outcome.stopping:
        waiting = outcome.stopping - outcome.at_replicate
        click.echo(
            f"  {outcome.stopping} running item(s) are being stopped by their workers: "
            f"{outcome.at_replicate} prediction(s) at Replicate, canceled there as soon as their "
            "workers have their ids, "
            f"{waiting} waiting to be created or saving (nothing more is created); "
            "`producer status` shows when they are done"
        )
    click.echo(
        f"  `producer retry {batch.id}` runs failed items again, --include-canceled the canceled ones too."
    )


def _state_of(batch: api.Batch) -> str:
    return batch_state(batch.status(with_slots=False))


@click.command(epilog=EXIT_CODES_HELP)
@click.argument("batch_id", metavar="BATCH")
@click.option("--include-canceled", is_flag=True, help="Also re-enqueue the canceled items.")
@click.option("--wait", "-w", is_flag=True, help="Follow the batch afterwards.")
@pass_context
def retry(obj: Context, batch_id: str, include_canceled: bool, wait: bool) -> None:
    """Re-enqueue the failed items of BATCH (only those, unless --include-canceled), each with a
    new attempt on the first model of its route. An item whose prediction succeeded but whose
    outputs could not be written resumes that prediction instead (downloaded again while its
    output URL is valid, an hour): it is not paid for twice.

    After `producer cancel`, retry lifts the batch's cancel so the re-enqueued items run (the
    canceled items stay canceled unless --include-canceled). It waits for nothing: while items
    are still being canceled it refuses (exit 2); run it again once `producer status` shows the
    batch finished.

    \b
    Examples:
      producer retry b-20250101-ab12cd
      producer retry catalog-v2 --wait
      producer retry catalog-v2 --include-canceled   # resume a canceled batch
    """
    batch = api.open_batch(batch_id, obj.settings())
    was_canceled = batch.info().canceled
    indexes = batch.retry(include_canceled=include_canceled)
    what = "failed or canceled" if include_canceled else "failed"
    if indexes:
        shown = ", ".join(map(str, indexes[:20])) + (" ..." if len(indexes) > 20 else "")
        click.echo(f"batch {batch.id}: {len(indexes)} {what} items enqueued again (items {shown})")
        if was_canceled:
            click.echo(
                f"batch {batch.id}: its cancel is lifted, so these items run"
                + ("" if include_canceled else "; its canceled items stay canceled")
            )
    else:
        click.echo(f"batch {batch.id}: no {what} items to retry")
        canceled = batch.status(with_slots=False).counts.get("canceled", 0)
        if canceled and not include_canceled:
            click.echo(
                f"{canceled} item(s) are canceled: `producer retry {batch.id} --include-canceled` "
                "runs them again"
            )
    if wait:
        sys.exit(_outcome(_wait(batch, progress_stream=sys.stdout)))
