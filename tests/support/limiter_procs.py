"""Child-process bodies for tests/test_limiter_processes.py.

Each takes plain arguments (spawn pickles them), builds its own Redis client and Limiter, and
reports back through Redis lists under the test's key prefix.
"""

from __future__ import annotations

import json
import os
import random
import threading
import time
from typing import Any

import redis

from shared.errors import AcquireTimeoutError
from shared.keys import Keys
from shared.limiter import HolderInfo, Limiter
from shared.settings import Settings


def make_limiter(redis_url: str, prefix: str, opts: dict[str, Any]) -> tuple[redis.Redis, Limiter]:
    settings = Settings.load(
        {"redis_url": redis_url, "key_prefix": prefix, **opts.get("settings", {})},
        environ={},
        dotenv_path=None,
    )
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    limiter = Limiter.from_settings(client, Keys(prefix), settings, **opts.get("limiter", {}))
    return client, limiter


def blpop_wait(client: redis.Redis, key: str, timeout: float) -> str | None:
    """BLPOP in short steps (the client's socket timeout is shorter than a long block)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        item = client.blpop([key], timeout=min(2.0, max(end - time.monotonic(), 0.01)))
        if item is not None:
            return item[1]
    return None


def redis_now(client: redis.Redis) -> float:
    sec, usec = client.time()
    return sec + usec / 1e6


def skew_clock(offset: float) -> None:
    """Make this process's wall and monotonic clocks lie by `offset` seconds."""
    real_time, real_mono = time.time, time.monotonic
    time.time = lambda: real_time() + offset  # type: ignore[assignment]
    time.monotonic = lambda: real_mono() + offset  # type: ignore[assignment]


def hammer(
    redis_url: str,
    prefix: str,
    opts: dict[str, Any],
    seed: int,
    threads: int,
    duration: float,
    skew: float = 0.0,
) -> None:
    """Threads that acquire / (maybe take a creation token) / hold / release at random."""
    if skew:
        skew_clock(skew)
    client, limiter = make_limiter(redis_url, prefix, opts)
    blpop_wait(client, f"{prefix}:go", 30)  # start together
    client.rpush(f"{prefix}:go", "1")  # pass the baton to the next process
    stop_at = time.monotonic() + duration
    intervals: list[list[float]] = []
    tokens: list[float] = []  # grant times the script reserved
    went: list[float] = []  # Redis TIME read right after take_create_token returned
    lost = 0
    lock = threading.Lock()

    def run(thread_seed: int) -> None:
        nonlocal lost
        rng = random.Random(thread_seed)
        while time.monotonic() < stop_at:
            try:
                lease = limiter.acquire(HolderInfo(task_id=f"{seed}-{thread_seed}"), timeout=20)
            except AcquireTimeoutError:
                continue
            token = token_went = None
            if rng.random() < 0.5:
                token = limiter.take_create_token(timeout=20)
                token_went = redis_now(client)
            time.sleep(rng.choice((0, 0, rng.uniform(0, 0.02), rng.uniform(0, 0.6))))
            lease.release()
            with lock:
                if lease.lost:
                    lost += 1
                intervals.append([lease.granted_at, lease.released_at])
                if token is not None:
                    tokens.append(token)
                    went.append(token_went)
            time.sleep(rng.uniform(0, 0.01))

    workers = [threading.Thread(target=run, args=(seed * 1000 + i,)) for i in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    limiter.close()
    client.rpush(
        f"{prefix}:results",
        json.dumps(
            {"intervals": intervals, "tokens": tokens, "went": went, "lost": lost, "pid": os.getpid()}
        ),
    )


def observer(redis_url: str, prefix: str, duration: float) -> None:
    """Polls the holder set on its own (Redis time via a tiny script) and records the maximum."""
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    keys = Keys(prefix)
    count_live = client.register_script(
        "local t = redis.call('TIME') local now = t[1] * 1000 + t[2] / 1000 "
        "return redis.call('ZCOUNT', KEYS[1], '(' .. string.format('%.3f', now), '+inf')"
    )
    holders = keys.limiter_key("holders")
    stop_at = time.monotonic() + duration
    peak, samples = 0, 0
    while time.monotonic() < stop_at:
        peak = max(peak, int(count_live(keys=[holders])))
        samples += 1
        time.sleep(0.001)
    client.rpush(f"{prefix}:observer", json.dumps({"peak": peak, "samples": samples}))


def hold_forever(redis_url: str, prefix: str, opts: dict[str, Any], skew: float = 0.0) -> None:
    """Acquire one slot, say so, then hold it (renewing) until killed."""
    if skew:
        skew_clock(skew)
    client, limiter = make_limiter(redis_url, prefix, opts)
    lease = limiter.acquire(HolderInfo(task_id="holder"), timeout=30)
    client.rpush(f"{prefix}:held", json.dumps({"holder_id": lease.holder_id, "pid": os.getpid()}))
    while True:
        time.sleep(0.2)
        if lease.lost:
            client.rpush(f"{prefix}:lost", lease.holder_id)


def hold_for(redis_url: str, prefix: str, opts: dict[str, Any], seconds: float, skew: float) -> None:
    """Hold one slot for `seconds` under a skewed clock, then report whether it was ever lost."""
    skew_clock(skew)
    client, limiter = make_limiter(redis_url, prefix, opts)
    lease = limiter.acquire(HolderInfo(task_id="skewed"), timeout=30)
    client.rpush(f"{prefix}:held", lease.holder_id)
    time.sleep(seconds)
    was_lost = lease.lost
    lease.release()
    client.rpush(f"{prefix}:skewed-done", json.dumps({"lost": was_lost, "released_at": lease.released_at}))
    limiter.close()


def queue_up(redis_url: str, prefix: str, opts: dict[str, Any], name: str) -> None:
    """Wait for a slot; on grant append `name` to the order list and release at once."""
    client, limiter = make_limiter(redis_url, prefix, opts)
    lease = limiter.acquire(HolderInfo(task_id=name), timeout=60)
    client.rpush(f"{prefix}:order", name)
    lease.release()
    limiter.close()


def queue_up_for(
    redis_url: str, prefix: str, opts: dict[str, Any], name: str, batch_id: str, priority: str
) -> None:
    """queue_up for a waiter of `batch_id` at `priority`."""
    client, limiter = make_limiter(redis_url, prefix, opts)
    lease = limiter.acquire(HolderInfo(task_id=name, batch_id=batch_id, priority=priority), timeout=60)
    client.rpush(f"{prefix}:order", name)
    lease.release()
    limiter.close()


def try_create(redis_url: str, prefix: str, opts: dict[str, Any]) -> None:
    """Take a creation token: first with a short timeout (expected to fail under a pause), then
    without one; report both outcomes with the grant time."""
    client, limiter = make_limiter(redis_url, prefix, opts)
    outcome: dict[str, Any] = {}
    try:
        limiter.take_create_token(timeout=0.3)
        outcome["short"] = "granted"
    except AcquireTimeoutError as exc:
        outcome["short"] = "timeout"
        outcome["retry_after"] = getattr(exc, "retry_after", None)
    outcome["granted_at"] = limiter.take_create_token(timeout=30)
    client.rpush(f"{prefix}:create", json.dumps(outcome))
    limiter.close()
