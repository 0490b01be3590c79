"""A held sync create of a canceled batch: its prediction found and canceled at Replicate.

The worker holding the create does not know the prediction's id until the answer comes. It finds
it the way reconciliation does (workers.reconcile): the account's recent predictions, newest
first, on the read budget, the same model reference and the same input. It cancels it at once; the
held create then answers `canceled` and the attempt ends through the normal path (slot released,
the reservation settled as spend: a canceled prediction may be billed for the time it ran).

Cost safety: it cancels only what it can attribute to the fleet, never another batch's
prediction nor one another program of the account created:
- a listed prediction is a candidate only if it has the held create's model and input, no attempt
  owns it (`prediction:<id>`) and it was created after the earliest POST that could have made it;
- if an unresolved create (an intent without a prediction id, from the model's index of intents)
  of a batch that is not canceled could have made it (same model, its input matching), nobody can
  tell whose it is: nothing is canceled;
- the candidates (running or ended) are counted against the fleet's own unresolved creates of
  that input whose POST left (the canceled batches': the held one and its twins). More candidates
  than creates means another program created one with the same input in that window: nothing is
  canceled by listing; fewer means a POST is still on its way: looked for again, and so is an
  equal count while the fleet's latest POST is younger than LIST_SETTLE (its prediction may not
  be listed yet, and another program's could stand in its place). What remains: a POST whose
  prediction appears more than a second after it left, while another program's with the same
  input was listed in its place.
Either way the held create is then left to its answer, which carries the prediction's id: the
run cancels that one by id (workers.runner, the usual cancel path). A prediction not listed yet
(the POST still on its way) is looked for again every FIND_RETRY s until the create answers.
Predictions of the same canceled batch with identical inputs may be canceled by each other's
watch: all of them are to be canceled anyway.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import Any

from shared.ledger import AttemptRecord
from shared.logging_setup import log_context
from workers.attempts import AttemptRef
from workers.held_creates import HeldCreate
from workers.reconcile import RECONCILE_SKEW
from workers.replicate_calls import PredictionView, created_for, same_input
from workers.stage import AttemptStage

log = logging.getLogger("workers.held_cancel")

FIND_RETRY = 1.0  # seconds between listings while the prediction is not listed yet
# A POST leaves within workers.creator.POST_SEND_SLACK (2.5 s) of its `posting_at` or not at all,
# and its prediction is listed within moments of arriving: POST_SEND_SLACK + 1 s (tests pin it).
# Until the fleet's latest such POST is this old, a listed prediction could stand in the place of
# its not yet listed one: the count is not trusted.
LIST_SETTLE = 3.5
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
            found = self._find(held)
            if found.ours and not found.shared and not found.foreign:
                for prediction_id in found.ours:
                    if self._cancel_prediction(prediction_id):
                        log.info("canceled prediction %s while its create was held", prediction_id)
                return
            if found.shared:
                log.warning(
                    "held create's prediction cannot be told from another batch's (%s have the same "
                    "model and input); it is canceled when its create answers",
                    ", ".join(found.shared[:3]),
                )
                return
            if found.foreign:
                log.warning(
                    "held create's prediction cannot be told from one another program created (%s "
                    "predictions have its model and input, the fleet's creates can have made %s); "
                    "it is canceled by id when its create answers",
                    found.foreign,
                    found.twins,
                )
                return
            held.ended.wait(FIND_RETRY)

    def _find(self, held: HeldCreate) -> Found:
        """The listed predictions the held create's could be, sorted by whose they can be."""
        ctx = self.ctx
        intents = self._intents(held)
        since = intents.earliest_post - RECONCILE_SKEW
        found = Found(twins=intents.twins)
        candidates: list[PredictionView] = []
        cursor: str | None = None
        for _ in range(MAX_PAGES):
            ctx.limiter.take_read_token(timeout=READ_WAIT)
            views, cursor = ctx.calls.list_page(cursor)
            for view in views:
                if not self._matches(held, view) or not self._after(view, since):
                    continue
                if ctx.redis.exists(ctx.keys.prediction_owner(view.id)):
                    continue
                if any(other is None or same_input(other, view.input) for other in intents.others):
                    found.shared.append(view.id)
                else:
                    candidates.append(view)
            times = [t for t in (v.created_ts() for v in views) if t is not None]
            if not cursor or (times and min(times) < since):
                break
        if len(candidates) > intents.twins:
            found.foreign = len(candidates)  # one at least is not the fleet's: none can be told
        elif (
            len(candidates) == intents.twins
            and ctx.creations.redis_now() - intents.latest_post >= LIST_SETTLE
        ):
            # Each of the fleet's creates has its prediction listed. Fewer (or a POST so recent
            # that its prediction may not be listed yet): a listed one could be another
            # program's in the place of one still on its way: look again.
            found.ours = [view.id for view in candidates if not view.terminal]
        return found

    @staticmethod
    def _matches(held: HeldCreate, view: PredictionView) -> bool:
        """Its model and input (running or ended: an ended one is counted, never canceled)."""
        return created_for(held.model, view) and same_input(held.input, view.input)

    @staticmethod
    def _after(view: PredictionView, since: float) -> bool:
        created = view.created_ts()
        return created is None or created >= since

    def _intents(self, held: HeldCreate) -> Intents:
        """The unresolved creates on the held create's model: the inputs of those of batches not
        canceled (None: not known, so it could be anything), and how many of the canceled
        batches' sent the held create's input (itself included) with the earliest of their POSTs."""
        ctx = self.ctx
        others: list[dict[str, Any] | None] = []
        twins, earliest, latest = 1, held.posting_at, held.posting_at
        refs = [ref for ref in ctx.creations.unresolved_of_model(held.model) if ref != held.ref]
        for ref, sent in zip(refs, self._inputs(refs)):
            if not ctx.ledger.is_canceled(ref.batch_id):
                others.append(sent)
                continue
            posting_at = ctx.creations.get(ref).posting_at
            # Only a create whose POST left can have made a prediction; one whose input is not
            # known is not counted as the fleet's (counting it could cancel another's).
            if sent is not None and posting_at is not None and same_input(held.input, sent):
                twins += 1
                earliest, latest = min(earliest, posting_at), max(latest, posting_at)
        return Intents(others, twins, earliest, latest)

    def _inputs(self, refs: list[AttemptRef]) -> list[dict[str, Any] | None]:
        """The input each attempt sent, from its ledger record (None: not known)."""
        if not refs:
            return []
        ctx = self.ctx
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


@dataclass
class Intents:
    others: list[dict[str, Any] | None]  # inputs of unresolved creates of batches not canceled
    twins: int  # unresolved creates of canceled batches with the held input, POST sent (>= 1)
    earliest_post: float  # the earliest `posting_at` among those (Unix seconds, Redis clock)
    latest_post: float  # and the latest


@dataclass
class Found:
    twins: int
    ours: list[str] = field(default_factory=list)  # running; one per fleet create listed, no more
    shared: list[str] = field(default_factory=list)  # another batch's unresolved create may own
    foreign: int = 0  # candidates counted when they outnumber the fleet's creates (0: they do not)
