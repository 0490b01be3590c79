"""Which wait mode the fleet's workers run in, as they publish it (shown by `producer limits`).

Each worker process writes one field of the hash `<prefix>:workers` ("host:pid" -> JSON: host,
pid, mode, sync_wait_max, seen) every PUBLISH_EVERY seconds (workers.presence), `seen` on Redis's
clock. A reader counts the entries seen within STALE_AFTER and deletes those much older (a worker
that died or was stopped), so the hash never grows beyond the live fleet plus a few.
"""

from __future__ import annotations

import json
import os
import socket
from dataclasses import asdict, dataclass

import redis

from shared.keys import Keys
from shared.lua_scripts import LuaScript, source
from shared.settings import Settings

PUBLISH_EVERY = 10.0
STALE_AFTER = 3 * PUBLISH_EVERY  # a worker not seen for this long is not counted
FORGET_AFTER = 60 * PUBLISH_EVERY  # nor kept


@dataclass(frozen=True)
class WorkerMode:
    host: str
    pid: int
    mode: str  # sync | webhook | poll (Settings.wait_mode_in_use)
    sync_wait_max: int
    seen: float  # Unix time, Redis clock

    @property
    def name(self) -> str:
        return f"{self.host}:{self.pid}"


# `seen` is stamped by the script on Redis's clock: one request per publish, not TIME then HSET
# (issue 16.4: an idle fleet's presence was 2 requests per process every PUBLISH_EVERY).
_PUBLISH = LuaScript(None, source("shared.lua", "presence_publish"))


def publish(client: redis.Redis, keys: Keys, settings: Settings) -> None:
    """This process's mode, seen now."""
    mode = WorkerMode(
        socket.gethostname(), os.getpid(), settings.wait_mode_in_use, settings.sync_wait_max, 0.0
    )
    fields = {name: value for name, value in asdict(mode).items() if name != "seen"}
    _PUBLISH(keys=[keys.workers], args=[mode.name, json.dumps(fields)], client=client)


def live_modes(client: redis.Redis, keys: Keys) -> list[WorkerMode]:
    """The workers seen within STALE_AFTER, by name; forgets those gone for FORGET_AFTER."""
    pipe = client.pipeline(transaction=False)
    pipe.hgetall(keys.workers)
    pipe.time()
    raw, (sec, usec) = pipe.execute()
    now = sec + usec / 1e6
    live, gone = [], []
    for name, value in raw.items():
        try:
            entry = WorkerMode(**json.loads(value))
        except (TypeError, ValueError):
            gone.append(name)
            continue
        if now - entry.seen <= STALE_AFTER:
            live.append(entry)
        elif now - entry.seen > FORGET_AFTER:
            gone.append(name)
    if gone:
        client.hdel(keys.workers, *gone)
    return sorted(live, key=lambda e: e.name)


def describe(modes: list[WorkerMode]) -> str:
    """One line for `producer limits`: each mode in use and on how many worker processes."""
    if not modes:
        return f"no worker seen in the last {STALE_AFTER:g} s"
    counts: dict[str, int] = {}
    for entry in modes:
        counts[entry.mode] = counts.get(entry.mode, 0) + 1
    parts = []
    for mode, n in sorted(counts.items()):
        detail = f"{n} worker process{'es' if n > 1 else ''}"
        if mode == "sync":
            detail += f", Prefer: wait up to {max(e.sync_wait_max for e in modes if e.mode == 'sync')} s"
        parts.append(f"{mode} ({detail})")
    return ", ".join(parts) + ("; MIXED: workers differ" if len(counts) > 1 else "")
