"""Figures from what the stand-in saw (its ledger and event log) and from Redis (INFO).

The stand-in is the referee: it is the only party that sees every creation, completion and 429
with one clock, so peak in-flight, creations per window and latencies are all taken from it.
"""
from __future__ import annotations

import bisect
import math
from dataclasses import dataclass
from typing import Any, Iterable


def fetch_events(sim: Any) -> list[dict[str, Any]]:
    """Every event the stand-in recorded since its last reset (paged by cursor)."""
    events: list[dict[str, Any]] = []
    cursor = 0
    while True:
        page = sim.events(since=cursor)
        batch = page.get("events", [])
        events.extend(batch)
        if not batch or page.get("next", cursor) <= cursor:
            return events
        cursor = page["next"]


@dataclass
class Series:
    """Creation and completion times (stand-in wall clock `ts`, seconds) and derived series."""

    creations: list[float]
    completions: list[float]
    latencies: list[float]  # completion - creation, per prediction
    in_flight: list[tuple[float, int]]  # (time, in flight after the event)
    throttled: list[tuple[float, str]]
    errors: list[float]

    @classmethod
    def from_events(cls, events: Iterable[dict[str, Any]]) -> "Series":
        created: dict[str, float] = {}
        creations, completions, latencies, in_flight, throttled, errors = [], [], [], [], [], []
        for event in events:
            kind, ts = event.get("kind"), float(event.get("ts", 0.0))
            if kind == "create":
                creations.append(ts)
                created[event.get("id")] = ts
                in_flight.append((ts, int(event.get("in_flight", 0))))
            elif kind == "complete":
                completions.append(ts)
                began = created.get(event.get("id"))
                if began is not None:
                    latencies.append(ts - began)
                in_flight.append((ts, int(event.get("in_flight", 0))))
            elif kind == "throttled":
                throttled.append((ts, str(event.get("limit"))))
            elif kind == "error":
                errors.append(ts)
        return cls(sorted(creations), sorted(completions), latencies, in_flight, throttled, errors)

    @property
    def mean_latency(self) -> float:
        return sum(self.latencies) / len(self.latencies) if self.latencies else 0.0

    def max_in_window(self, window: float) -> int:
        """The most creations in any window of `window` s (two creations share a window when
        less than `window` apart, as the stand-in counts)."""
        best, left = 0, 0
        times = self.creations
        for right, t in enumerate(times):
            while t - times[left] >= window:
                left += 1
            best = max(best, right - left + 1)
        return best

    def window_counts(self, window: float, step: float) -> list[tuple[float, int]]:
        """(t, creations in (t - window, t]) sampled every `step` s, for the plot."""
        if not self.creations:
            return []
        out = []
        t = self.creations[0]
        end = self.creations[-1] + window
        times = self.creations
        while t <= end:
            count = bisect.bisect_right(times, t) - bisect.bisect_right(times, t - window)
            out.append((t, count))
            t += step
        return out

    def mean_in_flight(self, start: float, end: float) -> float:
        """Time-weighted mean of predictions in flight between start and end."""
        if end <= start or not self.in_flight:
            return 0.0
        area, last_t, last_n = 0.0, start, 0
        for t, n in sorted(self.in_flight):
            t = min(max(t, start), end)
            area += last_n * (t - last_t)
            last_t, last_n = t, n
        area += last_n * (end - last_t)
        return area / (end - start)


def bound(n: int, *, latency: float, slots: int, create_limit: int, window: float) -> dict[str, float]:
    """The makespan no scheduler can beat.

    issue 7's formula: max(N * L / slots, last creation the rate allows + L). With an exact sliding
    window of R per W s, creation k (0-based) comes no earlier than floor(k / R) * W, so the last
    at t0 = floor((N-1) / R) * W.
    tight (also a lower bound, and the one efficiency uses): the `rem` creations of that last
    window all start at t0 or later and need rem * L slot-seconds with `slots` at a time, so the
    batch cannot end before t0 + max(L, rem * L / slots). It differs from the formula where both
    limits bind (e.g. 10 slots of 2 s predictions against 60 creations per 15 s)."""
    by_slots = n * latency / slots
    windows = math.floor((n - 1) / create_limit) if n > 0 else 0
    last_window_opens = windows * window
    rem = n - windows * create_limit
    by_rate = last_window_opens + latency
    by_rate_and_slots = last_window_opens + max(latency, rem * latency / slots)
    return {"by_slots": by_slots, "by_rate": by_rate, "issue_formula": max(by_slots, by_rate),
            "bound": max(by_slots, by_rate_and_slots)}


def redis_commands(client: Any) -> dict[str, int]:
    """INFO commandstats as {command: calls}."""
    stats = client.info("commandstats")
    return {name.removeprefix("cmdstat_"): int(value["calls"]) for name, value in stats.items()}


def redis_cpu(client: Any) -> float:
    info = client.info("cpu")
    return float(info.get("used_cpu_sys", 0)) + float(info.get("used_cpu_user", 0))


def command_delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    names = set(before) | set(after)
    delta = {n: after.get(n, 0) - before.get(n, 0) for n in names}
    return {n: v for n, v in sorted(delta.items(), key=lambda kv: -kv[1]) if v > 0}


def percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    k = (len(ordered) - 1) * q
    lo, hi = math.floor(k), math.ceil(k)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)
