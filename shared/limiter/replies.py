"""The limiter scripts' replies, decoded into named results (each script's header in lua/ says
what it returns; the epoch every reply carries is taken off before, by `LimiterCore._call` in
core.py)."""

from __future__ import annotations

import json
from typing import Any, NamedTuple

from shared.limiter.types import HolderStatus, LimiterStatus
from shared.redis_conn import as_text


class Grant(NamedTuple):
    """A slot granted (acquire.lua, adopt.lua)."""

    fence: int
    granted_at: float  # Unix seconds, Redis clock
    epoch: str
    handoff_seconds: float | None = None  # acquire: from the event that woke this waiter, if any
    previous_holder: str | None = None  # adopt: whose slot was taken over


class Queued(NamedTuple):
    """acquire.lua did not grant a slot: the caller waits in line."""

    rank: int  # 0 = first in line
    free: int  # slots free for the line (0 during the freeze after a state loss)
    recovery_ms: float  # how long the freeze after a state loss still lasts (0: none)


class Dropped(NamedTuple):
    """drop.lua: what was removed."""

    holder: bool
    waiter: bool
    at: float  # Unix seconds, Redis clock


class Renewals(NamedTuple):
    """heartbeat.lua: one outcome per holder sent (1 renewed, 2 re-registered, 0 lost) and per
    waiter (1 refreshed, 0 unknown)."""

    holders: list[int]
    waiters: list[int]
    epoch: str
    earliest_expiry_ms: float  # until the earliest lease in the limiter runs out; -1: none


class Token(NamedTuple):
    """token.lua: a grant (maybe for a moment ahead: a reservation) or a refusal."""

    granted: bool
    wait: float  # seconds until the grant; refused: until the pause ends or a token is free
    at_ms: str  # the grant time as the log holds it (ms, Redis clock); '' when refused
    reason: str  # refused: 'paused', 'busy' or 'budget'; '' when granted
    refusal: tuple[str, int] | None = None  # 'budget': (scope "batch"|"daily", limit micro-USD)

    @property
    def at(self) -> float:
        return float(self.at_ms) / 1000


class Confirmation(NamedTuple):
    """confirm.lua, after sleeping towards a reservation."""

    state: str  # 'go', 'moved' (sleep again until `at`), 'gone' (ask for a new token)
    wait: float = 0.0  # seconds
    at: float = 0.0  # the new grant time when moved (Unix seconds, Redis clock)


def handed_off(payload: dict[str, str]) -> Grant:
    """The grant a release handed to a waiter in its wake token (common.lua wake()): granted in
    the release itself, so its hand-off took no time on the Redis clock."""
    return Grant(int(payload["f"]), float(payload["at"]) / 1000, as_text(payload["e"]), handoff_seconds=0.0)


def acquire(raw: list[Any]) -> Grant | Queued:
    if int(raw[0]) == 1:
        fence, granted_at, epoch, _expires, handoff_ms = raw[1:6]
        handoff = float(handoff_ms)
        return Grant(
            int(fence),
            float(granted_at) / 1000,
            as_text(epoch),
            handoff_seconds=None if handoff < 0 else handoff / 1000,
        )
    rank, free, recovery_ms = raw[1:4]
    return Queued(int(rank), int(free), float(recovery_ms))


def adopt(raw: list[Any]) -> Grant | None:
    if int(raw[0]) != 1:
        return None
    fence, granted_at, epoch, _expires, previous = raw[1:6]
    return Grant(int(fence), float(granted_at) / 1000, as_text(epoch), previous_holder=as_text(previous))


def drop(raw: list[Any]) -> Dropped:
    held, waited, now_ms = raw
    return Dropped(int(held) == 1, int(waited) == 1, float(now_ms) / 1000)


def heartbeat(raw: list[Any]) -> Renewals:
    holders, waiters, epoch, earliest = raw
    return Renewals(
        [int(h) for h in holders or []], [int(w) for w in waiters or []], as_text(epoch), float(earliest)
    )


def token(raw: list[Any]) -> Token:
    if int(raw[0]) == 1:
        return Token(True, float(raw[1]) / 1000, as_text(raw[2]), "")
    if as_text(raw[2]) == "budget":  # {0, 0, 'budget', scope, limit micro-USD}
        return Token(False, 0.0, "", "budget", (as_text(raw[3]), int(raw[4])))
    return Token(False, float(raw[1]) / 1000, "", as_text(raw[2]))


def confirmation(raw: list[Any]) -> Confirmation:
    state = int(raw[0])
    if state == 1:
        return Confirmation("go")
    if state == 2:
        return Confirmation("moved", float(raw[1]) / 1000, float(raw[2]) / 1000)
    return Confirmation("gone", float(raw[1]) / 1000)


def pause_until(raw: list[Any]) -> float:
    """pause.lua: the pause's end (Unix seconds, Redis clock)."""
    return float(raw[0]) / 1000


def status(raw_json: str) -> LimiterStatus:
    raw = json.loads(raw_json)
    now = float(raw["now_ms"]) / 1000
    limit = int(raw["concurrency_limit"])
    in_use = int(raw["in_use"])
    holders = raw["holders"] if isinstance(raw["holders"], list) else []  # cjson: {} for none
    pause_left = float(raw.get("pause_ms_left") or 0) / 1000
    return LimiterStatus(
        concurrency_limit=limit,
        in_use=in_use,
        free=max(limit - in_use, 0),
        waiters=int(raw["waiters"]),
        utilisation=round(in_use / limit, 4) if limit else 0.0,
        creations_in_window=int(raw["creations_in_window"]),
        creations_reserved=int(raw["creations_reserved"]),
        reads_in_window=int(raw["reads_in_window"]),
        reads_reserved=int(raw["reads_reserved"]),
        create_limit=int(raw["create_limit"]),
        read_limit=int(raw["read_limit"]),
        rate_window=float(raw["rate_window_ms"]) / 1000,
        paused_until=now + pause_left if pause_left > 0 else None,
        pause_seconds_left=round(pause_left, 3),
        pause_reason=raw.get("pause_reason") if pause_left > 0 else None,
        holders=sorted((_holder_status(h) for h in holders), key=lambda h: -(h.held_for or 0)),
        redis_time=now,
        epoch=str(raw.get("epoch") or ""),
        fence=int(raw.get("fence") or 0),
        recovery_seconds_left=round(float(raw.get("recovery_ms_left") or 0) / 1000, 3),
    )


def _holder_status(raw: dict[str, Any]) -> HolderStatus:
    def num(name: str) -> float | None:
        value = raw.get(name)
        return None if value is None else float(value)

    held = num("held_for_ms")
    fence = raw.get("fence")
    return HolderStatus(
        holder_id=raw.get("holder_id", ""),
        host=raw.get("host"),
        pid=raw.get("pid"),
        task_id=raw.get("task_id"),
        batch_id=raw.get("batch_id"),
        index=raw.get("index"),
        model=raw.get("model"),
        prediction_id=raw.get("prediction_id"),
        fence=int(fence) if fence is not None else None,
        held_for=None if held is None else round(held / 1000, 3),
        expires_in=round((num("expires_in_ms") or 0) / 1000, 3),
        orphaned=raw.get("orphaned_at") is not None,
        attempt=raw.get("attempt"),
        abandoned=raw.get("abandoned_at") is not None,
    )
