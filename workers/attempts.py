"""The cost-safety record of one attempt: never create two predictions for one (item, attempt).

Per (batch, item, attempt), a Redis hash (every time from Redis's clock):
- `intent_at`: written before the creation token is taken: a POST may follow;
- `posting_at`: stamped by the last check right before the POST (attempt_post.lua, the same
  script that checks the claim and the batch's cancel flag): a POST may be in flight from then.
  An intent without it (and with `posting_marked`) means no POST was sent: the token wait or the
  last check was interrupted;
- `post_returned_at`: when the POST came back without a usable answer (5xx, timeout). A gateway
  can answer 502/504 while Replicate still creates the prediction, so "none was created" is only
  concluded a settling window after this time; without it, the POST may still be in flight (its
  sender died or was cut off) until `posting_at` + the in-flight limit, and settles after that;
- `prediction_id`: written the moment the POST answers, before any waiting;
- `tries`: how many executions of this attempt ended in "run it again" (bounded).
A redelivered or re-run attempt that finds a `prediction_id` resumes it; one that finds an intent
without an id (killed between POST and record, or an ambiguous 5xx/timeout on the POST) lists
recent predictions and adopts the one with the same model and input before creating anew.
`prediction:<id>` names the attempt that owns a prediction, so two items with identical inputs can
never adopt the same prediction.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import redis

from shared.keys import Keys

RECORD_TTL = 14 * 24 * 3600  # long after Replicate itself forgets the prediction
_LUA = Path(__file__).with_name("lua")
_POST_VERDICTS = {1: "go", 0: "lost", 2: "recorded", 3: "canceled"}
_OLDEST_REAL_TIME = 1e9  # an older record wrote post_returned_at = "1" (no time)


@dataclass(frozen=True)
class AttemptState:
    model: str | None
    intent_at: float | None  # Unix time, Redis clock
    post_returned: bool  # the POST after the intent came back (ambiguously): nothing is in flight
    prediction_id: str | None
    tries: int
    created_here: bool  # the prediction was created (not adopted) by this attempt
    posting_at: float | None = None  # the last check before the POST passed (Redis clock)
    post_returned_at: float | None = None  # when the POST came back (None: unknown or not yet)
    posting_marked: bool = False  # its writer stamps posting_at before any POST (older ones did not)


class AttemptStore:
    def __init__(self, redis_client: redis.Redis, keys: Keys):
        self.redis = redis_client
        self.keys = keys
        self._intent = redis_client.register_script((_LUA / "attempt_intent.lua").read_text())
        self._post = redis_client.register_script((_LUA / "attempt_post.lua").read_text())
        self._stamp = redis_client.register_script((_LUA / "attempt_stamp.lua").read_text())

    def preload(self) -> None:
        """Load the scripts into Redis now (worker start): the check between the creation token
        and the POST is then one EVALSHA, not EVALSHA + NOSCRIPT + SCRIPT LOAD + EVALSHA on the
        first creation (after a Redis restart the client reloads them transparently, once)."""
        for script in (self._intent, self._post, self._stamp):
            self.redis.script_load(script.script)

    def get(self, batch_id: str, index: int, attempt: int) -> AttemptState:
        raw = self.redis.hgetall(self.keys.attempt(batch_id, index, attempt))
        returned = _time(raw.get("post_returned_at"))
        return AttemptState(
            model=raw.get("model"),
            intent_at=_time(raw.get("intent_at")),
            post_returned=bool(raw.get("post_returned_at")),
            prediction_id=raw.get("prediction_id") or None,
            tries=int(raw.get("tries") or 0),
            created_here=raw.get("origin") == "created",
            posting_at=_time(raw.get("posting_at")),
            post_returned_at=returned if returned is not None and returned > _OLDEST_REAL_TIME else None,
            posting_marked=raw.get("posting_marked") == "1",
        )

    def write_intent(self, batch_id: str, index: int, attempt: int, model: str) -> float:
        """Before the creation token; returns the intent time (Unix seconds, Redis clock)."""
        return float(self._intent(keys=[self.keys.attempt(batch_id, index, attempt)], args=[model, RECORD_TTL]))

    def begin_post(self, batch_id: str, index: int, attempt: int, claim_key: str, token: str) -> tuple[str, float | None]:
        """The one round trip between the creation token and the POST: ("go", posting_at) if the
        claim (`claim_key` holding `token`) is still ours, no prediction is recorded for the
        attempt and the batch is not canceled, with `posting_at` stamped; else ("lost" |
        "recorded" | "canceled", None) and nothing written. Redis errors propagate: "cannot
        tell" is not "lost"."""
        code, stamped = self._post(keys=[claim_key, self.keys.batch(batch_id),
                                         self.keys.attempt(batch_id, index, attempt)],
                                   args=[token, RECORD_TTL])
        verdict = _POST_VERDICTS[int(code)]
        return verdict, (float(stamped) if verdict == "go" else None)

    def mark_post_returned(self, batch_id: str, index: int, attempt: int) -> float:
        """The POST answered, but not with a prediction we could record (5xx, timeout): it is
        over, whatever it did; the intent stays for the reconciliation, which settles a window
        after this time (returned: Unix seconds, Redis clock)."""
        return float(self._stamp(keys=[self.keys.attempt(batch_id, index, attempt)],
                                 args=["post_returned_at", RECORD_TTL]))

    def redis_now(self) -> float:
        sec, usec = self.redis.time()
        return sec + usec / 1e6

    def clear_intent(self, batch_id: str, index: int, attempt: int) -> None:
        """Nothing was created (429, 4xx, a reconciliation that found nothing)."""
        self.redis.hdel(self.keys.attempt(batch_id, index, attempt), "intent_at", "posting_at", "post_returned_at")

    def record_prediction(self, batch_id: str, index: int, attempt: int, prediction_id: str, *,
                          origin: str = "created") -> bool:
        """Bind the prediction to this attempt. False if another attempt owns it already."""
        owner = f"{batch_id}:{index}:{attempt}"
        owner_key = self.keys.prediction_owner(prediction_id)
        if not self.redis.set(owner_key, owner, nx=True, ex=RECORD_TTL):
            if self.redis.get(owner_key) != owner:
                return False
        key = self.keys.attempt(batch_id, index, attempt)
        pipe = self.redis.pipeline(transaction=True)
        pipe.hset(key, mapping={"prediction_id": prediction_id, "origin": origin})
        pipe.hdel(key, "intent_at", "posting_at", "post_returned_at")
        pipe.expire(key, RECORD_TTL)
        pipe.execute()
        return True

    def owned_by_other(self, prediction_id: str, batch_id: str, index: int, attempt: int) -> bool:
        owner = self.redis.get(self.keys.prediction_owner(prediction_id))
        return owner is not None and owner != f"{batch_id}:{index}:{attempt}"

    def bump_tries(self, batch_id: str, index: int, attempt: int) -> int:
        key = self.keys.attempt(batch_id, index, attempt)
        pipe = self.redis.pipeline(transaction=True)
        pipe.hincrby(key, "tries", 1)
        pipe.expire(key, RECORD_TTL)
        return int(pipe.execute()[0])


def _time(raw: str | None) -> float | None:
    try:
        return float(raw) if raw else None
    except ValueError:
        return None
