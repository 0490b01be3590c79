"""The limiter's key layout 2 (issue 16.4): its epoch, recovery marks and prune bound live in ONE
hash (KEYS[8], read with one HMGET per call), and expired holders and waiters are pruned only
once the earliest expiry has passed. Workers of layout 1 and 2 must never share a state
silently: layout 1 kept a STRING at that key, so its scripts' first read of it fails on the hash
(before they write anything of a slot), and a layout-2 script converts a layout-1 state in place.
"""

from __future__ import annotations

import time

import pytest
import redis

from shared.errors import LimiterError
from shared.keys import Keys
from shared.limiter import HolderInfo


def test_a_layout_1_state_is_converted_keeping_its_epoch_and_holders(make_limiter, redis_client, key_prefix):
    keys = Keys(key_prefix)
    limiter = make_limiter(concurrency=1, lease=5.0)
    held = limiter.acquire(HolderInfo(task_id="old"), timeout=0)
    epoch = held.epoch
    # What a layout-1 fleet leaves: the epoch a STRING, a recovery mark in its own hash.
    redis_client.delete(keys.limiter_key("epoch"))
    redis_client.set(keys.limiter_key("epoch"), epoch)
    redis_client.hset(keys.limiter_key("recovery"), mapping={"fresh": epoch, "fresh_at": "1"})
    status = limiter.status()  # the first layout-2 call converts
    assert status.epoch == epoch and status.recovery_seconds_left == 0
    assert [h.holder_id for h in status.holders] == [held.holder_id]  # still counted
    state = redis_client.hgetall(keys.limiter_key("epoch"))
    assert state["id"] == epoch and state["layout"] == "2" and state["fresh"] == epoch
    assert not redis_client.exists(keys.limiter_key("recovery"))
    with pytest.raises(Exception, match="no slot"):
        limiter.acquire(HolderInfo(task_id="new"), timeout=0)  # the limit still holds
    held.release()
    limiter.acquire(HolderInfo(task_id="new"), timeout=0).release()


def test_a_layout_1_script_fails_on_a_layout_2_state(make_limiter, redis_client, key_prefix):
    """Layout 1's prelude reads the epoch with GET right after the limits, before any write of a
    slot: on the hash it fails, so an old worker cannot admit anyone beside new ones."""
    make_limiter().acquire(HolderInfo()).release()
    with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
        redis_client.get(Keys(key_prefix).limiter_key("epoch"))


def test_an_unknown_layout_is_refused(make_limiter, redis_client, key_prefix):
    limiter = make_limiter()
    limiter.acquire(HolderInfo()).release()
    redis_client.hset(Keys(key_prefix).limiter_key("epoch"), "layout", "3")
    with pytest.raises(LimiterError, match="layout 3"):
        limiter.acquire(HolderInfo())


def test_a_dead_holder_and_waiter_are_pruned_once_they_expire(make_limiter, redis_client, key_prefix):
    """prune_at is a lower bound of every expiry: a holder that stops renewing still frees its
    slot when its lease runs out, although calls before that prune nothing."""
    keys = Keys(key_prefix)
    dead = make_limiter(concurrency=1, lease=0.6)
    lease = dead.acquire(HolderInfo(task_id="dead"))
    dead.close()  # no more renewals: it dies holding the slot
    live = make_limiter(concurrency=1, lease=5.0)
    state = redis_client.hgetall(keys.limiter_key("epoch"))
    assert float(state["prune_at"]) <= float(
        redis_client.zscore(keys.limiter_key("holders"), lease.holder_id)
    )
    started = time.monotonic()
    got = live.acquire(HolderInfo(task_id="next"), timeout=5)
    assert time.monotonic() - started < 0.6 + 1.0
    assert [h.holder_id for h in live.status().holders] == [got.holder_id]
