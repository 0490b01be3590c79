"""Each model's usual duration (seconds): a smoothed average the fleet shares in one Redis hash
(`Keys.model_latency`), learned from every prediction that succeeds.

A run asks for it twice (its sync wait, its first poll) and records it once; read from Redis each
time that was three commands per image. A process keeps what it read or wrote for `fresh` seconds
instead: the average moves by a fifth of one prediction per update, so a value a few seconds old
sizes a wait as well as the latest one. Updates from several processes were never atomic (read,
smooth, write); with the cache a process smooths onto the value it last saw, so an update of
another process within those seconds may be overwritten: the average stays an average of recent
durations, which is all that uses it.

A process also writes a model's average at most once per `fresh` seconds (the first update at
once, so the fleet learns a new model's duration from its first prediction): one HSET per image
was a round trip per image (issue 16.4), and the others read it at most that often anyway. The
process's own average takes every duration; its updates since the last write are lost only if
it stops within those seconds.
"""

from __future__ import annotations

import threading
import time

import redis

SMOOTHING = 0.2  # weight of the newest duration in the average
FRESH_SECONDS = 5.0


class ModelLatencies:
    """Thread-safe; one per process (WorkerContext.latencies)."""

    def __init__(self, client: redis.Redis, key: str, *, fresh: float = FRESH_SECONDS):
        self.client, self.key, self.fresh = client, key, fresh
        self._known: dict[str, tuple[float, float | None]] = {}  # model -> (monotonic when, value)
        self._written: dict[str, float] = {}  # model -> monotonic time of this process's last write
        self._lock = threading.Lock()

    def expected(self, model: str) -> float | None:
        """The model's usual duration, None until one prediction of it has succeeded (or Redis
        cannot be read)."""
        known = self._cached(model)
        if known is not None:
            return known[1]
        try:
            raw = self.client.hget(self.key, model)
        except redis.RedisError:
            return None
        value = float(raw) if raw else None
        self._remember(model, value)
        return value

    def record(self, model: str, seconds: float) -> None:
        """A prediction of `model` took `seconds` (creation to end). Never raises."""
        old = self.expected(model)
        new = seconds if not old else (1 - SMOOTHING) * old + SMOOTHING * seconds
        if self._write_due(model):
            try:
                self.client.hset(self.key, model, f"{new:.3f}")
            except redis.RedisError:
                return
            with self._lock:
                self._written[model] = time.monotonic()
        self._remember(model, float(f"{new:.3f}"))

    def _write_due(self, model: str) -> bool:
        with self._lock:
            written = self._written.get(model)
        return written is None or time.monotonic() - written >= self.fresh

    def _cached(self, model: str) -> tuple[float, float | None] | None:
        with self._lock:
            known = self._known.get(model)
        if known is None or time.monotonic() - known[0] > self.fresh:
            return None
        return known

    def _remember(self, model: str, value: float | None) -> None:
        with self._lock:
            if len(self._known) > 1000:
                self._known.clear()
                self._written.clear()
            self._known[model] = (time.monotonic(), value)
