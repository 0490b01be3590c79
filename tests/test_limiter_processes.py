"""The limiter's guarantees across real processes (multiprocessing spawn) on the real Redis.

Every child builds its own client and Limiter, exactly like a worker process on another host;
results come back through Redis lists under the test's key prefix.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time

import pytest

from shared.errors import AcquireTimeoutError
from shared.keys import Keys
from shared.limiter import HolderInfo, Limiter
from tests.support import limiter_procs as procs
from tests.support.limiter import LIVE_LEASE, lose_limiter_state, redis_now
from tests.support.limiter_checks import max_overlap, most_in_any_window, tightest_window
from tests.support.wait import wait_until


def opts(concurrency=1, create_limit=100, window=1.0, lease=1.0, **limiter):
    # A waiter's registration lives this long unless its keeper refreshes it (every third): a
    # keeper held up for a second on a loaded 2-core machine must not cost a waiter its place.
    limiter.setdefault("waiter_ttl", 3.0)
    return {
        "settings": {
            "concurrency_limit": concurrency,
            "create_limit": create_limit,
            "rate_window": window,
            "lease_seconds": lease,
        },
        "limiter": limiter,
    }


def local_limiter(redis_client, settings, key_prefix, o) -> Limiter:
    """The test process's own Limiter, configured like the children's."""
    s = settings.with_(**o["settings"])
    return Limiter.from_settings(redis_client, Keys(key_prefix), s, **o["limiter"])


def pop_json(redis_client, key, timeout=30):
    item = procs.blpop_wait(redis_client, key, timeout)
    assert item is not None, f"no message on {key} within {timeout} s"
    return json.loads(item)


def test_many_processes_never_exceed_the_slots_or_the_rate(redis_client, redis_url, key_prefix, children):
    """8 processes x 4 threads, seeded random timings, two of them with clocks 1 h off; checked
    from the grant log (Redis times of every grant and release) and by an observer process."""
    n_slots, rate, window, margin = 4, 12, 1.0, 0.1
    o = opts(concurrency=n_slots, create_limit=rate, window=window, lease=1.5, rate_margin=margin)
    duration, n_procs = 5.0, 8
    for i in range(n_procs):
        skew = {0: 3600.0, 1: -3600.0}.get(i, 0.0)
        children(procs.hammer, redis_url, key_prefix, o, 100 + i, 4, duration, skew)
    children(procs.observer, redis_url, key_prefix, duration + 6)
    time.sleep(1.0)  # let the children import and connect
    redis_client.rpush(f"{key_prefix}:go", "1")
    results = [pop_json(redis_client, f"{key_prefix}:results", timeout=60) for _ in range(n_procs)]
    observed = pop_json(redis_client, f"{key_prefix}:observer", timeout=30)

    intervals = [iv for r in results for iv in r["intervals"]]
    tokens = [t for r in results for t in r["tokens"]]
    went = [t for r in results for t in r["went"]]
    assert all(r["lost"] == 0 for r in results)  # live renewing holders never lose their slot
    assert all(released is not None and released >= granted for granted, released in intervals)
    assert len(intervals) > 100 and len(tokens) > 2 * rate
    assert max_overlap(intervals) == n_slots  # reached, never exceeded
    assert observed["samples"] > 100 and observed["peak"] <= n_slots
    assert tightest_window(tokens, rate) >= window + margin - 1e-5
    assert most_in_any_window(tokens, window) <= rate
    # and when the callers actually went, on the Redis clock (the margin covers their delays)
    assert most_in_any_window(went, window) <= rate


def test_a_state_loss_while_holders_run_in_other_processes_never_exceeds_the_limits(
    redis_client, redis_url, key_prefix, settings, children
):
    """Redis forgets every limiter key (a restart without persistence) while 6 processes x 3
    threads hold, wait and create. The holders re-register through their renewals before anyone
    new is admitted, so at no instant do more than N of them hold; creations pause for one
    window, so no window ever holds more than R (checked on the moments callers went)."""
    n_slots, rate, window, margin, lease = 3, 6, 2.0, 0.1, 1.5
    o = opts(concurrency=n_slots, create_limit=rate, window=window, lease=lease, rate_margin=margin)
    duration, n_procs = 7.0, 6
    for i in range(n_procs):
        children(procs.hammer, redis_url, key_prefix, o, 300 + i, 3, duration)
    time.sleep(1.0)
    redis_client.rpush(f"{key_prefix}:go", "1")
    # In full swing however long the children took to start: every process has held a slot (so
    # each knows the state that is about to be lost, as the README's guarantee requires), every
    # slot is held and callers wait for one.
    watcher = local_limiter(redis_client, settings, key_prefix, o)
    seen: set[str] = set()

    def in_full_swing() -> bool:
        status = watcher.status()
        seen.update(h.task_id.split("-")[0] for h in status.holders)  # task ids are "<process seed>-<thread>"
        return len(seen) == n_procs and status.in_use == n_slots and status.waiters > 0

    wait_until(in_full_swing, 30, "every process to have held a slot, with callers waiting", interval=0.01)
    watcher.close()
    lost_at = lose_limiter_state(redis_client, key_prefix)
    results = [pop_json(redis_client, f"{key_prefix}:results", timeout=60) for _ in range(n_procs)]

    intervals = [iv for r in results for iv in r["intervals"]]
    tokens = [t for r in results for t in r["tokens"]]
    went = [t for r in results for t in r["went"]]
    assert all(r["lost"] == 0 for r in results)  # every live holder found its slot again
    assert max_overlap(intervals) == n_slots  # reached, never exceeded, across the loss
    assert any(g < lost_at < r for g, r in intervals), "no slot was held across the loss"
    assert any(g > lost_at + lease for g, _ in intervals), "nobody got a slot after the loss"
    assert any(t < lost_at for t in tokens) and any(t > lost_at + window for t in tokens)
    assert not [t for t in tokens if lost_at < t <= lost_at + window]  # no creation granted
    assert most_in_any_window(went, window) <= rate


def test_a_holder_killed_mid_hold_returns_its_slot_within_the_lease_plus_a_second(
    redis_client, redis_url, key_prefix, settings, children
):
    lease = LIVE_LEASE
    o = opts(concurrency=1, lease=lease)
    proc = children(procs.hold_forever, redis_url, key_prefix, o)
    holder_id = pop_json(redis_client, f"{key_prefix}:held")["holder_id"]
    limiter = local_limiter(redis_client, settings, key_prefix, o)
    granted: list = []
    thread = threading.Thread(
        target=lambda: granted.append(limiter.acquire(HolderInfo(task_id="next"), timeout=10 * lease)),
        daemon=True,
    )
    thread.start()
    time.sleep(1.5 * lease)  # longer than a lease: the holder keeps it while it renews
    assert granted == [] and limiter.status().in_use == 1
    killed_at = redis_now(redis_client)
    os.kill(proc.pid, signal.SIGKILL)
    proc.join(10)
    # The dead holder's last renewal set when its lease runs out (Redis time, ms).
    expires_ms = redis_client.zscore(Keys(key_prefix).limiter_key("holders"), holder_id)
    assert expires_ms is not None, "the holder's lease ran out before it was killed"
    expires_at = expires_ms / 1000
    thread.join(10 * lease)
    assert granted, "the dead holder's slot never came back"
    # Measured on the Redis clock, where the grant happened: not before the dead lease ran out,
    # and within a lease (plus a second for the waiter to hear of it) of the kill.
    assert expires_at <= granted[0].granted_at <= killed_at + lease + 1.0
    granted[0].release()
    limiter.close()


def test_a_skewed_clock_neither_shortens_nor_stretches_a_lease(
    redis_client, redis_url, key_prefix, settings, children
):
    """A holder whose clocks run 1 h ahead, then one 1 h behind, keeps its slot for 2 leases
    (so it is neither expired early nor believed to be expired) and others wait for it."""
    o = opts(concurrency=1, lease=LIVE_LEASE)
    limiter = local_limiter(redis_client, settings, key_prefix, o)
    for skew in (3600.0, -3600.0):
        children(procs.hold_for, redis_url, key_prefix, o, 2 * LIVE_LEASE, skew)
        procs.blpop_wait(redis_client, f"{key_prefix}:held", 30)
        with pytest.raises(AcquireTimeoutError):
            limiter.acquire(HolderInfo(task_id="impatient"), timeout=LIVE_LEASE)
        lease = limiter.acquire(HolderInfo(task_id="after"), timeout=10)
        done = pop_json(redis_client, f"{key_prefix}:skewed-done")
        assert done["lost"] is False
        assert lease.granted_at >= done["released_at"]  # got it only when the holder let go
        lease.release()
    limiter.close()


def test_waiters_in_other_processes_are_served_in_arrival_order(
    redis_client, redis_url, key_prefix, settings, children
):
    o = opts(concurrency=1, lease=2.0)
    limiter = local_limiter(redis_client, settings, key_prefix, o)
    held = limiter.acquire(HolderInfo(task_id="holder"))
    names = [f"p{i}" for i in range(5)]
    for i, name in enumerate(names):
        children(procs.queue_up, redis_url, key_prefix, o, name)
        end = time.monotonic() + 30
        while limiter.status().waiters < i + 1 and time.monotonic() < end:
            time.sleep(0.02)
    assert limiter.status().waiters == len(names)
    held.release()
    end = time.monotonic() + 30
    while redis_client.llen(f"{key_prefix}:order") < len(names) and time.monotonic() < end:
        time.sleep(0.05)
    assert redis_client.lrange(f"{key_prefix}:order", 0, -1) == names
    limiter.close()


def test_waiters_are_served_by_priority_then_in_turn_among_batches_then_in_arrival_order(
    redis_client, redis_url, key_prefix, settings, children
):
    """Eleven processes queue for one slot, each once, in a known order: a low-priority waiter
    first, six of a large batch, three of a small batch of the same priority, one high-priority
    waiter last. The high one goes first, the two normal batches alternate (the small one does
    not wait behind the large one's line), each in its own arrival order, the low one last."""
    o = opts(concurrency=1, lease=2.0)
    limiter = local_limiter(redis_client, settings, key_prefix, o)
    held = limiter.acquire(HolderInfo(task_id="holder"))
    arrivals = (
        [("L0", "b-low", "low")]
        + [(f"B{i}", "b-big", "normal") for i in range(6)]
        + [(f"S{i}", "b-small", "normal") for i in range(3)]
        + [("H0", "b-high", "high")]
    )
    for i, (name, batch_id, priority) in enumerate(arrivals):
        children(procs.queue_up_for, redis_url, key_prefix, o, name, batch_id, priority)
        end = time.monotonic() + 30
        while limiter.status().waiters < i + 1 and time.monotonic() < end:
            time.sleep(0.02)
    assert limiter.status().waiters == len(arrivals)
    held.release()
    end = time.monotonic() + 30
    while redis_client.llen(f"{key_prefix}:order") < len(arrivals) and time.monotonic() < end:
        time.sleep(0.05)
    assert redis_client.lrange(f"{key_prefix}:order", 0, -1) == [
        "H0",
        "B0",
        "S0",
        "B1",
        "S1",
        "B2",
        "S2",
        "B3",
        "B4",
        "B5",
        "L0",
    ]
    limiter.close()


def test_a_pause_set_in_one_process_stops_creations_in_another(
    redis_client, redis_url, key_prefix, settings, children
):
    o = opts(create_limit=100)
    limiter = local_limiter(redis_client, settings, key_prefix, o)
    until = limiter.pause_creations(2.0, reason="429")
    children(procs.try_create, redis_url, key_prefix, o)
    outcome = pop_json(redis_client, f"{key_prefix}:create")
    assert outcome["short"] == "timeout" and outcome["retry_after"] > 0
    assert outcome["granted_at"] >= until
    limiter.close()


def test_limits_changed_in_one_process_apply_to_waiters_in_others(
    redis_client, redis_url, key_prefix, settings, children
):
    o = opts(concurrency=1, lease=2.0, recheck_interval=600)
    limiter = local_limiter(redis_client, settings, key_prefix, o)
    held = limiter.acquire(HolderInfo(task_id="holder"))
    for i in range(3):
        children(procs.queue_up, redis_url, key_prefix, o, f"p{i}")
    end = time.monotonic() + 30
    while limiter.status().waiters < 3 and time.monotonic() < end:
        time.sleep(0.02)
    limiter.set_limits(concurrency_limit=4)  # the holder still holds: three free slots appear
    end = time.monotonic() + 10
    while redis_client.llen(f"{key_prefix}:order") < 3 and time.monotonic() < end:
        time.sleep(0.02)
    assert redis_client.llen(f"{key_prefix}:order") == 3
    held.release()
    limiter.close()
