"""The recovery sweep: no image is lost silently.

A task message can vanish without any worker seeing it fail: kombu's Redis transport moves a
message from the queue to its unacked set in two steps (a worker SIGKILLed in between loses it),
a Redis restart without persistence drops the queue, and a producer can die between recording a
batch and enqueueing it. The item then stays `pending` (or `running` with a dead claim) forever.

So one worker at a time (a Redis lock, taken at most once per interval fleet-wide) looks at the
unfinished batches' items that show no sign of life for `quiet_after(settings)` seconds: no
state change, no message sent or due, no live claim (a running or slot-waiting run holds one,
renewed by its process), no message for that attempt waiting in the queue. Each such item is
sent again with its current attempt and model through the normal send path (held in the
schedule, shared.scheduler, like every send). An item whose send the schedule holds is PARKED
in the live zset, so the sweep never reads it: only a send the feeder took and never delivered
(it was killed in between) shows up as quiet. A duplicate is
harmless: the claim lets one run at a time own the attempt, and the creation record makes a
second run resume (or reconcile) the recorded prediction instead of creating another.

The same sweep writes the manifests of finished batches whose last worker died before writing
them, and forgets finished batches older than FLEET_BATCH_RETENTION_DAYS (30 by default), so
Redis does not grow for ever; the manifest written next to the outputs stays. More often (every
sixth of a lease) one worker checks the predictions whose worker died while they ran, and frees
the slots of those that have ended (with webhooks, the receiver frees them even sooner).

Each worker's sweeper thread also prunes this host's spool (workers.spool) when it starts and
every hour: downloaded outputs older than a day, unless their item is still unfinished (its
write may be retried, and its output URL may have expired). Never on an attempt's path.

Cheap by construction: finished batches are skipped on their counters, and only the stale end of
each batch's `live` zset (shared.ledger) is read, so a sweep touches the suspicious items only.
"""

from __future__ import annotations

import base64
import json
import logging
import random
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import redis
from celery import Celery

from shared.budget import Budget
from shared.keys import Keys
from shared.ledger import TERMINAL, Ledger
from shared.limiter import Limiter
from shared.scheduler import Scheduler
from shared.scheduler.schedule import sends_of
from shared.settings import Settings
from workers.attempts import AttemptRef, CreationRecords
from workers.once import OnePerProcess
from workers.replicate_calls import ReplicateCalls
from workers.spool import Spool

if TYPE_CHECKING:  # pragma: no cover
    from workers.context import WorkerContext

log = logging.getLogger("workers.recovery")

MIN_QUIET_SECONDS = 5.0
CANDIDATES_PER_BATCH = 2000  # per sweep; the rest waits for the next one
QUEUE_SCAN_CHUNK = 1000
PRIORITY_SEPARATOR = "\x06\x16"  # kombu's Redis transport: queue name + sep + priority
SPOOL_PRUNE_INTERVAL = 3600.0  # files live a day: an hour late is nothing


def quiet_after(settings: Settings) -> float:
    """How long an item may show no sign of life before it is sent again: two lease lengths
    (a dead run's claim and slot have surely expired by then), 60 s with the defaults."""
    return max(2.0 * float(settings.lease_seconds), MIN_QUIET_SECONDS)


def sweep_interval(settings: Settings) -> float:
    return max(1.0, quiet_after(settings) / 2.0)


def orphan_check_interval(settings: Settings) -> float:
    """How often the fleet checks the predictions of dead workers' slots: a sixth of a lease (5 s
    by default). Each orphan costs one read; there are none unless a worker died."""
    return max(1.0, float(settings.lease_seconds) / 6.0)


@dataclass
class SweepReport:
    batches: int = 0  # unfinished batches looked at
    quiet: int = 0  # items without a sign of life in the ledger
    alive: int = 0  # of those, found claimed or queued
    resent: list[AttemptRef] = field(default_factory=list)
    pruned: list[str] = field(default_factory=list)  # finished batches past FLEET_BATCH_RETENTION_DAYS
    manifests: list[str] = field(default_factory=list)  # finished batches whose manifest it wrote
    woken: int = 0  # held items sent again: their spending limit has room now
    failed: list[str] = field(default_factory=list)  # batches a part of the sweep failed on (logged)


