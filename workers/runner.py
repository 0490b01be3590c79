"""One run of one attempt, end to end: the decisions of "One image, end to end" and "Cost safety".

`AttemptRunner(ctx).run(job)` runs the attempt `job.ref` with the item's current model and returns
the follow-up task to send (None when the item needs nothing more):

    ledger check -> claim the attempt -> item running (one round trip: workers.run_start)
    -> the creation record: resume its prediction / reconcile an unresolved create / create
    -> slot -> intent -> creation token -> the last check -> POST -> prediction id recorded
       (workers.creator; reconciling: workers.reconcile; the input: workers.inputs)
    -> its end: the create's answer (sync mode), the webhook, or polls paced on the read
       budget (workers.waiting)
    -> slot released at once, the reservation settled in the same round trip; then the claim
       checked
    -> download every output (no token, timeouts, byte cap, atomic; workers.outputs)
    -> item succeeded (the claim released in the same round trip)

What follows a failure (a new attempt on the same model or the next one, the same attempt later,
the item's end) is decided in workers.outcomes. Work that must continue with the SAME attempt (a
prediction already exists, or may exist) is sent again with the same attempt number, so that it
resumes or reconciles instead of paying again.

Redis unavailability is not a failure of the attempt: it escapes `run` (the claim is kept for the
re-run) and the task layer (workers.tasks) waits for Redis and runs the attempt again from the top.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from functools import partial
from typing import Any

import redis

from shared.budget import Reservation
from shared.errors import (
    BudgetExceededError,
    CanceledError,
    InputError,
    LocalError,
    PermanentModelError,
    RequeueError,
    SupersededError,
    TransientError,
)
from shared.ledger import TERMINAL as TERMINAL_STATUSES
from shared.limiter import Lease
from shared.logging_setup import bind_log_context, log_context
from shared.models import ModelSpec
from shared.models.pricing import call_cost_micro
from shared.request import ImageRequest
from shared.scheduler import PARKED
from workers.attempts import AttemptRef, CreationRecord
from workers.claims import Claim
from workers.context import WorkerContext, shutting_down
from workers.creator import PredictionCreator
from workers.inputs import InputBuilder
from workers.messages import Job, NextTask
from workers.outage import is_redis_unavailable
from workers.outcomes import Outcomes
from workers.outputs import OutputSaver
from workers.reconcile import Reconciler
from workers.replicate_calls import PredictionView
from workers.run_start import CANCELED, CLAIMED, HELD, MISSING, OTHER, TERMINAL, RunStarter, Start
from workers.stage import AttemptStage
from workers.waiting import PredictionWaiter

__all__ = ["AttemptRunner", "Job", "NextTask"]

log = logging.getLogger("workers.runner")


class AttemptRunner(AttemptStage):
    def __init__(self, ctx: WorkerContext):
        super().__init__(ctx)
        self._claim: Claim | None = None  # this run's claim on the attempt, set by run()
        self.inputs = InputBuilder(ctx, self.budget)
        self.reconciler = Reconciler(ctx, self.budget)
        self.creator = PredictionCreator(ctx, self.budget)
        self.waiter = PredictionWaiter(ctx, self.budget)
        self.outputs = OutputSaver(ctx, self.budget)
        self.outcomes = Outcomes(ctx, self.budget)
        self.starter = RunStarter(ctx.redis, ctx.keys, ctx.claims)

    # --- entry ----------------------------------------------------------------------------------
    def run(self, job: Job) -> NextTask | None:
        with log_context(**job.ref.log_fields(), model=job.model, task_id=job.task_id):
            return self._run(job)

    def _run(self, job: Job) -> NextTask | None:
        if self._claim is not None or shutting_down():
            return self._run_stepwise(job)
        # The common start: one round trip (workers.run_start) for the item's state, the claim,
        # the cancel flag, the running transition, the request and the creation record.
        ref = job.ref
        start = self.starter.start(ref, job.task_id or "")
        if start.verdict == HELD:
            # Woken (a limit was raised, the day turned): the run tries to reserve again, and
            # is held again with a fresh record if it still does not fit.
            self.ctx.budget.unhold(ref.batch_id, ref.index)
            start = self.starter.start(ref, job.task_id or "", unheld=True)
        if start.verdict == MISSING:
            log.warning("no such item in the ledger; nothing to do")
            return None
        if start.verdict == TERMINAL:
            return None
        if start.verdict == OTHER:
            return self._not_current(ref, start.status, start.attempt, start.model)
        if start.verdict == CLAIMED or start.claim is None:
            return self._claimed_elsewhere(job, start.model, _prompt_of(start))
        claim = start.claim
        if start.verdict == CANCELED:
            return self._holding(claim, lambda: self.outcomes.canceled(ref, start.model, "batch canceled"))
        return self._holding(
            claim, lambda: self._run_started(job, claim, start.request(), start.model, start.record)
        )

    def _run_stepwise(self, job: Job) -> NextTask | None:
        """The start step by step (a claim kept across a Redis outage is re-asserted; a worker
        shutting down hands a current attempt back untouched)."""
        ref = job.ref
        state = self.ctx.ledger.item_states(ref.batch_id, [ref.index]).get(ref.index)
        if state is None:
            log.warning("no such item in the ledger; nothing to do")
            return None
        status, current, model = state
        if status in TERMINAL_STATUSES:
            return None
        if ref.attempt != current:
            return self._not_current(ref, status, current, model)
        if shutting_down():
            # Delivered while this worker stops: hand it back untouched for another worker.
            return NextTask(ref.attempt, model, prompt=self._prompt(ref))
        if status == "held":
            # Woken (a limit was raised, the day turned): the run tries to reserve again, and
            # is held again with a fresh record if it still does not fit.
            self.ctx.budget.unhold(ref.batch_id, ref.index)
        claim = self._take_claim(ref.claim_key(self.ctx.keys))
        if claim is None:
            return self._claimed_elsewhere(job, model, self._prompt(ref))
        return self._holding(claim, lambda: self._run_claimed(job, claim, model))

    def _not_current(self, ref: AttemptRef, status: str, current: int, model: str) -> NextTask | None:
        """A message for an attempt that is not the item's current one (a non-terminal item)."""
        if ref.attempt < current:
            if status == "pending" and ref.attempt == current - 1:
                # This attempt ended but its follow-up may never have been held (killed between
                # the ledger update and the push). Holding it again is safe: an item has one held
                # send at most, and the claim and the creation record make a duplicate task a
                # no-op. Nothing to do when the schedule holds it (PARKED).
                due_in = self._due_in(ref)
                if due_in is None:
                    return None
                return NextTask(current, model, countdown=due_in, prompt=self._prompt(ref))
            return None
        log.error("attempt %s is ahead of the ledger's %s; ignored", ref.attempt, current)
        return None

    def _claimed_elsewhere(self, job: Job, model: str, prompt: str) -> NextTask | None:
        """Another live run has this attempt (a redelivered duplicate): do not run it twice,
        but do not drop it either, in case that run dies after our ack."""
        if job.recheck >= self.budget.max_rechecks:
            log.error("attempt still claimed after %s checks; leaving it to its holder", job.recheck)
            return None
        return NextTask(
            job.attempt,
            model,
            countdown=self.budget.recheck_interval,
            recheck=job.recheck + 1,
            prompt=prompt,
        )

    def _holding(self, claim: Claim, body: Callable[[], NextTask | None]) -> NextTask | None:
        """`body` run under this run's claim, released after it, except when Redis went away
        mid-attempt: the task runs it again once Redis answers, and this claim (still renewed
        by the keeper) is taken back then instead of being given up."""
        self._claim = claim
        self.outcomes.claim = claim  # the attempt's end releases it in the same round trip
        keep = False
        try:
            return body()
        except Exception as exc:
            keep = is_redis_unavailable(exc)
            raise
        finally:
            self.outcomes.claim = None
            if not keep:
                self._claim = None
                claim.release()  # nothing to do if the attempt's end released it

    def _take_claim(self, key: str) -> Claim | None:
        """This run's claim: the one kept from a run that a Redis outage interrupted (taken
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

    def _due_in(self, ref: AttemptRef) -> float | None:
        """Seconds until the item's last message is due, from its score in the batch's live zset
        (shared.ledger: a sign of life, or when a message sent with a countdown is due), against
        Redis's clock; 0 if already due; None when the schedule holds its send (PARKED)."""
        pipe = self.ctx.redis.pipeline(transaction=False)
        pipe.zscore(self.ctx.keys.batch_live(ref.batch_id), str(ref.index))
        pipe.time()
        due, (sec, usec) = pipe.execute()
        if due is None:
            return 0.0
        if float(due) >= PARKED:
            return None
        return round(min(max(float(due) - (sec + usec / 1e6), 0.0), self.budget.countdown_cap), 3)

    def _prompt(self, ref: AttemptRef) -> str:
        try:
            return self.ctx.ledger.request(ref.batch_id, ref.index).prompt
        except (KeyError, redis.RedisError):
            return ""

    # --- a claimed run ------------------------------------------------------------------------------
    def _run_claimed(self, job: Job, claim: Claim, model: str) -> NextTask | None:
        """The step-by-step start's last steps (the cancel flag, the running transition, the
        request), then the attempt (`_run_started`)."""
        ctx, ref, outcomes = self.ctx, job.ref, self.outcomes
        if ctx.ledger.is_canceled(ref.batch_id):
            outcomes.canceled(ref, model, "batch canceled")
            return None
        t = ctx.ledger.transition(
            ref.batch_id,
            ref.index,
            "running",
            allowed_from=("pending", "running", "held"),
            expect_attempt=ref.attempt,
            fields={"task_id": job.task_id or "", "held_reason": None},
            attempt=ref.attempt,
            attempt_update={"model": model, "status": "running", "error": None},
        )
        if not t.changed:
            return None
        return self._run_started(job, claim, ctx.ledger.request(ref.batch_id, ref.index), model, None)

    def _run_started(
        self, job: Job, claim: Claim, request: ImageRequest, model: str, record: CreationRecord | None
    ) -> NextTask | None:
        """The item runs this attempt (claimed, running): the attempt, and what follows it
        (workers.outcomes) for each way it can end. `record`: the creation record, if read."""
        ref, outcomes = job.ref, self.outcomes
        try:
            files, prediction_id = self._attempt(job, claim, request, model, record)
        except RequeueError as again:
            return outcomes.requeue(ref, request, model, again)
        except SupersededError as exc:
            log.warning("%s; stopping this run", exc)
            return None
        except CanceledError as exc:
            outcomes.canceled(ref, model, str(exc))
            return None
        except BudgetExceededError as exc:
            outcomes.held(ref, model, exc)
            return None
        except TransientError as exc:
            return outcomes.after_transient(ref, request, model, exc)
        except PermanentModelError as exc:
            return outcomes.after_permanent(ref, request, model, exc)
        except LocalError as exc:
            outcomes.local_failure(ref, model, exc)
            return None
        except Exception as exc:  # noqa: BLE001 - a bug or an unknown failure: resume, bounded
            if is_redis_unavailable(exc):
                raise  # not the attempt's failure: the task waits for Redis and runs it again
            log.exception("unexpected error in attempt")
            return outcomes.requeue(
                ref,
                request,
                model,
                RequeueError(
                    f"unexpected {type(exc).__name__}: {str(exc)[:200]}", countdown=self._backoff(0)
                ),
            )
        outcomes.succeeded(ref, request, model, files, prediction_id)
        return None

    def _attempt(
        self, job: Job, claim: Claim, request: ImageRequest, model: str, record: CreationRecord | None
    ) -> tuple[list[dict[str, Any]], str]:
        """Resume the recorded prediction, or reconcile an unresolved create, or create; then
        the outputs. Returns (the files written, prediction id)."""
        ctx, ref = self.ctx, job.ref
        try:
            spec = ctx.models.registry_for(request.models).get(model)
        except InputError as exc:
            raise LocalError(f"this worker's model registry does not know {model}: {exc}") from None
        if record is None:
            record = ctx.creations.get(ref)
        if record.prediction_id:
            view = self._resume(job, claim, model, record.prediction_id)
        else:
            input_ = self.inputs.build(ref, request, model)
            # The input reaches the manifest (`attempts[].input`) with the creation's intent
            # (before any POST; workers.creator), or with this attempt's end or requeue if the
            # run stops before that (a cancel while waiting for a slot): no round trip of its own.
            self.outcomes.note_input(ref, json.dumps(input_))
            prediction_id = None
            if record.intent_at is not None:
                prediction_id = self.reconciler.reconcile(ref, model, input_, record)
                if prediction_id is None:
                    # Nothing was created: the slot a dead or cut-off creator left counted for this
                    # attempt (its creation token marked it) is free; this run queues afresh.
                    self._settle(ref)
            reservation = Reservation(
                ref.marker, ref.batch_id, self._price(spec, request), ctx.settings.daily_budget_micro
            )
            view = self._in_flight(job, claim, model, prediction_id, input_, reservation)
        return self.outputs.conclude(ref, request, spec, view, claim), view.id

    @staticmethod
    def _price(spec: ModelSpec, request: ImageRequest) -> int:
        """What this attempt reserves: the registry's price for the item's params (per-second
        models: the requested duration), or the item's --price-per-call; 0 when unpriced (submit
        refuses an unpriced model under a limit)."""
        cost = call_cost_micro(spec, request.params, request.price_per_call)
        return 0 if cost is None else cost

    def _resume(self, job: Job, claim: Claim, model: str, prediction_id: str) -> PredictionView:
        """The prediction an earlier run created: waited for, never created again."""
        bind_log_context(prediction=prediction_id)
        log.info("resuming prediction %s (no new creation)", prediction_id)
        self._metric("resumed", model)
        view = self._read(job.batch_id, partial(self.ctx.calls.get, prediction_id))
        if view.terminal:
            self._settle(job.ref, prediction_id)  # a slot its dead holder left counted is free now
            self._settle_spend(job.ref)
            return view
        return self._in_flight(job, claim, model, prediction_id, None, None)

    def _in_flight(
        self,
        job: Job,
        claim: Claim,
        model: str,
        prediction_id: str | None,
        input_: dict[str, Any] | None,
        reservation: Reservation | None,
    ) -> PredictionView:
        """Hold a slot exactly while the prediction is in flight: create it (no `prediction_id`;
        `reservation` its price) or resume it, and wait for its end. The slot goes back the moment
        the end is known, with the reservation settled in the same round trip; only then the
        claim is checked and the model's duration learnt (Redis round trips the slot must not
        wait for)."""
        lease = self.creator.acquire_slot(job, model, prediction_id)
        view: PredictionView | None = None
        created_at: float | None = None
        try:
            if prediction_id is None:
                assert reservation is not None
                created = self.creator.create(
                    job.ref, claim, model, input_ or {}, lease, reservation, wait=self.waiter.sync_wait(model)
                )
                # Timed from the POST, never from before the creation token: in a rate-bound
                # batch that wait is most of a window and would push the first poll late.
                prediction_id, created_at = created.view.id, created.posted_at
                if created.view.terminal:  # a sync create answered with the end
                    view = created.view
                    self._metric("end_noticed", "create")
            if view is None:
                if created_at is None:  # resumed or adopted (a creation's record showed it on the slot)
                    lease.set_prediction(prediction_id)  # never raises (a Redis error is logged)
                elapsed = time.monotonic() - created_at if created_at is not None else 0.0
                view = self.waiter.wait(job.batch_id, prediction_id, lease, model, claim, elapsed)
        finally:
            settled = self._free_slot(lease, job.ref, prediction_id, view)
        claim.ensure_ours("its prediction's end")  # a stall lost it?
        if not settled:
            self._settle_spend(job.ref)
        if created_at is not None:
            self._learn_latency(model, view, created_at)
        return view

    @staticmethod
    def _free_slot(
        lease: Lease, ref: AttemptRef, prediction_id: str | None, view: PredictionView | None
    ) -> bool:
        """The slot is given back only when nothing runs on it: no prediction was created (an
        ambiguous create already abandoned it), or its prediction is known to be terminal; then
        its spend is settled in the same round trip (Lease.release_settling: True when it was,
        else the caller settles it on its own). A run that stops while its prediction may still
        run (a Redis error or a refused token while waiting, the deadline's requeue, a bug)
        abandons it instead: the slot stays counted, an orphan, until the attempt's next run
        adopts it or the sweep settles it once the prediction has ended, so the fleet never has
        more predictions in flight than slots."""
        if prediction_id is None:
            lease.release()
        elif view is not None and view.terminal:
            return lease.release_settling(ref.marker)
        else:
            lease.abandon()
        return False

    def _learn_latency(self, model: str, view: PredictionView, created_at: float) -> None:
        """The model's usual duration (first poll, sync wait) learns from predictions this run
        created and saw succeed (a resumed one's start is not known here)."""
        if view.status == "succeeded":
            self.waiter.record_latency(model, time.monotonic() - created_at)


def _prompt_of(start: Start) -> str:
    try:
        return start.request().prompt
    except (KeyError, ValueError):
        return ""
