"""Following a batch until it ends: the progress reporter fed from the ledger, and a watch
that reports a fleet with no worker instead of waiting on it forever."""

from __future__ import annotations

import concurrent.futures
import time
from typing import TYPE_CHECKING, Any

from producer.api.connections import close_quietly, limiter_or_none, safe_status
from producer.progress import Reporter, Snapshot, make_reporter, snapshot_from_info
from shared.errors import InputError, NoWorkerError, Problem
from shared.settings import Settings

if TYPE_CHECKING:
    from producer.api.batch import Batch

# How long `wait` gives workers to answer a ping, and how long without any progress before it
# asks again (a fleet that died mid-batch is reported instead of waited on forever).
WORKER_PING_SECONDS = 2.0
WORKER_RECHECK_SECONDS = 30.0


def wait_for(
    batch: Batch,
    progress: Any = None,
    timeout: float | None = None,
    *,
    poll_interval: float = 1.0,
    check_workers: bool = True,
    interval: float = 10.0,
) -> Snapshot:
    """Block until every item is terminal, or all that is left is held by a spending limit
    (`.stalled_on_budget`), or `timeout` seconds passed (check `.finished` on the returned
    snapshot). `progress`: see producer.progress.make_reporter.

    Raises NoWorkerError within a few seconds when unfinished work has no worker consuming
    the queue. Ctrl-C (KeyboardInterrupt) propagates; the batch keeps running either way.
    """
    reporter: Reporter | None = make_reporter(progress, interval=interval)
    ledger = batch.ledger
    limiter = limiter_or_none(batch.settings)
    deadline = None if timeout is None else time.monotonic() + timeout
    pinger: _WorkerWatch | None = None  # started only if there is something left to wait for
    snap: Snapshot | None = None
    try:
        last_done, last_change = -1, time.monotonic()
        while True:
            snap = snapshot_from_info(_batch_info(ledger, batch.id), limiter_status=safe_status(limiter))
            if reporter is not None:
                reporter.update(snap)
            if snap.finished or snap.stalled_on_budget:
                break
            if pinger is None:
                pinger = _WorkerWatch(batch.settings, enabled=check_workers)
            now = time.monotonic()
            if snap.done != last_done:
                last_done, last_change = snap.done, now
            pinger.poll(stalled_for=now - last_change, batch_id=batch.id)
            if deadline is not None and now >= deadline:
                break
            time.sleep(poll_interval if deadline is None else max(min(poll_interval, deadline - now), 0))
    finally:
        if pinger is not None:
            pinger.close()
        if reporter is not None:
            reporter.close(snap)
        if limiter is not None:
            close_quietly(limiter)
    return snap


def _batch_info(ledger, batch_id: str):
    info = ledger.batch(batch_id)
    if info is None:
        raise InputError(Problem(f"no batch {batch_id!r}", field="BATCH"))
    return info


class _WorkerWatch:
    """Asks Celery in the background whether any worker consumes the queue: at the start, and
    again whenever the batch has made no progress for WORKER_RECHECK_SECONDS."""

    def __init__(self, settings: Settings, *, enabled: bool):
        self.settings = settings
        self.enabled = enabled
        self._pool = (
            concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="worker-ping") if enabled else None
        )
        self._future = self._ping()
        self._last_ping = time.monotonic()

    def _ping(self) -> concurrent.futures.Future[list[str]] | None:
        from workers.dispatch import workers_alive

        if self._pool is None:  # not enabled
            return None
        return self._pool.submit(workers_alive, self.settings, WORKER_PING_SECONDS)

    def poll(self, *, stalled_for: float, batch_id: str) -> None:
        if not self.enabled:
            return
        if self._future is not None and self._future.done():
            names = self._future.result()
            self._future = None
            if not names:
                raise NoWorkerError(
                    f"no worker is consuming queue {self.settings.queue!r}; batch {batch_id} is recorded "
                    f"and queued. Start one (celery -A workers worker -Q {self.settings.queue}), "
                    f"then run: producer wait {batch_id}"
                )
        if (
            self._future is None
            and stalled_for >= WORKER_RECHECK_SECONDS
            and time.monotonic() - self._last_ping >= WORKER_RECHECK_SECONDS
        ):
            self._future = self._ping()
            self._last_ping = time.monotonic()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
