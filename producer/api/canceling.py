"""Canceling a batch: its queued items at once (their task messages revoked, best effort), its
running ones by their workers (predictions canceled at Replicate, slots freed)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from producer.api.connections import limiter_status_or_none, open_budget
from producer.progress import in_flight_by_batch
from shared.settings import Settings

if TYPE_CHECKING:
    from producer.api.batch import Batch

REVOKE_CHUNK = 500  # task ids per revoke broadcast


@dataclass(frozen=True)
class CancelOutcome:
    """What `Batch.cancel()` did. `int(outcome)` is the number of items canceled now."""

    canceled: int  # queued items marked canceled now
    revoked: int  # their task messages revoked (best effort: workers drop them on receipt)
    revoke_error: str | None = None  # why revoking stopped early, if it did
    stopping: int = 0  # running items (waiting for a slot, at Replicate, saving) their workers stop
    at_replicate: int = 0  # of those, predictions in flight that the workers cancel at Replicate
    already_finished: bool = False  # the batch had ended: nothing to cancel, nothing changed

    def __int__(self) -> int:
        return self.canceled


def cancel_batch(batch: Batch) -> CancelOutcome:
    """Flags the batch canceled: queued (pending) items become canceled at once and their
    task messages are revoked (best effort: a worker that gets one anyway sees the item is
    canceled and does nothing); workers cancel the running predictions at Replicate and free
    their slots. `int()` of the outcome is how many items were canceled now."""
    from shared.scheduler import Scheduler

    batch.info()
    result = batch.ledger.cancel(batch.id)
    if result.already_finished:
        return CancelOutcome(canceled=0, revoked=0, already_finished=True)
    open_budget(batch.settings, batch.ledger.redis).drop_held(batch.id)  # held items are canceled too
    status = limiter_status_or_none(batch.settings)
    at_replicate = in_flight_by_batch(status.holders if status else []).get(batch.id, 0)
    # Sends still held in the schedule are dropped (the feeder would skip them anyway: their
    # items are canceled); only the few messages already in the broker need revoking.
    Scheduler(batch.ledger.redis, batch.ledger.keys).drop_batch(batch.id)
    revoked, error = revoke_tasks(batch.settings, result.task_ids)
    return CancelOutcome(
        canceled=result.canceled,
        revoked=revoked,
        revoke_error=error,
        stopping=result.stopping,
        at_replicate=min(at_replicate, result.stopping),
    )


def revoke_tasks(settings: Settings, task_ids: Sequence[str]) -> tuple[int, str | None]:
    """Revoke queued task messages (in chunks, one broadcast each) so workers drop them on
    receipt. Best effort: workers started later never hear of it (they find the item final in
    the ledger and do nothing). Returns (ids revoked, why it stopped early or None)."""
    ids = [t for t in dict.fromkeys(task_ids) if t]
    if not ids:
        return 0, None
    from workers.dispatch import producer_app

    app = producer_app(settings)
    done = 0
    for start in range(0, len(ids), REVOKE_CHUNK):
        chunk = ids[start : start + REVOKE_CHUNK]
        try:
            app.control.revoke(chunk)
        except Exception as exc:  # noqa: BLE001 - best effort; the ledger already has the cancel
            return done, f"{type(exc).__name__}: {exc}"
        done += len(chunk)
    return done, None
