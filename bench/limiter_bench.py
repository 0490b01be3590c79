"""Limiter benchmark: what one slot or token costs, and how fast a freed slot is handed on.

    .venv/bin/python -m bench.limiter_bench [--redis-url redis://127.0.0.1:6379/11] [--quick]

Reports, in one run against the same Redis server:
  * a plain PING round trip (the floor every figure should be compared with);
  * acquire / release / acquire+release / token latency p50/p99 and pairs per second, one thread;
  * acquire+release pairs per second with several processes x threads hammering at once;
  * hand-off latency: a release to the next waiter's grant, both stamped with Redis TIME inside
    the scripts, with many waiters spread over several processes and a single slot -- from the
    grant log, and as the limiter itself reports it (Lease.handoff_seconds: from the event that
    woke the waiter to its grant). Two holders of the one slot overlapping (a negative gap)
    would be a safety bug: they are counted, reported, and fail the run;
  * Redis round trips per acquire, release, token and per held lease renewal.
Keys go under a fresh prefix and are deleted afterwards. Figures: bench/README-limiter.md.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import threading
import time
import uuid

import redis

from shared.keys import Keys
from shared.limiter import HolderInfo, Limiter
from shared.settings import Settings

SPAWN = multiprocessing.get_context("spawn")


class CountingRedis(redis.Redis):
    """Counts commands sent (each one round trip; EVALSHA after the first load)."""

    calls = 0

    def execute_command(self, *args, **options):
        type(self).calls += 1
        return super().execute_command(*args, **options)


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


def ms(values: list[float]) -> str:
    return f"p50 {pct(values, 50) * 1000:.3f} ms  p99 {pct(values, 99) * 1000:.3f} ms  (n={len(values)})"


def make(url: str, prefix: str, client_cls=redis.Redis, **limits) -> tuple[redis.Redis, Limiter]:
    settings = Settings.load({"redis_url": url, "key_prefix": prefix, **limits}, environ={}, dotenv_path=None)
    client = client_cls.from_url(url, decode_responses=True)
    return client, Limiter.from_settings(client, Keys(prefix), settings, rate_margin=0.0)


# --- child processes ---------------------------------------------------------------------------
def _hammer_child(url: str, prefix: str, threads: int, seconds: float, out_key: str) -> None:
    client, limiter = make(url, prefix, concurrency_limit=10_000, lease_seconds=30)
    client.blpop([f"{prefix}:go"], timeout=4)
    client.rpush(f"{prefix}:go", "1")
    counts = [0] * threads
    end = time.monotonic() + seconds

    def run(i: int) -> None:
        while time.monotonic() < end:
            limiter.acquire(HolderInfo(task_id="bench")).release()
            counts[i] += 1

    workers = [threading.Thread(target=run, args=(i,)) for i in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    limiter.close()
    client.rpush(out_key, sum(counts))


def _handoff_child(url: str, prefix: str, threads: int, seconds: float, hold: float, out_key: str) -> None:
    client, limiter = make(url, prefix, concurrency_limit=1, lease_seconds=5)
    client.blpop([f"{prefix}:go"], timeout=4)
    client.rpush(f"{prefix}:go", "1")
    intervals: list[list[float | None]] = []  # [granted, released, handoff reported by the limiter]
    lock = threading.Lock()
    end = time.monotonic() + seconds

    def run() -> None:
        while time.monotonic() < end:
            lease = limiter.acquire(HolderInfo(task_id="bench"), timeout=30)
            time.sleep(hold)
            lease.release()
            with lock:
                intervals.append([lease.granted_at, lease.released_at, lease.handoff_seconds])

    workers = [threading.Thread(target=run) for _ in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    limiter.close()
    client.rpush(out_key, json.dumps(intervals))


def _run_children(client: redis.Redis, prefix: str, target, args_for, n: int, out_key: str) -> list:
    procs = [SPAWN.Process(target=target, args=args_for(i), daemon=True) for i in range(n)]
    for p in procs:
        p.start()
    time.sleep(1.5)  # imports and connections
    client.rpush(f"{prefix}:go", "1")
    out = []
    for _ in range(n):
        item = None
        while item is None:
            item = client.blpop([out_key], timeout=2)
        out.append(item[1])
    for p in procs:
        p.join(10)
    return out


# --- measurements ------------------------------------------------------------------------------
def bench_single(url: str, prefix: str, n: int) -> dict:
    client, limiter = make(
        url, prefix, concurrency_limit=10_000, create_limit=10**6, read_limit=10**6, lease_seconds=30
    )
    for _ in range(50):  # warm up: script load, connections
        client.ping()
        limiter.acquire(HolderInfo()).release()
    ping, acq, rel, pair, tok = [], [], [], [], []
    for _ in range(n):
        t0 = time.perf_counter()
        client.ping()
        ping.append(time.perf_counter() - t0)
    start = time.perf_counter()
    for _ in range(n):
        t0 = time.perf_counter()
        lease = limiter.acquire(HolderInfo(task_id="bench"))
        t1 = time.perf_counter()
        lease.release()
        t2 = time.perf_counter()
        acq.append(t1 - t0)
        rel.append(t2 - t1)
        pair.append(t2 - t0)
    pairs_per_s = n / (time.perf_counter() - start)
    for _ in range(n):
        t0 = time.perf_counter()
        limiter.take_create_token()
        tok.append(time.perf_counter() - t0)
    limiter.close()
    return {
        "ping": ping,
        "acquire": acq,
        "release": rel,
        "pair": pair,
        "token": tok,
        "pairs_per_s": pairs_per_s,
    }


def bench_round_trips(url: str, prefix: str) -> dict:
    client, limiter = make(
        url,
        prefix,
        client_cls=CountingRedis,
        concurrency_limit=1,
        create_limit=10**6,
        read_limit=10**6,
        lease_seconds=0.9,
    )
    limiter.acquire(HolderInfo()).release()  # load scripts first
    out = {}
    for name, action in (
        ("acquire (free slot)", lambda: limiter.acquire(HolderInfo())),
        ("take_create_token", limiter.take_create_token),
        ("take_read_token", limiter.take_read_token),
    ):
        before = CountingRedis.calls
        result = action()
        out[name] = CountingRedis.calls - before
        if name.startswith("acquire"):
            lease = result
    before = CountingRedis.calls
    time.sleep(3.0)  # held: only the keeper talks to Redis
    out["keeper calls per lease-second held (lease 0.9 s)"] = round((CountingRedis.calls - before) / 3.0, 2)
    # a contended acquire: one call to queue, one after the wake
    box: list = []
    waiter = threading.Thread(target=lambda: box.append(limiter.acquire(HolderInfo(), timeout=5)))
    before_wait = CountingRedis.calls
    waiter.start()
    time.sleep(0.2)
    before = CountingRedis.calls
    lease.release()
    out["release"] = 1  # measured below together with the hand-off
    waiter.join()
    out["release + contended acquire after wake (excl. keeper/listener)"] = CountingRedis.calls - before
    out["contended acquire total incl. its process keeper heartbeats"] = CountingRedis.calls - before_wait
    box[0].release()
    limiter.close()
    return out


def bench_parallel(url: str, prefix: str, procs: int, threads: int, seconds: float) -> float:
    client = redis.Redis.from_url(url, decode_responses=True)
    out_key = f"{prefix}:par-out"
    counts = _run_children(
        client, prefix, _hammer_child, lambda i: (url, prefix, threads, seconds, out_key), procs, out_key
    )
    return sum(int(c) for c in counts) / seconds


class OverlapError(AssertionError):
    """Two holders of a one-slot semaphore held at the same time: the limiter's safety broke."""


