"""The Celery task: one attempt of one image. Every attempt (retry, fallback) and every later run
of the same attempt (requeue, recheck) is its own task message, visible in Flower with batch,
item, attempt, model and the prompt's start. A follow-up is held in the fleet's schedule
(shared.scheduler), due after its countdown in Redis time, never sent with a Celery ETA; the
feeder (workers.feeder) puts it into the broker when it is due and its turn has come.

A Redis outage in the middle (ledger, claim, creation record, limiter, or the broker refusing the
follow-up) does not end the task: it waits for Redis, bounded (workers.outage), and runs the
attempt again from the top, which is idempotent (claim + creation record). Only if Redis stays
away longer does the exception escape, and the recovery sweep brings the item back later."""

from __future__ import annotations

import logging
from typing import Any

from shared.errors import AttemptFailedError
from shared.logging_setup import log_context
from shared.settings import Settings
from workers.celery_app import TASK_NAME, app
from workers.context import get_context
from workers.dispatch import schedule_attempt
from workers.messages import Job, NextTask
from workers.outage import OutageWait, is_redis_unavailable
from workers.outcomes import ItemEnd
from workers.runner import AttemptRunner
from workers.task_states import task_ending

log = logging.getLogger("workers.tasks")


# AttemptFailedError is an expected end (logged without a traceback): workers.task_states.
@app.task(name=TASK_NAME, bind=True, throws=(AttemptFailedError,))
def generate_image(
    self, batch_id: str, index: int, attempt: int, model: str, recheck: int = 0, priority: str = "normal"
) -> Any:
    settings = app.settings()
    job = Job(
        batch_id=batch_id,
        index=int(index),
        attempt=int(attempt),
        model=model,
        task_id=self.request.id,
        recheck=int(recheck),
        priority=str(priority),
    )
    with log_context(**job.ref.log_fields(), model=model, task_id=job.task_id):
        ended: list[ItemEnd] = []
        follow_up = run_attempt(settings, job, ended=ended)
        ending = _ending(settings, job, follow_up, ended[-1] if ended else None)
    if isinstance(ending, BaseException):
        raise ending  # everything is recorded and held already: only Flower's state follows
    return ending


def _ending(settings: Settings, job: Job, follow_up: NextTask | None, known: ItemEnd | None) -> Any:
    """How this task ends in Flower (workers.task_states), from what the run wrote (`known`) or
    read from the ledger; a plain None if that cannot be read."""
    try:
        return task_ending(get_context(settings).ledger, job, follow_up, known)
    except Exception as exc:  # noqa: BLE001 - the display must never undo a recorded run
        log.debug("task state not decided: %s", exc)
        return None


def run_attempt(
    settings: Settings, job: Job, *, outage: OutageWait | None = None, ended: list[ItemEnd] | None = None
) -> NextTask | None:
    """Run the attempt for `job` and send the follow-up it asks for, riding out Redis outages.
    Returns the follow-up (sent), or None. `ended` gets what the run's last ledger write left in
    the item, if it wrote one (the task's state in Flower is decided from it)."""
    outage = outage or OutageWait(settings)
    runner: AttemptRunner | None = None
    ran = False
    follow_up: NextTask | None = None
    try:
        while True:
            try:
                ctx = get_context(settings)
                if runner is None:
                    runner = AttemptRunner(ctx)
                if not ran:
                    follow_up = runner.run(job)
                    ran = True
                if follow_up is None:
                    return None
                # Held before this message is acked (acks_late): a crash in between redelivers
                # this task, which holds the follow-up again (the ledger tells it so); never lost.
                # Holding it is idempotent (one pending send per item), so an outage in the
                # middle only means doing it again.
                schedule_attempt(
                    ctx.scheduler,
                    job.ref._replace(attempt=follow_up.attempt),
                    follow_up.model,
                    prompt=follow_up.prompt,
                    countdown=follow_up.countdown,
                    recheck=follow_up.recheck,
                )
                return follow_up
            except Exception as exc:  # noqa: BLE001 - only Redis unavailability is ridden out
                if not is_redis_unavailable(exc) or not outage.wait(exc):
                    raise
    finally:
        if runner is not None:
            runner.drop_kept_claim()
            if ended is not None and runner.outcomes.ended is not None:
                ended.append(runner.outcomes.ended)
