"""Waiting for a prediction's end: the create's own answer, its webhook, or polls paced on the
account's read budget.

In sync mode (the default without a webhook URL, Settings.wait_mode_in_use) the create asks
`Prefer: wait=W`, W chosen per model from its learned duration (`sync_wait`): most predictions
come back ended in the create's answer, with no read spent and the slot freed at once. Those that
outlast W are waited for here like the others. With FLEET_WEBHOOK_URL, the receiver hands the
finished prediction to the waiting thread through Redis (workers.completions) within milliseconds
and no read is spent; a slow safety poll covers a lost delivery. Otherwise every prediction in
flight polls, paced so that all slots polling together stay within POLL_SHARE of the account's
read budget (the rest is left for uploads, reconciliation and other programs).

A run whose claim is lost while it waits (its process stalled past the claim's ttl, or Redis lost
the claim and another run took the attempt) stops (SupersededError): here once the keeper finds it
lost, else when the prediction's end is known and its slot given back (workers.runner asks Redis:
`Claim.ensure_ours`, checked again by workers.outputs before every write). The run that holds the
claim now resumes the same prediction and writes its outputs; this one writes nothing.

Polling starts a little before the model's usual duration: a smoothed average per model, kept in
Redis for the whole fleet and timed from the creation (never from before the creation token: in a
rate-bound batch that wait is most of a window and would push the first poll late).
"""

from __future__ import annotations

import logging
import math
import time
from typing import NoReturn

from shared.errors import (
    AcquireTimeoutError,
    CanceledError,
    PermanentModelError,
    RequeueError,
    SupersededError,
    TransientError,
)
from shared.limiter import Lease
from workers.claims import Claim
from workers.completions import CompletionWatch
from workers.replicate_calls import PredictionView
from workers.stage import AttemptStage

log = logging.getLogger("workers.waiting")

MAX_POLL_INTERVAL = 5.0
MIN_POLL_INTERVAL = 0.1
POLL_SHARE = 0.8  # of the account's read budget that polling may use when every slot polls
FIRST_POLL_FRACTION = 0.7  # of the model's usual duration: most predictions take longer
SAFETY_POLL_INTERVAL = 30.0  # with webhooks: polls only catch a lost delivery
# A sync create waits SYNC_WAIT_FACTOR x the model's usual duration (lognormal latencies with the
# seed models' spread rarely go past 3x their mean), at least SYNC_WAIT_MIN s (a shorter wait
# saves nothing: the thread waits either way), at most Settings.sync_wait_max (60: Replicate's
# most), which is also the wait for a model whose duration is not known yet.
SYNC_WAIT_FACTOR = 3.0
SYNC_WAIT_MIN = 5


def sync_wait_seconds(expected: float | None, cap: int) -> int:
    """The `Prefer: wait` of a sync create for a model whose usual duration is `expected` s."""
    if expected is None:
        return cap
    return int(min(cap, max(SYNC_WAIT_MIN, math.ceil(SYNC_WAIT_FACTOR * expected))))


