"""The recent batches at a glance (`producer list`): each batch's record, progress and spend,
read together (one budget read for all of them)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from producer.api.budget import budget_status
from producer.api.connections import settings_or_load
from producer.api.fleet import list_batches
from producer.progress import Snapshot, batch_state, snapshot_from_info
from shared.settings import Settings


@dataclass(frozen=True)
class BatchOverview:
    """One batch as `producer list` shows it."""

    info: Any  # the ledger's BatchInfo
    snapshot: Snapshot  # counts by state, done, total
    spend: Any  # shared.budget.BatchSpend: its limit, spent, reserved

    @property
    def state(self) -> str:
        """The word `status` uses (queued, running, held, canceling, finished, canceled)."""
        return batch_state(self.snapshot)

    def to_dict(self) -> dict[str, Any]:
        """What `producer list --json` prints for the batch."""
        return {
            **self.snapshot.to_dict(),
            "state": self.state,
            "created_at": getattr(self.info, "created_at", None),
            "priority": self.info.priority,
            "spend": self.spend.to_dict(),
        }


def batch_overviews(settings: Settings | None = None, limit: int = 20) -> list[BatchOverview]:
    """The most recent batches, newest first, each with its progress and spend."""
    settings = settings_or_load(settings)
    infos = list_batches(settings, limit=limit)
    if not infos:
        return []
    spends = {b.batch_id: b for b in budget_status(settings, [info.id for info in infos]).batches}
    return [BatchOverview(info, snapshot_from_info(info), spends[info.id]) for info in infos]
