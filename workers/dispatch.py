"""Sending attempt tasks, and asking which workers consume the queue.

Producers build their own small Celery app from the Settings they were given (no global config),
so `enqueue_items(settings, ...)` works from any process. A task carries only the attempt
(batch id, item index, attempt number) and the model; the request itself stays in the ledger, and
the token never travels. `argsrepr` makes each task readable in Flower:
`batch=b-20261122-ab12cd item=3 attempt=2 model=google/nano-banana prompt='a red fox ...'`.
"""
from __future__ import annotations

import threading
from typing import Iterable

from celery import Celery
from kombu import Producer

from shared.keys import Keys
from shared.ledger import TERMINAL, Ledger
from shared.redis_conn import connect
from shared.request import ImageRequest
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


def send_attempt(app: Celery, settings: Settings, ref: AttemptRef, model: str, *, prompt: str = "",
                 countdown: float = 0.0, recheck: int = 0, producer: Producer | None = None,
                 ledger: Ledger | None = None) -> str:
    """Enqueue one run of the attempt `ref` on `model`; returns the task id. With `ledger`, the
    send is recorded on the item (after the send: a crash in between only means the item may be
    sent again, which is harmless, never that it looks enqueued without a message)."""
    kwargs = {"recheck": recheck} if recheck else {}
    result = app.send_task(
        TASK_NAME,
        args=(ref.batch_id, ref.index, ref.attempt, model),
        kwargs=kwargs,
        queue=settings.queue,
        countdown=countdown if countdown > 0 else None,
        argsrepr=describe(ref, model, prompt),
        kwargsrepr=repr(kwargs),
        producer=producer,
        ignore_result=True,
    )
    if ledger is not None:
        ledger.mark_enqueued(ref.batch_id, [ref.index], countdown=countdown, task_ids=[result.id])
    return result.id


def enqueue_items(settings: Settings, batch_id: str, requests: Iterable[ImageRequest]) -> None:
    """One task per item, for items recorded in the ledger (create_batch or reset_failed first).
    Each task runs the item's current attempt with its current model; items already terminal are
    skipped, so enqueueing a batch twice never makes two creations."""
    requests = list(requests)
    if not requests:
        return
    client = connect(settings)
    try:
        ledger = Ledger(client, Keys(settings.key_prefix))
        states = ledger.item_states(batch_id, [r.index for r in requests])
        app = producer_app(settings)
        sent: list[int] = []
        task_ids: list[str] = []  # recorded on the items: `producer cancel` revokes them
        with app.producer_or_acquire() as producer:
            for request in requests:
                state = states.get(request.index)
                if state is None or state[0] in TERMINAL:
                    continue
                _status, attempt, model = state
                task_ids.append(send_attempt(app, settings, AttemptRef(batch_id, request.index, attempt),
                                             model or request.model, prompt=request.prompt, producer=producer))
                sent.append(request.index)
                if len(sent) >= 500:  # recorded as we go: a crash loses at most this many records
                    ledger.mark_enqueued(batch_id, sent, task_ids=task_ids)
                    sent.clear()
                    task_ids.clear()
        ledger.mark_enqueued(batch_id, sent, task_ids=task_ids)
    finally:
        client.close()


def workers_alive(settings: Settings, timeout: float = 2.0) -> list[str]:
    """Names of the workers that answer and consume `settings.queue` (empty if none)."""
    app = producer_app(settings)
    try:
        replies = app.control.inspect(timeout=timeout).active_queues() or {}
    except Exception:  # noqa: BLE001 - broker trouble means: no worker we can see
        return []
    return sorted(name for name, queues in replies.items()
                  if any(q.get("name") == settings.queue for q in queues or []))
