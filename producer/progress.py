"""Progress of a batch: one snapshot from the ledger's counters, rendered as a live bar on a
terminal or as plain periodic lines in logs and pipes.

A snapshot costs one ledger read (the per-status counters kept with every transition) and,
optionally, one limiter status read; never one read per item. The live bar is drawn by `rich`
(fitted to the terminal's width at every redraw, redrawn in place a few times a second, ASCII
on a terminal that cannot show the bar's characters, the cursor restored at the end); logs,
pipes and dumb terminals get the plain lines.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, TextIO

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn
from rich.table import Column

# Order in which the counts are shown everywhere.
STATUSES = ("succeeded", "substituted", "failed", "canceled", "running", "pending", "held")
TERMINAL = ("succeeded", "substituted", "failed", "canceled")


@dataclass(frozen=True)
class Snapshot:
    """Where a batch stands, computed from one ledger read."""

    batch_id: str
    total: int
    counts: dict[str, int]
    elapsed: float  # seconds since the batch was created (or finished, for a finished batch)
    finished: bool
    canceled: bool = False
    slots_in_use: int | None = None  # account-wide, from the limiter
    slots_limit: int | None = None
    # This batch's predictions in flight at Replicate (slots its items hold with a prediction id;
    # None: not read). The rest of `running` waits for a slot or a creation token, or saves.
    at_replicate: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def done(self) -> int:
        return sum(self.counts.get(s, 0) for s in TERMINAL)

    @property
    def succeeded(self) -> int:
        return self.counts.get("succeeded", 0)

    @property
    def failed(self) -> int:
        return self.counts.get("failed", 0)

    @property
    def running(self) -> int:
        return self.counts.get("running", 0)

    @property
    def canceled_count(self) -> int:
        return self.counts.get("canceled", 0)

    @property
    def substituted(self) -> int:
        return self.counts.get("substituted", 0)

    @property
    def processed(self) -> int:
        """Items that ended after being worked on: every terminal item but the canceled ones
        (a cancel ends an item at once and says nothing about how fast the fleet works)."""
        return self.done - self.canceled_count

    @property
    def held(self) -> int:
        """Items waiting for room in a spending limit (shared.budget)."""
        return self.counts.get("held", 0)

    @property
    def stalled_on_budget(self) -> bool:
        """Nothing left to run but items held by a spending limit: they resume by themselves
        when the limit is raised or the UTC day turns, not while anyone waits."""
        return not self.finished and self.held > 0 and self.done + self.held >= self.total

    @property
    def queued(self) -> int:
        # Items not yet terminal nor running nor held; computed so an item is never shown twice.
        return max(self.total - self.done - self.running - self.held, 0)

    @property
    def all_succeeded(self) -> bool:
        return self.finished and self.succeeded == self.total

    @property
    def per_minute(self) -> float | None:
        """Images produced (succeeded) per minute since the batch started; None before the first.
        Canceled, failed and substituted items made no image and are not counted."""
        if self.succeeded == 0 or self.elapsed <= 0:
            return None
        return self.succeeded / self.elapsed * 60.0

    @property
    def eta(self) -> float | None:
        """Seconds left at the rate items have been worked through (succeeded, failed or
        substituted; never canceled); 0 when finished, None when unknown."""
        if self.finished:
            return 0.0
        if self.processed == 0 or self.elapsed <= 0 or self.stalled_on_budget:
            return None
        return (self.total - self.done) / (self.processed / self.elapsed)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("extra")
        data.update(
            done=self.done,
            queued=self.queued,
            per_minute=None if self.per_minute is None else round(self.per_minute, 2),
            eta_seconds=None if self.eta is None else round(self.eta, 1),
            elapsed=round(self.elapsed, 1),
        )
        return data


def batch_state(snap: Snapshot) -> str:
    """One word for where a batch stands, the same in `status`, `list` and `info`: queued (no
    item started), running, canceling (canceled, items still stopping), finished, canceled
    (finished after a cancel), held (all that is left waits for room in a spending limit)."""
    if snap.finished:
        return "canceled" if snap.canceled else "finished"
    if snap.canceled:
        return "canceling"
    if snap.stalled_on_budget:
        return "held"
    return "running" if snap.done or snap.running else "queued"


def in_flight_by_batch(holders: Any) -> dict[str, int]:
    """Predictions in flight at Replicate per batch, from the limiter's holders: a slot with a
    prediction id, or marked with an attempt by its creation token (its POST sent, e.g. a sync
    create held open until the prediction ends, its id not known yet)."""
    found: dict[str, int] = {}
    for h in holders:
        batch_id = getattr(h, "batch_id", None)
        if batch_id and (getattr(h, "prediction_id", None) or getattr(h, "attempt", None)):
            found[batch_id] = found.get(batch_id, 0) + 1
    return found


def snapshot_from_info(info: Any, *, now: float | None = None, limiter_status: Any = None) -> Snapshot:
    """A Snapshot from a ledger BatchInfo (attributes per the ledger contract)."""
    now = time.time() if now is None else now
    counts = {str(k): int(v) for k, v in (getattr(info, "counts", None) or {}).items()}
    start = _num(getattr(info, "created_at", None)) or now
    total = int(info.total)
    done = sum(counts.get(s, 0) for s in TERMINAL)
    # Every item terminal is the definition of finished (the ledger's flag follows it).
    finished = bool(getattr(info, "finished", False)) or done >= total
    end = _num(getattr(info, "finished_at", None)) if finished else None
    slots_in_use = slots_limit = at_replicate = None
    if limiter_status is not None:
        slots_in_use = int(getattr(limiter_status, "in_use", 0))
        slots_limit = int(getattr(limiter_status, "concurrency_limit", 0))
        at_replicate = in_flight_by_batch(getattr(limiter_status, "holders", None) or []).get(str(info.id), 0)
    return Snapshot(
        batch_id=str(info.id),
        total=total,
        counts=counts,
        elapsed=max((end or now) - start, 0.0),
        finished=finished,
        canceled=bool(getattr(info, "canceled", False)),
        slots_in_use=slots_in_use,
        slots_limit=slots_limit,
        at_replicate=at_replicate,
    )


def _num(value: Any) -> float | None:
    try:
        return float(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None


# --- formatting -------------------------------------------------------------------------------
def format_duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def format_age(seconds: float) -> str:
    """'42s', '5m', '3h', '12d': an age in its largest whole unit."""
    whole = max(int(seconds), 0)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if whole >= size:
            return f"{whole // size}{unit}"
    return f"{whole}s"


# The states in fewer letters, where a line must fit 80 columns (`producer list`).
SHORT_STATUS = {"succeeded": "ok", "substituted": "subst", "running": "run", "pending": "pend"}


def format_counts(counts: Mapping[str, int], *, keep_zero: tuple[str, ...] = (), short: bool = False) -> str:
    """'succeeded 3, failed 1'; short: 'ok 3 failed 1' (SHORT_STATUS)."""
    names = SHORT_STATUS if short else {}
    parts = [f"{names.get(s, s)} {counts.get(s, 0)}" for s in STATUSES if counts.get(s, 0) or s in keep_zero]
    parts += [f"{names.get(k, k)} {v}" for k, v in counts.items() if k not in STATUSES and v]
    return (" " if short else ", ").join(parts) or "nothing yet"


def _pace(snap: Snapshot) -> str:
    """Rate, ETA (or how long it took) and the account's slots."""
    rate = "-" if snap.per_minute is None else f"{snap.per_minute:.1f}"
    if snap.finished:
        when = f"took {format_duration(snap.elapsed)}"
    elif snap.canceled:
        when = "canceling"  # the rest stops as the workers notice; no ETA to speak of
    else:
        when = f"ETA {format_duration(snap.eta)}"
    parts = [f"{rate} img/min", when]
    if snap.slots_limit:
        parts.append(f"slots {snap.slots_in_use}/{snap.slots_limit}")
    return " | ".join(parts)


