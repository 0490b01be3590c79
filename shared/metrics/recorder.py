"""Counters that worker processes increment, kept in Redis so that every process on every host
adds to the same numbers (a per-process prometheus-client registry would need a scrape target per
process and would lose counts at every restart).

Everything lives in one hash per key prefix; a field names the metric and its labels (JSON, so a
model name like `black-forest-labs/flux-schnell` needs no escaping). Each call is one pipelined
round trip without MULTI: a counter that misses one increment when Redis fails over is acceptable
for monitoring, and the work itself never waits for, or fails on, its metrics. Workers pass a
`BatchedCounters` instead of the client (shared.metrics.batched): their increments are added up in
the process and written once per interval, not once per image.
"""

from __future__ import annotations

import bisect
import json
import logging
from collections.abc import Iterable
from typing import Any

import redis

from shared.keys import Keys
from shared.metrics.batched import BatchedCounters
from shared.redis_conn import as_text

log = logging.getLogger(__name__)

# Where increments go: Redis at once, or a process's BatchedCounters.
Sink = redis.Redis | BatchedCounters

# Histogram buckets (seconds) for waits on the limiter: a free slot is ~1 ms (one Lua call), a
# full account queues for whole prediction lengths (tens of seconds to minutes).
WAIT_BUCKETS: tuple[float, ...] = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1,
    2.5,
    5,
    10,
    30,
    60,
    120,
    300,
    600,
)

# How an attempt on a model ended; each attempt that ends counts exactly once, so
# succeeded / sum(all outcomes) is the success ratio:
#   succeeded        the item's files were written from this model's prediction (its cost counted)
#   failed           this model cannot make the image (prediction failed, NSFW, input rejected, no
#                    output, or gave up after repeated transient failures); the item falls back or fails
#   canceled         the batch was canceled while a worker ran the attempt
#   transient_error  5xx, timeout, aborted prediction...: a new attempt on the same model follows
PREDICTION_OUTCOMES = ("succeeded", "failed", "canceled", "transient_error")
# Not ends of an attempt, so counted apart (record_prediction routes them there):
#   resumed      a worker picked up a prediction an earlier run created (it ends later, once)
#   substituted  an item that failed on every model got the substitute image (its last attempt
#                already counted as failed)
SEPARATE_OUTCOMES = {"resumed": "resumptions", "substituted": "substitutes"}


def metrics_key(keys: Keys) -> str:
    """The hash holding every aggregated counter. (Belongs in shared.keys; see the OPS report.)"""
    return f"{keys.prefix}:metrics:counters"


def encode_field(metric: str, **labels: Any) -> str:
    return json.dumps([metric, {k: str(v) for k, v in sorted(labels.items())}], separators=(",", ":"))


def decode_field(field: str) -> tuple[str, dict[str, str]]:
    metric, labels = json.loads(field)
    return metric, labels


def _apply(
    client: Sink,
    keys: Keys,
    ints: Iterable[tuple[str, int]] = (),
    floats: Iterable[tuple[str, float]] = (),
) -> None:
    key = metrics_key(keys)
    if isinstance(client, BatchedCounters):  # a worker's: added up, written once per interval
        client.add(key, list(ints), list(floats))
        return
    try:
        pipe = client.pipeline(transaction=False)
        for field, amount in ints:
            pipe.hincrby(key, field, amount)
        for field, value in floats:
            pipe.hincrbyfloat(key, field, value)
        pipe.execute()
    except redis.RedisError as exc:
        # Metrics must never fail a paid prediction's bookkeeping.
        log.warning("metrics update lost: %s", exc)


def record_prediction(client: Sink, keys: Keys, model: str, outcome: str, cost: float = 0.0) -> None:
    """An attempt on `model` ended with `outcome` (one of PREDICTION_OUTCOMES). `cost` in USD: the
    registry's price, passed for succeeded predictions only (see docs/operations.md, "Metrics").

    "resumed" and "substituted" are not ends of an attempt; they go to their own counters
    (record_resumed, record_substituted) so that they never inflate the success ratio's
    denominator."""
    if outcome in SEPARATE_OUTCOMES:
        _apply(client, keys, ints=[(encode_field(SEPARATE_OUTCOMES[outcome], model=model), 1)])
        return
    if outcome not in PREDICTION_OUTCOMES:
        log.debug("metrics: unknown prediction outcome %r recorded as is", outcome)
    floats = [(encode_field("cost_usd", model=model), float(cost))] if cost else []
    _apply(client, keys, ints=[(encode_field("predictions", model=model, outcome=outcome), 1)], floats=floats)


def record_resumed(client: Sink, keys: Keys, model: str) -> None:
    """A worker resumed a prediction that an earlier run of the same attempt created (no new
    creation, nothing paid twice). The attempt's end is counted once, later."""
    record_prediction(client, keys, model, "resumed")


def record_substituted(client: Sink, keys: Keys, model: str) -> None:
    """An item whose route is exhausted got the substitute image (asked for with
    --substitute-on-failure); `model` is the last one tried, whose attempt counted as failed."""
    record_prediction(client, keys, model, "substituted")


def record_creation_pause(client: Sink, keys: Keys, seconds: float) -> None:
    """A worker paused creations fleet-wide after a 429 on create, for `seconds` (retry_after).
    Pauses overlap (the longest wins), so the seconds are what was asked for, not wall time."""
    _apply(
        client,
        keys,
        ints=[(encode_field("creation_pauses"), 1)],
        floats=[(encode_field("creation_pause_requested_seconds"), max(0.0, float(seconds)))],
    )


