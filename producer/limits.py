"""The account-wide limits as `producer limits` shows them: the value of each limit in force, where
it comes from, and the slots' holders, in a table that fits 80 columns.

The limits live in Redis (shared/limiter): the first process that uses the limiter writes its own
settings there (REPLICATE_GLOBAL_MAX_CONCURRENT, ...), and `producer limits set` overwrites them
for every host, for as long as Redis keeps them. So that a changed limit is never a silent
surprise, `set` also records who set each limit and when (`limits_set`, beside the limits), and
`producer limits reset` puts a limit back to this environment's settings and forgets that record.
"""

from __future__ import annotations

import json
import socket
import textwrap
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import redis

from shared.keys import Keys
from shared.settings import Settings

# Each limit, the setting that gives it, and its environment variable.
LIMITS = (
    ("concurrency_limit", "REPLICATE_GLOBAL_MAX_CONCURRENT"),
    ("create_limit", "REPLICATE_CREATE_LIMIT"),
    ("read_limit", "REPLICATE_READ_LIMIT"),
    ("rate_window", "REPLICATE_RATE_WINDOW"),
)
LIMIT_NAMES = tuple(name for name, _ in LIMITS)


@dataclass(frozen=True)
class LimitSource:
    """Where the value in force of one limit comes from."""

    name: str  # concurrency_limit, create_limit, read_limit, rate_window
    value: float  # in force (the limits hash)
    env_name: str  # the environment variable of this limit
    env_value: float  # what this process's settings say
    set_at: float | None = None  # Unix time of the `producer limits set` that gave the value
    set_by: str | None = None  # host of that `producer limits set`

    @property
    def from_set(self) -> bool:
        return self.set_at is not None

    def describe(self) -> str:
        """'`limits set` 2026-12-04 22:30 UTC on host-a' or 'settings: REPLICATE_...'."""
        if self.from_set:
            when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(self.set_at))
            return f"`limits set` {when}" + (f" on {self.set_by}" if self.set_by else "")
        if self.value == self.env_value:
            return f"settings: {self.env_name}"
        return "another process's settings"

    def to_dict(self) -> dict[str, Any]:
        return {
            "value": self.value,
            "source": "limits set" if self.from_set else "settings",
            "set_at": self.set_at,
            "set_by": self.set_by,
            "env_name": self.env_name,
            "env_value": self.env_value,
        }


def _key(keys: Keys) -> str:
    return keys.limiter_key("limits_set")


def record_set(client: redis.Redis, keys: Keys, values: Mapping[str, float]) -> None:
    """Remember that `producer limits set` gave these limits, now, from this host."""
    if not values:
        return
    stamp = {"at": time.time(), "by": socket.gethostname()}
    client.hset(
        _key(keys), mapping={name: json.dumps({**stamp, "value": value}) for name, value in values.items()}
    )


def forget_set(client: redis.Redis, keys: Keys, names: Iterable[str]) -> None:
    names = list(names)
    if names:
        client.hdel(_key(keys), *names)


def sources(client: redis.Redis, keys: Keys, status: Any, settings: Settings) -> list[LimitSource]:
    """Each limit in force (from a limiter status) with where it comes from. A `limits set`
    record whose value is no longer the one in force (Redis forgot the limits and a process
    seeded them again) does not count."""
    recorded = {name: _decode(raw) for name, raw in (client.hgetall(_key(keys)) or {}).items()}
    out = []
    for name, env_name in LIMITS:
        value = float(getattr(status, name))
        stamp = recorded.get(name) or {}
        if stamp.get("value") is None or float(stamp["value"]) != value:
            stamp = {}
        out.append(
            LimitSource(
                name,
                value,
                env_name,
                float(getattr(settings, name)),
                set_at=stamp.get("at"),
                set_by=stamp.get("by"),
            )
        )
    return out


def _decode(raw: Any) -> dict[str, Any]:
    try:
        data = json.loads(raw)
    except (TypeError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


# --- text ----------------------------------------------------------------------------------------
def _number(value: float) -> str:
    return f"{value:g}"


def limit_lines(limit_sources: list[LimitSource]) -> list[str]:
    """The limits table: value in force, where it comes from, what this environment says."""
    lines = [f"{'LIMIT':<17} {'IN FORCE':>8}  {'FROM':<42} {'HERE':>8}"]
    for source in limit_sources:
        unit = " s" if source.name == "rate_window" else ""
        lines.append(
            f"{source.name:<17} {_number(source.value) + unit:>8}  {source.describe()[:42]:<42} "
            f"{_number(source.env_value) + unit:>8}"
        )
    overridden = [s for s in limit_sources if s.from_set and s.value != s.env_value]
    if overridden:
        names = ", ".join(f"{s.env_name}={_number(s.env_value)}" for s in overridden)
        lines += textwrap.wrap(
            f"`producer limits set` overrides {names} of this environment for every "
            "host until `producer limits reset`.",
            80,
        )
    others = [s for s in limit_sources if not s.from_set and s.value != s.env_value]
    if others:
        names = ", ".join(f"{s.env_name}={_number(s.env_value)}" for s in others)
        lines += textwrap.wrap(
            f"This environment says {names}; the limits in force came from the settings "
            "of the first process that used the limiter. `producer limits reset` applies "
            "this environment's.",
            80,
        )
    return lines


def holder_lines(holders: list[Any], width: int = 80) -> list[str]:
    """The slots' holders, one line each, aligned and cut to `width` columns; the task id and
    the whole model name are in `producer limits --json`."""
    if not holders:
        return []
    lines = [f"{'HOST':<12} {'PID':>7}  {'PREDICTION':<26} {'HELD':>6}  ITEM"]
    for h in holders:
        held = "?" if h.held_for is None else f"{h.held_for:.0f}s"
        prediction = h.prediction_id or (f"attempt {h.attempt}" if h.attempt else "(creating)")
        item = f"{h.batch_id} #{h.index}" if h.batch_id else "-"
        if h.model:
            item += f" {str(h.model).rsplit('/', 1)[-1]}"
        if h.orphaned:
            item = "ORPHANED* " + item
        line = (
            f"{str(h.host or '?')[:12]:<12} {str(h.pid or '?'):>7}  {prediction[:26]:<26} {held:>6}  {item}"
        )
        lines.append(line if len(line) <= width else line[: width - 1] + "…")
    if any(h.orphaned for h in holders):
        lines.append("* its worker died while the prediction runs: counted until it is resumed or ends")
    return lines
