"""Invariant checks over grant logs (times on the Redis clock, seconds)."""

from __future__ import annotations


def max_overlap(intervals: list[list[float]]) -> int:
    """Most intervals [grant, release] open at one instant. A release and a grant at the same
    microsecond happened in that order (scripts run one at a time), so releases sort first."""
    events = []
    for granted, released in intervals:
        events.append((granted, 1))
        events.append((released, -1))
    events.sort()
    peak = current = 0
    for _, delta in events:
        current += delta
        peak = max(peak, current)
    return peak


def tightest_window(times: list[float], limit: int) -> float | None:
    """The shortest span holding limit+1 grants (None if there are not that many): the
    limiter is exact iff this is never below the window."""
    times = sorted(times)
    spans = [times[i + limit] - times[i] for i in range(len(times) - limit)]
    return min(spans) if spans else None


def most_in_any_window(times: list[float], window: float) -> int:
    times = sorted(times)
    best, j = 0, 0
    for i, t in enumerate(times):
        while times[j] <= t - window:
            j += 1
        best = max(best, i - j + 1)
    return best


def most_in_windows_ending_at(times: list[float], ends: list[float], window: float) -> int:
    """The most of `times` in any window (end - window, end] for end in `ends`: for grants made
    after a limit change (`ends`), the fullest window they close, counting every grant."""
    return max((sum(1 for t in times if end - window < t <= end) for end in ends), default=0)
