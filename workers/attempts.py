"""The cost-safety record of one attempt: never create two predictions for one (item, attempt).

Per (batch, item, attempt), a Redis hash:
- `intent_at`: written right before the POST that creates the prediction (Redis time);
- `post_returned_at`: the POST came back without a usable answer (5xx, timeout): whatever it
  did is done, so the reconciliation can look at once; without it, the POST may still be in flight
  (its sender died or was cut off) and the reconciliation waits until it must have landed;
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
_INTENT_LUA = (Path(__file__).with_name("lua") / "attempt_intent.lua").read_text()


@dataclass(frozen=True)
class AttemptState:
    model: str | None
    intent_at: float | None  # Unix time, Redis clock
    post_returned: bool  # the POST after the intent came back (ambiguously): nothing is in flight
    prediction_id: str | None
    tries: int
    created_here: bool  # the prediction was created (not adopted) by this attempt


class AttemptStore:
    def __init__(self, redis_client: redis.Redis, keys: Keys):
        self.redis = redis_client
        self.keys = keys
        self._intent = redis_client.register_script(_INTENT_LUA)

    def get(self, batch_id: str, index: int, attempt: int) -> AttemptState:
        raw = self.redis.hgetall(self.keys.attempt(batch_id, index, attempt))
        return AttemptState(
            model=raw.get("model"),
            intent_at=float(raw["intent_at"]) if raw.get("intent_at") else None,
            post_returned=bool(raw.get("post_returned_at")),
            prediction_id=raw.get("prediction_id") or None,
            tries=int(raw.get("tries") or 0),
            created_here=raw.get("origin") == "created",
        )

    def write_intent(self, batch_id: str, index: int, attempt: int, model: str) -> float:
        """Right before the POST; returns the intent time (Unix seconds, Redis clock)."""
        return float(self._intent(keys=[self.keys.attempt(batch_id, index, attempt)], args=[model, RECORD_TTL]))

    def mark_post_returned(self, batch_id: str, index: int, attempt: int) -> None:
        """The POST answered, but not with the prediction (5xx, timeout): it is over, whatever
        it did; the intent stays for the reconciliation."""
        self.redis.hset(self.keys.attempt(batch_id, index, attempt), "post_returned_at", "1")

    def redis_now(self) -> float:
        sec, usec = self.redis.time()
        return sec + usec / 1e6

    def clear_intent(self, batch_id: str, index: int, attempt: int) -> None:
        """Nothing was created (429, 4xx, a reconciliation that found nothing)."""
        self.redis.hdel(self.keys.attempt(batch_id, index, attempt), "intent_at", "post_returned_at")

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
        pipe.hdel(key, "intent_at", "post_returned_at")
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
