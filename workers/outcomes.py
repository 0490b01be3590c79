"""What follows a run of an attempt: the item's end, or the follow-up task (the retry policy,
kept apart from running the attempt, as dramatiq keeps it in `middleware/retries.py`).

- TransientError -> a new attempt on the same model, after a backoff with jitter that honours
  retry_after; after `max_transient_retries` of them in a row, as a permanent failure;
- PermanentModelError -> a new attempt on the next model of the item's route; no model left ->
  the item fails, or is `substituted` with the black placeholder when the batch asked for it;
- LocalError -> the item fails (never a paid fallback);
- RequeueError -> the SAME attempt again later (a prediction exists or may exist: the next run
  resumes or reconciles it instead of paying again); counted requeues are bounded, and an
  attempt that keeps failing to finish gives up without leaving anything paid behind;
- CanceledError -> the recorded prediction is canceled at Replicate and the item is canceled.
Every end and follow-up is one ledger transition that expects this attempt to be the item's
current one, so a stale or duplicate run changes nothing.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import redis

from shared.errors import (
    BudgetExceededError,
    LocalError,
    PermanentModelError,
    RequeueError,
    StorageError,
    StorageUnavailableError,
    TransientError,
    WriteRetryError,
)
from shared.request import ImageRequest
from shared.storage import write_once
from workers.attempts import AttemptRef
from workers.claims import Claim
from workers.messages import NextTask
from workers.stage import AttemptStage
from workers.storage import substitute_image

log = logging.getLogger("workers.outcomes")


@dataclass(frozen=True)
class ItemEnd:
    """What a run's last ledger write left in the item (what `producer results` would read back
    for it now): the task's state in Flower is decided from it without reading the item again
    (workers.task_states)."""

    status: str
    attempt: int  # the attempt whose run wrote it
    model: str | None = None  # the model that produced the output (succeeded)
    files: tuple[str, ...] = ()  # the output keys (or addresses) written
    error: str | None = None  # the item's error
    held_reason: str | None = None
    attempt_error: str | None = None  # the error in the attempt's own record


class Outcomes(AttemptStage):
    # The input the run built for its attempt (JSON text), merged into the attempt's record with
    # its end or requeue: the creation's intent records it before any POST (workers.attempts),
    # but a run that stops before the intent (a cancel or a requeue while it waits for a slot)
    # still shows what it would have sent, as when the input had a ledger write of its own.
    _input: tuple[AttemptRef, str] | None = None
    ended: ItemEnd | None = None  # what this run's last ledger write left (None: wrote nothing)
    # The run's claim: released by the ledger transition that ends the attempt (one round trip
    # for both), set by the runner while it holds the claim.
    claim: Claim | None = None

    def _releasing(self, ref: AttemptRef) -> tuple[str, str] | None:
        claim = self.claim
        if claim is None or claim.key != ref.claim_key(self.ctx.keys):
            return None
        return claim.key, claim.token

    def _released(self, ref: AttemptRef) -> None:
        """The transition that carried the claim's release was answered: the claim is gone."""
        claim = self.claim
        if claim is not None and claim.key == ref.claim_key(self.ctx.keys):
            claim.released_in_redis()
            self.claim = None

    def note_input(self, ref: AttemptRef, input_json: str) -> None:
        self._input = (ref, input_json)

    def _with_input(self, ref: AttemptRef, update: dict[str, Any]) -> dict[str, Any]:
        if self._input is not None and self._input[0] == ref:
            update["input"] = self._input[1]
        return update

    # --- the item's end ---------------------------------------------------------------------------
    def succeeded(
        self,
        ref: AttemptRef,
        request: ImageRequest,
        model: str,
        files: list[dict[str, Any]],
        prediction_id: str,
    ) -> None:
        """`files`: what workers.outputs wrote (`url` each; the rest goes to the manifest)."""
        self._finish(
            ref,
            "succeeded",
            model,
            outputs=[f["url"] for f in files],
            att_status="succeeded",
            prediction_id=prediction_id,
            files=[{k: v for k, v in f.items() if k != "url"} for f in files],
        )
        self._metric("prediction", model, "succeeded", self._price(model, request))

    def canceled(self, ref: AttemptRef, model: str, reason: str) -> None:
        """Called once this run holds no slot, whatever stage noticed the cancel. The metric's
        `canceled` counts predictions canceled at Replicate, not items that never had one."""
        canceled_at_replicate = self._cancel_recorded_prediction(ref)
        self._end_reservation(ref)
        self._finish(ref, "canceled", model, error=reason, att_status="canceled")
        if canceled_at_replicate:
            self._metric("prediction", model, "canceled")

    def local_failure(self, ref: AttemptRef, model: str, exc: LocalError) -> None:
        self._finish(ref, "failed", model, error=str(exc), att_status="failed", kind="local")
        self._metric("prediction", model, "failed")

    def held(self, ref: AttemptRef, model: str, exc: BudgetExceededError) -> None:
        """The attempt's price does not fit a spending limit: nothing was created and no slot is
        kept. The item waits as `held` (parked: no message, never sent again by the sweep) until
        the budget's wake-up sends it again (a limit raised, the UTC day turned)."""
        ctx = self.ctx
        ctx.budget.hold(ref.batch_id, ref.index, ref.attempt, exc.amount, exc.scope)
        t = ctx.ledger.transition(
            ref.batch_id,
            ref.index,
            "held",
            allowed_from=("running",),
            expect_attempt=ref.attempt,
            fields={"held_reason": str(exc)},
            attempt=ref.attempt,
            attempt_update=self._with_input(ref, {"model": model, "status": "held", "error": str(exc)}),
        )
        if t.changed:
            self.ended = ItemEnd("held", ref.attempt, held_reason=str(exc), attempt_error=str(exc))
        if ctx.ledger.is_canceled(ref.batch_id):
            # A cancel that ran before this item was held would leave it held in a canceled
            # batch (the cancel ends the held items it finds, and this one was running then).
            ctx.budget.unhold(ref.batch_id, ref.index)
            self.canceled(ref, model, "batch canceled")
            return
        log.info("held: %s", exc)

    def _end_reservation(self, ref: AttemptRef) -> None:
        """A canceled attempt's reservation: spent if a prediction was (or may have been)
        created, i.e. its POST was sent; given back otherwise."""
        try:
            record = self.ctx.creations.get(ref)
            if record.prediction_id or record.posting_at is not None:
                self.ctx.budget.settle(ref.marker)
            else:
                self.ctx.budget.release(ref.marker)
        except Exception as exc:  # noqa: BLE001 - kept reserved: the limit errs on the safe side
            log.warning("could not end the reservation of %s: %s", ref.marker, exc)

    # --- the follow-up ----------------------------------------------------------------------------
    def requeue(
        self, ref: AttemptRef, request: ImageRequest, model: str, again: RequeueError
    ) -> NextTask | None:
        """The same attempt again later, bounded when `again.counted`."""
        ctx = self.ctx
        if again.counted:
            tries = ctx.creations.bump_tries(ref)
            if tries > ctx.settings.max_transient_retries:
                if isinstance(again, WriteRetryError):
                    # The prediction succeeded; only the store kept failing. A new attempt would
                    # pay again for the same image: the item fails, `producer retry` can follow.
                    self.local_failure(
                        ref,
                        model,
                        StorageError(f"outputs not written after {tries - 1} tries: {again.reason}"),
                    )
                    return None
                return self._give_up(ref, request, model, again.reason)
            self._metric("retry", model, "resume")
        log.info("attempt runs again later: %s", again.reason)
        if ctx.ledger.update_attempt(
            ref.batch_id, ref.index, ref.attempt, self._with_input(ref, {"error": again.reason})
        ):
            self.ended = ItemEnd("running", ref.attempt, attempt_error=again.reason)
        return NextTask(ref.attempt, model, countdown=again.countdown, prompt=request.prompt)

    def after_transient(
        self, ref: AttemptRef, request: ImageRequest, model: str, exc: TransientError
    ) -> NextTask | None:
        streak = self._transient_streak(ref, model)
        if streak >= self.ctx.settings.max_transient_retries:
            return self.after_permanent(
                ref,
                request,
                model,
                PermanentModelError(f"gave up on {model} after {streak + 1} transient failures; last: {exc}"),
            )
        self._metric("retry", model, "transient")
        self._metric("prediction", model, "transient_error")
        countdown = self._backoff(streak, exc.retry_after)
        log.warning("transient failure, new attempt on %s in %.1f s: %s", model, countdown, exc)
        return self._next_attempt(
            ref,
            request,
            model,
            model,
            error=str(exc),
            att_status="retry",
            kind="transient",
            countdown=countdown,
        )

    def after_permanent(
        self, ref: AttemptRef, request: ImageRequest, model: str, exc: PermanentModelError
    ) -> NextTask | None:
        models = list(request.models)
        remaining = models[models.index(model) + 1 :] if model in models else []
        if remaining:
            nxt = remaining[0]
            self._metric("fallback", model, nxt)
            self._metric("prediction", model, "failed")
            log.warning("%s cannot make this image (%s); falling back to %s", model, exc, nxt)
            return self._next_attempt(
                ref, request, model, nxt, error=str(exc), att_status="failed", kind="permanent", countdown=0.0
            )
        reason = f"no model left on the route; last error: {exc}"
        self._metric("prediction", model, "failed")
        if self.ctx.ledger.options(ref.batch_id).get("substitute_on_failure"):
            self._substitute(ref, request, model, reason, exc)
            return None
        self._finish(
            ref, "failed", model, error=reason, att_status="failed", kind="permanent", att_error=str(exc)
        )
        return None

    # --- helpers ----------------------------------------------------------------------------------
    def _give_up(self, ref: AttemptRef, request: ImageRequest, model: str, reason: str) -> NextTask | None:
        """This attempt kept failing to finish. A new attempt may create a new prediction, so
        nothing paid may be left behind: a recorded prediction is canceled (it stays in the
        manifest), and an unresolved create (a prediction that may exist, unknown to us) fails the
        item instead of risking a second payment behind the user's back."""
        record = self.ctx.creations.get(ref)
        if record.intent_at is not None and not record.prediction_id:
            self._finish(
                ref,
                "failed",
                model,
                att_status="failed",
                kind="unresolved",
                error=(
                    f"could not tell whether a prediction was created ({reason}); not retried, so as never to "
                    f"pay twice: check the account's predictions, then `producer retry {ref.batch_id}`"
                ),
            )
            self._metric("prediction", model, "failed")
            return None
        self._cancel_recorded_prediction(ref)
        self._end_reservation(ref)  # its prediction is paid for; the next attempt reserves anew
        return self.after_transient(ref, request, model, TransientError(f"gave up on this attempt: {reason}"))

    def _transient_streak(self, ref: AttemptRef, model: str) -> int:
        """Transient failures of this model in a row before this attempt, since the last reset."""
        item = self.ctx.ledger.item(ref.batch_id, ref.index)
        streak = 0
        for record in sorted(item.attempts if item else [], key=lambda a: -a.attempt):
            if record.attempt >= ref.attempt or record.attempt < (item.base_attempt if item else 1):
                continue
            if record.model != model or record.status != "retry":
                break
            streak += 1
        return streak

    def _substitute(
        self, ref: AttemptRef, request: ImageRequest, model: str, reason: str, exc: PermanentModelError
    ) -> None:
        store = self.ctx.stores.for_batch(ref.batch_id)
        try:
            key, data = substitute_image(request.output or f"{ref.batch_id}/{ref.index:04d}.png")
            written = write_once(
                store,
                key,
                data,
                overwrite=bool(self.ctx.ledger.options(ref.batch_id).get("overwrite")),
                content_type="image/png" if key.endswith(".png") else None,
            )
        except (LocalError, StorageUnavailableError) as local:
            self._finish(
                ref,
                "failed",
                model,
                error=f"{reason}; substitute not written: {local}",
                att_status="failed",
                kind="permanent",
                att_error=str(exc),
            )
            return
        record = {
            "key": key,
            "format": key.rpartition(".")[2],
            "bytes": written.size,
            "sha256": written.sha256,
            "substitute": True,
        }
        self._finish(
            ref,
            "substituted",
            model,
            error=reason,
            outputs=[store.url(key)],
            att_status="failed",
            kind="permanent",
            att_error=str(exc),
            files=[record],
        )
        self._metric("substituted", model)

    def _next_attempt(
        self,
        ref: AttemptRef,
        request: ImageRequest,
        model: str,
        next_model: str,
        *,
        error: str,
        att_status: str,
        kind: str,
        countdown: float,
    ) -> NextTask | None:
        t = self.ctx.ledger.transition(
            ref.batch_id,
            ref.index,
            "pending",
            expect_attempt=ref.attempt,
            fields={"attempt": ref.attempt + 1, "current_model": next_model},
            attempt=ref.attempt,
            attempt_update=self._with_input(
                ref,
                {"model": model, "status": att_status, "error": error, "kind": kind, "final": True},
            ),
            release_claim=self._releasing(ref),
        )
        self._released(ref)
        if not t.changed:
            return None
        self.ended = ItemEnd("pending", ref.attempt, attempt_error=error)
        return NextTask(ref.attempt + 1, next_model, countdown=countdown, prompt=request.prompt)

    def _finish(
        self,
        ref: AttemptRef,
        status: str,
        model: str,
        *,
        error: str | None = None,
        outputs: list[str] | None = None,
        att_status: str,
        kind: str | None = None,
        prediction_id: str | None = None,
        att_error: str | None = None,
        files: list[dict[str, Any]] | None = None,
    ) -> None:
        fields: dict[str, Any] = {"error": error}
        if outputs is not None:
            fields["outputs"] = outputs
        if files is not None:
            fields["files"] = files
        if status == "succeeded":
            fields["model"] = model  # the model that produced the output
        update: dict[str, Any] = {
            "model": model,
            "status": att_status,
            "final": True,
            "error": att_error if att_error is not None else error,
        }
        if kind:
            update["kind"] = kind
        if prediction_id:
            update["prediction_id"] = prediction_id
        t = self.ctx.ledger.transition(
            ref.batch_id,
            ref.index,
            status,
            expect_attempt=ref.attempt,
            fields=fields,
            attempt=ref.attempt,
            attempt_update=self._with_input(ref, update),
            release_claim=self._releasing(ref),
        )
        self._released(ref)
        if t.changed:
            self.ended = ItemEnd(
                status,
                ref.attempt,
                model=fields.get("model"),
                files=tuple(str(f.get("key")) for f in files or []) or tuple(outputs or ()),
                error=error,
                attempt_error=update["error"],
            )
            log.info("item %s%s", status, f": {error}" if error and status != "succeeded" else "")
        if t.batch_finished:
            self._write_manifest(ref.batch_id)

    def _write_manifest(self, batch_id: str) -> None:
        """manifest.json and the gallery, in the batch's own output location (a later sweep
        writes them if the store does not answer now)."""
        try:
            path = self.ctx.ledger.write_manifest(
                batch_id, self.ctx.stores.root_of(batch_id), cost_of=self._cost_of
            )
            log.info("batch finished; manifest at %s", path)
        except (OSError, redis.RedisError) as exc:
            log.error("batch finished but the manifest could not be written: %s", exc)

    def _cost_of(self, request: ImageRequest, model: str) -> float | None:
        from shared.routing import adapt_params

        registry = self.ctx.models.registry_for(request.models)
        params, _, _ = adapt_params(request.params, model, registry, strict=False)
        return registry.get(model).cost(params)

    def _cancel_recorded_prediction(self, ref: AttemptRef) -> bool:
        """Called once this run holds no slot: cancels the attempt's prediction, if any (True
        when it is canceled at Replicate now), and
        frees a slot a dead holder left counted for it. An unresolved create (intent, no id) keeps
        its slot counted: a prediction nobody knows may be running, until the orphan deadline."""
        record = self.ctx.creations.get(ref)
        if record.prediction_id:
            canceled = self._cancel_prediction(record.prediction_id)
            self._settle(ref, record.prediction_id)
            return canceled
        if record.intent_at is None:
            self._settle(ref)
        return False

    def _price(self, model: str, request: ImageRequest) -> float:
        try:
            cost = self.ctx.models.registry_for(request.models).get(model).cost(request.params)
            return float(cost if cost is not None else request.price_per_call or 0.0)
        except Exception:  # noqa: BLE001 - metrics only
            return 0.0
