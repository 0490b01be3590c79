"""What the limiter's scripts cost Redis: server-side microseconds per call, by operation.

    .venv/bin/python -m bench.limiter_lua_cost [--rounds 200] [--port 6391]

Starts a private redis-server (its own port, the AOF on as bench.run's), so nothing else's commands
mix into the figures, and builds the state a busy fleet makes through the limiter's own script calls
(LimiterCore._call, with the arguments Slots/Rates/ProcessAgent/Lease send): 10 slots held, 20
waiters in the fair line across 3 batches, a rate log with a window of grants. Then, per round,
each hot operation runs in its own phase, in a cycle that keeps that state steady:
  drop_handoff    a holder ends (drop_settle.lua, as Lease.release): its slot goes straight to
                  the head of the line (wake());
  acquire_queue   a newcomer joins the full line (acquire.lua, not admitted);
  token           a creation token marking its holder (token.lua);
  set_prediction  set_prediction.lua on a holder;
  heartbeat       one process renewing 4 leases and refreshing 2 waiter registrations;
  acquire_grant   a newcomer finds a free slot and an empty line (acquire.lua's short path);
  drop_waiter     a waiter withdraws (drop.lua).
A phase's figure is Redis's own time per script call (INFO commandstats, cmdstat_evalsha
usec/calls after CONFIG RESETSTAT): CPU inside Redis, not the round trip. Reported: per operation
the median over the rounds. The machine is shared: compare runs made back to back.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from typing import Any

import redis

from shared.keys import Keys
from shared.limiter import HolderInfo, Limiter
from shared.limiter.types import Limits
from shared.redis_conn import as_text

SLOTS = 10
WAITERS = 20
BATCHES = ("batch-a", "batch-b", "batch-c")
LOG_GRANTS = 600  # creation grants already in the window


def start_server(port: int) -> subprocess.Popen[bytes]:
    """A private Redis: the commandstats and the slow log are this benchmark's alone."""
    workdir = tempfile.mkdtemp(prefix="limiter-lua-cost-")
    # The AOF on, as the fleet benchmark's Redis (bench/hosts.py): a script's writes are appended
    # to it, so they cost what they cost there.
    args = ["redis-server", "--port", str(port), "--save", "", "--appendonly", "yes", "--dir", workdir]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL)
    client = redis.Redis(port=port)
    for _ in range(100):
        try:
            client.ping()
            return proc
        except redis.ConnectionError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError("redis-server did not start")


