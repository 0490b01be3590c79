"""The start of a run of an attempt in one round trip (issue 16.4).

Before any work a run checks the item (a stale or duplicate message does nothing), takes the
attempt's claim (workers.claims), checks the batch's cancel flag, moves the item to running and
reads its request and the attempt's creation record: six round trips, now one script
(workers/lua/attempt_start.lua, after the ledger's prelude), atomic, with each check's meaning
kept. The runner (workers.runner) acts on the verdict; the rare starts that need more (a `held`
item leaves the budget's held set first, a claim kept across a Redis outage is re-asserted, a
worker shutting down hands the message back) take the step-by-step path.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import redis

from shared import lua_scripts
from shared.keys import Keys
from shared.redis_conn import as_text
from shared.request import ImageRequest
from workers.attempts import AttemptRef, CreationRecord, creation_record
from workers.claims import SEEN_TTL, Claim, ClaimKeeper, new_token, seen_key

MISSING, TERMINAL, OTHER, HELD, CLAIMED, CANCELED, RUN = (
    "missing",
    "terminal",
    "other",
    "held",
    "claimed",
    "canceled",
    "run",
)


@dataclass(frozen=True)
class Start:
    verdict: str  # one of the names above (attempt_start.lua's first reply)
    status: str  # the item's status before the start
    attempt: int  # the item's current attempt
    model: str  # the item's current model
    request_json: str = ""  # the item's request (claimed, canceled, run)
    claim: Claim | None = None  # this run's claim (canceled, run)
    record: CreationRecord | None = None  # the attempt's creation record (run)

    def request(self) -> ImageRequest:
        if not self.request_json:
            raise KeyError("no request recorded for the item")
        return ImageRequest.from_dict(json.loads(self.request_json))


class RunStarter:
    def __init__(self, redis_client: redis.Redis, keys: Keys, claims: ClaimKeeper):
        self.keys = keys
        self.claims = claims
        (self._script,) = lua_scripts.register(
            redis_client,
            "workers.lua",
            ("attempt_start",),
            inserts={"attempt_start": (("shared.lua", "ledger_common"),)},
        ).values()

    def start(self, ref: AttemptRef, task_id: str, *, unheld: bool = False) -> Start:
        """One round trip (see attempt_start.lua). Redis errors propagate: the task waits for
        Redis and runs the attempt again from the top."""
        claim_key = ref.claim_key(self.keys)
        token = new_token()
        reply = self._script(
            keys=[
                self.keys.item(ref.batch_id, ref.index),
                self.keys.batch(ref.batch_id),
                self.keys.batch_live(ref.batch_id),
                claim_key,
                seen_key(claim_key),
                ref.record_key(self.keys),
            ],
            args=[ref.attempt, token, self.claims.ttl_ms, SEEN_TTL, task_id, "1" if unheld else ""],
        )
        verdict, status, attempt, model, *rest = reply
        start = Start(as_text(verdict), as_text(status), int(attempt), as_text(model))
        if start.verdict not in (CLAIMED, CANCELED, RUN):
            return start
        request_json = as_text(rest[0])
        claim = self.claims.hold(claim_key, token) if start.verdict != CLAIMED else None
        record = None
        if start.verdict == RUN:
            flat = [as_text(x) for x in rest[1]]
            record = creation_record(dict(zip(flat[::2], flat[1::2])))
        return Start(start.verdict, start.status, start.attempt, start.model, request_json, claim, record)
