"""Figures from what the stand-in saw (its ledger and event log) and from Redis (INFO).

The stand-in is the referee: it is the only party that sees every creation, completion and 429
with one clock, so peak in-flight, creations per window and latencies are all taken from it.
"""

from __future__ import annotations

import bisect
import heapq
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any


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
    latencies_by_creation: list[float] = field(default_factory=list)  # in the order they were created

    @classmethod
    def from_events(cls, events: Iterable[dict[str, Any]]) -> Series:
        created: dict[str, float] = {}
        done_at: dict[str, float] = {}
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
                    done_at[event.get("id")] = ts
                in_flight.append((ts, int(event.get("in_flight", 0))))
            elif kind == "throttled":
                throttled.append((ts, str(event.get("limit"))))
            elif kind == "error":
                errors.append(ts)
        series = cls(sorted(creations), sorted(completions), latencies, in_flight, throttled, errors)
        series.latencies_by_creation = [
            ts_done - created[pid] for pid, ts_done in sorted(done_at.items(), key=lambda kv: created[kv[0]])
        ]
        return series

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
    """Issue 7's bound: max(N * L / slots, last creation the rate allows + L). With an exact sliding
    window of R per W s, creation k (0-based) comes no earlier than floor(k / R) * W, so the last
    at floor((N-1) / R) * W.

    L is the mean of the latencies the run drew, so for a mix of models N * L / slots is the work
    itself, sum(latencies) / slots: a true lower bound whatever the mix. No scheduler reaches it:
    the slots empty one by one in the last wave, which ideal_makespan adds."""
    by_slots = n * latency / slots
    windows = math.floor((n - 1) / create_limit) if n > 0 else 0
    by_rate = windows * window + latency
    return {"by_slots": by_slots, "by_rate": by_rate, "bound": max(by_slots, by_rate)}


def ideal_makespan(latencies: list[float], *, slots: int, create_limit: int, window: float) -> float:
    """The makespan of a scheduler with no overhead at all, given the same predictions in the same
    order: each starts the moment a slot is free and the exact window allows it (creation k no
    earlier than creation k-R plus W), and takes the latency the stand-in gave it.

    The formula bound uses the *mean* latency for the last wave, which no scheduler reaches: the
    batch ends with the slowest prediction of the last wave (lognormal latencies), and slots free
    up one at a time. This is the figure an ideal online scheduler would achieve on this very run,
    so makespan / ideal is the overhead of the fleet itself. For a mix of models (1.5-15 s) that
    tail is sum(latencies) / slots plus up to the longest latency: at 5000 images and 60 slots
    ideal / bound is about 1.02, at 60 images and 10 slots about 1.15 (list scheduling in the
    order the fleet created them; an order by latency could shorten the tail, but no online
    scheduler knows the latencies in advance)."""
    free_at = [0.0] * min(slots, max(len(latencies), 1))  # when each slot frees, as a heap
    starts: list[float] = []
    end = 0.0
    for k, latency in enumerate(latencies):
        start = max(heapq.heappop(free_at), starts[-1] if starts else 0.0)  # created in order
        if k >= create_limit:
            start = max(start, starts[k - create_limit] + window)
        starts.append(start)
        heapq.heappush(free_at, start + latency)
        end = max(end, start + latency)
    return end


def redis_commands(client: Any) -> dict[str, int]:
    """INFO commandstats as {command: calls}."""
    stats = client.info("commandstats")
    return {name.removeprefix("cmdstat_"): int(value["calls"]) for name, value in stats.items()}


def redis_cpu(client: Any) -> float:
    info = client.info("cpu")
    return float(info.get("used_cpu_sys", 0)) + float(info.get("used_cpu_user", 0))


def redis_round_trips(client: Any) -> int:
    """Requests Redis has read so far (INFO stats total_reads_processed): one per round trip,
    however many commands a pipeline carries. Redis's CPU follows them (a read and a reply
    each, and a wake-up of an idle server), more than the commands they carry."""
    return int(client.info("stats").get("total_reads_processed", 0))


def command_delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    names = set(before) | set(after)
    delta = {n: after.get(n, 0) - before.get(n, 0) for n in names}
    return {n: v for n, v in sorted(delta.items(), key=lambda kv: -kv[1]) if v > 0}
