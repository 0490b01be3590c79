"""The bounds every limit must keep, and the limits as the `limits` hash stores them.

The Lua scripts check the same bounds (common.lua LIMIT_BOUNDS) before they write anything.
"""

from __future__ import annotations

import math
from typing import Any

from shared.common import is_number
from shared.errors import ConfigError
from shared.limiter.types import Limits

# Accepted limit values (the Lua scripts check the same bounds, common.lua LIMIT_BOUNDS): beyond
# them a value is surely a typo (`--concurrency-limit 1e20`), and a few would break the scripts.
LIMIT_BOUNDS: dict[str, tuple[float, float]] = {
    "concurrency_limit": (1, 100_000),
    "create_limit": (1, 1_000_000),
    "read_limit": (1, 1_000_000),
    "rate_window": (1.0, 86_400.0),  # seconds: one second to one day
}


def _whole_limit(name: str, value: Any) -> int:
    low, high = LIMIT_BOUNDS[name]
    if not is_number(value) or int(value) != value or not low <= value <= high:
        raise ValueError(f"{name} must be a whole number from {low:g} to {high:g}, got {value!r}")
    return int(value)


def _window_ms(value: Any) -> float:
    low, high = LIMIT_BOUNDS["rate_window"]
    if not is_number(value) or not low <= value <= high:
        raise ValueError(f"rate_window must be from {low:g} to {high:g} seconds, got {value!r}")
    return round(float(value) * 1000, 3)


def limit_changes(
    concurrency_limit: int | None = None,
    create_limit: int | None = None,
    read_limit: int | None = None,
    rate_window: float | None = None,
) -> dict[str, int | float]:
    """The given limits as the limits hash stores them (the window in ms: `rate_window_ms`),
    only those given. ValueError naming the value if one is out of LIMIT_BOUNDS."""
    changes: dict[str, int | float] = {}
    for name, value in (
        ("concurrency_limit", concurrency_limit),
        ("create_limit", create_limit),
        ("read_limit", read_limit),
    ):
        if value is not None:
            changes[name] = _whole_limit(name, value)
    if rate_window is not None:
        changes["rate_window_ms"] = _window_ms(rate_window)
    return changes


def checked_limits(limits: Limits) -> dict[str, int | float]:
    """A limiter's own limits as the scripts seed them where Redis has none (the limits hash's
    fields). ConfigError naming the limit if one is out of LIMIT_BOUNDS."""
    try:
        return limit_changes(
            limits.concurrency_limit, limits.create_limit, limits.read_limit, limits.rate_window
        )
    except ValueError as exc:
        raise ConfigError(f"limiter limits: {exc}") from None


def stored_limit(name: str, value: Any, default: float) -> float:
    """A limit read from Redis, or the default if it is absent or out of bounds (as the
    scripts do)."""
    low, high = LIMIT_BOUNDS[name]
    try:
        number = float(value)
    except (TypeError, ValueError):
        return default
    return number if math.isfinite(number) and low <= number <= high else default
