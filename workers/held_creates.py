"""The sync creates this process holds open, watched for their batch's cancel.

While a sync create is held (`Prefer: wait=W`), its worker does not know the prediction's id, so
a cancel of its batch could only act when the answer came, up to W later: the prediction ran on
and was billed. Each held create is registered here for as long as its POST is open; one watcher
thread per process (started with the first) looks at the batch of each every WATCH_INTERVAL
through the process's CancelWatch (at most one Redis read per batch per second), and when the
batch is canceled hands the held create to its canceler (workers.held_cancel) on a thread of its
own, so one slow listing never delays the others' cancels.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from workers.attempts import AttemptRef

if TYPE_CHECKING:
    from workers.context import CancelWatch

log = logging.getLogger("workers.held_creates")

WATCH_INTERVAL = 0.5  # seconds between looks; CancelWatch reads each batch at most once a second


@dataclass(eq=False)
class HeldCreate:
    """One POST held open: what finding its prediction needs."""

    ref: AttemptRef
    model: str
    input: dict[str, Any]
    posting_at: float  # the last check's stamp (Unix seconds, Redis clock): the POST left after it
    cancel: Callable[[HeldCreate], None]  # finds the prediction and cancels it (workers.held_cancel)
    ended: threading.Event = field(default_factory=threading.Event)  # the POST has come back


class HeldCreates:
    def __init__(self, cancel_watch: CancelWatch, interval: float = WATCH_INTERVAL):
        self.cancel_watch = cancel_watch
        self.interval = interval
        self._held: set[HeldCreate] = set()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    @contextmanager
    def holding(self, held: HeldCreate) -> Iterator[None]:
        """Watched while the block (the POST) runs; `held.ended` is set when it leaves."""
        with self._lock:
            self._held.add(held)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._watch, name="held-creates", daemon=True)
                self._thread.start()
        self._wake.set()
        try:
            yield
        finally:
            held.ended.set()
            with self._lock:
                self._held.discard(held)

    def _watch(self) -> None:
        while True:
            with self._lock:
                held = list(self._held)
            if not held:
                self._wake.wait()  # nothing held: sleep until a create registers
                self._wake.clear()
                continue
            for entry in held:
                try:
                    canceled = self.cancel_watch.is_canceled(entry.ref.batch_id)
                except Exception as exc:  # noqa: BLE001 - keep watching the others
                    log.warning("cancel watch failed for %s: %s", entry.ref.marker, exc)
                    continue
                if canceled:
                    with self._lock:
                        self._held.discard(entry)  # acted on once; it answers `canceled` soon
                    threading.Thread(
                        target=entry.cancel, args=(entry,), name="held-cancel", daemon=True
                    ).start()
            self._wake.wait(self.interval)
            self._wake.clear()