def record_creation(client: Sink, keys: Keys, model: str) -> None:
    """A prediction was created on Replicate (a paid call started)."""
    _apply(client, keys, ints=[(encode_field("creations", model=model), 1)])


def record_retry(client: Sink, keys: Keys, model: str, reason: str = "transient") -> None:
    """An attempt will be retried on the same model (429, 5xx, timeout, connection error)."""
    _apply(client, keys, ints=[(encode_field("retries", model=model, reason=reason), 1)])


def record_fallback(client: Sink, keys: Keys, from_model: str, to_model: str) -> None:
    """An item moved from one model to the next on its fallback route."""
    _apply(client, keys, ints=[(encode_field("fallbacks", from_model=from_model, to_model=to_model), 1)])


def record_rate_limited(client: Sink, keys: Keys, kind: str = "create") -> None:
    """Replicate answered 429 (the limiter pauses creations after it)."""
    _apply(client, keys, ints=[(encode_field("rate_limited", kind=kind), 1)])


def record_end_noticed(client: Sink, keys: Keys, via: str) -> None:
    """How a worker learned that its prediction ended: "create" (a sync create's answer),
    "webhook" or "poll". With webhooks configured, ends noticed by polls mean deliveries are not
    arriving; in sync mode, they are predictions that outlasted their wait."""
    _apply(client, keys, ints=[(encode_field("ends_noticed", via=via), 1)])


def record_webhook(client: Sink, keys: Keys, outcome: str) -> None:
    """A delivery at the webhook receiver: accepted, ignored (not a terminal event), duplicate (a
    webhook-id seen before), rejected (malformed, forged, stale or too large), unavailable (Redis
    down; Replicate delivers again), timed_out (a client too slow with its head or body),
    overloaded (over the connection or handler bound)."""
    _apply(client, keys, ints=[(encode_field("webhooks", outcome=outcome), 1)])


def observe_slot_wait(client: Sink, keys: Keys, seconds: float, kind: str = "slot") -> None:
    """Time a worker waited on the limiter: kind="slot" (concurrency slot), "create" or "read"
    (rate tokens), "handoff" (release to the next holder's grant; see observe_handoff)."""
    seconds = max(0.0, float(seconds))
    index = bisect.bisect_left(WAIT_BUCKETS, seconds)
    le = "+Inf" if index == len(WAIT_BUCKETS) else repr(float(WAIT_BUCKETS[index]))
    # Non-cumulative bucket counts: one HINCRBY per observation; the exporter sums them up.
    _apply(
        client,
        keys,
        ints=[(encode_field("wait_bucket", kind=kind, le=le), 1), (encode_field("wait_count", kind=kind), 1)],
        floats=[(encode_field("wait_sum", kind=kind), seconds)],
    )


def observe_handoff(client: Sink, keys: Keys, seconds: float | None) -> None:
    """Slot hand-off latency: from the release of a slot to the grant of that slot to the next
    waiter (the limiter measures it in Redis time and reports it on the lease as
    `handoff_seconds`, None when the slot was free and nobody waited). None is not recorded."""
    if seconds is None:
        return
    observe_slot_wait(client, keys, seconds, kind="handoff")


class MetricsRecorder:
    """The same functions bound to one client and key prefix, for code that passes one object
    around: `metrics = MetricsRecorder(redis, keys); metrics.prediction("m", "succeeded", 0.003)`."""

    def __init__(self, client: Sink, keys: Keys):
        self.client, self.keys = client, keys

    def prediction(self, model: str, outcome: str, cost: float = 0.0) -> None:
        record_prediction(self.client, self.keys, model, outcome, cost)

    def creation(self, model: str) -> None:
        record_creation(self.client, self.keys, model)

    def retry(self, model: str, reason: str = "transient") -> None:
        record_retry(self.client, self.keys, model, reason)

    def fallback(self, from_model: str, to_model: str) -> None:
        record_fallback(self.client, self.keys, from_model, to_model)

    def rate_limited(self, kind: str = "create") -> None:
        record_rate_limited(self.client, self.keys, kind)

    def resumed(self, model: str) -> None:
        record_resumed(self.client, self.keys, model)

    def substituted(self, model: str) -> None:
        record_substituted(self.client, self.keys, model)

    def creation_pause(self, seconds: float) -> None:
        record_creation_pause(self.client, self.keys, seconds)

    def slot_wait(self, seconds: float, kind: str = "slot") -> None:
        observe_slot_wait(self.client, self.keys, seconds, kind)

    def handoff(self, seconds: float | None) -> None:
        observe_handoff(self.client, self.keys, seconds)

    def end_noticed(self, via: str) -> None:
        record_end_noticed(self.client, self.keys, via)

    def webhook(self, outcome: str) -> None:
        record_webhook(self.client, self.keys, outcome)


def read_counters(client: redis.Redis, keys: Keys) -> dict[str, list[tuple[dict[str, str], float]]]:
    """metric -> [(labels, value)], from one HGETALL."""
    raw = client.hgetall(metrics_key(keys))
    result: dict[str, list[tuple[dict[str, str], float]]] = {}
    for field, value in raw.items():
        try:
            metric, labels = decode_field(as_text(field))
            number = float(as_text(value))
        except (ValueError, TypeError):
            continue  # a foreign field: ignore rather than break the scrape
        result.setdefault(metric, []).append((labels, number))
    return result


def reset_counters(client: redis.Redis, keys: Keys) -> None:
    client.delete(metrics_key(keys))