class Fleet:
    """A limiter with a busy fleet's state, driven through its script calls."""

    def __init__(self, client: redis.Redis, keys: Keys, concurrency: int = SLOTS):
        limits = Limits(
            concurrency_limit=concurrency, create_limit=100000, read_limit=100000, rate_window=60.0
        )
        self.lim = Limiter(client, keys, limits, lease_seconds=30.0, orphan_seconds=660.0)
        self.n = 0
        self.holders: list[str] = []  # oldest first
        self.fences: dict[str, str] = {}
        self.waiters: list[str] = []  # in arrival order
        self.records: dict[str, dict[str, Any]] = {}  # what the heartbeat sends for a lease

    def new_id(self, process: int) -> str:
        self.n += 1
        return f"proc{process}/{self.n}"

    def record(self, i: int) -> str:
        info = HolderInfo(
            host="host-1", pid=4000 + i % 8, task_id=f"task-{i}", batch_id=BATCHES[i % 3], index=i
        )
        return json.dumps(info.to_record())

    def acquire(self) -> tuple[str, list[Any]]:
        i = self.n
        wid = self.new_id(i % 8)
        reply = self.lim._call("acquire", wid, self.lim._lease_ms, self.record(i))
        if reply[0] == 1:
            self.holders.append(wid)
            self.fences[wid] = str(reply[1])
        else:
            self.waiters.append(wid)
        return wid, reply

    def drop_holder(self) -> None:
        """The oldest holder ends (drop_settle, as Lease.release): the head of the line gets it."""
        hid = self.holders.pop(0)
        self.lim._call("drop_settle", hid, f"attempt-{hid}", "")
        held = {as_text(m) for m in self.lim.redis.zrange(self.lim.keys.limiter_key("holders"), 0, -1)}
        for woken in held - set(self.holders):  # the fair line's head (not the oldest waiter)
            self.waiters.remove(woken)
            self.holders.append(woken)
            self.fences[woken] = self.info(woken)["fence"]

    def info(self, holder: str) -> dict[str, Any]:
        raw = self.lim.redis.hget(self.lim.keys.limiter_key("info"), holder)
        return json.loads(raw or "{}")

    def token(self) -> None:
        holder = self.holders[self.n % len(self.holders)]
        self.n += 1
        args = [
            "create",
            f"g{self.n}",
            self.lim._margin_ms,
            -1,
            holder,
            f"attempt-{holder}",
            "",
            self.fences[holder],
        ]
        reply = self.lim._call("token", *args)
        assert reply[0] == 1, reply

    def set_prediction(self) -> None:
        holder = self.holders[self.n % len(self.holders)]
        self.n += 1
        assert self.lim._call("set_prediction", holder, f"pred-{self.n}") == 1

    def heartbeat(self) -> None:
        """One process's tick: 4 of the leases it holds, 2 of its waiters."""
        due = self.holders[:4]
        payload = {
            "h": [[h, self.lim._known_epoch, json.dumps(self.info_for_heartbeat(h))] for h in due],
            "w": self.waiters[-2:],
        }
        renewed, refreshed = self.lim._call("heartbeat", self.lim._lease_ms, json.dumps(payload))[:2]
        assert list(renewed) == [1] * len(due) and list(refreshed) == [1] * 2, (renewed, refreshed)

    def info_for_heartbeat(self, holder: str) -> dict[str, Any]:
        return self.records.setdefault(holder, self.info(holder))

    def drop_waiter(self) -> None:
        wid = self.waiters.pop()
        self.lim._call("drop", wid)

    def load(self) -> None:
        for script in self.lim._scripts.values():
            script.load()  # no NOSCRIPT reply among the measured calls

    def setup(self) -> None:
        self.load()
        for _ in range(SLOTS + WAITERS):
            self.acquire()
        assert len(self.holders) == SLOTS and len(self.waiters) == WAITERS
        for _ in range(LOG_GRANTS):
            self.token()
        for h in self.holders:
            self.lim._call("set_prediction", h, f"pred-{h}")


def phase(client: redis.Redis, step: Callable[[], object], calls: int) -> float:
    """Run `step` (one script call each) `calls` times: Redis's us per EVALSHA meanwhile."""
    client.config_resetstat()
    for _ in range(calls):
        step()
    stat = client.info("commandstats")["cmdstat_evalsha"]
    assert stat["calls"] == calls, stat
    return float(stat["usec"]) / calls


def run(rounds: int, port: int) -> dict[str, float]:
    """`rounds` rounds of every operation; per operation the median of its rounds' means."""
    proc = start_server(port)
    try:
        client = redis.Redis(port=port)
        fleet = Fleet(client, Keys("cost"))
        fleet.setup()
        quiet = Fleet(client, Keys("quiet"), concurrency=100000)
        quiet.load()
        results: dict[str, list[float]] = {}
        for _ in range(rounds):
            # Half the line is handed a slot, then as many newcomers join it again.
            results.setdefault("drop_handoff", []).append(phase(client, fleet.drop_holder, WAITERS // 2))
            results.setdefault("acquire_queue", []).append(phase(client, fleet.acquire, WAITERS // 2))
            for name, step in (
                ("token", fleet.token),
                ("set_prediction", fleet.set_prediction),
                ("heartbeat", fleet.heartbeat),
                ("acquire_grant", quiet.acquire),
            ):
                results.setdefault(name, []).append(phase(client, step, 20))
            fleet.records.clear()
            for _ in range(4):
                fleet.acquire()
            results.setdefault("drop_waiter", []).append(phase(client, fleet.drop_waiter, 4))
        return {k: statistics.median(v) for k, v in results.items()}
    finally:
        proc.terminate()
        proc.wait()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--port", type=int, default=6391)
    args = parser.parse_args()
    results = run(args.rounds, args.port)
    print(f"{'operation':<15} {'us per call':>11}")
    for name, us in results.items():
        print(f"{name:<15} {us:>11.1f}")


if __name__ == "__main__":
    main()
