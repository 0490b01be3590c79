"""What every stage of an attempt shares: the process's WorkerContext, the budget of its waits,
and a few small helpers (a call on the read budget, backoff, when to stop waiting, freeing a
slot, metrics).

The stages (workers.runner drives them): the input (workers.inputs), the creation and the slot
(workers.creator), waiting for the end (workers.waiting), reconciling an ambiguous create
(workers.reconcile), storing the outputs (workers.outputs), deciding what comes next
(workers.outcomes).
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from shared.errors import AcquireTimeoutError, CanceledError, RequeueError, TransientError
from shared.settings import Settings
from workers.attempts import AttemptRef
from workers.context import WorkerContext, claim_ttl, shutting_down
from workers.outage import is_redis_unavailable

log = logging.getLogger("workers.stage")
T = TypeVar("T")


@dataclass(frozen=True)
class WaitBudget:
    """Every wait inside one delivery stays far below the broker's visibility timeout, which
    counts from delivery: countdowns (ETA messages sit unacked in a worker) and slot waits."""

    countdown_cap: float  # longest countdown of a follow-up (backoff, recheck)
    slot_wait: float  # longest wait for a slot, a creation token or a read before a creation
    recheck_interval: float  # between two looks at an attempt another run has claimed
    max_rechecks: int  # then that run is left alone (it has surely ended or died by then)

    @classmethod
    def from_settings(cls, settings: Settings) -> WaitBudget:
        visibility = float(settings.visibility_timeout)
        countdown_cap = max(0.5, min(visibility * 0.2, 300.0))
        recheck_interval = max(0.5, min(claim_ttl(settings) / 2, countdown_cap))
        return cls(
            countdown_cap=countdown_cap,
            slot_wait=max(1.0, min(visibility * 0.3, 600.0)),
            recheck_interval=recheck_interval,
            max_rechecks=int((settings.prediction_timeout + 2 * claim_ttl(settings)) / recheck_interval) + 3,
        )

    def backoff(self, streak: int, retry_after: float | None = None) -> float:
        """Exponential with jitter, at least retry_after, never near the visibility timeout."""
        base = min(self.countdown_cap, 0.5 * (2**streak))
        delay = random.uniform(base / 2, base)
        if retry_after:
            delay = max(delay, float(retry_after) + random.uniform(0, 0.5))
        return round(min(delay, self.countdown_cap), 3)


class AttemptStage:
    def __init__(self, ctx: WorkerContext, budget: WaitBudget | None = None):
        self.ctx = ctx
        self.budget = budget or WaitBudget.from_settings(ctx.settings)

    def _read(self, batch_id: str, call: Callable[[], T]) -> T:
        """A read-budget call outside the polling loop; failures run the attempt again later."""
        try:
            self.ctx.limiter.take_read_token(
                timeout=self.budget.slot_wait, should_stop=self._stopper(batch_id)
            )
        except AcquireTimeoutError:
            if self.ctx.ledger.is_canceled(batch_id):
                raise CanceledError("batch canceled") from None
            raise RequeueError("no read token in time", counted=False) from None
        try:
            return call()
        except TransientError as exc:
            if exc.status == 429:
                self._metric("rate_limited", "read")
            raise RequeueError(str(exc), countdown=self._backoff(1, exc.retry_after)) from None

    def _stopper(self, batch_id: str) -> Callable[[], bool]:
        """Stop waiting (slot, creation token, reads before a creation) when the batch is canceled
        or this worker shuts down: the attempt is handed back, nothing paid was started."""
        watch = self.ctx.cancel_watch
        return lambda: shutting_down() or watch.is_canceled(batch_id)

    def _backoff(self, streak: int, retry_after: float | None = None) -> float:
        return self.budget.backoff(streak, retry_after)

    def _cancel_prediction(self, prediction_id: str) -> bool:
        """Cancel it at Replicate; True when it is canceled now (not when it had ended already
        or the call failed)."""
        try:
            self.ctx.limiter.take_read_token(timeout=10.0)
            status = self.ctx.calls.cancel(prediction_id)
        except Exception as exc:  # noqa: BLE001 - best effort; it ends by itself anyway
            log.warning("could not cancel prediction %s: %s", prediction_id, exc)
            return False
        log.info("cancel of prediction %s at Replicate: %s", prediction_id, status or "answered")
        return status in ("canceled", "canceling", None)

    def _settle(self, ref: AttemptRef, prediction_id: str | None = None) -> None:
        """Free the slot still counted for this attempt's prediction (or, without one, for the
        attempt's marker, set by its creation token): its holder is gone, since this run owns
        the claim."""
        try:
            self.ctx.limiter.settle(prediction_id, attempt=ref.marker)
        except Exception as exc:  # noqa: BLE001 - the orphaned slot then ends at its deadline
            log.warning("could not free the slot left for %s: %s", prediction_id or ref.marker, exc)

    def _settle_spend(self, ref: AttemptRef) -> None:
        """The attempt's prediction has ended: its reservation becomes spend, at the price
        reserved (a created prediction counts as paid, whatever its end: the spend never
        under-counts what Replicate may bill)."""
        try:
            self.ctx.budget.settle(ref.marker)
        except Exception as exc:  # noqa: BLE001 - kept reserved: the limit errs on the safe side
            if is_redis_unavailable(exc):
                raise  # the task waits for Redis and runs the attempt again: it resumes and settles
            log.warning("could not settle the reservation of %s: %s", ref.marker, exc)

    def _metric(self, name: str, *args: Any) -> None:
        """`ctx.metrics.<name>(*args)`; the work never fails on its metrics."""
        try:
            getattr(self.ctx.metrics, name)(*args)
        except Exception as exc:  # noqa: BLE001
            log.debug("metric %s not recorded: %s", name, exc)
