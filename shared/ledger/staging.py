"""Recording a batch: its items staged in chunks (invisible, expiring), then the batch in one
short call, so it exists with all its items or not at all; and the staged items made to stay."""

from __future__ import annotations

import json
import secrets
from typing import Any

from shared.errors import BatchBeingRecordedError, DuplicateFingerprintError
from shared.ledger.queries import LedgerQueries
from shared.redis_conn import as_text
from shared.request import ImageRequest

CREATE_CHUNK = 500  # items per staging call: a few ms of Redis each (20 000 in one call: ~330 ms)
PERSIST_CHUNK = 2000  # PERSIST commands per pipeline round trip
STAGING_TTL_MS = 30_000  # a producer's hold on a batch id while it stages (renewed per chunk)
STAGED_TTL = 3600  # staged items of a batch never recorded (its producer died) expire
_EXISTS, _CREATED, _DUPLICATE, _BUSY = 0, 1, 2, 3  # ledger_create.lua's (and ledger_stage.lua's) answers


class LedgerStaging(LedgerQueries):
    """create_batch and what finishes a producer's half-done recording (persist_staged)."""

    def create_batch(
        self,
        batch_id: str,
        requests: list[ImageRequest],
        *,
        output_root: str,
        options: dict | None = None,
        fingerprint: str | None = None,
        unique_fingerprint: bool = False,
    ) -> bool:
        """Record a batch and its items, all or nothing. False (nothing changed) if the id exists;
        BatchBeingRecordedError while another producer records the same id.

        In effect atomic without blocking Redis: the items are staged in chunks of CREATE_CHUNK
        (ledger_stage.lua: invisible, expiring, the id held by this call's token), then one short
        call records the batch (ledger_create.lua). A batch exists, listed and runnable, with all
        its items or not at all: a producer that dies between chunks leaves only staged items,
        which nothing reads and which expire; one that dies after the record leaves items that
        still expire until persisted, which the recovery sweep finishes (`staged_batches`).

        `fingerprint` (batch_fingerprint) is recorded with the batch; with `unique_fingerprint`,
        DuplicateFingerprintError is raised (nothing changed) when another batch still in Redis has
        the same one — checked in the same atomic step, so two identical submissions racing each
        other cannot both be recorded."""
        if sorted(r.index for r in requests) != list(range(len(requests))):
            raise ValueError("request indexes must be 0..N-1")
        if unique_fingerprint and fingerprint:
            known = self.find_fingerprint(fingerprint)  # early: no staging for a duplicate
            if known is not None:
                raise DuplicateFingerprintError(known.id)
        token = secrets.token_hex(16)
        # The items first, in chunks that each block Redis for a few ms (one call for 20 000
        # items blocked it for a third of a second); staged items are invisible and expire.
        # Then the batch in one short call: from then on it exists with all its items.
        for start in range(0, len(requests), CREATE_CHUNK):
            staged = self._stage(batch_id, requests[start : start + CREATE_CHUNK], token, first=start == 0)
            if staged == _EXISTS:
                return False
            if staged == _BUSY:
                raise BatchBeingRecordedError(batch_id)
        fp_key = self.keys.fingerprint(fingerprint) if fingerprint else self.keys.batch(batch_id)
        keys = [
            self.keys.batches,
            self.keys.batch(batch_id),
            self.keys.batch_live(batch_id),
            fp_key,
            self.keys.batch_key(batch_id, "staging"),
            self.keys.staged_batches,
        ]
        args = [
            batch_id,
            str(output_root),
            json.dumps(options or {}),
            fingerprint or "",
            "unique" if unique_fingerprint else "",
            self.keys.batch(""),
            token,
            len(requests),
        ]
        outcome, other_batch = self._scripts["ledger_create"](keys=keys, args=args)
        if int(outcome) == _DUPLICATE:
            self._unstage(batch_id, len(requests))  # staged under our token: nobody else's
            raise DuplicateFingerprintError(as_text(other_batch))
        if int(outcome) == _BUSY:
            raise BatchBeingRecordedError(batch_id)  # our staging expired (stalled) and was taken
        if int(outcome) != _CREATED:
            return False
        self.persist_staged(batch_id)
        return True

    def _stage(self, batch_id: str, chunk: list[ImageRequest], token: str, *, first: bool) -> int:
        """ledger_stage.lua: 1 staged, _EXISTS, _BUSY."""
        keys = [
            self.keys.batch(batch_id),
            self.keys.batch_key(batch_id, "staging"),
            self.keys.batch_live(batch_id),
        ]
        keys += [self.keys.item(batch_id, r.index) for r in chunk]
        args: list[Any] = [token, STAGING_TTL_MS, "1" if first else "", STAGED_TTL]
        args += [
            json.dumps({"i": r.index, "request": json.dumps(r.to_dict()), "model": r.model}) for r in chunk
        ]
        return int(self._scripts["ledger_stage"](keys=keys, args=args))

    def _unstage(self, batch_id: str, total: int) -> None:
        """Delete what this caller staged for a batch it did not record (they would expire)."""
        keys = [self.keys.item(batch_id, i) for i in range(total)]
        keys += [self.keys.batch_live(batch_id), self.keys.batch_key(batch_id, "staging")]
        for start in range(0, len(keys), PERSIST_CHUNK):
            self.redis.delete(*keys[start : start + PERSIST_CHUNK])

    def persist_staged(self, batch_id: str) -> None:
        """A recorded batch's items stop expiring (staged items do), in chunks of commands that
        each take microseconds. Called by create_batch; the recovery sweep calls it for a batch
        whose producer died in between (`staged_batches`)."""
        total = self._total(batch_id)
        for start in range(0, total, PERSIST_CHUNK):
            pipe = self.redis.pipeline(transaction=False)
            for index in range(start, min(start + PERSIST_CHUNK, total)):
                pipe.persist(self.keys.item(batch_id, index))
            pipe.execute()
        self.redis.srem(self.keys.staged_batches, batch_id)

    def staged_batches(self) -> list[str]:
        """Recorded batches whose items may still expire (their producer died before persisting)."""
        return sorted(as_text(member) for member in self.redis.smembers(self.keys.staged_batches))
