"""The fleet's schedule: every send waits here until the feeder moves it into the broker."""

from shared.scheduler.schedule import (
    PARKED,
    PRIORITIES,
    WAKE_TOKENS_KEPT,
    QueueDepths,
    Scheduler,
    Send,
    broker_lists,
    broker_priority,
    feeder_wake_key,
    priority_problem,
    take_reply,
)

__all__ = [
    "PARKED",
    "PRIORITIES",
    "WAKE_TOKENS_KEPT",
    "QueueDepths",
    "Scheduler",
    "Send",
    "broker_lists",
    "broker_priority",
    "feeder_wake_key",
    "priority_problem",
    "take_reply",
]
