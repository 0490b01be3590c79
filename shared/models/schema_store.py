"""Published schemas, read from Replicate once for the whole fleet and kept in Redis.

    store = SchemaStore(redis, keys, read=calls.read_schema, ttl=3600, take_read_token=limiter.take_read_token)
    schema = store.get("stability-ai/sdxl")      # Redis first; else one process reads it, the others wait

A schema is read by one process at a time (a Redis lock per reference, from redis-py): the
others wait for the lock and then find it in the cache, so a 5 000-item batch, or a whole fleet
starting on a new model, reads it once. Every GET spends a read token of the account's budget.
Entries expire after `ttl` seconds, so a model's new latest version is seen within that time.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from typing import Any

import redis

from shared.keys import Keys
from shared.models.openapi import ModelSchema
from shared.models.reference import ModelRef, parse_ref

# Longer than one read can take (connect + read timeouts, a read token wait), so a lock never
# expires under a live reader, and short enough that a crashed reader holds up nobody for long.
LOCK_SECONDS = 60.0


class SchemaStore:
    """Parameters:
    client: a Redis client (decode_responses=True or not).
    keys: where the schemas live (shared.keys.Keys).
    read: `read(ref, before_read)` -> ModelSchema (workers.replicate_calls.ReplicateCalls.read_schema).
    ttl: seconds a schema stays in Redis.
    take_read_token: called before every GET to Replicate (the limiter's read budget).
    """

    def __init__(
        self,
        client: redis.Redis,
        keys: Keys,
        *,
        read: Callable[[ModelRef, Callable[[], Any]], ModelSchema],
        ttl: float,
        take_read_token: Callable[[], Any],
        lock_seconds: float = LOCK_SECONDS,
    ):
        self.client = client
        self.keys = keys
        self.read = read
        self.ttl = ttl
        self.take_read_token = take_read_token
        self.lock_seconds = lock_seconds
        self.reads = 0  # schemas this store read from Replicate (not from Redis)

    def cached(self, ref: str) -> ModelSchema | None:
        raw = self.client.get(self.keys.model_schema(ref))
        if raw is None:
            return None
        return ModelSchema.from_dict(json.loads(raw))

    def get(self, ref: str) -> ModelSchema:
        """The schema of `ref` (canonical reference text); raises what `read` raises."""
        ref = str(parse_ref(ref))
        found = self.cached(ref)
        if found is not None:
            return found
        lock = self.client.lock(
            self.keys.model_schema_lock(ref), timeout=self.lock_seconds, blocking_timeout=self.lock_seconds
        )
        # Not getting the lock in time means its holder is stuck: read it ourselves all the same.
        held = lock.acquire()
        try:
            found = self.cached(ref)  # the holder we waited for has stored it
            if found is not None:
                return found
            schema = self.read(parse_ref(ref), self.take_read_token)
            self.reads += 1
            self.client.set(
                self.keys.model_schema(ref), json.dumps(schema.to_dict()), ex=max(int(self.ttl), 1)
            )
            return schema
        finally:
            if held:
                try:
                    lock.release()
                except redis.exceptions.LockError:
                    pass  # it expired meanwhile; nothing of ours to free

    def get_many(self, refs: Iterable[str]) -> dict[str, ModelSchema | Exception]:
        """Each reference's schema, or the exception reading it raised (callers report them all)."""
        out: dict[str, ModelSchema | Exception] = {}
        for ref in dict.fromkeys(refs):
            try:
                out[ref] = self.get(ref)
            except Exception as exc:  # noqa: BLE001 - handed back to be reported per model
                out[ref] = exc
        return out
