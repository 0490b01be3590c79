"""Visibility and control: one status snapshot, the limits in force, changing them at run time."""

from __future__ import annotations

import json
import time

import redis

from shared.limiter import replies
from shared.limiter.bounds import limit_changes, stored_limit
from shared.limiter.core import LimiterCore
from shared.limiter.types import LimiterStatus, Limits

LIMITS_CACHE_SECONDS = 5.0  # how stale `limits()` may be (a run-time change reaches it this late)


class Control(LimiterCore):
    """What an operator or a pacing caller asks of the Limiter as a whole."""

    def status(self) -> LimiterStatus:
        """One consistent snapshot (one script call): limits, slots, waiters, holders, window
        counts, pause."""
        return replies.status(self._call("status"))

    def limits(self) -> Limits:
        """The limits in force (as `set_limits` left them, else this limiter's own), at most
        LIMITS_CACHE_SECONDS old: one HMGET, for callers that pace themselves (poll intervals)."""
        cached = self._limits_cache
        now = time.monotonic()
        if cached is not None and now - cached[0] < LIMITS_CACHE_SECONDS:
            return cached[1]
        own = self.default_limits
        try:
            concurrency_limit, create, read, rate_window_ms = self.redis.hmget(
                self.keys.limiter_key("limits"),
                "concurrency_limit",
                "create_limit",
                "read_limit",
                "rate_window_ms",
            )
        except redis.RedisError:
            concurrency_limit = create = read = rate_window_ms = None
        value = Limits(
            concurrency_limit=int(
                stored_limit("concurrency_limit", concurrency_limit, own.concurrency_limit)
            ),
            create_limit=int(stored_limit("create_limit", create, own.create_limit)),
            read_limit=int(stored_limit("read_limit", read, own.read_limit)),
            rate_window=stored_limit(
                "rate_window",
                None if rate_window_ms is None else float(rate_window_ms) / 1000,
                float(own.rate_window),
            ),
        )
        self._limits_cache = (now, value)
        return value

    def set_limits(
        self,
        concurrency_limit: int | None = None,
        create_limit: int | None = None,
        read_limit: int | None = None,
        rate_window: float | None = None,
    ) -> None:
        """Change the limits for every host at once (no restarts). Only the limits given are
        written: the others stay as they are (workers seed absent ones from their own limits).
        ValueError if a value is outside LIMIT_BOUNDS (nothing is written then).

        Shrinking the concurrency lets holders finish and admits no one until in_use is below the
        new limit. A rate change (limit or window) holds exactly from now on: reservations that
        callers are sleeping towards are moved later if the new limits require it."""
        changes = limit_changes(concurrency_limit, create_limit, read_limit, rate_window)
        if changes:
            self._call("set_limits", json.dumps(changes), self._margin_ms)
            self._limits_cache = None