def _others(snap: Snapshot, separator: str, names: tuple[tuple[str, str], ...]) -> str:
    """The rarer counts (substituted, canceled), only when there are any."""
    return "".join(
        f"{separator}{label} {snap.counts[name]}" for name, label in names if snap.counts.get(name)
    )


def running_text(snap: Snapshot) -> str:
    """`running N`, split into those at Replicate and those waiting to be created
    (for a slot, a creation token, a pause) or saving their files, when known."""
    if snap.at_replicate is None or not snap.running:
        return f"running {snap.running}"
    at = min(snap.at_replicate, snap.running)
    return f"running {snap.running} ({at} at Replicate, {snap.running - at} waiting to be created or saving)"


def waiting_for(snap: Snapshot) -> str:
    """What an unfinished batch waits for, in words."""
    parts = []
    at = min(snap.at_replicate or 0, snap.running)
    if at:
        parts.append(f"{at} prediction(s) at Replicate")
    if snap.running - at:
        parts.append(f"{snap.running - at} item(s) waiting to be created or saving")
    if snap.queued:
        parts.append(f"{snap.queued} queued item(s) to be taken by a worker")
    return ", ".join(parts) or "the workers to record the last items"


def format_line(snap: Snapshot) -> str:
    """One self-contained line for logs and pipes."""
    others = _others(snap, ", ", (("substituted", "substituted"), ("canceled", "canceled")))
    return (
        f"batch {snap.batch_id}: {snap.done}/{snap.total} done (ok {snap.succeeded}, "
        f"failed {snap.failed}{others}), {running_text(snap)}, queued {snap.queued}"
        f"{f', held {snap.held}' if snap.held else ''} | {_pace(snap)}"
    )


def bar_text(snap: Snapshot) -> str:
    """The text beside the live bar."""
    others = _others(snap, "  ", (("substituted", "subst"), ("canceled", "canceled")))
    return (
        f"{snap.done}/{snap.total}  ok {snap.succeeded}  failed {snap.failed}{others}  "
        f"running {snap.running}  queued {snap.queued}{f'  held {snap.held}' if snap.held else ''} | {_pace(snap)}"
    )


