"""Exact sliding-window counting over integer nanoseconds.

Two calls fall in the same window when they are less than `window` apart. Admission and the
ledger's "most in any window" use this same rule on integers, so the ledger can never disagree
with what was enforced because of float rounding.
"""

from __future__ import annotations

from bisect import bisect_right

NS = 1_000_000_000


class TimeSeries:
    """Timestamps (ns, non-decreasing) of admitted calls, with exact window queries."""

    def __init__(self) -> None:
        self.times: list[int] = []
        self._max = 0
        self._max_window: int | None = None
        self._left = 0

    def __len__(self) -> int:
        return len(self.times)

    def count_in_window(self, now: int, window: int) -> int:
        # entries t with now - t < window  <=>  t > now - window
        return len(self.times) - bisect_right(self.times, now - window)

    def retry_after(self, now: int, limit: int, window: int) -> int | None:
        """None if one more call fits now; else ns until it would."""
        count = self.count_in_window(now, window)
        if count < limit:
            return None
        if limit <= 0:
            return window
        # Once the entry `limit` places from the end leaves the window, count drops to limit - 1.
        return self.times[len(self.times) - limit] + window - now

    def append(self, now: int, window: int) -> None:
        if self.times and now < self.times[-1]:
            now = self.times[-1]  # monotonic clock; guard against equal-or-earlier reads anyway
        self.times.append(now)
        self._advance(window)

    def max_in_any_window(self, window: int) -> int:
        if window != self._max_window:
            self._max, self._left, self._max_window = 0, 0, window
            for right in range(len(self.times)):
                self._step(right, window)
        return self._max

    def _advance(self, window: int) -> None:
        if window != self._max_window:
            self.max_in_any_window(window)
        else:
            self._step(len(self.times) - 1, window)

    def _step(self, right: int, window: int) -> None:
        times = self.times
        while times[right] - times[self._left] >= window:
            self._left += 1
        self._max = max(self._max, right - self._left + 1)