class Sweeper:
    """`limiter` and `calls` let the sweep also free the slots that dead workers left counted
    for predictions that have ended since (see settle_orphans)."""

    def __init__(
        self,
        settings: Settings,
        redis_client: redis.Redis,
        app: Celery,
        *,
        quiet: float | None = None,
        limiter: Limiter | None = None,
        calls: ReplicateCalls | None = None,
        spool: Spool | None = None,
    ):
        self.settings = settings
        self.redis = redis_client
        self.keys = Keys(settings.key_prefix)
        self.ledger = Ledger(redis_client, self.keys, store_environ=settings.store_environ())
        self.creations = CreationRecords(redis_client, self.keys)
        self.scheduler = Scheduler(redis_client, self.keys)
        self.budget = Budget.from_settings(redis_client, settings)
        self.app = app
        self.limiter = limiter
        self.calls = calls
        self.quiet = quiet_after(settings) if quiet is None else quiet
        self.interval = sweep_interval(settings)
        self.orphan_interval = orphan_check_interval(settings)
        self.spool = spool or Spool()

    def try_sweep(self) -> SweepReport | None:
        """Sweep unless another worker did within the interval (the lock is left to expire, so
        the fleet sweeps at most once per interval whatever its size)."""
        token = uuid.uuid4().hex
        if not self.redis.set(self.keys.sweeper_lock, token, nx=True, px=int(self.interval * 1000)):
            return None
        return self.sweep()

    def try_settle_orphans(self) -> list[str] | None:
        """settle_orphans, by one worker per orphan_interval fleet-wide (None: another did)."""
        if self.limiter is None or self.calls is None:
            return None
        if not self.redis.set(
            self.keys.sweeper_lock + ":orphans", "1", nx=True, px=int(self.orphan_interval * 1000)
        ):
            return None
        return self.settle_orphans()

    def prune_spool(self) -> int:
        """This host's spool without the files no attempt awaits any more (see workers.spool);
        how many were removed. Every worker prunes its own host: no fleet-wide lock."""
        removed = self.spool.prune(self._output_awaited)
        if removed:
            log.info(
                "spool: removed %s downloaded output(s) older than a day, no longer awaited", len(removed)
            )
        return len(removed)

    def _output_awaited(self, prediction_id: str) -> bool:
        """Whether the attempt that owns `prediction_id` is still its item's current one, the item
        unfinished: a write of its outputs may still be tried (`producer retry` hands the
        prediction to the new attempt, which counts). A prediction nobody owns any more, of an
        attempt the item has moved past, or whose item or batch is gone, is not awaited."""
        marker = self.redis.get(self.keys.prediction_owner(prediction_id))
        if marker is None:
            return False
        try:
            ref = AttemptRef.from_marker(str(marker))
        except ValueError:
            return False
        item = self.ledger.item(ref.batch_id, ref.index)
        return item is not None and item.status not in TERMINAL and item.attempt == ref.attempt

    def sweep(self) -> SweepReport:
        report = SweepReport()
        sec, usec = self.redis.time()
        now = sec + usec / 1e6
        retention = self.settings.batch_retention_days * 86400
        if retention > 0:
            report.pruned = self.ledger.prune_finished(now - retention)
            for batch_id in report.pruned:
                self.budget.forget_batch(batch_id)
        report.woken = self.wake_held()
        for batch_id in self.ledger.staged_batches():  # recorded, but its producer died before
            try:  # its items stopped expiring
                self.ledger.persist_staged(batch_id)
            except Exception as exc:  # noqa: BLE001 - one batch must never stop the sweep for the others
                if _redis_down(exc):
                    raise
                report.failed.append(batch_id)
                log.exception("recovery sweep: the items of batch %s not persisted (%s)", batch_id, exc)
        unfinished, no_manifest = self.ledger.batches_to_look_after()
        for batch_id in no_manifest:  # the worker that finished it died first, or lost the reply
            if self._write_manifest(batch_id):
                report.manifests.append(batch_id)
            else:
                report.failed.append(batch_id)
        cutoff = now - self.quiet
        suspects: list[tuple[AttemptRef, str]] = []  # (attempt, model)
        for batch_id in unfinished:
            report.batches += 1
            try:
                suspects += self._quiet_suspects(batch_id, cutoff, now, report)
            except Exception as exc:  # noqa: BLE001 - one batch must never stop the sweep for the others
                if _redis_down(exc):
                    raise
                report.failed.append(batch_id)
                log.exception("recovery sweep: batch %s skipped (%s); the other batches go on", batch_id, exc)
        if not suspects:
            return report
        queued = self._queued_attempts()
        from workers.dispatch import schedule_attempt

        for ref, model in suspects:
            try:
                if ref in queued:
                    self.ledger.touch(ref.batch_id, [ref.index], now)
                    report.alive += 1
                    continue
                log.warning(
                    "item %s of batch %s (attempt %s, %s) showed no sign of life for %.0f s; sending it again",
                    ref.index,
                    ref.batch_id,
                    ref.attempt,
                    model,
                    self.quiet,
                )
                schedule_attempt(self.scheduler, ref, model, prompt=self._prompt(ref))
                report.resent.append(ref)
            except Exception as exc:  # noqa: BLE001 - one item must never stop the sweep for the others
                if _redis_down(exc):
                    raise
                report.failed.append(ref.batch_id)
                log.exception(
                    "recovery sweep: item %s of batch %s not sent again (%s)", ref.index, ref.batch_id, exc
                )
        return report

    def _quiet_suspects(
        self, batch_id: str, cutoff: float, now: float, report: SweepReport
    ) -> list[tuple[AttemptRef, str]]:
        """The items of one unfinished batch quiet since `cutoff` that no live run claims:
        (attempt, model) to send again unless a message for them waits in the queue."""
        indexes = self.ledger.quiet_items(batch_id, cutoff, limit=CANDIDATES_PER_BATCH)
        if not indexes:
            return []
        report.quiet += len(indexes)
        states = self.ledger.item_states(batch_id, indexes)
        done = [i for i in indexes if i not in states or states[i][0] in TERMINAL]
        self.ledger.forget_live(batch_id, done)  # cannot happen through the scripts; self-heal
        open_ = [
            (AttemptRef(batch_id, i, states[i][1]), states[i][2])
            for i in indexes
            if i in states and states[i][0] not in TERMINAL
        ]
        pipe = self.redis.pipeline(transaction=False)
        for ref, _model in open_:
            pipe.exists(ref.claim_key(self.keys))
        claimed = [bool(n) for n in pipe.execute()] if open_ else []
        alive = [ref.index for (ref, _), held in zip(open_, claimed) if held]
        self.ledger.touch(batch_id, alive, now)
        report.alive += len(alive)
        return [suspect for suspect, held in zip(open_, claimed) if not held]

    def wake_held(self) -> int:
        """Items held by a spending limit that fit the room left now (a limit raised, the UTC
        day turned, reservations given back) are sent again. Returns how many."""
        woken = 0
        for batch_id, indexes in self.budget.wake().items():
            try:
                states = self.ledger.item_states(batch_id, indexes)
                woken += self.scheduler.push(batch_id, sends_of(states, indexes))
            except Exception as exc:  # noqa: BLE001 - one batch must never stop the sweep for the others
                if _redis_down(exc):
                    raise
                log.exception("recovery sweep: held items of batch %s not woken (%s)", batch_id, exc)
        return woken

    def _queued_attempts(self) -> set[AttemptRef]:
        """The attempt of every message waiting in this fleet's queue (read in chunks, only when
        there are suspects)."""
        found: set[AttemptRef] = set()
        names = [self.settings.queue] + [
            f"{self.settings.queue}{PRIORITY_SEPARATOR}{p}" for p in range(1, 10)
        ]
        # (every priority list kombu could use, also those the feeder never fills)
        for name in names:
            start = 0
            while True:
                chunk = self.redis.lrange(name, start, start + QUEUE_SCAN_CHUNK - 1)
                if not chunk:
                    break
                for raw in chunk:
                    parsed = task_arguments(raw)
                    if parsed is not None:
                        found.add(parsed)
                if len(chunk) < QUEUE_SCAN_CHUNK:
                    break
                start += QUEUE_SCAN_CHUNK
        return found

    def settle_orphans(self) -> list[str]:
        """A worker that died while its predictions ran leaves their slots counted (they still
        run at Replicate). The attempts are sent again and their new runs adopt the slots; but
        when every thread of the fleet is busy waiting for a slot, nobody would run them. So the
        sweep looks at each orphaned prediction (one read each) and frees the slots of those
        that have ended.

        A slot orphaned by a creator that died before recording its prediction id (marked with its
        attempt by the creation token) is judged by the attempt's creation record: the prediction
        it has recorded since, like any other; or, when no POST was sent (no `posting_at`) and no
        live run holds the attempt's claim, nothing can be created any more for it (a POST needs
        that claim, checked atomically with the `posting_at` stamp), so the slot is freed now.
        A POST that may have been sent is left to the attempt's own reconciliation, which adopts
        or frees the slot. Returns what was freed (prediction ids and attempt markers)."""
        if self.limiter is None or self.calls is None:
            return []
        settled = []
        for holder in self.limiter.status().holders:
            if not holder.orphaned:
                continue
            prediction_id = holder.prediction_id
            if not prediction_id and holder.attempt:  # the attempt's marker, set by its creation token
                prediction_id, nothing_sent = self._creation_state(holder.attempt)
                if not prediction_id:
                    if nothing_sent and self.limiter.settle(attempt=holder.attempt, orphaned_only=True):
                        log.warning(
                            "freed the slot a dead worker left for attempt %s (no creation was sent)",
                            holder.attempt,
                        )
                        settled.append(holder.attempt)
                    continue
            if not prediction_id:
                continue
            try:
                self.limiter.take_read_token(timeout=5.0)
                ended = self.calls.get(prediction_id).terminal
            except Exception as exc:  # noqa: BLE001 - next sweep; the slot is never freed wrongly
                log.info("orphaned prediction %s not checked: %s", prediction_id, exc)
                continue
            if ended and self.limiter.settle(prediction_id, attempt=holder.attempt, orphaned_only=True):
                log.warning(
                    "freed the slot a dead worker left for prediction %s (it has ended)", prediction_id
                )
                settled.append(prediction_id)
        return settled

    def _creation_state(self, marker: str) -> tuple[str | None, bool]:
        """For the attempt an orphaned slot's marker names: (the prediction it recorded, whether
        no creation was sent and none can be any more: no `posting_at`, no live claim)."""
        try:
            ref = AttemptRef.from_marker(str(marker))
            record = self.creations.get(ref)
            claimed = self.redis.exists(ref.claim_key(self.keys))
        except (ValueError, redis.RedisError) as exc:
            log.info("orphaned slot of attempt %s not checked: %s", marker, exc)
            return None, False
        if record.prediction_id:
            return record.prediction_id, False
        sent = record.posting_at is not None or (record.intent_at is not None and not record.posting_marked)
        return None, not sent and not claimed

    def _write_manifest(self, batch_id: str) -> bool:
        try:
            # in the batch's own output location (recorded at submit); this worker's OUTPUT_DIR
            # only for batches recorded without one
            info = self.ledger.batch(batch_id)
            path = self.ledger.write_manifest(
                batch_id, (info.output_root if info else "") or self.settings.output_dir
            )
            log.info("wrote the missing manifest of batch %s: %s", batch_id, path)
            return True
        except Exception as exc:  # noqa: BLE001 - one batch must never stop the sweep for the others
            if _redis_down(exc):
                raise
            log.error("manifest of batch %s cannot be written: %s", batch_id, exc)
            return False

    def _prompt(self, ref: AttemptRef) -> str:
        try:
            return self.ledger.request(ref.batch_id, ref.index).prompt
        except (KeyError, ValueError, TypeError, redis.RedisError):  # the prompt only names the task
            return ""


