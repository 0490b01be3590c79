"""Sending attempt tasks, and asking which workers consume the queue.

Every send goes through the fleet's schedule (shared.scheduler): `enqueue_items` and
`send_again` (producers, `producer retry`, the budgets' held items) and `schedule_attempt`
(a worker's follow-up, the recovery sweep) hold the send in Redis; the feeder (workers.feeder)
moves it into the broker when it is due and its turn has come, with `send_attempt`, the one
place that talks to Celery. A task carries only the attempt (batch id, item index, attempt
number) and the model; the request itself stays in the ledger, and the token never travels.
`argsrepr` makes each task readable in Flower:
`batch=b-20261122-ab12cd item=3 attempt=2 model=google/nano-banana prompt='a red fox ...'`.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterable, Sequence

from celery import Celery
from kombu import Producer

from shared.keys import Keys
from shared.ledger import Ledger
from shared.redis_conn import connect
from shared.request import ImageRequest
from shared.scheduler import Scheduler, broker_priority
from shared.scheduler.schedule import sends_of
from shared.settings import Settings
from workers.attempts import AttemptRef
from workers.celery_app import TASK_NAME, celery_config

_apps: dict[tuple, Celery] = {}
_apps_lock = threading.Lock()


def producer_app(settings: Settings) -> Celery:
    """A Celery app for sending to (and inspecting) the fleet described by `settings`."""
    key = (settings.redis_url, settings.queue, settings.visibility_timeout)
    with _apps_lock:
        app = _apps.get(key)
        if app is None:
            app = Celery("fleet-producer", set_as_current=False)
            app.config_from_object(celery_config(settings))
            _apps[key] = app
        return app


def describe(ref: AttemptRef, model: str, prompt: str) -> str:
    short = prompt if len(prompt) <= 40 else prompt[:40] + "..."
    return f"batch={ref.batch_id} item={ref.index} attempt={ref.attempt} model={model} prompt={short!r}"


def send_attempt(
    app: Celery,
    settings: Settings,
    ref: AttemptRef,
    model: str,
    *,
    prompt: str = "",
    recheck: int = 0,
    priority: str = "normal",
    rank: int = 1,
    producer: Producer | None = None,
) -> str:
    """Put one run of the attempt `ref` on `model` into the broker now; returns the task id.
    Only the feeder calls this (and benchmarks comparing with direct enqueueing): everyone else
    holds the send in the schedule, so that delays, priorities and turns are kept."""
    kwargs: dict[str, object] = {"recheck": recheck} if recheck else {}
    if priority != "normal":
        kwargs["priority"] = priority
    result = app.send_task(
        TASK_NAME,
        args=(ref.batch_id, ref.index, ref.attempt, model),
        kwargs=kwargs,
        queue=settings.queue,
        priority=broker_priority(rank),
        argsrepr=describe(ref, model, prompt),
        kwargsrepr=repr(kwargs),
        producer=producer,
        ignore_result=True,
    )
    return result.id


def schedule_attempt(
    scheduler: Scheduler,
    ref: AttemptRef,
    model: str,
    *,
    prompt: str = "",
    countdown: float = 0.0,
    recheck: int = 0,
) -> int:
    """Hold a run of the attempt `ref` in the schedule, due in `countdown` seconds (Redis time).
    Idempotent: the item's held send is replaced. Returns 1 if held (0: the item is terminal)."""
    return scheduler.push(
        ref.batch_id,
        [(ref.index, ref.attempt, model)],
        delay=countdown,
        recheck=recheck,
        prompts={ref.index: prompt},
    )


def enqueue_items(settings: Settings, batch_id: str, requests: Iterable[ImageRequest]) -> int:
    """A send of the current attempt and model of each item recorded in the ledger
    (create_batch or reset_failed first), held in the schedule until the feeder takes it. Items
    already terminal are skipped, and an item has one pending send at most, so enqueueing a batch
    twice never makes two creations. Returns how many sends are held."""
    prompts = {r.index: r.prompt for r in requests}
    return _hold_sends(
        settings, batch_id, list(prompts), lambda _ledger, chunk: {i: prompts[i] for i in chunk}
    )


def send_again(settings: Settings, batch_id: str, indexes: Sequence[int]) -> int:
    """Send these items of a batch again: the current attempt and model of each non-terminal
    one, held in the schedule like any send (its priority and turn kept). For items that waited
    without a message (e.g. held by a spending limit that was raised since). Idempotent. Returns
    how many sends are held."""

    def recorded_prompts(ledger: Ledger, chunk: list[int]) -> dict[int, str]:
        pipe = ledger.redis.pipeline(transaction=False)
        for index in chunk:
            pipe.hget(ledger.keys.item(batch_id, index), "request")
        return {i: json.loads(raw).get("prompt", "") for i, raw in zip(chunk, pipe.execute()) if raw}

    return _hold_sends(settings, batch_id, [int(i) for i in indexes], recorded_prompts)


SEND_CHUNK = 2000  # items read and held per round trip


def _hold_sends(
    settings: Settings,
    batch_id: str,
    indexes: list[int],
    prompts_of: Callable[[Ledger, list[int]], dict[int, str]],
) -> int:
    """Hold a send for each non-terminal item among `indexes` (its recorded attempt and model),
    SEND_CHUNK at a time, with the prompts Flower shows; returns how many are held."""
    if not indexes:
        return 0
    client = connect(settings)
    try:
        ledger = Ledger(client, Keys(settings.key_prefix))
        scheduler = Scheduler(client, ledger.keys)
        held = 0
        for start in range(0, len(indexes), SEND_CHUNK):
            chunk = indexes[start : start + SEND_CHUNK]
            sends = sends_of(ledger.item_states(batch_id, chunk), chunk)
            held += scheduler.push(batch_id, sends, prompts=prompts_of(ledger, chunk))
        return held
    finally:
        client.close()


def workers_alive(settings: Settings, timeout: float = 2.0) -> list[str]:
    """Names of the workers that answer and consume `settings.queue` (empty if none)."""
    app = producer_app(settings)
    try:
        replies = app.control.inspect(timeout=timeout).active_queues() or {}
    except Exception:  # noqa: BLE001 - broker trouble means: no worker we can see
        return []
    return sorted(
        name for name, queues in replies.items() if any(q.get("name") == settings.queue for q in queues or [])
    )
