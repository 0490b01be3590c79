"""`producer info`: the whole fleet on one screen, like `rq info` (issue 18.9).

What waits (the schedule and the broker, per priority), who works (every worker answering on the
fleet's queue: host, pid, threads, busy threads), the account's slots and windows, a pause, and
the batches that are not finished with their progress. `fleet_info` gathers it (producer.api
exposes it; the CLI only prints `info_lines` or `to_dict`). Each part is read on its own: a part
that cannot be read (no worker answers, the limiter's state not there yet) is shown as such
instead of failing the whole view.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any

from producer.progress import Snapshot, batch_state, format_counts, format_duration, snapshot_from_info
from shared.presence import describe
from shared.scheduler import QueueDepths

PRIORITIES = ("high", "normal", "low")
INSPECT_TIMEOUT = 1.0  # seconds Celery's broadcast waits for the workers' replies


@dataclass(frozen=True)
class WorkerInfo:
    name: str  # the node name, w1@host
    host: str
    pid: int | None
    threads: int | None  # the pool's size
    busy: int  # tasks running now (waiting for a slot, at Replicate, or saving files)


@dataclass
class FleetInfo:
    queue: str
    depths: QueueDepths
    workers: list[WorkerInfo]
    limits: Any  # shared.limiter LimiterStatus, or None when it could not be read
    batches: list[tuple[Any, Snapshot]] = field(default_factory=list)  # (BatchInfo, Snapshot), newest first
    at_replicate: dict[str, int] = field(default_factory=dict)  # batch id -> its predictions in flight
    wait_modes: list[Any] = field(default_factory=list)  # shared.presence.WorkerMode of each live worker

    def to_dict(self) -> dict[str, Any]:
        return {
            "queue": self.queue,
            "queues": self.depths.to_dict(),
            "workers": [asdict(w) for w in self.workers],
            "wait_modes": [asdict(m) for m in self.wait_modes],
            "limits": self.limits.to_dict() if self.limits is not None else None,
            "batches": [
                {
                    **snap.to_dict(),
                    "state": batch_state(snap),
                    "priority": getattr(info, "priority", "normal"),
                    "at_replicate": self.at_replicate.get(snap.batch_id, 0),
                }
                for info, snap in self.batches
            ],
        }


def workers_of(app: Any, queue: str, timeout: float = INSPECT_TIMEOUT) -> list[WorkerInfo]:
    """The workers consuming `queue`, with their pool and what runs (three broadcasts at once)."""
    inspect = app.control.inspect(timeout=timeout)

    def ask(method: str) -> dict[str, Any]:
        try:
            return getattr(inspect, method)() or {}
        except Exception:  # noqa: BLE001 - broker trouble: no worker we can see
            return {}

    with ThreadPoolExecutor(3) as pool:
        queues, stats, active = pool.map(ask, ("active_queues", "stats", "active"))
    found = []
    for name, consumed in sorted(queues.items()):
        if not any(q.get("name") == queue for q in consumed or []):
            continue
        stat = stats.get(name) or {}
        found.append(
            WorkerInfo(
                name=name,
                host=name.partition("@")[2] or name,
                pid=stat.get("pid"),
                threads=(stat.get("pool") or {}).get("max-concurrency"),
                busy=len(active.get(name) or []),
            )
        )
    return found


def info_lines(info: FleetInfo, width: int = 80) -> list[str]:
    d = info.depths
    lines = [f"queue {info.queue}"]
    for priority in PRIORITIES:
        lines.append(
            f"  {priority:<7} {d.ready.get(priority, 0):>6} waiting their turn "
            f"({d.batches.get(priority, 0)} batches), {d.broker.get(priority, 0)} in the broker"
        )
    later = f", next in {format_duration(d.next_due_in)}" if d.next_due_in is not None else ""
    lines.append(f"  delayed {d.scheduled:>6} (backoff, retry_after, rechecks){later}")
    lines.append("")
    busy = sum(w.busy for w in info.workers)
    threads = sum(w.threads or 0 for w in info.workers)
    lines.append(f"workers {len(info.workers)} alive, {busy}/{threads} threads busy")
    lines.append(f"  wait mode: {describe(info.wait_modes)}")
    if info.workers:
        lines.append(f"  {'NAME':<30} {'HOST':<20} {'PID':>7} {'THREADS':>7} {'BUSY':>5}")
        for w in info.workers:
            lines.append(
                f"  {w.name[:30]:<30} {w.host[:20]:<20} {w.pid or '?':>7} {w.threads or '?':>7} {w.busy:>5}"
            )
    else:
        lines.append("  no worker consumes this queue: start one with `celery -A workers worker -n w1@%h`")
    lines.append("")
    s = info.limits
    if s is None:
        lines.append("slots   unknown (the limiter's state could not be read)")
    else:
        lines.append(f"slots   {s.in_use}/{s.concurrency_limit} in use, {s.waiters} waiting for one")
        lines.append(
            f"window  {s.creations_in_window}/{s.create_limit} creations, "
            f"{s.reads_in_window}/{s.read_limit} reads in the last {s.rate_window:g} s"
        )
        if s.pause_seconds_left:
            reason = f" ({s.pause_reason})" if s.pause_reason else ""
            lines.append(f"paused  creations for {s.pause_seconds_left:.1f} s more{reason}")
        else:
            lines.append("paused  no")
    lines.append("")
    if not info.batches:
        lines.append("batches none active")
    else:
        lines.append(f"batches {len(info.batches)} active")
        lines.append(f"  {'BATCH':<24} {'PRIORITY':<8} {'STATE':<9} {'DONE':>11}  ITEMS")
        for batch, snap in info.batches:
            counts = format_counts(snap.counts)
            line = (
                f"  {snap.batch_id[:24]:<24} {getattr(batch, 'priority', 'normal'):<8} "
                f"{batch_state(snap):<9} {f'{snap.done}/{snap.total}':>11}  {counts}"
            )
            lines.append(line if len(line) <= width else line[: width - 1] + "…")
    return lines


def active_batches(infos: list[Any]) -> list[tuple[Any, Snapshot]]:
    found = []
    for batch in infos:
        snap = snapshot_from_info(batch)
        if not snap.finished:
            found.append((batch, snap))
    return found
