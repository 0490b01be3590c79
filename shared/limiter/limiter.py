"""The account-wide limiter: a leased FIFO semaphore plus two exact sliding-window rate limits.

All state and all time live in Redis (Lua scripts, `TIME`), so hosts with wrong clocks cannot
break the limits; see README.md in this folder for the design, the guarantees and what happens
when Redis restarts.

`Limiter` is one class per job, put together: `Slots` (slots.py: acquire, adopt, settle,
force_release), `Rates` (rates.py: the creation and read tokens, giving one back, the pause) and
`Control` (control.py: status, limits, set_limits), each on `LimiterCore` (core.py: the
parameters, the script calls with the epoch, the process agent). The limits' bounds: bounds.py.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import redis

from shared.keys import Keys
from shared.limiter.bounds import LIMIT_BOUNDS, limit_changes
from shared.limiter.control import LIMITS_CACHE_SECONDS, Control
from shared.limiter.core import KEY_NAMES, SCRIPT_NAMES, STOP_POLL_SECONDS
from shared.limiter.rates import Rates
from shared.limiter.slots import RECOVERY_RECHECK_JITTER, Slots
from shared.limiter.types import Limits

if TYPE_CHECKING:  # pragma: no cover
    from shared.settings import Settings

# What this module held before it was split (slots.py, rates.py, control.py, on core.py and
# bounds.py), still importable from here.
__all__ = [
    "Limiter",
    "KEY_NAMES",
    "LIMIT_BOUNDS",
    "LIMITS_CACHE_SECONDS",
    "RECOVERY_RECHECK_JITTER",
    "SCRIPT_NAMES",
    "STOP_POLL_SECONDS",
    "limit_changes",
]


class Limiter(Slots, Rates, Control):
    """Create ONE per process and share it between threads (it is thread-safe).

    Parameters:
    limits: this process's limits: written into Redis only where a limit is absent there (a
        first start, or Redis lost it); the limits in Redis (`set_limits`) win. ConfigError if
        one is outside LIMIT_BOUNDS.
    lease_seconds: how long a slot stays held without a renewal (renewed every lease/3): the
        time a dead holder keeps its slot.
    orphan_seconds: the longest a dead holder's slot stays counted while its prediction may
        still run (`from_settings`: the prediction timeout plus a lease; Replicate ends
        predictions by then). `adopt` or `settle` end it sooner.
    rate_margin: seconds added to the rate window on our side. Two grants R apart are then at
        least window+margin apart in Redis time, so they cannot fall into one window at
        Replicate's side as long as the requests' network delays differ by less than the margin.
        Costs margin/window of the rate (0.25 s of 60 s = 0.4 %).
    waiter_ttl: a waiter registration lives this long unless its process refreshes it (every
        ttl/3), so a dead waiter blocks the head of the line for at most this long.
    recheck_interval: a waiting thread re-runs acquire after this long even without a wake
        signal, so a lost signal only ever delays (it never deadlocks).
    """

    @classmethod
    def from_settings(
        cls,
        redis_client: redis.Redis,
        keys: Keys,
        settings: Settings,
        *,
        orphan_seconds: float | None = None,
        **tuning: float,
    ) -> Limiter:
        """The limiter of a worker or the CLI: the limits and lease of `settings`, orphans kept
        the prediction timeout plus a lease. `tuning`: rate_margin, waiter_ttl, recheck_interval."""
        lease = settings.lease_seconds
        limits = Limits(
            concurrency_limit=settings.concurrency_limit,
            create_limit=settings.create_limit,
            read_limit=settings.read_limit,
            rate_window=settings.rate_window,
        )
        orphan = orphan_seconds or max(settings.prediction_timeout, lease) + lease
        return cls(redis_client, keys, limits, lease_seconds=lease, orphan_seconds=orphan, **tuning)