# --- reporters --------------------------------------------------------------------------------
class Reporter:
    """Receives snapshots while waiting; `close` is called once at the end (also on Ctrl-C)."""

    def update(self, snap: Snapshot) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    def close(self, snap: Snapshot | None) -> None:
        pass


class TerminalReporter(Reporter):
    """A live bar drawn by rich, redrawn in place; `width` None follows the terminal."""

    REFRESH_PER_SECOND = 4

    def __init__(self, stream: TextIO, *, width: int | None = None):
        self.console = Console(file=stream, width=width, highlight=False)
        self._progress = Progress(
            BarColumn(bar_width=30, table_column=Column(min_width=10, no_wrap=True)),
            # The counts are cut (with an ellipsis) on a narrow terminal, never wrapped.
            TextColumn(
                "{task.description}", markup=False, table_column=Column(no_wrap=True, overflow="ellipsis")
            ),
            console=self.console,
            refresh_per_second=self.REFRESH_PER_SECOND,
        )
        self._task: Any = None

    def update(self, snap: Snapshot) -> None:
        total = snap.total or None  # None: rich shows an indeterminate bar
        if self._task is None:
            self._progress.start()
            self._task = self._progress.add_task(bar_text(snap), total=total, completed=snap.done)
        else:
            self._progress.update(self._task, description=bar_text(snap), total=total, completed=snap.done)

    def close(self, snap: Snapshot | None) -> None:
        if snap is not None:
            self.update(snap)
        if self._task is not None:
            self._progress.stop()  # the final state stays on screen, followed by a newline


class LineReporter(Reporter):
    """Plain lines: one every `interval` seconds when something changed, plus one whenever the
    batch ends, so logs stay short for long batches yet always show the final state; and at
    least one every `heartbeat` seconds while nothing changes, saying what the batch waits for
    (a silent log looks like a hang)."""

    def __init__(
        self,
        stream: TextIO,
        interval: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
        heartbeat: float = 30.0,
    ):
        self.stream = stream
        self.interval = interval
        self.heartbeat = max(heartbeat, interval)
        self.clock = clock
        self._last_time: float | None = None
        self._last_line: str | None = None
        self._written_at: float | None = None  # when the last line was written
        self._changed_at: float | None = None  # when the counts last changed
        self._last_counts: Any = None

    def update(self, snap: Snapshot) -> None:
        now = self.clock()
        counts = (tuple(sorted(snap.counts.items())), snap.at_replicate)
        if counts != self._last_counts:
            self._last_counts, self._changed_at = counts, now
        if self._last_time is None or now - self._last_time >= self.interval or snap.finished:
            self._emit(snap)
            self._last_time = now
        if (
            not snap.finished
            and self._written_at is not None
            and self._changed_at is not None
            and now - self._written_at >= self.heartbeat
        ):
            unchanged = format_duration(now - self._changed_at)
            self.stream.write(
                f"{format_line(snap)} | unchanged for {unchanged}, waiting for {waiting_for(snap)}\n"
            )
            self.stream.flush()
            self._written_at = now

    def close(self, snap: Snapshot | None) -> None:
        if snap is not None:
            self._emit(snap)

    def _emit(self, snap: Snapshot) -> None:
        line = format_line(snap)
        if line != self._last_line:  # the final update and close() would repeat it otherwise
            self.stream.write(line + "\n")
            self.stream.flush()
            self._last_line = line
            self._written_at = self.clock()


class CallbackReporter(Reporter):
    def __init__(self, callback: Callable[[Snapshot], None]):
        self.callback = callback

    def update(self, snap: Snapshot) -> None:
        self.callback(snap)


def make_reporter(progress: Any, *, interval: float = 10.0) -> Reporter | None:
    """What `Batch.wait(progress=...)` accepts: None/False (silent), True or "auto" (a bar when
    stderr is a terminal, plain lines otherwise), a stream (same choice for that stream),
    a Reporter, or a callable taking a Snapshot."""
    if progress is None or progress is False:
        return None
    if isinstance(progress, Reporter):
        return progress
    if progress is True or progress == "auto":
        progress = sys.stderr
    if hasattr(progress, "write"):
        if _can_animate(progress):
            return TerminalReporter(progress)
        return LineReporter(progress, interval=interval)
    if callable(progress):
        return CallbackReporter(progress)
    raise TypeError(f"progress must be None, True, a stream, a Reporter or a callable, not {progress!r}")


def _can_animate(stream: TextIO) -> bool:
    """A terminal on which a bar can be redrawn in place: a tty (a pipe or a file gets plain
    lines, whatever FORCE_COLOR says) that rich finds interactive (not TERM=dumb, not
    TTY_INTERACTIVE=0)."""
    isatty = getattr(stream, "isatty", None)
    return bool(isatty is not None and isatty() and Console(file=stream).is_interactive)
