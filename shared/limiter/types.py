"""Plain data the limiter hands in and out: who holds a slot, and a status snapshot."""

from __future__ import annotations

import os
import socket
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class HolderInfo:
    """Who is holding (or waiting for) a slot; shown by `producer limits`."""

    host: str = field(default_factory=socket.gethostname)
    pid: int = field(default_factory=os.getpid)
    task_id: str | None = None
    batch_id: str | None = None
    index: int | None = None
    model: str | None = None
    prediction_id: str | None = None
    # Its place in the line for a slot: priority first (high, normal, low; None: normal), then in
    # turn among the batches of that priority (batch_id), then by arrival (shared/limiter/README.md).
    priority: str | None = None

    def to_record(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Limits:
    """The account's limits, for every host: slots, and creations and reads per rate window."""

    concurrency_limit: int  # predictions in flight account-wide
    create_limit: int  # creations per rate window
    read_limit: int  # other API calls per rate window
    rate_window: float  # seconds

    @property
    def reads_per_second(self) -> float:
        return self.read_limit / self.rate_window


@dataclass
class HolderStatus:
    holder_id: str
    host: str | None
    pid: int | None
    task_id: str | None
    batch_id: str | None
    index: int | None
    model: str | None
    prediction_id: str | None
    fence: int | None
    held_for: float | None  # seconds, Redis time
    expires_in: float  # seconds until the lease runs out unless renewed
    # The holder died or was cut off while its prediction ran (or while it was being created),
    # or abandoned its lease after an ambiguous creation: the slot stays counted until a worker
    # resumes the prediction (adopts the slot) or it is known to be over (settled).
    orphaned: bool = False
    # The attempt marker of the creation this holder was granted a token for (shown for an
    # orphan whose prediction id is unknown: the POST may have created one).
    attempt: str | None = None
    abandoned: bool = False  # it gave its lease up on purpose (Lease.abandon)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class LimiterStatus:
    """One consistent snapshot (one read-only script, one round trip)."""

    concurrency_limit: int
    in_use: int
    free: int
    waiters: int
    utilisation: float  # in_use / concurrency_limit (can exceed 1 right after a shrink)
    creations_in_window: int
    creations_reserved: int  # tokens granted for a moment still ahead (callers sleeping to it)
    reads_in_window: int
    reads_reserved: int
    create_limit: int
    read_limit: int
    rate_window: float  # seconds
    paused_until: float | None  # Unix time on the Redis clock, None when not paused
    pause_seconds_left: float
    pause_reason: str | None
    holders: list[HolderStatus]
    redis_time: float  # Unix time on the Redis clock when the snapshot was taken
    epoch: str  # changes when Redis lost the limiter state
    fence: int  # last fencing token issued
    # After Redis lost the limiter state while the fleet ran: seconds until new slots are granted
    # again (the holders still running re-register first). 0 normally.
    recovery_seconds_left: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["holders"] = [h.to_dict() for h in self.holders]
        return out
