"""Read-only questions to the ledger: a batch, the list of batches, a batch's options and cancel
flag, its fingerprint, one item, every item, the states of some."""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from typing import Any

from shared.ledger.base import LedgerBase
from shared.ledger.records import BatchInfo, ItemRecord
from shared.ledger.stored import batch_info_from, item_record_from
from shared.redis_conn import as_text, text_map, texts
from shared.request import ImageRequest

OPTIONS_FRESH = 60.0  # seconds a process keeps a batch's options (they never change after submit)


class LedgerQueries(LedgerBase):
    """Reads only; one round trip each (pipelined where it reads many keys)."""

    def fingerprint_of(self, batch_id: str) -> str | None:
        """The content fingerprint recorded with a batch (None for batches recorded before
        fingerprints existed, or without one)."""
        value = self.redis.hget(self.keys.batch(batch_id), "fingerprint")
        return as_text(value) if value is not None else None

    def find_fingerprint(self, fingerprint: str) -> BatchInfo | None:
        """The latest batch still in Redis whose content has this fingerprint, if any."""
        batch_id = self.redis.get(self.keys.fingerprint(fingerprint))
        if not batch_id:
            return None
        info = self.batch(as_text(batch_id))
        if info is None or self.fingerprint_of(info.id) != fingerprint:
            return None  # that batch is gone (pruned, deleted): no duplicate any more
        return info

    def batch(self, batch_id: str) -> BatchInfo | None:
        raw = text_map(self.redis.hgetall(self.keys.batch(batch_id)))
        return batch_info_from(raw) if raw else None

    def list_batches(self, limit: int = 20) -> list[BatchInfo]:
        """Newest first."""
        ids = texts(self.redis.zrevrange(self.keys.batches, 0, max(limit, 1) - 1))
        pipe = self.redis.pipeline(transaction=False)
        for batch_id in ids:
            pipe.hgetall(self.keys.batch(batch_id))
        return [batch_info_from(raw) for raw in pipe.execute() if raw]

    def is_canceled(self, batch_id: str) -> bool:
        return self.redis.hget(self.keys.batch(batch_id), "canceled") == "1"

    def options(self, batch_id: str) -> dict[str, Any]:
        """The batch's options as recorded at submit. They never change afterwards, so a process
        reads them once per batch and keeps them OPTIONS_FRESH seconds (a run read them up to
        three times per image: issue 16.4); the cancel flag is never kept (`is_canceled`)."""
        now = time.monotonic()
        kept = self._options.get(batch_id)
        if kept is not None and now - kept[0] < OPTIONS_FRESH:
            return dict(kept[1])
        raw = self.redis.hget(self.keys.batch(batch_id), "options")
        options = json.loads(raw) if raw else {}
        if raw:  # a batch not (yet) recorded is asked again next time
            if len(self._options) >= 1000:
                self._options.clear()
            self._options[batch_id] = (now, options)
        return dict(options)

    # --- items ----------------------------------------------------------------------------------
    def request(self, batch_id: str, index: int) -> ImageRequest:
        raw = self.redis.hget(self.keys.item(batch_id, index), "request")
        if raw is None:
            raise KeyError(f"no item {index} in batch {batch_id}")
        return ImageRequest.from_dict(json.loads(raw))

    def item(self, batch_id: str, index: int) -> ItemRecord | None:
        raw = text_map(self.redis.hgetall(self.keys.item(batch_id, index)))
        return item_record_from(index, raw) if raw else None

    def items(self, batch_id: str) -> list[ItemRecord]:
        """Every item in submission order (one pipelined round trip)."""
        raws = self._read_items(batch_id, range(self._total(batch_id)))
        return [item_record_from(i, raw) for i, raw in enumerate(raws) if raw]

    def item_states(self, batch_id: str, indexes: Iterable[int]) -> dict[int, tuple[str, int, str]]:
        """(status, current attempt, current model) per item, one round trip."""
        indexes = list(indexes)
        replies = self._read_items(batch_id, indexes, "status", "attempt", "current_model")
        out = {}
        for index, (status, attempt, model) in zip(indexes, replies):
            if status is not None:
                out[index] = (status, int(attempt or 0), model or "")
        return out
