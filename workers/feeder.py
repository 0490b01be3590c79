"""The feeder: moves held sends from the schedule (shared.scheduler) into the broker.

One worker process of the fleet feeds at a time: it holds `<prefix>:sched:feeder` (SET NX PX,
renewed every second), and any other process takes over within a few seconds of its death (the
others try again just after the lock would lapse, not every second). The
lock is for efficiency only, never for correctness: every take is one atomic script, so two
feeders at once (a stalled holder coming back) send nothing twice; they only fill the broker's
window twice over for a moment.

The feeder keeps the broker's queue at `FLEET_FEED_WINDOW` messages at most (8 by default): a
worker with a free thread takes a message within milliseconds, so a short queue keeps every
thread busy, and the messages it holds are the only ones a newly submitted batch has to wait
behind. It does not poll: it blocks on its wake list (`<prefix>:sched:wake`), which every push
(a submission, a follow-up) and every message a worker takes (workers.kombu_patches) nudges, with
a timeout at the next delayed send's due time (Redis time) and at most a second. The wait, the
take after it and (when due) the lock's renewal ahead of it go to Redis as one request: an idle
feeder costs one request a second.

A send the feeder took but never delivered (SIGKILL between the take and the broker) is not lost:
the take gave its item a sign of life, and the recovery sweep sends it again after
`quiet_after`. Every message sent is recorded on its item (`sent_tasks`, for `producer cancel`).
"""

from __future__ import annotations

import logging
import os
import random
import socket
import threading
import time
import uuid
from collections import defaultdict
from typing import TYPE_CHECKING, Any

import redis
from celery import Celery

from shared import lua_scripts
from shared.keys import Keys
from shared.ledger import Ledger
from shared.scheduler import Scheduler, Send, take_reply
from shared.settings import Settings
from shared.wakeup import blocking_client, run_forever
from workers.attempts import AttemptRef
from workers.dispatch import send_attempt
from workers.once import OnePerProcess

if TYPE_CHECKING:  # pragma: no cover
    from workers.context import WorkerContext

log = logging.getLogger("workers.feeder")

LOCK_SECONDS = 3.0  # a dead feeder is replaced within this (plus a few hundred ms)
RENEW_SECONDS = 1.0
IDLE_WAIT_SECONDS = 1.0  # the longest the feeder sleeps without a nudge
DEFAULT_WINDOW = 8


def feed_window(settings: Settings) -> int:
    return max(1, int(getattr(settings, "feed_window", None) or DEFAULT_WINDOW))


class Feeder:
    """One round: take what fits into the broker and send it."""

    def __init__(self, settings: Settings, redis_client: redis.Redis, app: Celery):
        self.settings = settings
        self.redis = redis_client
        self.app = app
        keys = Keys(settings.key_prefix)
        self.scheduler = Scheduler(redis_client, keys)
        self.ledger = Ledger(redis_client, keys)
        self.window = feed_window(settings)

    def feed_once(self) -> tuple[list[Send], float | None]:
        """Take and send the next sends. Returns (what was sent, seconds until the next delayed
        send is due or None)."""
        sends, next_due = self.scheduler.take(self.settings.queue, window=self.window)
        self.send(sends)
        return sends, next_due

    def send(self, sends: list[Send]) -> None:
        """Put sends the take removed from the schedule into the broker, recorded on their items."""
        if not sends:
            return
        sent: dict[str, tuple[list[int], list[str]]] = defaultdict(lambda: ([], []))
        with self.app.producer_or_acquire() as producer:
            for send in sends:
                ref = AttemptRef(send.batch_id, send.index, send.attempt)
                task_id = send_attempt(
                    self.app,
                    self.settings,
                    ref,
                    send.model,
                    prompt=send.prompt,
                    recheck=send.recheck,
                    priority=send.priority,
                    rank=send.rank,
                    producer=producer,
                )
                indexes, ids = sent[send.batch_id]
                indexes.append(send.index)
                ids.append(task_id)
        for batch_id, (indexes, ids) in sent.items():
            self.ledger.mark_enqueued(batch_id, indexes, task_ids=ids)


