"""The limiter's tests: the `make_limiter` fixture and small tools around a Limiter; the
`children` fixture for tests that run real processes (tests/support/limiter_procs.py)."""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading

import pytest
import redis

from shared.errors import AcquireTimeoutError
from shared.keys import Keys
from shared.limiter import HolderInfo, Limiter
from shared.limiter.limiter import KEY_NAMES

# Deletes the given keys and answers the Redis time (seconds) of the deletion, in one step: the
# moment the state was lost, on the clock every grant time is measured with.
_FLUSH = """
redis.call('DEL', unpack(KEYS))
local t = redis.call('TIME')
return t[1] .. '.' .. string.format('%06d', tonumber(t[2]))
"""


# The lease of a holder a test needs to stay alive: renewed every third of it, so it survives its
# keeper thread being held up for up to a second (a loaded 2-core machine). Tests sleep multiples
# of it, so what they prove (a hold longer than N leases) does not depend on the value.
LIVE_LEASE = 1.5


SPAWN = multiprocessing.get_context("spawn")


@pytest.fixture
def children():
    """start(target, *args): a spawned child process (target and args picklable), killed at the
    end of the test if it still runs (woken first, in case the test stopped it with SIGSTOP)."""
    started: list = []

    def start(target, *args):
        proc = SPAWN.Process(target=target, args=args, daemon=True)
        proc.start()
        started.append(proc)
        return proc

    yield start
    for proc in started:
        if proc.is_alive():
            os.kill(proc.pid, signal.SIGCONT)
            proc.kill()
        proc.join(5)


@pytest.fixture
def make_limiter(redis_client, settings, key_prefix):
    """make(concurrency=2, create_limit=5, read_limit=50, window=1.0, lease=1.5, **Limiter kwargs)."""
    made: list[Limiter] = []

    def make(concurrency=2, create_limit=5, read_limit=50, window=1.0, lease=1.5, **kwargs) -> Limiter:
        kwargs.setdefault("waiter_ttl", 0.6)
        s = settings.with_(
            concurrency_limit=concurrency,
            create_limit=create_limit,
            read_limit=read_limit,
            rate_window=window,
            lease_seconds=lease,
        )
        limiter = Limiter.from_settings(redis_client, Keys(key_prefix), s, **kwargs)
        made.append(limiter)
        return limiter

    yield make
    for limiter in made:
        for lease in limiter.held_leases():
            lease.release()
        limiter.close()


def start_waiter(limiter: Limiter, name: str, results: list, **kwargs) -> threading.Thread:
    """A thread that acquires; appends (name, lease) or (name, AcquireTimeoutError) to results."""

    def run() -> None:
        try:
            lease = limiter.acquire(HolderInfo(task_id=name), **kwargs)
        except AcquireTimeoutError as exc:
            results.append((name, exc))
            return
        results.append((name, lease))

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def redis_now(client: redis.Redis) -> float:
    """Unix seconds on the Redis clock (the clock of every grant time)."""
    sec, usec = client.time()
    return sec + usec / 1e6


def lose_limiter_state(client: redis.Redis, prefix: str) -> float:
    """What a Redis restart without persistence does to the limiter: every key gone, wake lists
    included. Returns the Redis time of the loss."""
    keys = Keys(prefix)
    names = [keys.limiter_key(name) for name in KEY_NAMES]
    names += list(client.scan_iter(match=keys.limiter_key("wake:") + "*", count=1000))
    return float(client.eval(_FLUSH, len(names), *names))
