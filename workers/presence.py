"""Each worker process publishes its wait mode in Redis (shared.presence), every few seconds
from a daemon thread, for `producer limits`."""

from __future__ import annotations

import logging
import threading

from shared.presence import PUBLISH_EVERY, publish
from workers.context import WorkerContext

log = logging.getLogger("workers.presence")

_stop = threading.Event()
_started = threading.Lock()
_thread: threading.Thread | None = None


def start_presence(ctx: WorkerContext) -> None:
    """Start this process's publisher (once)."""
    global _thread
    with _started:
        if _thread is not None:
            return
        _thread = threading.Thread(target=_run, args=(ctx,), name="presence", daemon=True)
        _thread.start()


def stop_presence() -> None:
    _stop.set()  # no lock: this runs inside a signal handler


def _run(ctx: WorkerContext) -> None:
    while True:
        try:
            publish(ctx.redis, ctx.keys, ctx.settings)
        except Exception as exc:  # noqa: BLE001 - display only; must outlive any outage
            log.debug("wait mode not published: %s", exc)
        if _stop.wait(PUBLISH_EVERY):
            return