class FeederThread:
    """One daemon thread per worker process; the lock lets one of them feed at a time."""

    def __init__(self, feeder: Feeder):
        self.feeder = feeder
        # Who feeds, for `redis-cli GET <prefix>:sched:feeder` (and the tests that kill it).
        self.token = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._stop = threading.Event()
        self._listen = blocking_client(feeder.redis)
        self._renew = lua_scripts.register(feeder.redis, "workers.lua", ("feeder_renew",))["feeder_renew"]
        self._thread = threading.Thread(
            target=run_forever, args=(self._run, "feeder", self._stop), name="feeder", daemon=True
        )
        self.leading = False
        self.retry_in = RENEW_SECONDS  # while another process feeds: seconds to the next try

    def start(self) -> FeederThread:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def _renewed(self, held: bool) -> None:
        self.leading = held
        if not held:
            log.warning("lost the feeder lock; another worker feeds now")

    def _hold_lock(self) -> bool:
        lock = self.feeder.scheduler.feeder_lock
        ms = int(LOCK_SECONDS * 1000)
        if self.leading:
            self._renewed(bool(self._renew(keys=[lock], args=[self.token, ms])))
        if not self.leading:
            # The lock's remaining time comes with the attempt (one round trip): a process that
            # does not feed tries again just after the holder's lock would lapse, not every
            # second (the holder renews it every second, so that is ~2-3 s away), and a dead
            # holder is replaced within LOCK_SECONDS plus a few hundred ms.
            pipe = self.feeder.redis.pipeline(transaction=False)
            pipe.set(lock, self.token, nx=True, px=ms)
            pipe.pttl(lock)
            got, left_ms = pipe.execute()
            self.leading = bool(got)
            self.retry_in = min(max(int(left_ms), 0) / 1000, LOCK_SECONDS) + random.uniform(0.05, 0.25)
            if self.leading:
                log.info("this worker feeds the fleet now")
        return self.leading

    def _wait_and_take(self, wait: float, *, renew: bool) -> tuple[list[Send], float | None] | None:
        """Block on the wake list up to `wait` s, then take and send: one request (issue 16.4:
        an idle holder renewed its lock, took and waited in three requests a second; now one).
        With `renew`, the lock's renewal rides ahead of the block; its outcome is known when the
        block ends, soon enough for a lock that is for efficiency only. Returns the take (its
        sends already sent), or None when it must be called on its own (Redis restarted)."""
        scheduler = self.feeder.scheduler
        lock, ms = scheduler.feeder_lock, int(LOCK_SECONDS * 1000)
        pipe = self._listen.pipeline(transaction=False)
        if renew:
            pipe.evalsha(self._renew.sha, 1, lock, self.token, ms)
        pipe.blpop([scheduler.wake_key], timeout=wait)
        scheduler.take_in(pipe, self.feeder.settings.queue, window=self.feeder.window)
        replies = pipe.execute(raise_on_error=False)
        if renew:
            renewed = replies[0]
            if isinstance(renewed, redis.exceptions.NoScriptError):  # loaded by the normal call
                renewed = self._renew(keys=[lock], args=[self.token, ms])
            self._renewed(bool(_raised(renewed)))
        taken = replies[-1]
        if isinstance(taken, redis.exceptions.NoScriptError):
            return None
        sends, next_due = take_reply(_raised(taken))
        self.feeder.send(sends)
        return sends, next_due

    def _run(self) -> None:
        renew_at = 0.0
        taken: tuple[list[Send], float | None] | None = None  # the last wait's take, sent
        while not self._stop.is_set():
            try:
                if time.monotonic() >= renew_at or not self.leading:
                    if not self._hold_lock():
                        taken = None
                        self._stop.wait(self.retry_in)
                        continue
                    renew_at = time.monotonic() + RENEW_SECONDS
                sends, next_due = taken if taken is not None else self.feeder.feed_once()
                taken = None
                if len(sends) >= self.feeder.window:
                    continue  # the broker may have room again already
                wait = IDLE_WAIT_SECONDS if next_due is None else min(max(next_due, 0.001), IDLE_WAIT_SECONDS)
                began = time.monotonic()
                renew = began + wait >= renew_at  # the renewal falls due during this wait
                taken = self._wait_and_take(wait, renew=renew)
                if renew:  # renewed as the wait began; next due after this wait (<= 1 s) at the latest
                    renew_at = began + wait + 0.05
            except Exception as exc:  # noqa: BLE001 - the feeder must outlive any outage
                taken = None
                log.warning("feeder round failed: %s", exc)
                self._stop.wait(0.5)


def _raised(reply: Any) -> Any:
    """A pipeline's reply, or the error it carries raised."""
    if isinstance(reply, Exception):
        raise reply
    return reply


_feeder: OnePerProcess[FeederThread] = OnePerProcess()


def start_feeder(ctx: WorkerContext, app: Celery) -> FeederThread:
    """Start this process's feeder thread (once)."""
    return _feeder.start(lambda: FeederThread(Feeder(ctx.settings, ctx.redis, app)).start())


def stop_feeder() -> None:
    _feeder.stop()
