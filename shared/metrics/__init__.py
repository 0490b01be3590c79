"""Prometheus metrics for what Flower cannot show: the limiter, the batches, and counters that
workers keep in Redis. Workers call the record_*/observe_* functions; an exporter process serves
them (`producer metrics`, see producer/metrics_server.py)."""

from shared.metrics.recorder import (
    PREDICTION_OUTCOMES,
    WAIT_BUCKETS,
    MetricsRecorder,
    metrics_key,
    observe_handoff,
    observe_slot_wait,
    read_counters,
    record_creation,
    record_creation_pause,
    record_fallback,
    record_prediction,
    record_rate_limited,
    record_resumed,
    record_retry,
    record_substituted,
    reset_counters,
)

__all__ = [
    "PREDICTION_OUTCOMES",
    "WAIT_BUCKETS",
    "MetricsRecorder",
    "metrics_key",
    "observe_handoff",
    "observe_slot_wait",
    "read_counters",
    "record_creation",
    "record_creation_pause",
    "record_fallback",
    "record_prediction",
    "record_rate_limited",
    "record_resumed",
    "record_retry",
    "record_substituted",
    "reset_counters",
]
