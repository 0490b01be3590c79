"""Reconciling an ambiguous create: did the earlier POST of this attempt create a prediction?

A run that finds an intent without a prediction id on the attempt's creation record (its creator
was killed between the POST and the record, or the POST answered 5xx or timed out) must not
create again blindly: that could pay twice. It lists the account's recent predictions (newest
first, on the read budget) and adopts the one created for the same model reference (by model,
by that pinned version, or by that deployment: workers.replicate_calls.created_for) with the same
input that no other attempt owns.

A listed prediction of the same model from that time whose input was removed (Replicate removes
inputs and outputs about an hour after the end) could be the earlier create's: then nobody can
tell, and the attempt fails with that reason (LocalError: never created on a guess, no paid
fallback), rather than concluding "none".

"None was created" is only concluded by a listing that starts after the settling window of the
earlier create, because a gateway can answer 502/504 (or the client time out) while Replicate
still creates the prediction. The window is the POST's in-flight limit (connect + write + read
timeouts + 5 s, workers.replicate_calls.post_in_flight_limit), counted from when the ambiguous
answer came back (`post_returned_at`), or, when the sender died or was cut off, from the latest
the POST could have ended (`posting_at` + that limit, longer by a sync create's wait). An intent
without `posting_at` from a writer that stamps it means no POST was sent at all: nothing to wait
for. Until the window has ended the attempt is run again later (not counted as a try), never
created a second time.
"""

from __future__ import annotations

import logging
import random
from functools import partial
from typing import Any, NamedTuple

from shared.errors import LocalError, RequeueError
from shared.logging_setup import bind_log_context
from workers.attempts import AttemptRef, CreationRecord
from workers.replicate_calls import created_for, post_in_flight_limit, same_input
from workers.stage import AttemptStage

log = logging.getLogger("workers.reconcile")

RECONCILE_SKEW = 300.0  # seconds of clock difference tolerated between Redis and Replicate
RECONCILE_MAX_PAGES = 500  # one reconciliation reads at most this many pages (of 100 predictions)


class SettlingEnd(NamedTuple):
    at: float  # Unix time, Redis clock
    why: str


class Reconciler(AttemptStage):
    def settling_ends_at(self, record: CreationRecord) -> SettlingEnd:
        """When "the earlier create made nothing" may be concluded, and why.

        A sync create's wait (`post_wait`) lengthens only the case where its sender died or was
        cut off: its POST may be held (by a gateway, before it reaches Replicate) as long as the
        client would have waited for the answer. Once an answer came (`post_returned_at`), the
        wait is over whatever it was, and the window is the same as without one. A record from
        an older version (no `posting_marked`) keeps that version's rule: the in-flight limit
        after the intent."""
        window = post_in_flight_limit(self.ctx.settings)
        if record.post_returned_at is not None:
            return SettlingEnd(record.post_returned_at + window, "the earlier create answered ambiguously")
        if record.posting_at is not None:
            return SettlingEnd(
                record.posting_at + 2 * post_in_flight_limit(self.ctx.settings, record.post_wait),
                "the earlier create's POST may still be in flight",
            )
        assert record.intent_at is not None, "only an intent has a settling window"
        if record.posting_marked:
            return SettlingEnd(record.intent_at, "no POST was sent")
        return SettlingEnd(
            record.intent_at + window, "the earlier create (an older worker's) may still be in flight"
        )

    def reconcile(
        self, ref: AttemptRef, model: str, input_: dict[str, Any], record: CreationRecord
    ) -> str | None:
        """The prediction the earlier POST created, adopted for this attempt; None once a listing
        that started after the settling window (and went back past the intent) shows none.
        RequeueError while it cannot be told yet."""
        ctx = self.ctx
        settling = self.settling_ends_at(record)
        listed_at = ctx.creations.redis_now()  # before the listing: it must start after the window
        adopted, unknown = self._find_and_adopt(
            ref, model, input_, since=(record.intent_at or 0.0) - RECONCILE_SKEW
        )
        if adopted is not None:
            return adopted
        if listed_at < settling.at:
            left = settling.at - listed_at
            raise RequeueError(
                f"no prediction listed for the earlier create yet; {settling.why}, so it may still "
                f"appear: listing again in {left:.1f} s before any new creation",
                countdown=min(left + random.uniform(0.2, 1.0), self.budget.countdown_cap),
                counted=False,
            )
        if unknown:
            # One of them may be the earlier create's: "none was created" cannot be concluded,
            # and creating on a guess could pay twice. They have ended (Replicate removes inputs
            # after the end), so a slot left counted for this attempt is free.
            self._settle(ref)
            raise LocalError(
                f"cannot tell whether the earlier create made a prediction: {len(unknown)} listed "
                f"prediction(s) of {model} from that time have their input removed (Replicate keeps "
                f"inputs about an hour), e.g. {', '.join(unknown[:3])}; not creating again"
            )
        ctx.creations.clear_intent(ref)
        log.info("reconciliation found no prediction for the earlier create; creating one")
        return None

    def _find_and_adopt(
        self, ref: AttemptRef, model: str, input_: dict[str, Any], *, since: float
    ) -> tuple[str | None, list[str]]:
        """Page through the account's predictions, newest first, back to `since`: the first with
        this model and input that no other attempt owns becomes this attempt's. Returns (the
        adopted id or None, the ids of unowned predictions of this model since `since` whose
        input was removed: any of them could be the earlier create's, nobody can tell)."""
        ctx = self.ctx
        cursor: str | None = None
        unknown: list[str] = []
        for _ in range(RECONCILE_MAX_PAGES):
            views, cursor = self._read(ref.batch_id, partial(ctx.calls.list_page, cursor))
            for view in views:
                if not created_for(model, view):
                    continue
                if not view.input:  # removed: it may or may not be ours
                    created = view.created_ts()
                    if (created is None or created >= since) and not ctx.creations.owned_by_other(
                        view.id, ref
                    ):
                        unknown.append(view.id)
                    continue
                if not same_input(input_, view.input):
                    continue
                if ctx.creations.owned_by_other(view.id, ref):
                    continue
                # The id goes into the attempt's ledger record in the same script.
                if ctx.creations.record_prediction(ref, view.id, origin="adopted", in_ledger=True):
                    bind_log_context(prediction=view.id)
                    log.warning("adopted prediction %s created by an earlier run of this attempt", view.id)
                    return view.id, unknown
            times = [t for t in (v.created_ts() for v in views) if t is not None]
            if not cursor or (times and min(times) < since):
                return None, unknown
        raise RequeueError(
            f"listed {RECONCILE_MAX_PAGES} pages of predictions without reaching the earlier "
            "create; not creating again until it is settled",
            countdown=self._backoff(2),
        )
