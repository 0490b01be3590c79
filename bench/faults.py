"""Fault suite: one batch through the real fleet on the hosts while something goes wrong.

Faults (issue 7, item 5), each its own run on a fresh key prefix and a reset stand-in:
  none            the same batch with nothing injected (the reference makespan)
  kill            SIGKILL a random worker every `kill_every` s (a replacement starts on its host)
  redis_restart   Redis stopped and started again once (AOF, appendfsync everysec), at `fault_at`
  redis_crash     the same with SIGKILL (up to ~1 s of acknowledged writes may be lost)
  partition       host 2's cable unplugged for `cut_for` s at `fault_at`, then plugged back
  clock           host 3's workers run with a wall clock 60 s ahead (faketime) for the whole batch
  clock_behind    the same, 60 s behind
  errors          the stand-in answers 5xx bursts (`burst` calls each, every `burst_every` s)
  storm           the account is throttled by "another program": every create answers 429 for
                  `storm_for` s (retry_after = the seconds left), every `burst_every` s

Figures per fault: images lost, duplicate predictions (same input created twice at the stand-in),
extra creations (creations - N), peak in flight vs slots, most creations in a window vs the limit,
429s, 5xx, makespan and slowdown vs `none`, and recovery: seconds from the end of each fault
until the stand-in sees the next creation (the worst one when the fault repeats).
"""

from __future__ import annotations

import random
import signal
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from bench.fleet import Fleet, submit, wait_finished
from bench.hosts import Hosts, HostsError
from bench.measure import Series, fetch_events
from bench.processes import RedisServer
from bench.throughput import (
    RunResult,
    Scenario,
    _scenario_dict,
    _succeeded_with_files,
    fleet_settings,
    prompts_for,
    scenario_fleet,
    sim_figures,
    sim_options,
)

FAULTS = (
    "none",
    "kill",
    "redis_restart",
    "redis_crash",
    "partition",
    "clock",
    "clock_behind",
    "errors",
    "storm",
)


@dataclass
class FaultPlan:
    """Timings in real seconds (not scaled)."""

    kill_every: float = 20.0
    fault_at: float = 15.0  # seconds after submission for one-off faults
    cut_for: float = 30.0
    clock_ahead: float = 60.0
    burst: int = 40
    burst_every: float = 15.0
    storm_for: float = 5.0
    lease_seconds: float = 30.0
    visibility_timeout: int = 120
    # Bounds how long a creation POST can be in flight, which a reconciliation after a cut waits out.
    http_timeout: float = 15.0
    timeout: float = 900.0


@dataclass
class FaultLog:
    windows: list[tuple[float, float, str]] = field(default_factory=list)  # (start, end, what)
    notes: list[str] = field(default_factory=list)


def _injector(
    fault: str,
    plan: FaultPlan,
    hosts: Hosts,
    fleet: Fleet,
    redis: RedisServer,
    sim: Any,
    started: float,
    stop: threading.Event,
    log: FaultLog,
    rng: random.Random,
) -> Callable[[], None]:
    def sleep_until(offset: float) -> bool:
        return not stop.wait(max(0.0, started + offset - time.time()))

    def run() -> None:
        try:
            if fault == "kill":
                k = 1
                while sleep_until(plan.kill_every * k):
                    t = time.time()
                    victim = fleet.kill_random(rng, restart=True)
                    log.windows.append((t, time.time(), f"SIGKILL {victim.name if victim else '-'}"))
                    k += 1
            elif fault in ("redis_restart", "redis_crash"):
                if sleep_until(plan.fault_at):
                    t = time.time()
                    down = redis.restart(sig=signal.SIGTERM if fault == "redis_restart" else signal.SIGKILL)
                    log.windows.append((t, time.time(), f"redis down {down:.2f}s"))
            elif fault == "partition":
                if sleep_until(plan.fault_at):
                    t = time.time()
                    hosts.cut(2)
                    stop.wait(plan.cut_for)
                    hosts.restore(2)
                    log.windows.append((t, time.time(), f"host 2 cut {plan.cut_for:g}s"))
            elif fault in ("errors", "storm"):
                k = 1
                while sleep_until(plan.burst_every * k - plan.burst_every / 2):
                    t = time.time()
                    if fault == "errors":
                        sim.configure(error_burst=plan.burst)
                        log.windows.append((t, t, f"errors x{plan.burst}"))
                    else:
                        sim.configure(storm_for=plan.storm_for)
                        log.windows.append((t, t + plan.storm_for, f"storm {plan.storm_for:g}s"))
                    k += 1
                    if k > 4:
                        break
        except (HostsError, OSError, RuntimeError) as exc:  # report, never hang the run
            log.notes.append(f"injector failed: {exc}")

    return run