def _redis_down(exc: BaseException) -> bool:
    """Redis itself is unreachable: the whole sweep stops (the next one tries again)."""
    return isinstance(exc, (redis.ConnectionError, redis.TimeoutError))


def task_arguments(raw: str | bytes) -> AttemptRef | None:
    """The attempt one kombu message of our task runs, None for anything else."""
    try:
        message = json.loads(raw)
        body = message["body"]
        if message.get("properties", {}).get("body_encoding") == "base64":
            body = base64.b64decode(body)
        args = json.loads(body)[0]
        return AttemptRef(str(args[0]), int(args[1]), int(args[2]))
    except (ValueError, KeyError, IndexError, TypeError):
        return None


class SweeperThread:
    """One daemon thread per worker process; the lock makes one of them sweep per interval."""

    def __init__(self, sweeper: Sweeper):
        self.sweeper = sweeper
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="recovery-sweeper", daemon=True)

    def start(self) -> SweeperThread:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        sweeper = self.sweeper
        next_sweep = time.monotonic() + sweeper.interval * random.uniform(0.5, 1.0)
        next_prune = time.monotonic()  # at start, then hourly
        while not self._stop.wait(sweeper.orphan_interval * random.uniform(0.8, 1.0)):
            if time.monotonic() >= next_prune:
                next_prune = time.monotonic() + SPOOL_PRUNE_INTERVAL
                try:
                    sweeper.prune_spool()
                except Exception as exc:  # noqa: BLE001 - kept until the next prune
                    log.warning("spool not pruned: %s", exc)
            try:
                sweeper.try_settle_orphans()
                if time.monotonic() < next_sweep:
                    continue
                next_sweep = time.monotonic() + sweeper.interval * random.uniform(0.5, 1.0)
                report = sweeper.try_sweep()
            except Exception as exc:  # noqa: BLE001 - the sweeper must outlive any outage
                log.warning("recovery sweep failed: %s", exc)
                continue
            if report is not None and report.resent:
                log.warning("recovery sweep sent %s item(s) again", len(report.resent))


_sweeper: OnePerProcess[SweeperThread] = OnePerProcess()


def start_sweeper(ctx: WorkerContext, app: Celery) -> SweeperThread:
    """Start this process's sweeper thread (once), with the process's WorkerContext."""
    return _sweeper.start(
        lambda: SweeperThread(
            Sweeper(ctx.settings, ctx.redis, app, limiter=ctx.limiter, calls=ctx.calls)
        ).start()
    )


def stop_sweeper() -> None:
    _sweeper.stop()
