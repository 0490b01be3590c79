"""A held sync create of a canceled batch: its prediction found and canceled at Replicate.

The worker holding the create does not know the prediction's id until the answer comes. It finds
it the way reconciliation does (workers.reconcile): the account's recent predictions, newest
first, on the read budget, the same model reference and the same input. It cancels it at once; the
held create then answers `canceled` and the attempt ends through the normal path (slot released,
the reservation settled as spend: a canceled prediction may be billed for the time it ran).

Cost safety: it never cancels another batch's prediction. A listed prediction is canceled only if
it is still running, no attempt owns it (`prediction:<id>`), and no unresolved create (an intent
without a prediction id, from the model's index of intents) of a batch that is not canceled could
have made it (same model, its input matching): with identical inputs nobody can tell whose it is,
and the held create is then left to its answer, as before. A prediction not listed yet (the POST
still on its way) is looked for again every FIND_RETRY s until the create answers. Predictions of
the same canceled batch with identical inputs may be canceled by each other's watch: all of them
are to be canceled anyway.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from shared.ledger import AttemptRecord
from shared.logging_setup import log_context
from workers.held_creates import HeldCreate
from workers.reconcile import RECONCILE_SKEW
from workers.replicate_calls import PredictionView, created_for, same_input
from workers.stage import AttemptStage

log = logging.getLogger("workers.held_cancel")

FIND_RETRY = 1.0  # seconds between listings while the prediction is not listed yet
MAX_PAGES = 5  # pages of 100 listed per look: the held create is among the newest
READ_WAIT = 10.0  # seconds a read token is waited for


class HeldCreateCanceler(AttemptStage):
    def cancel(self, held: HeldCreate) -> None:
        """Runs on its own thread (workers.held_creates) until the prediction is canceled, the
        held create answers, or the prediction cannot be told from another batch's."""
        with log_context(**held.ref.log_fields(), model=held.model):
            try:
                self._cancel(held)
            except Exception as exc:  # noqa: BLE001 - the held create is then canceled when it answers
                log.warning("could not cancel the held create's prediction: %s", exc)

    def _cancel(self, held: HeldCreate) -> None:
        while not held.ended.is_set():
            if not self.ctx.ledger.is_canceled(held.ref.batch_id):
                return  # the cancel was lifted (producer retry)
            ours, shared = self._find(held)
            if ours:
                for prediction_id in ours:
                    if self._cancel_prediction(prediction_id):
                        log.info("canceled prediction %s while its create was held", prediction_id)
                return
            if shared:
                log.warning(
                    "held create's prediction cannot be told from another batch's (%s have the same "
                    "model and input); it is canceled when its create answers",
                    ", ".join(shared[:3]),
                )
                return
            held.ended.wait(FIND_RETRY)

    def _find(self, held: HeldCreate) -> tuple[list[str], list[str]]:
        """(running unowned predictions with the held create's model and input that only a
        canceled batch's create can have made, those another batch's unresolved create could
        have made)."""
        ctx = self.ctx
        others = self._other_inputs(held)
        since = held.posting_at - RECONCILE_SKEW
        ours: list[str] = []
        shared: list[str] = []
        cursor: str | None = None
        for _ in range(MAX_PAGES):
            ctx.limiter.take_read_token(timeout=READ_WAIT)
            views, cursor = ctx.calls.list_page(cursor)
            for view in views:
                if not self._matches(held, view) or ctx.redis.exists(ctx.keys.prediction_owner(view.id)):
                    continue
                if any(other is None or same_input(other, view.input) for other in others):
                    shared.append(view.id)
                else:
                    ours.append(view.id)
            times = [t for t in (v.created_ts() for v in views) if t is not None]
            if not cursor or (times and min(times) < since):
                break
        return ours, shared

    @staticmethod
    def _matches(held: HeldCreate, view: PredictionView) -> bool:
        return not view.terminal and created_for(held.model, view) and same_input(held.input, view.input)

    def _other_inputs(self, held: HeldCreate) -> list[dict[str, Any] | None]:
        """The inputs of the unresolved creates on this model of batches not canceled (None: not
        known, so it could be anything)."""
        ctx = self.ctx
        refs = [
            ref
            for ref in ctx.creations.unresolved_of_model(held.model)
            if ref != held.ref and not ctx.ledger.is_canceled(ref.batch_id)
        ]
        if not refs:
            return []
        pipe = ctx.redis.pipeline(transaction=False)
        for ref in refs:
            pipe.hget(ctx.keys.item(ref.batch_id, ref.index), f"att:{ref.attempt}")
        inputs: list[dict[str, Any] | None] = []
        for raw in pipe.execute():
            try:
                sent = json.loads(AttemptRecord.from_json(raw).input or "null") if raw else None
            except (ValueError, TypeError):
                sent = None
            inputs.append(sent if isinstance(sent, dict) else None)
        return inputs
