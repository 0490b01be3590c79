"""Finished predictions pushed by Replicate's webhooks, handed to the worker thread waiting for them.

Without webhooks a worker learns that its prediction ended only at its next poll, and polls spend
the account's read budget (3000/min for every program on the account): with 60 predictions in
flight a fair share is one poll per prediction every ~1.5 s, so on average ~0.75 s of a slot is
lost per image. Through the webhook receiver (workers/webhook_receiver.py) the news arrives within
milliseconds and costs no read at all.

- The receiver calls `notify(prediction)`: if a worker waits for it, one script pushes a token
  carrying the trimmed prediction onto that worker process's wake list and ends the watch;
  otherwise it stores the prediction (`completion:<id>`, kept COMPLETION_TTL).
- A worker calls `watch(id)`: one script returns (and takes) the prediction if it has arrived
  already, or records the process's wake list for it; then the thread waits on an Event set by
  the process's listener (shared.wakeup), and the token hands it the prediction. Either order of
  arrival and watch works, and neither leaves the worker a read or a clean-up to do: the news
  of one image costs the receiver's script, the watch and a share of one pop (issue 16.4: a GET
  and a DEL per image fewer).

Webhooks can be lost (receiver down, network): waiting workers keep a slow safety poll, so a lost
webhook costs time, never the image.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import socket
import threading
from typing import Any, NamedTuple

import redis

from shared import lua_scripts
from shared.keys import Keys
from shared.wakeup import WakeListener, blocking_client

log = logging.getLogger(__name__)

COMPLETION_TTL = 3600.0  # Replicate removes outputs after an hour; nobody needs the news longer
# The copy kept after the token handed the prediction over: for a waiter that reads it instead (a
# worker of the version before, during a rolling upgrade; a run redelivered at once). Short, as
# nobody deletes it.
HANDED_COPY_TTL = 60.0
KEPT_FIELDS = ("id", "status", "model", "version", "output", "error", "created_at", "completed_at")


class Delivery(NamedTuple):
    """A webhook delivery to remember (its id's key, for how long): a replay is handed on once."""

    seen_key: str
    remember_seconds: int


class CompletionBoard:
    """One per process (workers) or per receiver. Thread-safe."""

    def __init__(self, redis_client: redis.Redis, keys: Keys, *, watch_ttl: float = 7200.0):
        self.redis = redis_client
        self.keys = keys
        self.watch_ttl_ms = int(watch_ttl * 1000)
        scripts = lua_scripts.register(redis_client, "workers.lua", ("completion_notify", "completion_watch"))
        self._notify, self._watch = scripts.values()
        self._lock = threading.Lock()
        self._listener: WakeListener | None = None
        self._pid = 0

    # --- receiver side ----------------------------------------------------------------------------
    def notify(self, prediction: dict[str, Any], *, delivery: Delivery | None = None) -> bool | None:
        """Store a terminal prediction and wake its waiter. True if a worker was waiting; None if
        `delivery` (its webhook-seen key) was recorded before: nothing done."""
        pid = str(prediction["id"])
        trimmed = {k: prediction.get(k) for k in KEPT_FIELDS}
        token = json.dumps({"w": pid, "prediction": trimmed})
        keys = [self.keys.completion(pid), self.keys.completion_watch(pid)]
        args: list[str | int] = [
            json.dumps(trimmed),
            int(COMPLETION_TTL * 1000),
            token,
            int(HANDED_COPY_TTL * 1000),
        ]
        if delivery is not None:
            keys.append(delivery.seen_key)
            args += [delivery.remember_seconds, pid]
        woke = int(self._notify(keys=keys, args=args))
        return None if woke < 0 else bool(woke)

    # --- worker side ------------------------------------------------------------------------------
    def watch(self, prediction_id: str) -> CompletionWatch:
        """Start waiting for `prediction_id` (use as a context manager, or call close())."""
        listener = self._process_listener()
        event = listener.register(prediction_id)
        watch = CompletionWatch(self, listener, prediction_id, event)
        try:
            raw = self._watch(
                keys=[self.keys.completion(prediction_id), self.keys.completion_watch(prediction_id)],
                args=[listener.key, self.watch_ttl_ms],
            )
        except redis.RedisError as exc:  # the safety polls still find the end
            log.warning("cannot watch prediction %s for its webhook: %s", prediction_id, exc)
            raw = None
        if raw:
            watch._arrived(raw)
            watch.settled = True  # the script took it: nothing to clean up
        return watch

    def _process_listener(self) -> WakeListener:
        # One listener per process; a forked child builds its own.
        with self._lock:
            if self._listener is None or self._pid != os.getpid():
                token = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
                self._listener = WakeListener(
                    blocking_client(self.redis),
                    self.keys.completion_wake(token),
                    name=f"completion-wake-{os.getpid()}",
                )
                self._pid = os.getpid()
            return self._listener

    def _forget(self, watch: CompletionWatch) -> None:
        watch.listener.unregister(watch.prediction_id)
        if watch.settled:
            return
        # Not handed over by a token (the end came by a poll, the wait was given up, a receiver
        # of the version before pushed the bare id): the watch, and what was read, go.
        keys = [self.keys.completion_watch(watch.prediction_id)]
        if watch.prediction is not None:
            keys.append(self.keys.completion(watch.prediction_id))  # consumed
        try:
            self.redis.delete(*keys)
        except redis.RedisError:
            pass  # both expire by themselves

    def close(self) -> None:
        listener = self._listener
        if listener is not None:
            listener.stop()


class CompletionWatch:
    def __init__(
        self, board: CompletionBoard, listener: WakeListener, prediction_id: str, event: threading.Event
    ):
        self.board = board
        self.listener = listener
        self.prediction_id = prediction_id
        self.prediction: dict[str, Any] | None = None
        self.settled = False  # Redis holds nothing of this watch any more (the scripts took it)
        self._event = event

    def wait(self, timeout: float) -> dict[str, Any] | None:
        """The finished prediction if its webhook arrives within `timeout` s (or has already)."""
        if self.prediction is None and self._event.wait(max(timeout, 0)):
            self._event.clear()
            handed = (self.listener.take_payload(self.prediction_id) or {}).get("prediction")
            if isinstance(handed, dict):
                self.prediction, self.settled = handed, True
                return self.prediction
            try:
                raw = self.board.redis.get(self.board.keys.completion(self.prediction_id))
            except redis.RedisError as exc:
                log.debug("completion of %s not readable: %s", self.prediction_id, exc)
                raw = None
            if raw:
                self._arrived(raw)
        return self.prediction

    def _arrived(self, raw: str | bytes) -> None:
        try:
            self.prediction = json.loads(raw)
        except ValueError:
            log.warning("unreadable completion stored for %s; polling instead", self.prediction_id)

    def close(self) -> None:
        self.board._forget(self)

    def __enter__(self) -> CompletionWatch:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
