"""One attempt of one image, end to end: the decisions of "One image, end to end" and "Cost safety".

`Pipeline(ctx).run(job)` runs the attempt `job.attempt` of item `job.index` with the item's
current model and returns the task to enqueue next (None when the item needs nothing more):

    ledger check -> claim (batch, item, attempt) -> item running
    -> the attempt record: resume its prediction / reconcile an unresolved create / create
    -> slot (FIFO, bounded wait) -> intent -> creation token
    -> one script: claim still ours, batch not canceled, `posting_at` stamped -> POST
    -> prediction id recorded -> its end: the webhook, or polls paced on the read budget
    -> slot released at once
    -> download every output (no token, timeouts, byte cap, atomic) -> item succeeded

Failures become the next task: TransientError -> a new attempt on the same model (backoff with
jitter, honouring retry_after, bounded); PermanentModelError -> a new attempt on the next model
of the route; LocalError -> the item fails (never a paid fallback); no route left -> failed, or
`substituted` with the black placeholder when the batch asked for it. Work that must continue
with the SAME attempt (a prediction already exists, or may exist) is re-enqueued with the same
attempt number, so it resumes or reconciles instead of paying again.

Redis unavailability is not a failure of the attempt: it escapes `run` (the claim is kept for the
re-run) and the task layer (workers.tasks) waits for Redis and runs the attempt again from the top.
"""
from __future__ import annotations

import logging
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, TypeVar

import redis

from shared.errors import (AcquireTimeoutError, CanceledError, InputError, LocalError, PermanentModelError,
                           TransientError)
from shared.ledger import TERMINAL
from shared.request import ImageRequest
from workers.claims import Claim
from workers.context import WorkerContext, claim_ttl, shutting_down
from workers.download import extension_of, output_urls
from workers.outage import is_redis_unavailable
from workers.replicate_calls import (PredictionView, failure_error, is_ambiguous, post_in_flight_limit,
                                     same_input)
from workers.storage import output_paths, write_substitute

try:
    from shared.logging_setup import bind_log_context, log_context
except ImportError:  # pragma: no cover
    from contextlib import nullcontext as log_context  # type: ignore[assignment]

    def bind_log_context(**_fields: Any) -> None:  # type: ignore[misc]
        pass

log = logging.getLogger("workers.pipeline")
T = TypeVar("T")

RECONCILE_SKEW = 300.0  # seconds of clock difference tolerated between Redis and Replicate
RECONCILE_MAX_PAGES = 500  # one reconciliation reads at most this many pages (of 100 predictions)
MAX_POLL_INTERVAL = 5.0
MIN_POLL_INTERVAL = 0.1
POLL_SHARE = 0.8  # of the account's read budget that polling may use when every slot polls
FIRST_POLL_FRACTION = 0.7  # of the model's usual duration: most predictions take longer
SAFETY_POLL_INTERVAL = 30.0  # with webhooks: polls only catch a lost delivery
LATENCY_SMOOTHING = 0.2


@dataclass(frozen=True)
class Job:
    batch_id: str
    index: int
    attempt: int
    model: str
    task_id: str | None = None
    recheck: int = 0  # how many times this task found the attempt claimed by a live execution


@dataclass(frozen=True)
class NextTask:
    """What the task layer enqueues after this one."""

    attempt: int
    model: str
    countdown: float = 0.0
    recheck: int = 0
    prompt: str = ""


class Requeue(Exception):
    """Control flow, not an error: run this same attempt again later (it resumes its prediction or
    reconciles its unresolved create). `counted` re-runs are bounded by max_transient_retries."""

    def __init__(self, reason: str, *, countdown: float = 0.0, counted: bool = True):
        super().__init__(reason)
        self.reason = reason
        self.countdown = countdown
        self.counted = counted


class Superseded(Exception):
    """Control flow: another execution owns this attempt now; this one stops without a trace."""


