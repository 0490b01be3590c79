"""Waiting for a condition: the one polling loop of the test suite."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_until(
    predicate: Callable[[], T],
    timeout: float = 5.0,
    what: str = "the condition",
    *,
    interval: float = 0.05,
    explain: Callable[[], str] | None = None,
    ignore: tuple[type[BaseException], ...] = (),
) -> T:
    """The predicate's first truthy value within `timeout` s (checked once more at the deadline);
    else an AssertionError naming `what`, followed by `explain()` (e.g. a fleet's logs).
    Exceptions of the types in `ignore` count as "not yet" (a server still starting)."""
    deadline = time.monotonic() + timeout
    while True:
        last_try = time.monotonic() >= deadline
        try:
            value = predicate()
        except ignore:
            value = None  # type: ignore[assignment]
        if value:
            return value
        if last_try:
            break
        time.sleep(min(interval, max(0.0, deadline - time.monotonic())))
    message = f"timed out after {timeout:g} s waiting for {what}"
    raise AssertionError(message + ("\n" + explain() if explain is not None else ""))
