"""A whole batch at once: `producer cancel` (ledger_cancel.lua) and `producer retry`'s reset of
its failed (or canceled) items back to pending (ledger_reset.lua)."""

from __future__ import annotations

from collections.abc import Mapping

from shared.errors import StillCancelingError
from shared.ledger.manifest import LedgerManifests
from shared.ledger.records import CancelResult
from shared.redis_conn import as_text


class LedgerCancelReset(LedgerManifests):
    """`producer cancel` and `producer retry` on the ledger's side."""

    def cancel(self, batch_id: str) -> CancelResult:
        """Flag the batch canceled and mark its pending items canceled; workers cancel the
        running ones (and their predictions) when they next look. Returns how many were canceled
        now, how many running ones their workers stop, and the task ids sent for the canceled ones
        (their messages may still wait in the queue: `producer cancel` revokes them). A finished
        batch is not touched (`already_finished`). KeyError if there is no such batch."""
        keys = [self.keys.batch(batch_id), self.keys.batch_live(batch_id)]
        keys += [self.keys.item(batch_id, i) for i in range(self._total(batch_id))]
        count, finished, stopping, *task_ids = self._scripts["ledger_cancel"](keys=keys, args=[])
        if int(count) == -1:
            raise KeyError(f"no batch {batch_id}")
        if int(count) == -2:
            return CancelResult(canceled=0, task_ids=[], finished=False, already_finished=True)
        if int(finished):  # nothing was running: no worker will write the manifest
            try:
                self.write_manifest(batch_id)
            except OSError:
                pass
        return CancelResult(
            canceled=int(count),
            task_ids=[as_text(t) for t in task_ids],
            finished=bool(int(finished)),
            stopping=int(stopping),
        )

    def reset_failed(
        self, batch_id: str, *, include_canceled: bool = False, models: Mapping[int, str] | None = None
    ) -> list[int]:
        """Failed items (and canceled ones with `include_canceled`) back to pending (fresh
        attempt number, first model of the route, or `models[index]`), for `producer retry`.
        Returns their indexes; the caller enqueues them.

        On a canceled batch the cancel is lifted when anything is reset, so the workers run the
        reset items instead of canceling them again; StillCancelingError is raised (nothing changed)
        while items of that batch are still running (being canceled)."""
        items = self.items(batch_id)
        keys = [self.keys.batch(batch_id), self.keys.batch_live(batch_id)]
        keys += [self.keys.item(batch_id, it.index) for it in items]
        models = models or {}
        args = ["1" if include_canceled else "0"] + [models.get(it.index, it.request.model) for it in items]
        outcome, *rest = self._scripts["ledger_reset"](keys=keys, args=args)
        if int(outcome) < 0:
            (still_open,) = rest
            raise StillCancelingError(batch_id, int(still_open))
        return [items[int(position) - 1].index for position in rest]
