"""The account-wide limits: their status, where each comes from, and changing them for every host
at run time (`producer limits`). producer.limits formats and records them."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from producer.api.connections import fleet_limiter, fleet_redis, settings_or_load
from shared.errors import InputError, Problem
from shared.keys import Keys
from shared.settings import Settings


def limits_status(settings: Settings | None = None):
    """The limiter's LimiterStatus (limits, in use, waiters, holders, window counts, pause)."""
    with fleet_limiter(settings_or_load(settings)) as limiter:
        return limiter.status()


def limit_sources(settings: Settings | None = None, status: Any = None) -> list:
    """Each limit in force with where it comes from (producer.limits.LimitSource): this
    environment's settings, another process's, or `producer limits set` (when, from which host)."""
    from producer.limits import sources

    settings = settings_or_load(settings)
    status = status if status is not None else limits_status(settings)
    with fleet_redis(settings) as client:
        return sources(client, Keys(settings.key_prefix), status, settings)


def set_limits(
    settings: Settings | None = None,
    *,
    concurrency_limit: int | None = None,
    create_limit: int | None = None,
    read_limit: int | None = None,
    rate_window: float | None = None,
):
    """Change the account-wide limits for every host at once; returns the new status. Each
    limit set is recorded as such (`limit_sources`) until `reset_limits` puts it back."""
    from producer.limits import record_set

    asked = {
        "concurrency_limit": concurrency_limit,
        "create_limit": create_limit,
        "read_limit": read_limit,
        "rate_window": rate_window,
    }
    given: dict[str, float] = {name: value for name, value in asked.items() if value is not None}
    if not given:
        raise InputError(
            Problem(
                "give at least one of concurrency_limit, create_limit, read_limit, rate_window",
                field="limits",
            )
        )
    settings = settings_or_load(settings)
    with fleet_limiter(settings) as limiter:
        try:
            limiter.set_limits(**given)
        except ValueError as exc:
            raise InputError(Problem(str(exc), field="limits")) from exc
        record_set(limiter.redis, limiter.keys, given)
        return limiter.status()


def reset_limits(settings: Settings | None = None, names: Sequence[str] | None = None):
    """Put the limits `names` (default: all four) back to this environment's settings
    (REPLICATE_GLOBAL_MAX_CONCURRENT, ...) for every host, and forget that `producer limits
    set` gave them; returns the new status."""
    from producer.limits import LIMIT_NAMES, forget_set

    names = list(names or LIMIT_NAMES)
    unknown = [n for n in names if n not in LIMIT_NAMES]
    if unknown:
        raise InputError(
            Problem(f"unknown limit {unknown[0]!r}: one of {', '.join(LIMIT_NAMES)}", field="limits")
        )
    settings = settings_or_load(settings)
    with fleet_limiter(settings) as limiter:
        limiter.set_limits(**{name: getattr(settings, name) for name in names})
        forget_set(limiter.redis, limiter.keys, names)
        return limiter.status()
