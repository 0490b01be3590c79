"""Riding out a Redis outage inside the task instead of leaving the item to the recovery sweep.

Every worker command already retries through a short restart (FLEET_REDIS_RIDE_OUT, 20 s). An
outage longer than that makes a command fail in the middle of an attempt: the ledger, the claim,
the creation record, the limiter or the broker (sending the follow-up). Such an exception used to
escape the task, which acks it (task_acks_on_failure_or_timeout), and only the recovery sweep
brought the item back, about `quiet_after` + a sweep interval later (~95 s with the defaults).

Now the task (workers.tasks) catches it, waits for Redis with backoff, bounded by
`outage_budget(settings)` (at most 60 s, and a fifth of the broker's visibility timeout), and
runs the attempt again from the top. That is safe because an attempt is idempotent from the top:
the claim keeps one run at a time (the interrupted one's claim is taken back), and the
creation record makes the re-run resume the recorded prediction or reconcile an unresolved
create, never create a second one. If Redis stays away longer, the exception escapes as before
and the sweep remains the backstop.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import redis
from kombu.exceptions import OperationalError as KombuOperationalError
from redis.backoff import NoBackoff
from redis.retry import Retry

from shared.errors import RedisUnavailableError
from shared.settings import Settings

log = logging.getLogger("workers.outage")

MAX_BUDGET_SECONDS = 60.0
MIN_BUDGET_SECONDS = 5.0
MAX_RERUNS = 8  # outages ridden out by one task delivery (Redis flapping): then the sweep's turn
FIRST_PROBE_DELAY = 0.25
MAX_PROBE_DELAY = 4.0

# "Redis cannot be reached (or cannot take writes) right now", as opposed to a bug or a bad reply.
_UNAVAILABLE: tuple[type[BaseException], ...] = (
    redis.ConnectionError,  # includes BusyLoadingError (LOADING after a restart)
    redis.TimeoutError,
    redis.ReadOnlyError,  # a demoted primary after a failover
    RedisUnavailableError,
    KombuOperationalError,  # the broker (the same Redis) refused a send
)
_UNAVAILABLE += tuple(
    getattr(redis.exceptions, name)
    for name in ("MasterDownError", "TryAgainError")
    if hasattr(redis.exceptions, name)
)


def is_redis_unavailable(exc: BaseException) -> bool:
    """True for Redis (or broker) unavailability, also when wrapped (`raise X from redis_error`)."""
    seen = 0
    current: BaseException | None = exc
    while current is not None and seen < 8:
        if isinstance(current, _UNAVAILABLE):
            return True
        current = current.__cause__
        seen += 1
    return False


def outage_budget(settings: Settings) -> float:
    """How long one task waits for Redis to come back: far below the visibility timeout (which
    counts from delivery), at most a minute."""
    return max(MIN_BUDGET_SECONDS, min(MAX_BUDGET_SECONDS, 0.2 * float(settings.visibility_timeout)))


def redis_answers(settings: Settings) -> bool:
    """One quick PING on a fresh connection (no retries, short timeouts): is Redis back?"""
    from shared.redis_conn import connect

    try:
        client = connect(
            settings,
            retry=Retry(NoBackoff(), 0),
            socket_timeout=2.0,
            socket_connect_timeout=2.0,
            health_check_interval=0,
        )
    except (RedisUnavailableError, redis.RedisError, OSError):
        return False
    try:
        client.close()
    except Exception:  # noqa: BLE001
        pass
    return True


class OutageWait:
    """The waits of one task delivery: `wait(exc)` blocks until Redis answers (True: run again)
    or the budget runs out (False: give up, let the exception escape)."""

    def __init__(
        self,
        settings: Settings,
        *,
        budget: float | None = None,
        max_reruns: int = MAX_RERUNS,
        probe: Callable[[], bool] | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ):
        self.settings = settings
        self.budget = outage_budget(settings) if budget is None else budget
        self.max_reruns = max_reruns
        self.reruns = 0
        self._probe = probe or (lambda: redis_answers(settings))
        self._sleep = sleep

    def wait(self, exc: BaseException) -> bool:
        if self.reruns >= self.max_reruns:
            log.error(
                "Redis unavailable again (%s) after %d re-runs of this attempt; leaving it to the "
                "recovery sweep",
                exc,
                self.reruns,
            )
            return False
        self.reruns += 1
        began = time.monotonic()
        deadline = began + self.budget
        log.warning(
            "Redis unavailable (%s: %s); waiting up to %.0f s for it, then running the attempt "
            "again from the top",
            type(exc).__name__,
            str(exc)[:200],
            self.budget,
        )
        delay = FIRST_PROBE_DELAY
        while True:
            if self._probe():
                log.warning(
                    "Redis answers again after %.1f s; running the attempt again", time.monotonic() - began
                )
                return True
            left = deadline - time.monotonic()
            if left <= 0:
                log.error(
                    "Redis still unavailable after %.0f s; leaving the attempt to the recovery sweep",
                    self.budget,
                )
                return False
            self._sleep(min(delay, left))
            delay = min(delay * 2, MAX_PROBE_DELAY)