class Pipeline:
    def __init__(self, ctx: WorkerContext):
        self.ctx = ctx
        self._claim: Claim | None = None  # this execution's claim on the attempt, set by run()
        s = ctx.settings
        vis = float(s.visibility_timeout)
        # Every wait inside one delivery stays far below the broker's visibility timeout, which
        # counts from delivery: countdowns (ETA messages sit unacked in a worker) and slot waits.
        self.countdown_cap = max(0.5, min(vis * 0.2, 300.0))
        self.slot_wait = max(1.0, min(vis * 0.3, 600.0))
        self.recheck_interval = max(0.5, min(claim_ttl(s) / 2, self.countdown_cap))
        self.max_rechecks = int((s.prediction_timeout + 2 * claim_ttl(s)) / self.recheck_interval) + 3

    # --- entry ----------------------------------------------------------------------------------
    def run(self, job: Job) -> NextTask | None:
        with log_context(batch=job.batch_id, item=job.index, attempt=job.attempt, model=job.model,
                         task_id=job.task_id):
            return self._run(job)

    def _run(self, job: Job) -> NextTask | None:
        ctx, b, i, n = self.ctx, job.batch_id, job.index, job.attempt
        state = ctx.ledger.item_states(b, [i]).get(i)
        if state is None:
            log.warning("no such item in the ledger; nothing to do")
            return None
        status, current, model = state
        if status in TERMINAL:
            return None
        if n < current:
            if status == "pending" and n == current - 1:
                # This attempt ended but its follow-up may never have been sent (killed between
                # the ledger update and the send). Sending it again is safe: the claim and the
                # attempt record make a duplicate task a no-op. It keeps the follow-up's due time
                # (backoff, retry_after): only the time left until then.
                return NextTask(current, model, countdown=self._due_in(b, i), prompt=self._prompt(b, i))
            return None
        if n > current:
            log.error("attempt %s is ahead of the ledger's %s; ignored", n, current)
            return None
        if shutting_down():
            # Delivered while this worker stops: hand it back untouched for another worker.
            return NextTask(n, model, prompt=self._prompt(b, i))
        claim = self._take_claim(ctx.keys.claim(b, i, n))
        if claim is None:
            # Another live execution has this attempt (a redelivered duplicate): do not run it
            # twice, but do not drop it either, in case that execution dies after our ack.
            if job.recheck >= self.max_rechecks:
                log.error("attempt still claimed after %s checks; leaving it to its holder", job.recheck)
                return None
            return NextTask(n, model, countdown=self.recheck_interval, recheck=job.recheck + 1,
                            prompt=self._prompt(b, i))
        self._claim = claim
        keep = False
        try:
            return self._run_claimed(job, model)
        except Exception as exc:
            # Redis went away mid-attempt: the task runs it again once Redis answers, and this
            # claim (still renewed by the keeper) is taken back then instead of being given up.
            keep = is_redis_unavailable(exc)
            raise
        finally:
            if not keep:
                self._claim = None
                claim.release()

    def _take_claim(self, key: str) -> Claim | None:
        """This execution's claim: the one kept from a run that a Redis outage interrupted (taken
        back if nobody else holds it), else a new one."""
        kept = self._claim
        if kept is not None:
            if kept.key == key:
                claim = self.ctx.claims.reassert(kept)  # a Redis error leaves it kept (or dropped)
                self._claim = None
                return claim
            self._claim = None
            kept.release()
        return self.ctx.claims.try_claim(key)

    def drop_kept_claim(self) -> None:
        """Give up a claim kept for a re-run that will not happen (best effort: it expires)."""
        kept, self._claim = self._claim, None
        if kept is not None:
            kept.release()

    def _due_in(self, batch_id: str, index: int) -> float:
        """Seconds until the item's last sent message is due: its score in the batch's live zset
        (send time + countdown, shared.ledger), against Redis's clock; 0 if already due."""
        pipe = self.ctx.redis.pipeline(transaction=False)
        pipe.zscore(self.ctx.keys.batch_live(batch_id), str(index))
        pipe.time()
        due, (sec, usec) = pipe.execute()
        if due is None:
            return 0.0
        return round(min(max(float(due) - (sec + usec / 1e6), 0.0), self.countdown_cap), 3)

    def _run_claimed(self, job: Job, model: str) -> NextTask | None:
        ctx, b, i, n = self.ctx, job.batch_id, job.index, job.attempt
        if ctx.ledger.is_canceled(b):
            self._cancel_recorded_prediction(job)
            self._finish(job, "canceled", model, error="batch canceled", att_status="canceled")
            self._metric("prediction", model, "canceled")
            return None
        t = ctx.ledger.transition(b, i, "running", allowed_from=("pending", "running"), expect_attempt=n,
                                  fields={"task_id": job.task_id or ""}, attempt=n,
                                  attempt_update={"model": model, "status": "running"})
        if not t.changed:
            return None
        request = ctx.ledger.request(b, i)
        try:
            outputs, prediction_id = self._attempt(job, request, model)
        except Requeue as again:
            return self._requeue_same(job, request, model, again)
        except Superseded as exc:
            log.warning("%s; stopping this execution", exc)
            return None
        except CanceledError as exc:
            self._cancel_recorded_prediction(job)  # whatever stage noticed the cancel
            self._finish(job, "canceled", model, error=str(exc), att_status="canceled")
            self._metric("prediction", model, "canceled")
            return None
        except TransientError as exc:
            return self._after_transient(job, request, model, exc)
        except PermanentModelError as exc:
            return self._after_permanent(job, request, model, exc)
        except LocalError as exc:
            self._finish(job, "failed", model, error=str(exc), att_status="failed", kind="local")
            self._metric("prediction", model, "failed")
            return None
        except Exception as exc:  # noqa: BLE001 - a bug or an unknown failure: resume, bounded
            if is_redis_unavailable(exc):
                raise  # not the attempt's failure: the task waits for Redis and runs it again
            log.exception("unexpected error in attempt")
            return self._requeue_same(job, request, model,
                                      Requeue(f"unexpected {type(exc).__name__}: {str(exc)[:200]}",
                                              countdown=self._backoff(0)))
        self._finish(job, "succeeded", model, outputs=outputs, att_status="succeeded",
                     prediction_id=prediction_id)
        self._metric("prediction", model, "succeeded", self._price(model, request))
        return None

    # --- the attempt ----------------------------------------------------------------------------
    def _attempt(self, job: Job, request: ImageRequest, model: str) -> tuple[list[str], str]:
        ctx, b, i, n = self.ctx, job.batch_id, job.index, job.attempt
        try:
            spec = ctx.registry.get(model)
        except InputError as exc:
            raise LocalError(f"this worker's model registry does not know {model}: {exc}") from None
        record = ctx.attempts.get(b, i, n)
        prediction_id = record.prediction_id
        if prediction_id:
            bind_log_context(prediction=prediction_id)
            log.info("resuming prediction %s (no new creation)", prediction_id)
            self._metric("resumed", model)
            view = self._read(job, lambda: ctx.calls.get(prediction_id))
            if view.terminal:
                self._settle(job, prediction_id)  # a slot its dead holder left counted is free now
            else:
                view = self._run_with_slot(job, model, spec, prediction_id, None)
        else:
            input_ = self._build_input(job, request, model)
            if record.intent_at is not None:
                prediction_id = self._reconcile(job, model, input_, record)
                if prediction_id is None:
                    # Nothing was created: the slot a dead or cut-off creator left counted for this
                    # attempt (its creation token marked it) is free; this run queues afresh.
                    self._settle(job)
            view = self._run_with_slot(job, model, spec, prediction_id, input_)
        return self._conclude(job, request, model, spec, view), view.id

    def _run_with_slot(self, job: Job, model: str, spec: Any, prediction_id: str | None,
                       input_: dict[str, Any] | None) -> PredictionView:
        """Hold a slot exactly while the prediction is in flight (released before downloading)."""
        lease = self._acquire_slot(job, model, prediction_id)
        try:
            if prediction_id is None:
                prediction_id = self._create(job, model, input_ or {}, lease).id
                created_here = True
            else:
                created_here = False
            # Timed from the prediction's creation, never from before the creation token: in a
            # rate-bound batch that wait is most of a window and would push the first poll late.
            created_at = time.monotonic()
            try:
                lease.set_prediction(prediction_id)
            except Exception as exc:  # noqa: BLE001 - status display only
                log.debug("could not show the prediction on the lease: %s", exc)
            view = self._wait(job, prediction_id, lease, model, spec)
            if created_here and view.status == "succeeded":
                self._record_latency(model, time.monotonic() - created_at)
            return view
        finally:
            lease.release()

    def _acquire_slot(self, job: Job, model: str, prediction_id: str | None = None):
        """A slot for the prediction about to be created, or for the running one being resumed:
        the slot its dead holder left counted is taken over at once (no second slot, no queueing
        behind new work while it runs); otherwise the FIFO line like everyone."""
        from shared.limiter import HolderInfo

        ctx = self.ctx
        info = HolderInfo(task_id=job.task_id, batch_id=job.batch_id, index=job.index, model=model)
        began = time.monotonic()
        try:
            if prediction_id is not None:
                adopted = ctx.limiter.adopt(info, prediction_id, attempt=self._marker(job))
                if adopted is not None:
                    self._metric("handoff", adopted.handoff_seconds)
                    return adopted
            lease = ctx.limiter.acquire(info, timeout=self.slot_wait, should_stop=self._stopper(job))
        except AcquireTimeoutError:
            self._stop_if_canceled_or_shutting_down(job.batch_id, fresh=True)
            # Waiting longer would risk the broker redelivering this message to another worker.
            raise Requeue(f"no slot within {self.slot_wait:g} s; back in the queue", counted=False) from None
        # RedisUnavailableError escapes: the task waits for Redis and runs the attempt again (it
        # must not count as a try: enough of them would fail an unresolved create).
        self._metric("slot_wait", time.monotonic() - began, "slot")
        self._metric("handoff", lease.handoff_seconds)
        return lease

    def _create(self, job: Job, model: str, input_: dict[str, Any], lease: Any) -> PredictionView:
        """Creation token, then the POST; the prediction id is recorded before anything else.

        A 429 means nothing was created and the account (another program on it, or a limit lower
        than ours) is throttled: every host pauses for its retry_after and this attempt tries
        again, without counting it against the model, until `slot_wait` has passed."""
        ctx, b, i, n = self.ctx, job.batch_id, job.index, job.attempt
        give_up_at = time.monotonic() + self.slot_wait
        while True:
            # The intent goes first, so that only one round trip (the last check, which stamps
            # `posting_at`) stands between the token and the POST: the limiter's window margin
            # must cover the spread of token-to-arrival delays.
            ctx.attempts.write_intent(b, i, n, model)
            began = time.monotonic()
            try:
                # The token marks the slot with this attempt: should this worker die inside the
                # POST, the slot stays counted (orphaned) until the attempt is reconciled.
                ctx.limiter.take_create_token(timeout=max(give_up_at - began, 0.0), should_stop=self._stopper(job),
                                              holder=lease, attempt=self._marker(job))
            except AcquireTimeoutError:
                ctx.attempts.clear_intent(b, i, n)
                self._stop_if_canceled_or_shutting_down(b, fresh=True)
                raise Requeue("no creation token in time; back in the queue", counted=False) from None
            waited = time.monotonic() - began
            try:
                self._check_still_entitled(job, lease)
            except (CanceledError, Requeue):
                ctx.attempts.clear_intent(b, i, n)
                raise
            try:
                view = ctx.calls.create(model, input_, webhook=ctx.settings.webhook_url)
            except TransientError as exc:
                if exc.status == 429:
                    ctx.attempts.clear_intent(b, i, n)
                    self._metric("rate_limited", "create")
                    seconds = float(exc.retry_after or 1.0)
                    ctx.limiter.pause_creations(seconds, reason=f"429 on create ({model})")
                    self._metric("creation_pause", seconds)
                    log.warning("429 on create; creations paused %.1f s for every worker", seconds)
                    continue  # the token call sleeps through the pause
                if is_ambiguous(exc):
                    # The prediction may exist: keep the intent (the next run reconciles first)
                    # and keep the slot counted for it (an orphan the reconciliation adopts or
                    # settles), so an unknown prediction never runs beside a full fleet.
                    ctx.attempts.mark_post_returned(b, i, n)
                    lease.abandon()
                    raise Requeue(f"{exc}; reconciling before any new creation",
                                  countdown=self._backoff(1)) from None
                ctx.attempts.clear_intent(b, i, n)
                raise
            except (PermanentModelError, LocalError):
                ctx.attempts.clear_intent(b, i, n)
                raise
            self._metric("slot_wait", waited, "create")
            self._metric("creation", model)
            if not ctx.attempts.record_prediction(b, i, n, view.id):
                # Another attempt owns this prediction already: an item with the identical input
                # reconciling its own unresolved create adopted it between our POST's answer and
                # this record. Ours is then unknown to us: reconcile it, never go on without one.
                ctx.attempts.mark_post_returned(b, i, n)
                lease.abandon()
                log.warning("prediction %s created by this attempt was adopted by another attempt "
                            "first; reconciling before anything else", view.id)
                raise Requeue(f"prediction {view.id} was taken by another attempt with the same input; "
                              "reconciling", countdown=self._backoff(1))
            bind_log_context(prediction=view.id)
            ctx.ledger.update_attempt(b, i, n, {"prediction_id": view.id})
            log.info("created prediction %s", view.id)
            return view

    def _check_still_entitled(self, job: Job, lease: Any) -> None:
        """Right before the POST: this execution must still own the attempt and the slot, and the
        batch must not be canceled. The waits before it (slot, creation token) can outlast the
        claim and the lease when this worker was cut off from Redis; the attempt may then have
        been sent again and be running elsewhere. Local checks first, then ONE round trip: a
        script checks the claim and the cancel flag and stamps `posting_at`, from when the POST
        may be in flight. A Redis error there escapes (the task waits and runs the attempt
        again): "cannot tell" is never taken for "lost"."""
        assert self._claim is not None, "only a claimed execution creates"
        if shutting_down():
            raise Requeue("worker shutting down; attempt handed back before any creation", counted=False)
        if self._claim.lost:
            raise Superseded("the attempt's claim was taken while waiting; another execution owns it")
        if lease.lost:
            raise Requeue(f"slot lease lost before the creation ({lease.lost_reason}); attempt handed back",
                          counted=False)
        verdict, _posting_at = self.ctx.attempts.begin_post(job.batch_id, job.index, job.attempt,
                                                            self._claim.key, self._claim.token)
        if verdict == "canceled":
            raise CanceledError("batch canceled")
        if verdict == "lost":
            raise Superseded("the attempt's claim expired while waiting; another execution owns it")
        if verdict == "recorded":
            raise Superseded("another execution recorded a prediction for this attempt while this one waited")

    def _stop_if_canceled_or_shutting_down(self, batch_id: str, *, fresh: bool = False) -> None:
        """After a wait before any creation: CanceledError if the batch was canceled, Requeue (the
        attempt handed back, nothing paid) if this worker is stopping."""
        if self.ctx.ledger.is_canceled(batch_id) if fresh else self.ctx.cancel_watch.is_canceled(batch_id):
            raise CanceledError("batch canceled")
        if shutting_down():
            raise Requeue("worker shutting down; attempt handed back before any creation", counted=False)

    def _settles_at(self, record: Any) -> tuple[float, str]:
        """When "the earlier create made nothing" may be concluded (Unix time, Redis clock), and why.

        A gateway can answer 502/504 (or the client time out) while Replicate still creates the
        prediction, so the listing that concludes "none" must start a settling window (the POST
        in-flight limit) after the POST ended: its answer's time when it came back; else (its
        sender died or was cut off) the latest it could have ended, counted from `posting_at`.
        No `posting_at` on a record whose writer stamps it before any POST: no POST was sent
        (the token wait or the last check was interrupted), nothing to wait for. A record from
        an older version (no mark) keeps that version's rule: the in-flight limit after the
        intent."""
        window = post_in_flight_limit(self.ctx.settings)
        if record.post_returned_at is not None:
            return record.post_returned_at + window, "the earlier create answered ambiguously"
        if record.posting_at is not None:
            return record.posting_at + 2 * window, "the earlier create's POST may still be in flight"
        if record.posting_marked:
            return record.intent_at, "no POST was sent"
        return record.intent_at + window, "the earlier create (an older worker's) may still be in flight"

    def _reconcile(self, job: Job, model: str, input_: dict[str, Any], record: Any) -> str | None:
        """An earlier run sent (or may have sent) the POST without recording an answer: adopt the
        prediction it created if the account's predictions show one. "None was created" is
        concluded only by a listing that started once the create has settled (`_settles_at`) and
        went back past the intent; anything less runs this attempt again later (not counted as a
        try), never a second creation."""
        ctx, b, i, n = self.ctx, job.batch_id, job.index, job.attempt
        settles_at, why = self._settles_at(record)
        listed_at = ctx.attempts.redis_now()  # before the listing: it must start after settles_at
        since = record.intent_at - RECONCILE_SKEW
        cursor: str | None = None
        for _ in range(RECONCILE_MAX_PAGES):
            views, cursor = self._read(job, lambda c=cursor: ctx.calls.list_page(c))
            for view in views:
                if view.model != model or not same_input(input_, view.input):
                    continue
                if ctx.attempts.owned_by_other(view.id, b, i, n):
                    continue
                if ctx.attempts.record_prediction(b, i, n, view.id, origin="adopted"):
                    bind_log_context(prediction=view.id)
                    ctx.ledger.update_attempt(b, i, n, {"prediction_id": view.id})
                    log.warning("adopted prediction %s created by an earlier run of this attempt", view.id)
                    return view.id
            times = [t for t in (v.created_ts() for v in views) if t is not None]
            if not cursor or (times and min(times) < since):
                break
        else:
            raise Requeue(f"listed {RECONCILE_MAX_PAGES} pages of predictions without reaching the earlier "
                          "create; not creating again until it is settled", countdown=self._backoff(2))
        if listed_at < settles_at:
            left = settles_at - listed_at
            raise Requeue(f"no prediction listed for the earlier create yet; {why}, so it may still appear: "
                          f"listing again in {left:.1f} s before any new creation",
                          countdown=min(left + random.uniform(0.2, 1.0), self.countdown_cap), counted=False)
        ctx.attempts.clear_intent(b, i, n)
        log.info("reconciliation found no prediction for the earlier create; creating one")
        return None

    def _wait(self, job: Job, prediction_id: str, lease: Any, model: str, spec: Any) -> PredictionView:
        """Until the prediction is terminal, told by its webhook (when configured) or a poll on
        the read budget, whichever comes first. Cancels it if the batch is canceled or it runs
        longer than the prediction timeout."""
        ctx = self.ctx
        first, every = self._poll_pacing(model, spec)
        deadline = time.monotonic() + ctx.settings.prediction_timeout
        watch = ctx.completions.watch(prediction_id) if ctx.completions is not None else None
        try:
            delay, warned_lost = first, False
            last_error: Exception | None = None
            while True:
                pushed = self._await_news(job, watch, delay)
                if pushed is not None:
                    self._metric("end_noticed", "webhook")
                    return pushed
                if ctx.cancel_watch.is_canceled(job.batch_id):
                    raise CanceledError("batch canceled")  # the prediction is canceled by _run_claimed
                if lease.lost and not warned_lost:
                    warned_lost = True
                    log.warning("slot lease lost (Redis unreachable or lease expired); still waiting for "
                                "prediction %s, which keeps running at Replicate", prediction_id)
                if time.monotonic() > deadline:
                    if last_error is not None:
                        raise Requeue(f"cannot read prediction {prediction_id}: {last_error}",
                                      countdown=self._backoff(1))
                    self._cancel_prediction(job, prediction_id)
                    raise TransientError(f"no result within {ctx.settings.prediction_timeout:g} s; canceled",
                                         prediction_id=prediction_id)
                try:
                    # Cancel only: a prediction in flight is waited for through a warm shutdown
                    # (its slot cannot be handed to another process while it runs).
                    ctx.limiter.take_read_token(timeout=self.slot_wait, should_stop=self._cancel_stopper(job))
                except AcquireTimeoutError:
                    delay = 0.0
                    continue
                try:
                    view = ctx.calls.get(prediction_id)
                except TransientError as exc:
                    last_error = exc
                    if exc.status == 429:
                        self._metric("rate_limited", "read")
                    delay = min(max(float(exc.retry_after or 0), every * 2), MAX_POLL_INTERVAL * 2)
                    continue
                except PermanentModelError as exc:  # 404: Replicate does not know it (any more)
                    raise TransientError(f"prediction {prediction_id} cannot be read: {exc}",
                                         prediction_id=prediction_id) from None
                last_error = None
                if view.terminal:
                    self._metric("end_noticed", "poll")
                    return view
                delay = every
        finally:
            if watch is not None:
                watch.close()

    def _poll_pacing(self, model: str, spec: Any) -> tuple[float, float]:
        """(first poll after, then every), in seconds.

        With webhooks the polls are only a safety net for a lost delivery. Without, each
        prediction in flight polls every `concurrency / (POLL_SHARE x reads per second)`: all
        the slots polling together then stay within POLL_SHARE of the account's read budget
        (the rest is left for uploads, reconciliation and other programs), and a finished
        prediction is noticed as early as that budget allows. Polling starts a little before
        the model's usual duration."""
        expected = self._expected_latency(model, spec)
        if self.ctx.completions is not None:
            first = expected + max(expected, SAFETY_POLL_INTERVAL / 3) if expected else SAFETY_POLL_INTERVAL
            return first, SAFETY_POLL_INTERVAL
        limits = self.ctx.limiter.limits()
        every = limits.concurrency / (POLL_SHARE * limits.reads_per_second)
        every = min(max(every, MIN_POLL_INTERVAL), MAX_POLL_INTERVAL)
        first = FIRST_POLL_FRACTION * expected if expected else every
        return max(first, MIN_POLL_INTERVAL), every

    def _await_news(self, job: Job, watch: Any, seconds: float) -> PredictionView | None:
        """Sleep up to `seconds`; returns early with the prediction if its webhook arrives, or
        with None as soon as the batch is canceled."""
        end = time.monotonic() + seconds
        while True:
            left = end - time.monotonic()
            if left <= 0 or self.ctx.cancel_watch.is_canceled(job.batch_id):
                return None
            if watch is None:
                time.sleep(min(left, 0.5))
                continue
            pushed = watch.wait(min(left, 0.5))
            if pushed is not None:
                view = PredictionView.from_json(pushed)
                if view.terminal:
                    return view

    def _conclude(self, job: Job, request: ImageRequest, model: str, spec: Any,
                  view: PredictionView) -> list[str]:
        if view.status == "succeeded":
            return self._store(job, request, spec, view)
        if view.status == "failed":
            raise failure_error(view)
        if view.status == "canceled":
            raise CanceledError("batch canceled" if self.ctx.ledger.is_canceled(job.batch_id)
                                else f"prediction {view.id} was canceled at Replicate")
        # aborted: the deadline passed before it started; nothing ran, try again
        raise TransientError(f"prediction {view.id} {view.status}: {view.error or 'never started'}",
                             prediction_id=view.id)

    def _store(self, job: Job, request: ImageRequest, spec: Any, view: PredictionView) -> list[str]:
        ctx = self.ctx
        urls = output_urls(view.output)
        if not urls:
            raise PermanentModelError(f"prediction {view.id} succeeded without any output", prediction_id=view.id)
        ext = extension_of(urls[0]) or getattr(spec, "default_format", None) or "png"
        relative = request.output or f"{job.batch_id}/{job.index:04d}.{ext}"
        paths = output_paths(Path(ctx.settings.output_dir), relative, len(urls), default_ext=ext)
        for url, path in zip(urls, paths):
            try:
                ctx.downloader.save(url, path)
            except TransientError as exc:
                if exc.status in (404, 410):
                    raise TransientError(f"output of {view.id} is gone ({exc}); a new prediction is needed",
                                         prediction_id=view.id) from None
                raise Requeue(f"{exc}; the finished prediction will be fetched again",
                              countdown=self._backoff(1)) from None
        return [str(p) for p in paths]

    # --- outcomes -------------------------------------------------------------------------------
    def _requeue_same(self, job: Job, request: ImageRequest, model: str, again: Requeue) -> NextTask | None:
        ctx, b, i, n = self.ctx, job.batch_id, job.index, job.attempt
        if again.counted:
            tries = ctx.attempts.bump_tries(b, i, n)
            if tries > ctx.settings.max_transient_retries:
                return self._give_up_attempt(job, request, model, again.reason)
            self._metric("retry", model, "resume")
        log.info("attempt runs again later: %s", again.reason)
        ctx.ledger.update_attempt(b, i, n, {"error": again.reason})
        return NextTask(n, model, countdown=again.countdown, prompt=request.prompt)

    def _give_up_attempt(self, job: Job, request: ImageRequest, model: str, reason: str) -> NextTask | None:
        """This attempt kept failing to finish. A new attempt may create a new prediction, so
        nothing paid may be left behind: a recorded prediction is canceled (it stays in the
        manifest), and an unresolved create (a prediction that may exist, unknown to us) fails the
        item instead of risking a second payment behind the user's back."""
        record = self.ctx.attempts.get(job.batch_id, job.index, job.attempt)
        if record.intent_at is not None and not record.prediction_id:
            self._finish(job, "failed", model, att_status="failed", kind="unresolved", error=(
                f"could not tell whether a prediction was created ({reason}); not retried, so as never to "
                f"pay twice: check the account's predictions, then `producer retry {job.batch_id}`"))
            self._metric("prediction", model, "failed")
            return None
        self._cancel_recorded_prediction(job)
        return self._after_transient(job, request, model, TransientError(f"gave up on this attempt: {reason}"))

    def _after_transient(self, job: Job, request: ImageRequest, model: str, exc: TransientError) -> NextTask | None:
        ctx = self.ctx
        item = ctx.ledger.item(job.batch_id, job.index)
        streak = 0  # transient failures of this model in a row, since the last reset
        for record in sorted(item.attempts if item else [], key=lambda a: -a.attempt):
            if record.attempt >= job.attempt or record.attempt < (item.base_attempt if item else 1):
                continue
            if record.model != model or record.status != "retry":
                break
            streak += 1
        if streak >= ctx.settings.max_transient_retries:
            return self._after_permanent(job, request, model, PermanentModelError(
                f"gave up on {model} after {streak + 1} transient failures; last: {exc}"))
        self._metric("retry", model, "transient")
        self._metric("prediction", model, "transient_error")
        countdown = self._backoff(streak, exc.retry_after)
        log.warning("transient failure, new attempt on %s in %.1f s: %s", model, countdown, exc)
        return self._next_attempt(job, request, model, model, error=str(exc), att_status="retry",
                                  kind="transient", countdown=countdown)

    def _after_permanent(self, job: Job, request: ImageRequest, model: str,
                         exc: PermanentModelError) -> NextTask | None:
        models = list(request.models)
        remaining = models[models.index(model) + 1:] if model in models else []
        if remaining:
            nxt = remaining[0]
            self._metric("fallback", model, nxt)
            self._metric("prediction", model, "failed")
            log.warning("%s cannot make this image (%s); falling back to %s", model, exc, nxt)
            return self._next_attempt(job, request, model, nxt, error=str(exc), att_status="failed",
                                      kind="permanent", countdown=0.0)
        reason = f"no model left on the route; last error: {exc}"
        self._metric("prediction", model, "failed")
        if self.ctx.ledger.options(job.batch_id).get("substitute_on_failure"):
            try:
                first = output_paths(Path(self.ctx.settings.output_dir),
                                     request.output or f"{job.batch_id}/{job.index:04d}.png", 1)[0]
                path = write_substitute(first)
            except LocalError as local:
                self._finish(job, "failed", model, error=f"{reason}; substitute not written: {local}",
                             att_status="failed", kind="permanent", att_error=str(exc))
                return None
            self._finish(job, "substituted", model, error=reason, outputs=[str(path)], att_status="failed",
                         kind="permanent", att_error=str(exc))
            self._metric("substituted", model)
            return None
        self._finish(job, "failed", model, error=reason, att_status="failed", kind="permanent", att_error=str(exc))
        return None

    def _next_attempt(self, job: Job, request: ImageRequest, model: str, next_model: str, *, error: str,
                      att_status: str, kind: str, countdown: float) -> NextTask | None:
        t = self.ctx.ledger.transition(
            job.batch_id, job.index, "pending", expect_attempt=job.attempt,
            fields={"attempt": job.attempt + 1, "current_model": next_model}, attempt=job.attempt,
            attempt_update={"model": model, "status": att_status, "error": error, "kind": kind, "final": True})
        if not t.changed:
            return None
        return NextTask(job.attempt + 1, next_model, countdown=countdown, prompt=request.prompt)

    def _finish(self, job: Job, status: str, model: str, *, error: str | None = None,
                outputs: list[str] | None = None, att_status: str, kind: str | None = None,
                prediction_id: str | None = None, att_error: str | None = None) -> None:
        fields: dict[str, Any] = {"error": error}
        if outputs is not None:
            fields["outputs"] = outputs
        if status == "succeeded":
            fields["model"] = model  # the model that produced the output
        update: dict[str, Any] = {"model": model, "status": att_status, "final": True,
                                  "error": att_error if att_error is not None else error}
        if kind:
            update["kind"] = kind
        if prediction_id:
            update["prediction_id"] = prediction_id
        t = self.ctx.ledger.transition(job.batch_id, job.index, status, expect_attempt=job.attempt,
                                       fields=fields, attempt=job.attempt, attempt_update=update)
        if t.changed:
            log.info("item %s%s", status, f": {error}" if error and status != "succeeded" else "")
        if t.batch_finished:
            self._write_manifest(job.batch_id)

    def _write_manifest(self, batch_id: str) -> None:
        try:
            path = self.ctx.ledger.write_manifest(batch_id, self.ctx.settings.output_dir)
            log.info("batch finished; manifest at %s", path)
        except (OSError, redis.RedisError) as exc:
            log.error("batch finished but the manifest could not be written: %s", exc)

    # --- helpers --------------------------------------------------------------------------------
    def _build_input(self, job: Job, request: ImageRequest, model: str) -> dict[str, Any]:
        from shared.routing import build_input

        try:
            input_, warnings = build_input(request, model, self.ctx.registry)
        except InputError as exc:  # this model cannot take the item (a route built elsewhere)
            raise PermanentModelError(str(exc)) from None
        for warning in warnings:
            log.info("input for %s: %s", model, warning)
        return self._upload_references(job, request, input_)

    def _upload_references(self, job: Job, request: ImageRequest, input_: dict[str, Any]) -> dict[str, Any]:
        """Local reference paths become uploaded-file URLs, once per item (cached in Redis), so
        every attempt sends the same input and reconciliation can recognise it."""
        local = {ref for ref in request.reference_images if not _is_url(ref)}
        if not local:
            return input_
        ctx = self.ctx
        key = ctx.keys.uploads(job.batch_id, job.index)
        cached = ctx.redis.hgetall(key)

        def url_for(path: str) -> str:
            if path not in cached:
                url = self._read(job, lambda: ctx.calls.upload(Path(path)))
                ctx.redis.hset(key, path, url)
                ctx.redis.expire(key, 14 * 24 * 3600)
                cached[path] = url
            return cached[path]

        def swap(value: Any) -> Any:
            if isinstance(value, str) and value in local:
                return url_for(value)
            if isinstance(value, list):
                return [swap(v) for v in value]
            return value

        return {k: swap(v) for k, v in input_.items()}

    def _read(self, job: Job, call: Callable[[], T]) -> T:
        """A read-budget call outside the polling loop; failures re-run the attempt later."""
        try:
            self.ctx.limiter.take_read_token(timeout=self.slot_wait, should_stop=self._stopper(job))
        except AcquireTimeoutError:
            if self.ctx.ledger.is_canceled(job.batch_id):
                raise CanceledError("batch canceled") from None
            raise Requeue("no read token in time", counted=False) from None
        try:
            return call()
        except TransientError as exc:
            if exc.status == 429:
                self._metric("rate_limited", "read")
            raise Requeue(str(exc), countdown=self._backoff(1, exc.retry_after)) from None

    def _cancel_prediction(self, job: Job, prediction_id: str) -> None:
        try:
            self.ctx.limiter.take_read_token(timeout=10.0)
            self.ctx.calls.cancel(prediction_id)
            log.info("canceled prediction %s at Replicate", prediction_id)
        except Exception as exc:  # noqa: BLE001 - best effort; it ends by itself anyway
            log.warning("could not cancel prediction %s: %s", prediction_id, exc)

    def _cancel_recorded_prediction(self, job: Job) -> None:
        """Called once this execution holds no slot: cancels the attempt's prediction, if any, and
        frees a slot a dead holder left counted for it. An unresolved create (intent, no id) keeps
        its slot counted: a prediction nobody knows may be running, until the orphan deadline."""
        record = self.ctx.attempts.get(job.batch_id, job.index, job.attempt)
        if record.prediction_id:
            self._cancel_prediction(job, record.prediction_id)
            self._settle(job, record.prediction_id)
        elif record.intent_at is None:
            self._settle(job)

    def _settle(self, job: Job, prediction_id: str | None = None) -> None:
        """Free the slot still counted for this attempt's prediction (or, without one, for the
        attempt's creation token): its holder is gone, since this execution owns the claim."""
        try:
            self.ctx.limiter.settle(prediction_id, attempt=self._marker(job))
        except Exception as exc:  # noqa: BLE001 - the orphaned slot then ends at its deadline
            log.warning("could not free the slot left for %s: %s", prediction_id or self._marker(job), exc)

    @staticmethod
    def _marker(job: Job) -> str:
        """The attempt's name on the slot that creates for it (batch ids hold no ':')."""
        return f"{job.batch_id}:{job.index}:{job.attempt}"

    def _stopper(self, job: Job) -> Callable[[], bool]:
        """Stop waiting (slot, creation token, reads before a creation) when the batch is canceled
        or this worker shuts down: the attempt is handed back, nothing paid was started."""
        watch, batch_id = self.ctx.cancel_watch, job.batch_id
        return lambda: shutting_down() or watch.is_canceled(batch_id)

    def _cancel_stopper(self, job: Job) -> Callable[[], bool]:
        watch, batch_id = self.ctx.cancel_watch, job.batch_id
        return lambda: watch.is_canceled(batch_id)

    def _backoff(self, streak: int, retry_after: float | None = None) -> float:
        """Exponential with jitter, at least retry_after, never near the visibility timeout."""
        base = min(self.countdown_cap, 0.5 * (2 ** streak))
        delay = random.uniform(base / 2, base)
        if retry_after:
            delay = max(delay, float(retry_after) + random.uniform(0, 0.5))
        return round(min(delay, self.countdown_cap), 3)

    def _expected_latency(self, model: str, spec: Any) -> float | None:
        try:
            value = self.ctx.redis.hget(self.ctx.keys.model_latency, model)
        except redis.RedisError:
            value = None
        if value:
            return float(value)
        hint = getattr(spec, "expected_seconds", None) or getattr(spec, "latency", None)
        return float(hint) if isinstance(hint, (int, float)) and hint > 0 else None

    def _record_latency(self, model: str, seconds: float) -> None:
        key = self.ctx.keys.model_latency
        try:
            old = self.ctx.redis.hget(key, model)
            new = seconds if not old else (1 - LATENCY_SMOOTHING) * float(old) + LATENCY_SMOOTHING * seconds
            self.ctx.redis.hset(key, model, f"{new:.3f}")
        except redis.RedisError:
            pass

    def _prompt(self, batch_id: str, index: int) -> str:
        try:
            return self.ctx.ledger.request(batch_id, index).prompt
        except (KeyError, redis.RedisError):
            return ""

    def _price(self, model: str, request: ImageRequest) -> float:
        try:
            spec = self.ctx.registry.get(model)
            return float(spec.cost(request.params))
        except Exception:  # noqa: BLE001 - metrics only
            return 0.0

    def _metric(self, name: str, *args: Any) -> None:
        metrics = self.ctx.metrics
        if metrics is None:
            return
        try:
            getattr(metrics, name)(*args)
        except Exception as exc:  # noqa: BLE001 - the work never fails on its metrics
            log.debug("metric %s not recorded: %s", name, exc)


def _is_url(value: str) -> bool:
    return value.startswith(("http://", "https://", "data:"))
