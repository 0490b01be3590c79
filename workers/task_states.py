"""What a task shows in Flower once its run is over, from what the run recorded (issue 18.3).

Celery's task state comes from how the task function ends, and Flower shows it: so a run ends
the way its attempt did, after the ledger and the schedule have everything (the follow-up is held
before this is decided, and the message is acked whatever the state: acks_late with
acks_on_failure_or_timeout; a raise here is never a redelivery, never a second creation):

- the item succeeded with this attempt: SUCCESS, result `{"model", "files"}`;
- a new attempt on the same model, or this attempt again later (requeue, recheck): RETRY, with
  the reason and when;
- a new attempt on the next model of the route (fallback): FAILURE, naming the reason and the
  next task (attempt and model);
- the item failed (or got the black substitute) on this attempt: FAILURE with the item's error;
- held by a spending limit (nothing created): SUCCESS, `{"status": "held", "reason"}`;
- anything else (canceled, a stale or duplicate message, nothing to do): SUCCESS with a word.
"""

from __future__ import annotations

import logging
from typing import Any

from celery.exceptions import Retry

from shared.errors import AttemptFailedError
from shared.ledger import Ledger
from workers.messages import Job, NextTask
from workers.outcomes import ItemEnd

log = logging.getLogger("workers.tasks")

MAX_REASON = 300  # characters of an error shown in Flower


def task_ending(ledger: Ledger, job: Job, follow_up: NextTask | None, known: ItemEnd | None = None) -> Any:
    """The task's return value, or the exception (Retry, AttemptFailedError) it should raise.
    `known`: what the run's last ledger write left in the item (workers.outcomes), so that the
    item is not read again (issue 16.4); without it the item is read."""
    item = known or _item_end(ledger, job)
    error = item.attempt_error if item is not None and follow_up is not None else None
    if follow_up is not None:
        when = f"in {follow_up.countdown:g} s" if follow_up.countdown else "now"
        if follow_up.attempt == job.attempt:
            return _retry(f"attempt {job.attempt} runs again {when}", error or "sent again")
        if follow_up.model == job.model:
            return _retry(f"attempt {follow_up.attempt} on {job.model} {when}", error or "retry")
        return AttemptFailedError(
            f"{job.model} failed: {_short(error or 'failed')}; "
            f"next: attempt {follow_up.attempt} on {follow_up.model}"
        )
    if item is None or item.attempt != job.attempt:
        return {"status": "nothing to do", "attempt": job.attempt}
    if item.status == "succeeded":
        return {"model": item.model, "files": list(item.files)}
    if item.status in ("failed", "substituted"):
        return AttemptFailedError(f"item {item.status}: {_short(item.error or 'failed')}")
    if item.status == "held":  # nothing was created: it waits for room in a spending limit
        return {"status": "held", "attempt": job.attempt, "reason": item.held_reason}
    return {"status": item.status, "attempt": job.attempt}


def _retry(what: str, reason: str) -> Retry:
    # Raised, not Task.retry(): the follow-up is the fleet's own held send (a new message),
    # so this only sets the state Flower shows (task-retried, with the reason).
    text = f"{what}: {_short(reason)}"
    return Retry(text, exc=AttemptFailedError(text))


def _item_end(ledger: Ledger, job: Job) -> ItemEnd | None:
    """The item as the ledger has it (None: no such item), with `job`'s attempt's error."""
    item = ledger.item(job.batch_id, job.index)
    if item is None:
        return None
    errors = [record.error for record in item.attempts if record.attempt == job.attempt]
    return ItemEnd(
        item.status,
        item.attempt,
        model=item.model,
        files=tuple(str(f.get("key")) for f in item.files) or tuple(item.outputs),
        error=item.error,
        held_reason=item.held_reason,
        attempt_error=errors[0] if errors else None,
    )


def _short(text: str) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= MAX_REASON else text[: MAX_REASON - 1] + "…"
