"""The cost-safety record of one attempt: never create two predictions for one (item, attempt).

Per (batch, item, attempt), a Redis hash:
- `intent_at`: written right before the POST that creates the prediction (host clock, used only
  to bound the reconciliation listing, with a generous margin for clock skew);
- `prediction_id`: written the moment the POST answers, before any waiting;
- `tries`: how many executions of this attempt ended in "run it again" (bounded).
A redelivered or re-run attempt that finds a `prediction_id` resumes it; one that finds an intent
without an id (killed between POST and record, or an ambiguous 5xx/timeout on the POST) lists
recent predictions and adopts the one with the same model and input before creating anew.
`prediction:<id>` names the attempt that owns a prediction, so two items with identical inputs can
never adopt the same prediction.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import redis

from shared.keys import Keys

RECORD_TTL = 14 * 24 * 3600  # long after Replicate itself forgets the prediction


@dataclass(frozen=True)
class AttemptState:
    model: str | None
    intent_at: float | None
    prediction_id: str | None
    tries: int
    created_here: bool  # the prediction was created (not adopted) by this attempt


class AttemptStore:
    def __init__(self, redis_client: redis.Redis, keys: Keys):
        self.redis = redis_client
        self.keys = keys

    def get(self, batch_id: str, index: int, attempt: int) -> AttemptState:
        raw = self.redis.hgetall(self.keys.attempt(batch_id, index, attempt))
        return AttemptState(
            model=raw.get("model"),
            intent_at=float(raw["intent_at"]) if raw.get("intent_at") else None,
            prediction_id=raw.get("prediction_id") or None,
            tries=int(raw.get("tries") or 0),
            created_here=raw.get("origin") == "created",
        )

    def write_intent(self, batch_id: str, index: int, attempt: int, model: str) -> float:
        now = time.time()
        key = self.keys.attempt(batch_id, index, attempt)
        pipe = self.redis.pipeline(transaction=True)
        pipe.hset(key, mapping={"model": model, "intent_at": repr(now)})
        pipe.expire(key, RECORD_TTL)
        pipe.execute()
        return now

    def clear_intent(self, batch_id: str, index: int, attempt: int) -> None:
        """Nothing was created (429, 4xx, a reconciliation that found nothing)."""
        self.redis.hdel(self.keys.attempt(batch_id, index, attempt), "intent_at")

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
        pipe.hdel(key, "intent_at")
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