def run_fault(
    fault: str,
    sc: Scenario,
    plan: FaultPlan,
    hosts: Hosts,
    redis: RedisServer,
    sim: Any,
    *,
    reference_makespan: float | None = None,
    seed: int = 11,
    log: Any = print,
) -> RunResult:
    if fault not in FAULTS:
        raise ValueError(f"unknown fault {fault!r}; known: {', '.join(FAULTS)}")
    if fault in ("partition",) and not hosts.isolated:
        return RunResult(fault, _scenario_dict(sc), {"skipped": "needs network namespaces"})
    sim.reset(**sim_options(sc))
    out = hosts.workdir / f"fault-{fault}-{uuid.uuid4().hex[:6]}"
    settings = fleet_settings(
        sc,
        redis,
        out,
        lease_seconds=plan.lease_seconds,
        visibility_timeout=plan.visibility_timeout,
        http_timeout=plan.http_timeout,
    )
    offsets = {"clock": {3: plan.clock_ahead}, "clock_behind": {3: -plan.clock_ahead}}.get(fault, {})
    fleet = scenario_fleet(sc, hosts, settings, sim.url, clock_offsets=offsets)
    client = redis.client(socket_timeout=5, socket_connect_timeout=2)
    stop = threading.Event()
    flog = FaultLog()
    injector = None
    try:
        fleet.start()
        fleet.wait_ready()
        started = time.time()
        batch_id = submit(settings, prompts_for(sc.n, settings.key_prefix), model=sc.model)
        injector = threading.Thread(
            target=_injector(fault, plan, hosts, fleet, redis, sim, started, stop, flog, random.Random(seed)),
            daemon=True,
        )
        injector.start()
        finished, finished_at, info = wait_finished(
            settings, batch_id, timeout=plan.timeout, redis_client=client
        )
        stop.set()
        injector.join(plan.cut_for + 10)
        done = _succeeded_with_files(settings, batch_id, client)
        figures, plot = sim_figures(sc, sim, started, finished_at, done)
        series = Series.from_events(fetch_events(sim))
        recoveries = []
        for _t0, t1, _what in flog.windows:
            nxt = next((c for c in series.creations if c >= t1), None)
            if nxt is not None:
                recoveries.append(nxt - t1)
        figures.update(
            {
                "fault": fault,
                "finished": finished,
                "statuses": dict(info.counts) if info else {},
                "extra_creations": (figures["creations"] or 0) - sc.n,
                "over_slot_limit": max(0, (figures["peak_in_flight"] or 0) - sc.slots),
                "over_rate_limit": max(0, (figures["max_creations_in_window"] or 0) - sc.create_per_min),
                "recovery_s": round(max(recoveries), 2) if recoveries else None,
                "faults_injected": len(flog.windows),
                "fault_log": [f"+{a - started:.1f}s..+{b - started:.1f}s {w}" for a, b, w in flog.windows]
                + flog.notes,
                "slowdown_s": round(figures["makespan_s"] - reference_makespan, 1)
                if reference_makespan
                else None,
                "workers_started": len(fleet.workers),
            }
        )
        if not finished:
            log(f"[fault {fault}] NOT finished: {figures['statuses']}\n{fleet.logs(1500)}")
        return RunResult(fault, _scenario_dict(sc), figures, plot)
    finally:
        stop.set()
        if fault == "partition":
            hosts.restore(2)
        fleet.stop()
        client.close()


def ci_scenario() -> tuple[Scenario, FaultPlan]:
    """A few hundred images, short intervals: each fault run takes ~20-40 s."""
    sc = Scenario(
        n=200, slots=20, create_per_min=200, latency=8.0, time_scale=0.2
    )  # latency 1.6 s, window 12 s
    plan = FaultPlan(
        kill_every=5.0,
        fault_at=5.0,
        cut_for=8.0,
        clock_ahead=60.0,
        burst=15,
        burst_every=6.0,
        storm_for=2.0,
        lease_seconds=6.0,
        visibility_timeout=20,
        http_timeout=5.0,
        timeout=240.0,
    )
    return sc, plan


def full_scenario() -> tuple[Scenario, FaultPlan]:
    """Issue 7's version: 1000 images, real intervals (kill every 20 s, 30 s cut, clock +60 s)."""
    sc = Scenario(
        n=1000, slots=60, create_per_min=600, latency=8.0, time_scale=0.5
    )  # latency 4 s, window 30 s
    plan = FaultPlan(
        kill_every=20.0,
        fault_at=20.0,
        cut_for=30.0,
        clock_ahead=60.0,
        burst=40,
        burst_every=15.0,
        lease_seconds=15.0,
        visibility_timeout=60,
        timeout=1200.0,
    )
    return sc, plan


def clock_scenario() -> tuple[Scenario, FaultPlan]:
    """Issue 13.10's case: 60 images under a tight creation rate (30 per 15 s window, 20 slots,
    2 s predictions), one of three workers' clocks 60 s off; leases and the broker's visibility
    timeout short, as in the fault suite."""
    sc = Scenario(n=60, slots=20, create_per_min=30, latency=8.0, time_scale=0.25)
    plan = FaultPlan(
        clock_ahead=60.0, lease_seconds=5.0, visibility_timeout=20, http_timeout=5.0, timeout=600.0
    )
    return sc, plan


def fault_line(r: RunResult) -> str:
    f = r.figures
    if "skipped" in f:
        return f"{r.system:14s} skipped: {f['skipped']}"
    return (
        f"{r.system:14s} lost {f['images_lost']} dup {f['duplicate_predictions']} extra {f['extra_creations']} "
        f"peak {f['peak_in_flight']}/{f['slot_limit']} win {f['max_creations_in_window']}/{f['create_limit']} "
        f"429 {f['http_429']} 5xx {f['errors_5xx']} makespan {f['makespan_s']}s "
        f"slowdown {f['slowdown_s']} recovery {f['recovery_s']}"
    )