def bench_handoff(url: str, prefix: str, procs: int, threads: int, seconds: float) -> dict:
    """Gaps between each release and the next grant (grant log), and the hand-off the limiter
    reports per woken grant. A negative gap means two holders overlapped: reported, then
    OverlapError (a benchmark must not hide a broken limit)."""
    client = redis.Redis.from_url(url, decode_responses=True)
    out_key = f"{prefix}:handoff-out"
    raw = _run_children(
        client,
        prefix,
        _handoff_child,
        lambda i: (url, prefix, threads, seconds, 0.002, out_key),
        procs,
        out_key,
    )
    intervals = sorted(iv for r in raw for iv in json.loads(r))
    # With one slot and waiters always queued, each grant follows the previous release.
    gaps = [nxt[0] - cur[1] for cur, nxt in zip(intervals, intervals[1:])]
    overlaps = [g for g in gaps if g < 0]
    reported = [iv[2] for iv in intervals if iv[2] is not None]
    return {
        "gaps": [g for g in gaps if g >= 0],
        "overlaps": overlaps,
        "reported": reported,
        "grants": len(intervals),
    }


def cleanup(url: str, prefix: str) -> None:
    client = redis.Redis.from_url(url)
    for pattern in (f"{prefix}*", f"{{{prefix}*"):
        keys = list(client.scan_iter(match=pattern, count=1000))
        if keys:
            client.delete(*keys)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/11")
    parser.add_argument("--quick", action="store_true", help="fewer samples, shorter runs")
    args = parser.parse_args()
    url = args.redis_url
    n, seconds = (500, 2.0) if args.quick else (3000, 5.0)
    prefix = f"bench-{uuid.uuid4().hex[:8]}"
    try:
        single = bench_single(url, prefix + "-s", n)
        print("one thread, uncontended (limit 10000):")
        for name in ("ping", "acquire", "release", "pair", "token"):
            label = {"ping": "PING round trip", "pair": "acquire+release", "token": "take_create_token"}
            print(f"  {label.get(name, name):<18} {ms(single[name])}")
        print(f"  acquire+release pairs/s, one thread: {single['pairs_per_s']:.0f}")
        print("round trips (Redis commands sent):")
        for name, count in bench_round_trips(url, prefix + "-r").items():
            print(f"  {name}: {count}")
        for procs, threads in ((4, 8),):
            rate = bench_parallel(url, prefix + f"-p{procs}", procs, threads, seconds)
            print(f"acquire+release pairs/s, {procs} processes x {threads} threads: {rate:.0f}")
        overlapping = 0
        for procs, threads in ((4, 8), (4, 50)):
            h = bench_handoff(url, prefix + f"-h{threads}", procs, threads, seconds)
            gaps = h["gaps"]
            print(
                f"hand-off release -> next waiter's grant (1 slot, {procs * threads} waiters in {procs} "
                f"processes, Redis TIME): {ms(gaps)}  max {max(gaps) * 1000:.3f} ms"
            )
            if h["reported"]:
                print(
                    f"  as reported by the limiter (Lease.handoff_seconds, {len(h['reported'])} of "
                    f"{h['grants']} grants woken): {ms(h['reported'])}"
                )
            print(
                f"  overlapping holders of the one slot (negative gaps): {len(h['overlaps'])}"
                + (f"  worst {min(h['overlaps']) * 1000:.3f} ms" if h["overlaps"] else "")
            )
            overlapping += len(h["overlaps"])
        if overlapping:
            raise OverlapError(f"{overlapping} grants overlapped the previous holder of a 1-slot semaphore")
    finally:
        for suffix in ("-s", "-r", "-p4", "-h8", "-h50"):
            cleanup(url, prefix + suffix)


if __name__ == "__main__":
    main()
