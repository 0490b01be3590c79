"""A slot, and the creation inside it: the cost-safety steps between a run and a prediction id.

    slot (FIFO, bounded wait; or the orphaned slot of the prediction being resumed, adopted)
    -> intent -> creation token (which marks the slot with the attempt)
    -> the last check: ONE round trip (claim still this run's, nothing recorded, batch not
       canceled, `posting_at` stamped) -> POST (sync mode: `Prefer: wait`) -> prediction id
       recorded at once

When the token can be granted at once (most creations under the rate), the intent, the token
and the last check are ONE call (workers/lua/attempt_create.lua), all written or none; when it
needs a wait (or creations are paused) they are the three steps above. Either way at most one
round trip stands between the creation token and the POST, so the limiter's window margin
covers the spread of token-to-arrival delays. A worker killed inside the POST leaves a
slot that stays counted (the token marked it with the attempt) until the attempt is reconciled.
A 429 on create means nothing was created: every host pauses creations for its retry_after and
the same attempt goes on (never counted against the model). An ambiguous answer (5xx, timeout)
keeps the intent and the slot counted: the next run reconciles before any new creation.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any, NamedTuple

from shared.budget import Reservation
from shared.errors import (
    AcquireTimeoutError,
    BudgetExceededError,
    CanceledError,
    LeaseLostError,
    LocalError,
    PermanentModelError,
    RequeueError,
    SupersededError,
    TransientError,
    UnsentPostError,
)
from shared.limiter import HolderInfo, Lease
from shared.logging_setup import bind_log_context
from workers.attempts import AttemptRef, Intent, PostCheck, PostVerdict
from workers.claims import Claim
from workers.context import WorkerContext, shutting_down
from workers.held_cancel import HeldCreateCanceler
from workers.held_creates import HeldCreate
from workers.messages import Job
from workers.replicate_calls import PredictionView, is_ambiguous
from workers.stage import AttemptStage, WaitBudget

log = logging.getLogger("workers.creator")

# The most time a POST may leave after the last check began: the settling window
# (replicate_calls.post_in_flight_limit) allows 5 s on top of the client's timeouts, and half of
# that is left for the clocks' rates and the send itself.
POST_SEND_SLACK = 2.5


class Created(NamedTuple):
    view: PredictionView  # as the create answered: still running, or (sync mode) often ended
    posted_at: float  # monotonic time the POST was sent: the prediction's duration counts from it


class PredictionCreator(AttemptStage):
    def __init__(self, ctx: WorkerContext, budget: WaitBudget | None = None):
        super().__init__(ctx, budget)
        self._held_canceler = HeldCreateCanceler(ctx, self.budget)

    def acquire_slot(self, job: Job, model: str, prediction_id: str | None = None) -> Lease:
        """A slot for the prediction about to be created, or for the running one being resumed:
        the slot its dead holder left counted is taken over at once (no second slot, no queueing
        behind new work while it runs); otherwise the line like everyone: by the batch's
        priority, in turn among batches, in arrival order within one."""
        ctx = self.ctx
        info = HolderInfo(
            task_id=job.task_id, batch_id=job.batch_id, index=job.index, model=model, priority=job.priority
        )
        began = time.monotonic()
        try:
            if prediction_id is not None:
                adopted = ctx.limiter.adopt(info, prediction_id, attempt=job.ref.marker)
                if adopted is not None:
                    self._metric("handoff", adopted.handoff_seconds)
                    return adopted
            lease = ctx.limiter.acquire(
                info, timeout=self.budget.slot_wait, should_stop=self._stopper(job.batch_id)
            )
        except AcquireTimeoutError:
            self._stop_if_canceled_or_shutting_down(job.batch_id)
            # Waiting longer would risk the broker redelivering this message to another worker.
            raise RequeueError(
                f"no slot within {self.budget.slot_wait:g} s; back in the queue", counted=False
            ) from None
        # RedisUnavailableError escapes: the task waits for Redis and runs the attempt again (it
        # must not count as a try: enough of them would fail an unresolved create).
        self._metric("slot_wait", time.monotonic() - began, "slot")
        self._metric("handoff", lease.handoff_seconds)
        return lease

    def create(
        self,
        ref: AttemptRef,
        claim: Claim,
        model: str,
        input_: dict[str, Any],
        lease: Lease,
        reservation: Reservation,
        wait: int = 0,
    ) -> Created:
        """Creation token (with the attempt's price reserved in the same call), then the POST;
        the prediction id is recorded before anything else. With `wait` (sync mode) the POST
        asks `Prefer: wait=<wait>`: the answer comes when the prediction ends or `wait` s pass,
        and until then its id is unknown here (the intent, stamped with the wait, makes the
        reconciliation wait that much longer before "none" if this worker vanishes meanwhile).

        After a 429 every host pauses for its retry_after and this attempt tries again, without
        counting it against the model, until `slot_wait` has passed (its reservation kept).
        BudgetExceededError when the price does not fit a spending limit: nothing is created.
        Every way out that created nothing gives the reservation back."""
        ctx = self.ctx
        give_up_at = time.monotonic() + self.budget.slot_wait
        # The input this attempt sends, in the manifest (`attempts[].input`): what was asked of
        # each model of a fallback chain, reference files as their uploaded URLs. Recorded by the
        # intent's script, so it is in the ledger before any POST.
        intent = Intent(model, wait, json.dumps(input_))
        while True:
            began = time.monotonic()
            at_once = self._create_at_once(ref, claim, lease, reservation, intent)
            if at_once is None:
                # The token needs a wait (or creations are paused): the steps one by one. The
                # intent goes first, so that only one round trip (the last check, which stamps
                # `posting_at`) stands between the token and the POST.
                ctx.creations.write_intent(ref, *intent)
                timeout = max(give_up_at - time.monotonic(), 0.0)
                self._take_create_token(ref, lease, reservation, timeout=timeout)
            waited = time.monotonic() - began
            try:
                send_by, posting_at = self._last_check(ref, claim, lease, at_once)
            except (CanceledError, RequeueError, SupersededError) as exc:
                # No POST was sent: the token leaves the window (it would count a creation the
                # account never saw: after a cancel, every thread that had one). A refusal of
                # the call that does it all at once took no token: nothing to give back.
                ctx.limiter.give_back_create_token(lease)
                if not isinstance(exc, SupersededError):
                    self._created_nothing(ref)
                raise
            posted_at = time.monotonic()
            try:
                with self._watched(ref, model, input_, posting_at, wait):
                    view = ctx.calls.create(
                        model, input_, webhook=ctx.settings.webhook_url, wait=wait or None, send_by=send_by
                    )
            except UnsentPostError:
                # Held back before it left: the account never saw it. `posting_at` stays, so the
                # next run reconciles (another may have concluded "none" and created meanwhile).
                ctx.limiter.give_back_create_token(lease)
                raise
            except TransientError as exc:
                if exc.status == 429:
                    # Refused, so nothing was created and the account did not count it: the
                    # token leaves the window, which counts the creations the account saw.
                    ctx.limiter.give_back_create_token(lease)
                    self._pause_creations(ref, model, exc)
                    continue  # the token call sleeps through the pause
                if is_ambiguous(exc):
                    # The prediction may exist: keep the intent (the next run reconciles first)
                    # and keep the slot counted for it (an orphan the reconciliation adopts or
                    # settles), so an unknown prediction never runs beside a full fleet.
                    self._leave_to_reconciliation(ref, lease)
                    raise RequeueError(
                        f"{exc}; reconciling before any new creation", countdown=self._backoff(1)
                    ) from None
                self._created_nothing(ref)
                raise
            except (PermanentModelError, LocalError):
                self._created_nothing(ref)
                raise
            self._metric("slot_wait", waited, "create")
            self._metric("creation", model)
            self._record(ref, lease, view)
            return Created(view, posted_at)

    def _create_at_once(
        self, ref: AttemptRef, claim: Claim, lease: Lease, reservation: Reservation, intent: Intent
    ) -> tuple[PostCheck, float] | None:
        """The intent, the creation token and the last check's script in ONE round trip, when
        the token can be granted at once (workers/lua/attempt_create.lua): all of it written
        (GO) or none of it (the last check's verdict). Returns that check and the moment
        (time.monotonic()) the call began, which is before its stamp (`_last_check` counts the
        send-by time from it); None when the token needs a wait (or creations are paused):
        nothing was written. The token's refusals are the slow path's (_token_refusals)."""
        began = time.monotonic()
        with self._token_refusals(ref, reservation):
            check = self.ctx.creations.begin_at_once(
                self.ctx.limiter, ref, claim.token, lease, reservation, intent
            )
        return None if check is None else (check, began)

    def _take_create_token(
        self, ref: AttemptRef, lease: Lease, reservation: Reservation, *, timeout: float
    ) -> None:
        """The token marks the slot with this attempt: should this worker die inside the POST,
        the slot stays counted (orphaned) until the attempt is reconciled. The same call reserves
        the attempt's price (an orphan's reservation stays until the attempt is reconciled)."""
        with self._token_refusals(ref, reservation):
            self.ctx.limiter.take_create_token(
                timeout=timeout,
                should_stop=self._stopper(ref.batch_id),
                holder=lease,
                attempt=ref.marker,
                reservation=reservation,
            )

    @contextmanager
    def _token_refusals(self, ref: AttemptRef, reservation: Reservation) -> Iterator[None]:
        """What a refused creation token means for the attempt, whichever call took it: nothing
        was created, so the intent is cleared (and the reservation given back, unless the price
        itself was refused)."""
        try:
            yield
        except BudgetExceededError as exc:
            self.ctx.creations.clear_intent(ref)
            exc.amount = reservation.amount
            raise
        except AcquireTimeoutError:
            self._created_nothing(ref)
            self._stop_if_canceled_or_shutting_down(ref.batch_id)
            raise RequeueError("no creation token in time; back in the queue", counted=False) from None
        except LeaseLostError as exc:
            # The slot's lease ran out while this run stalled (the slot may be another's by now):
            # nothing was sent; the attempt waits for a slot again.
            self._created_nothing(ref)
            raise RequeueError(f"{exc}; back to waiting for a slot", counted=False) from None

    def _created_nothing(self, ref: AttemptRef) -> None:
        """No POST was sent, or its answer says nothing was created: the intent is cleared and
        the reservation given back (the attempt reserves again when it next creates)."""
        self.ctx.creations.clear_intent(ref)
        try:
            self.ctx.budget.release(ref.marker)
        except Exception as exc:  # noqa: BLE001 - kept reserved: the limit errs on the safe side
            log.warning("could not give back the reservation of %s: %s", ref.marker, exc)

    def _watched(
        self, ref: AttemptRef, model: str, input_: dict[str, Any], posting_at: float, wait: int
    ) -> AbstractContextManager[None]:
        """A held sync create is watched for its batch's cancel while it is open: its prediction
        (whose id only the answer tells) is then found and canceled at Replicate
        (workers.held_creates, workers.held_cancel). A create without a wait answers at once."""
        if not wait:
            return nullcontext()
        held = HeldCreate(ref, model, input_, posting_at, self._held_canceler.cancel)
        return self.ctx.held_creates.holding(held)

    def _last_check(
        self, ref: AttemptRef, claim: Claim, lease: Lease, done: tuple[PostCheck, float] | None = None
    ) -> tuple[float, float]:
        """Right before the POST: this run must still own the attempt and the slot, and the
        batch must not be canceled. The waits before it (slot, creation token) can outlast the
        claim and the lease when this worker was cut off from Redis or stalled; the attempt may
        then have been sent again and be running elsewhere, the slot granted to another. Local
        checks first, then ONE round trip: a script checks the claim, the item's current
        attempt, the cancel flag and the slot's lease (by fence) in Redis and stamps
        `posting_at`, from when the POST may be in flight. A Redis error there escapes (the task
        waits and runs the attempt again): "cannot tell" is never taken for "lost".

        `done`: that script's check was already made, with the intent and the token, by
        `_create_at_once` (and when its call began): its verdict is taken the same way.

        Returns the send-by time (time.monotonic()) of the POST and `posting_at` (Unix seconds,
        Redis clock). A reconciliation elsewhere counts its settling window from `posting_at`,
        which allows POST_SEND_SLACK between the stamp and the send; a POST later than that (this
        process stalled) is held back, never sent."""
        if shutting_down():
            raise RequeueError("worker shutting down; attempt handed back before any creation", counted=False)
        if claim.lost:
            raise SupersededError("the attempt's claim was taken while waiting; another run owns it")
        if lease.lost:
            raise RequeueError(
                f"slot lease lost before the creation ({lease.lost_reason}); attempt handed back",
                counted=False,
            )
        if done is not None:
            check, checked_at = done
        else:
            checked_at = time.monotonic()  # before the stamp: send_by is never later than allowed
            check = self.ctx.creations.begin_post(ref, claim.token, (lease.holder_id, lease.fence))
        verdict = check.verdict
        if verdict is PostVerdict.SLOT_LOST:
            lease._mark_lost("the lease was not held any more at the last check (checked in Redis)")
            raise RequeueError(
                "slot lease ran out before the creation; back to waiting for a slot", counted=False
            )
        if verdict is PostVerdict.MOVED_ON:
            raise SupersededError("the item is not running this attempt any more; another run moved it on")
        if verdict is PostVerdict.CANCELED:
            raise CanceledError("batch canceled")
        if verdict is PostVerdict.LOST:
            raise SupersededError("the attempt's claim expired while waiting; another run owns it")
        if verdict is PostVerdict.RECORDED:
            raise SupersededError("another run recorded a prediction for this attempt while this one waited")
        assert check.posting_at is not None, "GO always stamps posting_at"
        return checked_at + POST_SEND_SLACK, check.posting_at

    def _pause_creations(self, ref: AttemptRef, model: str, exc: TransientError) -> None:
        """A 429 on create: nothing was created, and the account (another program on it, or a
        limit lower than ours) is throttled: creations pause on every host."""
        self.ctx.creations.clear_intent(ref)
        self._metric("rate_limited", "create")
        seconds = float(exc.retry_after or 1.0)
        self.ctx.limiter.pause_creations(seconds, reason=f"429 on create ({model})")
        self._metric("creation_pause", seconds)
        log.warning("429 on create; creations paused %.1f s for every worker", seconds)

    def _record(self, ref: AttemptRef, lease: Lease, view: PredictionView) -> None:
        """The prediction id, recorded the moment the POST answers, before any waiting, and shown
        on the slot in the same round trip (only if recorded: a slot never shows a prediction
        another attempt owns)."""
        ctx = self.ctx
        if not ctx.creations.record_on_slot(ref, view.id, lease):
            # Another attempt owns this prediction already: an item with the identical input
            # reconciling its own unresolved create adopted it between our POST's answer and
            # this record. Ours is then unknown to us: reconcile it, never go on without one.
            self._leave_to_reconciliation(ref, lease)
            log.warning(
                "prediction %s created by this attempt was adopted by another attempt "
                "first; reconciling before anything else",
                view.id,
            )
            raise RequeueError(
                f"prediction {view.id} was taken by another attempt with the same input; reconciling",
                countdown=self._backoff(1),
            )
        bind_log_context(prediction=view.id)  # in the attempt's ledger record too (same script)
        log.info("created prediction %s", view.id)

    def _leave_to_reconciliation(self, ref: AttemptRef, lease: Lease) -> None:
        """The POST is over but its prediction is unknown to us: the intent stays (the next run
        reconciles), and the slot stays counted for it (abandoned, not released)."""
        self.ctx.creations.mark_post_returned(ref)
        lease.abandon()

    def _stop_if_canceled_or_shutting_down(self, batch_id: str) -> None:
        """After a wait before any creation: CanceledError if the batch was canceled (read
        afresh), RequeueError (the attempt handed back, nothing paid) if this worker is stopping."""
        if self.ctx.ledger.is_canceled(batch_id):
            raise CanceledError("batch canceled")
        if shutting_down():
            raise RequeueError("worker shutting down; attempt handed back before any creation", counted=False)