class PredictionWaiter(AttemptStage):
    def sync_wait(self, model: str) -> int:
        """The `Prefer: wait` for a create of `model`: 0 (none) unless the workers run in sync mode."""
        settings = self.ctx.settings
        if settings.wait_mode_in_use != "sync":
            return 0
        return sync_wait_seconds(self.expected_latency(model), settings.sync_wait_max)

    def wait(
        self,
        batch_id: str,
        prediction_id: str,
        lease: Lease,
        model: str,
        claim: Claim,
        elapsed: float = 0.0,
    ) -> PredictionView:
        """Until the prediction is terminal, told by its webhook (when configured) or a poll on
        the read budget, whichever comes first; `elapsed`: seconds it has run already (a sync
        create that outlasted its wait). Cancels it if it runs longer than the prediction
        timeout; CanceledError when the batch is canceled (the runner cancels the prediction);
        SupersededError once the keeper finds `claim` (this run's) lost. The end returned is not
        checked against the claim in Redis: the caller does, once the slot is back."""
        ctx = self.ctx
        first, every = self._poll_pacing(model)
        first = max(first - elapsed, MIN_POLL_INTERVAL)
        deadline = time.monotonic() + ctx.settings.prediction_timeout
        watch = ctx.completions.watch(prediction_id) if ctx.completions is not None else None
        try:
            delay, warned_lost = first, False
            last_error: Exception | None = None
            while True:
                pushed = self._await_news(batch_id, watch, delay)
                if pushed is not None:
                    self._metric("end_noticed", "webhook")
                    return pushed
                if ctx.cancel_watch.is_canceled(batch_id):
                    raise CanceledError("batch canceled")
                if claim.lost:  # the keeper's flag: no Redis call per poll
                    raise SupersededError("the attempt's claim was lost while waiting; another run owns it")
                if lease.lost and not warned_lost:
                    warned_lost = True
                    log.warning(
                        "slot lease lost (Redis unreachable or lease expired); still waiting for "
                        "prediction %s, which keeps running at Replicate",
                        prediction_id,
                    )
                if time.monotonic() > deadline:
                    self._give_up(prediction_id, last_error)
                try:
                    # Cancel only: a prediction in flight is waited for through a warm shutdown
                    # (its slot cannot be handed to another process while it runs).
                    ctx.limiter.take_read_token(
                        timeout=self.budget.slot_wait,
                        should_stop=lambda: ctx.cancel_watch.is_canceled(batch_id),
                    )
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
                    raise TransientError(
                        f"prediction {prediction_id} cannot be read: {exc}", prediction_id=prediction_id
                    ) from None
                last_error = None
                if view.terminal:
                    self._metric("end_noticed", "poll")
                    return view
                delay = every
        finally:
            if watch is not None:
                watch.close()

    def _give_up(self, prediction_id: str, last_error: Exception | None) -> NoReturn:
        """Past the prediction timeout: if the prediction cannot even be read, run the attempt
        again later (it resumes); else cancel it and count a transient failure."""
        if last_error is not None:
            raise RequeueError(
                f"cannot read prediction {prediction_id}: {last_error}", countdown=self._backoff(1)
            )
        self._cancel_prediction(prediction_id)
        raise TransientError(
            f"no result within {self.ctx.settings.prediction_timeout:g} s; canceled",
            prediction_id=prediction_id,
        )

    def _poll_pacing(self, model: str) -> tuple[float, float]:
        """(first poll after, then every), in seconds.

        With webhooks the polls are only a safety net for a lost delivery. Without, each
        prediction in flight polls every `concurrency / (POLL_SHARE x reads per second)`: all
        the slots polling together then stay within POLL_SHARE of the account's read budget,
        and a finished prediction is noticed as early as that budget allows."""
        expected = self.expected_latency(model)
        if self.ctx.completions is not None:
            first = expected + max(expected, SAFETY_POLL_INTERVAL / 3) if expected else SAFETY_POLL_INTERVAL
            return first, SAFETY_POLL_INTERVAL
        limits = self.ctx.limiter.limits()
        every = limits.concurrency_limit / (POLL_SHARE * limits.reads_per_second)
        every = min(max(every, MIN_POLL_INTERVAL), MAX_POLL_INTERVAL)
        first = FIRST_POLL_FRACTION * expected if expected else every
        return max(first, MIN_POLL_INTERVAL), every

    def _await_news(
        self, batch_id: str, watch: CompletionWatch | None, seconds: float
    ) -> PredictionView | None:
        """Sleep up to `seconds`; returns early with the prediction if its webhook arrives, or
        with None as soon as the batch is canceled."""
        end = time.monotonic() + seconds
        while True:
            left = end - time.monotonic()
            if left <= 0 or self.ctx.cancel_watch.is_canceled(batch_id):
                return None
            if watch is None:
                time.sleep(min(left, 0.5))
                continue
            pushed = watch.wait(min(left, 0.5))
            if pushed is not None:
                view = PredictionView.from_json(pushed)
                if view.terminal:
                    return view

    def expected_latency(self, model: str) -> float | None:
        """The model's usual duration (seconds), None until one prediction of it has succeeded."""
        return self.ctx.latencies.expected(model)

    def record_latency(self, model: str, seconds: float) -> None:
        self.ctx.latencies.record(model, seconds)
