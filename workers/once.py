"""One background thread of its kind per worker process (the feeder, the recovery sweeper),
started by the first caller and stopped from a signal handler.

`OnePerProcess[T]` holds the started object: `start(build)` builds and starts it once under a lock
(later callers get the same one), `stop()` stops it without taking the lock (it runs inside a
signal handler, which may have interrupted a thread holding it).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Generic, Protocol, TypeVar


class Stoppable(Protocol):
    def stop(self) -> None: ...


T = TypeVar("T", bound=Stoppable)


class OnePerProcess(Generic[T]):
    def __init__(self) -> None:
        self._started: T | None = None
        self._lock = threading.Lock()

    def start(self, build: Callable[[], T]) -> T:
        """The started object: `build()` (which starts it) on the first call only."""
        with self._lock:
            if self._started is None:
                self._started = build()
            return self._started

    def stop(self) -> None:
        started = self._started  # no lock: this runs inside a signal handler
        if started is not None:
            started.stop()
