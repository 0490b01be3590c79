"""The Celery task: one attempt of one image. Every attempt (retry, fallback, resume) is its own
task message, visible in Flower with batch, item, attempt, model and the prompt's start."""
from __future__ import annotations

import logging

from workers.celery_app import TASK_NAME, app
from workers.context import get_context
from workers.dispatch import send_attempt
from workers.pipeline import Job, Pipeline

log = logging.getLogger("workers.tasks")


@app.task(name=TASK_NAME, bind=True)
def generate_image(self, batch_id: str, index: int, attempt: int, model: str, recheck: int = 0) -> None:
    settings = app.settings()
    ctx = get_context(settings)
    job = Job(batch_id=batch_id, index=int(index), attempt=int(attempt), model=model,
              task_id=self.request.id, recheck=int(recheck))
    follow_up = Pipeline(ctx).run(job)
    if follow_up is not None:
        # Sent before this message is acked (acks_late): a crash in between redelivers this
        # task, which re-sends the follow-up (the ledger tells it so); never a lost item.
        send_attempt(app, settings, batch_id, job.index, follow_up.attempt, follow_up.model,
                     prompt=follow_up.prompt, countdown=follow_up.countdown, recheck=follow_up.recheck,
                     ledger=ctx.ledger)
