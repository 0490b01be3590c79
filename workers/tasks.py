"""The Celery task: one attempt of one image. Every attempt (retry, fallback) and every later run
of the same attempt (requeue, recheck) is its own task message, visible in Flower with batch,
item, attempt, model and the prompt's start.

A Redis outage in the middle (ledger, claim, creation record, limiter, or the broker refusing the
follow-up) does not end the task: it waits for Redis, bounded (workers.outage), and runs the
attempt again from the top, which is idempotent (claim + creation record). Only if Redis stays
away longer does the exception escape, and the recovery sweep brings the item back later."""
from __future__ import annotations

import logging

from shared.logging_setup import log_context
from shared.settings import Settings
from workers.celery_app import TASK_NAME, app
from workers.context import get_context
from workers.dispatch import send_attempt
from workers.messages import Job, NextTask
from workers.outage import OutageWait, is_redis_unavailable
from workers.runner import AttemptRunner

log = logging.getLogger("workers.tasks")


@app.task(name=TASK_NAME, bind=True)
def generate_image(self, batch_id: str, index: int, attempt: int, model: str, recheck: int = 0) -> None:
    settings = app.settings()
    job = Job(batch_id=batch_id, index=int(index), attempt=int(attempt), model=model,
              task_id=self.request.id, recheck=int(recheck))
    with log_context(**job.ref.log_fields(), model=model, task_id=job.task_id):
        run_attempt(settings, job)


def run_attempt(settings: Settings, job: Job, *, outage: OutageWait | None = None) -> NextTask | None:
    """Run the attempt for `job` and send the follow-up it asks for, riding out Redis outages.
    Returns the follow-up (sent), or None."""
    outage = outage or OutageWait(settings)
    runner: AttemptRunner | None = None
    ran = False
    follow_up: NextTask | None = None
    sent: str | None = None  # the follow-up's task id once sent (a retried send would duplicate it)
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
                # Sent before this message is acked (acks_late): a crash in between redelivers
                # this task, which re-sends the follow-up (the ledger tells it so); never lost.
                # The send and its record are two steps so that an outage between them re-does
                # only the record (what send_attempt(..., ledger=) does in one go otherwise).
                if sent is None:
                    sent = send_attempt(app, settings, job.ref._replace(attempt=follow_up.attempt),
                                        follow_up.model, prompt=follow_up.prompt,
                                        countdown=follow_up.countdown, recheck=follow_up.recheck)
                ctx.ledger.mark_enqueued(job.batch_id, [job.index], countdown=follow_up.countdown,
                                         task_ids=[sent])
                return follow_up
            except Exception as exc:  # noqa: BLE001 - only Redis unavailability is ridden out
                if not is_redis_unavailable(exc) or not outage.wait(exc):
                    raise
    finally:
        if runner is not None:
            runner.drop_kept_claim()
