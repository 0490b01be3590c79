"""Retrying a batch's failed (or canceled) items: a fresh attempt each, or the prediction an item
already paid for when only writing its outputs failed."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from shared.errors import InputError, Problem, StillCancelingError

if TYPE_CHECKING:
    from producer.api.batch import Batch


def retry_batch(batch: Batch, *, include_canceled: bool = False) -> list[int]:
    """Failed items (and canceled ones with `include_canceled`) back to pending, each with a
    fresh attempt on the first model of its route, and enqueued again; returns their indexes.

    On a canceled batch this lifts the cancel, so the retried items run (the other canceled
    items stay canceled); it is refused (InputError) while items of that batch are still
    running, i.e. still being canceled."""
    from workers.dispatch import enqueue_items

    batch.info()
    # An item whose prediction succeeded but whose outputs were not written (the output
    # location refused them) is retried on that prediction: downloaded again while its
    # output URL is valid (an hour; after that the next attempt creates anew), never paid twice.
    unwritten = {
        item.index: record
        for item in batch.ledger.items(batch.id)
        if item.status == "failed" and (record := _unwritten_prediction(item)) is not None
    }
    try:
        indexes = list(
            batch.ledger.reset_failed(
                batch.id,
                include_canceled=include_canceled,
                models={index: str(record.model) for index, record in unwritten.items()},
            )
        )
    except StillCancelingError as exc:
        raise InputError(
            Problem(
                f"batch {batch.id} is still being canceled: {exc.open_items} item(s) have not stopped yet. "
                f"Retry once `producer status {batch.id}` shows it finished",
                field="BATCH",
            )
        ) from None
    if unwritten:
        from workers.attempts import AttemptRef, CreationRecords

        records = CreationRecords(batch.ledger.redis, batch.ledger.keys)
        for index in set(indexes) & set(unwritten):
            record = unwritten[index]
            old = AttemptRef(batch.id, index, record.attempt)
            records.carry_over(old, old._replace(attempt=record.attempt + 1), str(record.prediction_id))
    if indexes:
        enqueue_items(batch.settings, batch.id, [batch.ledger.request(batch.id, i) for i in indexes])
    return indexes


def _unwritten_prediction(item: Any) -> Any:
    """The last attempt of a failed item when its prediction exists and the item failed after it
    as a local error (its outputs could not be written or fetched): that prediction can be
    resumed instead of paid for again. None otherwise."""
    if not item.attempts:
        return None
    last = max(item.attempts, key=lambda a: a.attempt)
    if last.attempt != item.attempt or last.kind != "local" or not last.prediction_id or not last.model:
        return None
    return last
