"""What an idle fleet costs Redis: requests, commands and CPU per minute with nothing submitted.

    .venv/bin/python -m bench.idle_cost [--seconds 60] [--mode webhook] [--monitor 20]

The fleet of `python -m bench.run throughput --no-isolation` (3 worker processes, 10 slots, and the
webhook receiver in webhook mode) on a private redis-server and stand-in (ports 6392 and 8792, not
the bench's), started and left alone. After a settling pause, one window without MONITOR gives the
figures (INFO stats total_reads_processed, commandstats, used_cpu_sys + used_cpu_user), each scaled
to a minute; `--monitor S` then records S seconds of MONITOR and prints the commands by name and
first key, so the sources can be named (MONITOR costs Redis CPU itself, hence its own window).
"""

from __future__ import annotations

import argparse
import collections
import json
import re
import shlex
import subprocess
import sys
import tempfile
import time
import uuid
from typing import Any

from bench.hosts import Hosts
from bench.measure import command_delta, redis_commands, redis_cpu, redis_round_trips
from bench.throughput import Scenario, fleet_settings, scenario_fleet

MONITOR_LINE = re.compile(r"^[\d.]+ \[\d+ (?P<client>[^\]]+)\] (?P<args>.*)$")


def measure_window(client: Any, seconds: float) -> dict[str, Any]:
    """Requests, commands and CPU Redis spent over `seconds`, scaled to one minute."""
    cmds, cpu, trips = redis_commands(client), redis_cpu(client), redis_round_trips(client)
    time.sleep(seconds)
    cmds_after, cpu_after, trips_after = redis_commands(client), redis_cpu(client), redis_round_trips(client)
    per_min = 60.0 / seconds
    delta = command_delta(cmds, cmds_after)
    # minus our own three INFO calls before and after (each one request, one command)
    return {
        "requests_per_min": round((trips_after - trips - 3) * per_min, 1),
        "commands_per_min": round((sum(delta.values()) - 3) * per_min, 1),
        "cpu_s_per_min": round((cpu_after - cpu) * per_min, 4),
        "top_commands_per_min": {k: round(v * per_min, 1) for k, v in list(delta.items())[:12]},
    }


def monitor_sources(port: int, host: str, seconds: float) -> list[tuple[str, int]]:
    """MONITOR for `seconds`: (command and first argument, with digits and ids masked) -> count."""
    with tempfile.TemporaryFile("w+") as log:  # a file, not a pipe nobody reads while it fills
        proc = subprocess.Popen(
            ["stdbuf", "-oL", "redis-cli", "-h", host, "-p", str(port), "monitor"], stdout=log
        )
        time.sleep(seconds)
        proc.terminate()
        proc.wait(timeout=10)
        log.seek(0)
        out = log.read()
    counts: collections.Counter[str] = collections.Counter()
    for line in out.splitlines():
        match = MONITOR_LINE.match(line)
        if not match:
            continue
        try:
            args = shlex.split(match["args"])
        except ValueError:
            continue
        lua = "lua " if match["client"] == "lua" else ""
        first = re.sub(r"[0-9a-f]{8,}|\d+", "#", args[1]) if len(args) > 1 else ""
        counts[f"{lua}{args[0].upper()} {first}"] += 1
    return counts.most_common(40)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.idle_cost", description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=60.0, help="the measuring window")
    p.add_argument("--settle", type=float, default=10.0, help="pause after the workers answer")
    p.add_argument("--mode", default="webhook", choices=("webhook", "sync", "poll"))
    p.add_argument("--monitor", type=float, default=0.0, help="then S seconds of MONITOR, by source")
    p.add_argument("--redis-port", type=int, default=6392)
    p.add_argument("--sim-port", type=int, default=8792)
    args = p.parse_args(argv)
    sc = Scenario(n=100, slots=10, create_per_min=600, mode=args.mode)
    with Hosts(3, workdir=None, isolate=False, quiet=True) as hosts:
        redis = hosts.start_redis(args.redis_port)
        sim = hosts.start_sim(args.sim_port)
        settings = fleet_settings(sc, redis, hosts.workdir / f"out-{uuid.uuid4().hex[:6]}")
        fleet = scenario_fleet(sc, hosts, settings, sim.url)
        client = redis.client()
        try:
            fleet.start()
            fleet.wait_ready()
            time.sleep(args.settle)
            figures = {"workers": len(fleet.workers), "mode": args.mode, "window_s": args.seconds}
            figures.update(measure_window(client, args.seconds))
            print(json.dumps(figures, indent=1))
            if args.monitor:
                for source, count in monitor_sources(redis.port, redis.host, args.monitor):
                    print(f"{count * 60.0 / args.monitor:8.1f}/min  {source}")
        finally:
            fleet.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
