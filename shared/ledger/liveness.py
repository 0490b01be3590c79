"""What the recovery sweep (workers.recovery) reads and keeps: when messages were sent, each
open item's last sign of life (the batch's `live` zset), the batches to look after, and the
pruning of finished ones."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import redis

from shared.ledger.base import LedgerBase
from shared.redis_conn import as_text, texts

ENQUEUED_CHUNK = 500  # items per ledger_enqueued.lua call


class LedgerLiveness(LedgerBase):
    """For the recovery sweep (workers.recovery) and the retention of finished batches."""

    def mark_enqueued(
        self,
        batch_id: str,
        indexes: Iterable[int],
        countdown: float = 0.0,
        task_ids: Sequence[str] | None = None,
    ) -> int:
        """Record that a message was just sent for each item (due after `countdown` seconds),
        with its task id when given (`task_ids[i]` for `indexes[i]`). Terminal items are
        skipped. Returns how many were recorded."""
        indexes = list(indexes)
        ids = [str(t or "") for t in task_ids] if task_ids is not None else []
        if ids and len(ids) != len(indexes):
            raise ValueError("task_ids must match indexes one to one")
        recorded = 0
        for start in range(0, len(indexes), ENQUEUED_CHUNK):
            chunk = indexes[start : start + ENQUEUED_CHUNK]
            keys = [self.keys.batch_live(batch_id)] + [self.keys.item(batch_id, i) for i in chunk]
            args = [repr(float(max(countdown, 0.0)))] + ids[start : start + ENQUEUED_CHUNK]
            recorded += int(self._scripts["ledger_enqueued"](keys=keys, args=args))
        return recorded

    def never_enqueued(self, batch_id: str) -> list[int]:
        """Pending items no message was ever recorded for (a producer that died between
        create_batch and enqueue_items)."""
        replies = self._read_items(batch_id, range(self._total(batch_id)), "status", "enqueued_at")
        return [
            i for i, (status, enqueued_at) in enumerate(replies) if status == "pending" and not enqueued_at
        ]

    def batches_to_look_after(self, chunk: int = 500) -> tuple[list[str], list[str]]:
        """(unfinished batches, finished batches whose manifest is not written yet), oldest
        first: what the recovery sweep looks after. One pipelined HMGET per batch."""
        unfinished: list[str] = []
        no_manifest: list[str] = []
        start = 0
        while True:
            ids = texts(self.redis.zrange(self.keys.batches, start, start + chunk - 1))
            if not ids:
                return unfinished, no_manifest
            pipe = self.redis.pipeline(transaction=False)
            for batch_id in ids:
                pipe.hmget(self.keys.batch(batch_id), "finished_at", "total", "manifest_at")
            for batch_id, (finished_at, total, manifest_at) in zip(ids, pipe.execute()):
                if total is None:
                    continue
                if not finished_at:
                    unfinished.append(batch_id)
                elif not manifest_at:
                    no_manifest.append(batch_id)
            start += chunk

    def prune_finished(self, before: float, *, scan: int = 1000) -> list[str]:
        """Forget batches that finished before `before` (Unix time): the batch, its items, live
        set and upload records. Unfinished batches stay, whatever their age; a batch that changes
        while it is being looked at (a `producer retry`) is left alone. Looks at no more than
        `scan` of the oldest batches per call. Returns the ids removed."""
        removed = []
        for batch_id in texts(self.redis.zrangebyscore(self.keys.batches, "-inf", before, start=0, num=scan)):
            batch_key = self.keys.batch(batch_id)
            with self.redis.pipeline(transaction=True) as pipe:
                try:
                    pipe.watch(batch_key)
                    finished_at, total, fingerprint = pipe.hmget(
                        batch_key, "finished_at", "total", "fingerprint"
                    )
                    if total is not None and (not finished_at or float(finished_at) >= before):
                        continue
                    fp_key = self.keys.fingerprint(as_text(fingerprint)) if fingerprint else None
                    if fp_key is not None:
                        pipe.watch(fp_key)
                        if pipe.get(fp_key) != batch_id:
                            fp_key = None  # a newer batch with the same content owns it now
                    n = int(total or 0)
                    keys = [batch_key, self.keys.batch_live(batch_id)]
                    keys += [
                        k
                        for i in range(n)
                        for k in (
                            self.keys.item(batch_id, i),
                            self.keys.uploads(batch_id, i),
                            self.keys.written(batch_id, i),
                        )
                    ]
                    if fp_key is not None:
                        keys.append(fp_key)
                    pipe.multi()
                    for start in range(0, len(keys), 1000):
                        pipe.delete(*keys[start : start + 1000])
                    pipe.zrem(self.keys.batches, batch_id)
                    pipe.execute()
                except redis.WatchError:
                    continue
            removed.append(batch_id)
        return removed

    def quiet_items(self, batch_id: str, before: float, limit: int = 1000) -> list[int]:
        """Non-terminal items whose last sign of life is older than `before` (Unix time)."""
        raw = self.redis.zrangebyscore(self.keys.batch_live(batch_id), "-inf", before, start=0, num=limit)
        return [int(i) for i in texts(raw)]

    def touch(self, batch_id: str, indexes: Iterable[int], when: float) -> None:
        """A sign of life seen from outside (a live claim, a queued message) for these items."""
        mapping = {str(i): when for i in indexes}
        if mapping:
            self.redis.zadd(self.keys.batch_live(batch_id), mapping, xx=True, gt=True)

    def forget_live(self, batch_id: str, indexes: Iterable[int]) -> None:
        """Drop items from the live set (terminal ones found there)."""
        members = [str(i) for i in indexes]
        if members:
            self.redis.zrem(self.keys.batch_live(batch_id), *members)
