"""Running the attempt path (workers/README.md) inside the test process (real Redis, the stand-in
over HTTP), for the cost-safety details that need a hand between two steps: what happens between
the creation token and the POST, between the POST's answer and its record, on a stale message."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from producer.prompts import parse_prompts
from shared.keys import Keys
from shared.ledger import Ledger
from shared.models import load_registry

MODEL = "black-forest-labs/flux-dev"


@contextlib.contextmanager
def worker_context(settings, sim=None, **changes) -> Iterator:
    """A WorkerContext like a worker process builds, for `settings` (+ changes), calling `sim`."""
    from workers.context import WorkerContext

    if sim is not None:
        changes["replicate_base_url"] = sim.url
    ctx = WorkerContext.build(settings.with_(**changes))
    try:
        yield ctx
    finally:
        ctx.close()


def record_batch(settings, redis_client, batch_id: str, prompts: list[str], *, model: str = MODEL):
    """A batch recorded in the ledger and NOT enqueued: the test runs its attempts itself."""
    requests = parse_prompts(
        prompts,
        batch_id=batch_id,
        output_root=Path(settings.output_dir),
        registry=load_registry(),
        model=model,
    )
    ledger = Ledger(redis_client, Keys(settings.key_prefix))
    assert ledger.create_batch(batch_id, requests, output_root=str(settings.output_dir))
    return ledger, requests


def mark_running(ledger: Ledger, batch_id: str, index: int, attempt: int = 1, model: str = MODEL) -> None:
    """The item running `attempt`, as a run's first step leaves it (the last check before a POST
    requires it)."""
    t = ledger.transition(
        batch_id,
        index,
        "running",
        allowed_from=("pending", "running"),
        expect_attempt=attempt,
        attempt=attempt,
        attempt_update={"model": model, "status": "running"},
    )
    assert t.changed, t


def held_sends(settings, redis_client) -> int:
    """Everything waiting to run: sends the schedule holds (ready or delayed) and messages in the
    broker (shared.scheduler.QueueDepths.waiting)."""
    from shared.scheduler import Scheduler

    return Scheduler(redis_client, Keys(settings.key_prefix)).depths(settings.queue).waiting


def feed(settings, redis_client, window: int = 10_000) -> list:
    """One round of the feeder in the test process: the held sends that are due go into the
    broker (as a worker's feeder would move them); returns them."""
    from workers.dispatch import producer_app
    from workers.feeder import Feeder

    feeder = Feeder(settings.with_(feed_window=window), redis_client, producer_app(settings))
    sends, _ = feeder.feed_once()
    return sends
