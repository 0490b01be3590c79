"""Counter increments of one process added up in memory and written once per interval.

A worker records about a dozen counter increments per image (waits, hand-off, creation, outcome,
how its end was noticed); written one by one they were ~14 Redis commands per image, a twentieth
of all the fleet's Redis work. Added up here, a process writes each counter it touched once per
`interval` (one pipelined round trip), whatever the number of images: the cost no longer grows
with the throughput.

What it costs: counters reach Redis up to `interval` late (Prometheus scrapes every 15 s or so),
and a process killed without its shutdown (SIGKILL, power loss) loses at most its last
`interval` of counts. A failed write keeps the counts for the next one. Thread-safe; the writer
thread starts on the first increment, and again in a forked child.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import defaultdict

import redis

log = logging.getLogger(__name__)

# Seconds between writes of a process's counters; well below a scrape interval.
FLUSH_INTERVAL = 5.0


class BatchedCounters:
    """Stands in for the Redis client of the metrics functions (shared.metrics.recorder):
    `add` takes the increments they would have written, `flush` writes them."""

    def __init__(self, client: redis.Redis, interval: float = FLUSH_INTERVAL):
        self.client = client
        self.interval = interval
        self._ints: dict[tuple[str, str], int] = defaultdict(int)
        self._floats: dict[tuple[str, str], float] = defaultdict(float)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._pid = os.getpid()

    def add(self, key: str, ints: list[tuple[str, int]], floats: list[tuple[str, float]]) -> None:
        with self._lock:
            for field, amount in ints:
                self._ints[(key, field)] += amount
            for field, value in floats:
                self._floats[(key, field)] += value
        self._ensure_thread()

    def flush(self) -> None:
        """Write what was added since the last write: one pipelined round trip, no MULTI."""
        with self._lock:
            ints, floats = self._ints, self._floats
            self._ints, self._floats = defaultdict(int), defaultdict(float)
        if not ints and not floats:
            return
        try:
            pipe = self.client.pipeline(transaction=False)
            for (key, field), amount in ints.items():
                pipe.hincrby(key, field, amount)
            for (key, field), value in floats.items():
                pipe.hincrbyfloat(key, field, value)
            pipe.execute()
        except redis.RedisError as exc:
            # Kept for the next write. (A write that failed half-way may count part of it twice:
            # acceptable for monitoring, and rarer than losing the counts of a whole outage.)
            log.warning("metrics write failed, kept for the next one: %s", exc)
            with self._lock:
                for k, amount in ints.items():
                    self._ints[k] += amount
                for k, value in floats.items():
                    self._floats[k] += value

    def close(self) -> None:
        """Stop the writer and write what is left (a worker's shutdown)."""
        self._stop.set()
        self.flush()

    def _ensure_thread(self) -> None:
        if self._pid != os.getpid():  # a forked child: the parent's counts and thread are not ours
            with self._lock:
                if self._pid != os.getpid():
                    self._ints.clear()
                    self._floats.clear()
                    self._thread, self._pid = None, os.getpid()
        if self._thread is not None or self._stop.is_set():
            return
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="metrics-writer", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.flush()
            except Exception:  # noqa: BLE001 - the writer must outlive any surprise
                log.exception("metrics writer")
