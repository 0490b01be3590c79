"""How many in-flight predictions one worker process holds, and at what CPU.

One worker process (threads pool, -c C) on host 1, C slots, the creation limit out of the way,
Replicate's read budget (3000 per minute), webhooks on (the recommended set-up: no polling), a
long model latency so the process holds all C predictions at once for a while. Reported per C:
the stand-in's peak in flight, the worker process's CPU (cores, averaged over the run: CPU
seconds / makespan) and peak RSS. The answer is the largest C whose peak in flight reached C
while the process stayed under one core.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from bench.fleet import Fleet, submit, wait_finished
from bench.hosts import Hosts
from bench.processes import RedisServer
from bench.throughput import MODEL, prompts_for
from shared.settings import Settings


def hold(
    c: int, hosts: Hosts, redis: RedisServer, sim: Any, *, latency: float = 20.0, rounds: int = 2
) -> dict[str, Any]:
    n = c * rounds
    sim.reset(
        create_limit=100000,
        read_limit=3000,
        window=60.0,
        latency_scale=1.0,
        latency_overrides={MODEL: latency},
        image_scale=0.002,
        max_in_flight=None,
        record_events=False,
    )
    prefix = f"cap-{uuid.uuid4().hex[:8]}"
    settings = Settings.load(
        {
            "redis_url": redis.url,
            "key_prefix": prefix,
            "queue": f"{prefix}-q",
            "output_dir": hosts.workdir / f"cap-{prefix}",
            "replicate_api_token": "r8_bench_not_a_real_token",
            "concurrency_limit": c,
            "create_limit": 100000,
            "read_limit": 3000,
            "rate_window": 60.0,
            "log_level": "WARNING",
        },
        environ={},
        dotenv_path=None,
    )
    fleet = Fleet(hosts, settings, sim.url, concurrency=c, host_indexes=[1], webhooks=True)
    try:
        fleet.start()
        fleet.wait_ready()
        fleet.sample()
        cpu0 = fleet.workers[0].last_stats.cpu_seconds if fleet.workers[0].last_stats else 0.0
        started = time.time()
        batch_id = submit(settings, prompts_for(n, prefix), model=MODEL)
        finished, finished_at, _ = wait_finished(settings, batch_id, timeout=latency * rounds * 6 + 60)
        cost = fleet.cost()
        worker_cpu = fleet.workers[0].last_stats.cpu_seconds - cpu0
        ledger = sim.ledger(detail=False)
        wall = finished_at - started
        return {
            "threads": c,
            "images": n,
            "finished": finished,
            "makespan_s": round(wall, 1),
            "peak_in_flight": ledger["peak_in_flight"],
            "cpu_cores": round(worker_cpu / wall, 3) if wall > 0 else None,
            "cpu_s_per_1000": round(worker_cpu * 1000 / n, 1),
            "peak_rss_mb": round(cost["peak_rss_bytes_max"] / 2**20, 1),
            "reads_per_image": round(ledger["reads"] / n, 2),
        }
    finally:
        fleet.stop()


def sweep(
    hosts: Hosts, redis: RedisServer, sim: Any, sizes=(50, 100, 200, 400), **kwargs: Any
) -> dict[str, Any]:
    rows = []
    best = None
    for c in sizes:
        row = hold(c, hosts, redis, sim, **kwargs)
        rows.append(row)
        if row["finished"] and row["peak_in_flight"] >= c and (row["cpu_cores"] or 9) < 1.0:
            best = c
        else:
            break  # a larger C will not do better
    return {"rows": rows, "max_in_flight_under_one_core": best}
