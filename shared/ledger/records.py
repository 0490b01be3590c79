"""The ledger's record types: a batch, an item, an attempt, a transition's and a cancel's answer,
and the statuses. How they are read from their stored hashes: stored.py."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any

from shared.redis_conn import as_text
from shared.request import ImageRequest

# `held`: the item's next attempt does not fit a spending limit (shared.budget); it waits, parked,
# without a message or a slot, until the limit is raised or the UTC day turns.
STATUSES = ("pending", "running", "held", "succeeded", "failed", "canceled", "substituted")
TERMINAL = frozenset({"succeeded", "failed", "canceled", "substituted"})


@dataclass(frozen=True)
class CancelResult:
    canceled: int  # items canceled now (they were pending)
    task_ids: list[str]  # task messages sent for those items (to revoke; they may still be queued)
    finished: bool  # the cancel finished the batch (nothing was running)
    stopping: int = 0  # items running (waiting for a slot, at Replicate, saving): their workers stop them
    already_finished: bool = False  # the batch had ended: nothing canceled, the batch not flagged


@dataclass
class AttemptRecord:
    attempt: int
    model: str | None = None
    prediction_id: str | None = None
    status: str | None = None  # running, succeeded, failed, canceled, retry (transient, retried)
    error: str | None = None
    seconds: float | None = None
    started_at: float | None = None  # Unix time (Redis clock)
    kind: str | None = None  # error class: transient, permanent, local, canceled
    # The prediction's input as this attempt sent it (reference files as their uploaded URLs),
    # kept as JSON text so that Redis's cjson cannot change it (an empty list, a float's digits).
    input: str | None = None

    @classmethod
    def from_json(cls, raw: str) -> AttemptRecord:
        data = json.loads(raw)
        known = {k: data.get(k) for k in cls.__dataclass_fields__ if k in data}
        known["attempt"] = int(data.get("attempt") or 0)
        return cls(**known)

    def to_result(self) -> dict[str, Any]:
        return {
            "attempt": self.attempt,
            "model": self.model,
            "prediction_id": self.prediction_id,
            "status": self.status,
            "error": self.error,
            "started_at": iso_time(self.started_at),
            "seconds": self.seconds,
            "input": _json_or_none(self.input),
        }


@dataclass
class ItemRecord:
    index: int
    request: ImageRequest
    status: str
    attempt: int  # the current (latest) attempt number
    current_model: str  # the model the current attempt uses
    model: str | None = None  # the model that produced the output
    outputs: list[str] = field(default_factory=list)
    # per output: {"key" (relative to the output root), "format", "content_type", "bytes", "sha256"}
    files: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None
    attempts: list[AttemptRecord] = field(default_factory=list)
    base_attempt: int = 1  # first attempt since the last reset (transient retries count from here)
    finished_at: float | None = None
    held_reason: str | None = None  # status `held`: the spending limit its next attempt waits for

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL

    def to_result(self) -> dict[str, Any]:
        """The manifest / `producer results --json` record."""
        return {
            "index": self.index,
            "id": self.request.id,
            "prompt": self.request.prompt,
            "requested_model": self.request.requested_model,
            "model": self.model,
            "price": self.request.price or None,  # of the first model, at submit; "price unknown" included
            "status": self.status,
            "outputs": list(self.outputs),
            "files": [dict(f) for f in self.files],
            "attempts": [a.to_result() for a in self.attempts],
            "error": self.error,
            "finished_at": iso_time(self.finished_at),
            **({"held_reason": self.held_reason} if self.status == "held" else {}),
        }


@dataclass
class BatchInfo:
    id: str
    created_at: float
    total: int
    output_root: str
    options: dict[str, Any]
    canceled: bool
    counts: dict[str, int]
    finished: bool
    started_at: float | None = None
    finished_at: float | None = None

    @property
    def done(self) -> int:
        return sum(self.counts.get(s, 0) for s in TERMINAL)

    @property
    def priority(self) -> str:
        """high, normal or low (recorded in the options at submit; normal for older batches)."""
        return str(self.options.get("priority") or "normal")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Transition:
    changed: bool
    previous: str  # status before (or "missing")
    batch_finished: bool  # this change finished the batch (exactly one caller sees True)
    attempt: int  # the item's current attempt after the call

    @classmethod
    def from_reply(cls, reply: Sequence[Any]) -> Transition:
        """ledger_transition.lua's {changed, status before, batch finished, current attempt}."""
        changed, previous, batch_finished, attempt = reply
        return cls(
            changed=int(changed) == 1,
            previous=as_text(previous),
            batch_finished=int(batch_finished) == 1,
            attempt=int(attempt),
        )


def iso_time(unix: float | None) -> str | None:
    """A Unix time as ISO 8601 in UTC with milliseconds ('2026-12-04T22:25:43.441Z'), as the
    manifest writes every time."""
    if unix is None:
        return None
    moment = datetime.fromtimestamp(float(unix), tz=timezone.utc)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _json_or_none(raw: str | None) -> Any:
    try:
        return json.loads(raw) if raw else None
    except ValueError:
        return None
