"""The fleet's schedule: every send waits here until the feeder moves it into the broker."""

from shared.scheduler.schedule import (
    PARKED,
    PRIORITIES,
    QueueDepths,
    Scheduler,
    Send,
    broker_lists,
    broker_priority,
    priority_problem,
)

__all__ = [
    "PARKED",
    "PRIORITIES",
    "QueueDepths",
    "Scheduler",
    "Send",
    "broker_lists",
    "broker_priority",
    "priority_problem",
]
