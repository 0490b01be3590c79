"""Redis loses the limiter state while the fleet runs (a restart without persistence), on the
real Redis, within one process; the multi-process proof is in test_limiter_processes.py.

Each Limiter object stands for one process: it remembers the epoch it last saw, and a script
that finds no epoch while the caller knew one starts the recovery: no new slot for one lease
(live holders re-register through their renewals first) and creations paused for one window
plus margin. A first start (nobody knew an epoch) has no delay. Last, a slot given back while
Redis is down (a redis-server of the test's own, stopped).
"""

from __future__ import annotations

import logging
import time

import pytest
from redis.backoff import NoBackoff
from redis.retry import Retry

from shared.errors import AcquireTimeoutError
from shared.keys import Keys
from shared.limiter import HolderInfo, Limiter
from tests.support.limiter import LIVE_LEASE, lose_limiter_state, start_waiter
from tests.support.wait import wait_until

REASON = "limiter state lost; rate log rebuilt"


def holder_ids(limiter) -> set[str]:
    return {h.holder_id for h in limiter.status().holders}


def test_a_first_start_has_no_recovery_delay(make_limiter):
    limiter = make_limiter(concurrency=1, lease=5.0)
    limiter.acquire(HolderInfo(task_id="first"), timeout=0)  # a freeze would last 5 s
    limiter.take_create_token(timeout=0)
    status = limiter.status()
    assert status.recovery_seconds_left == 0 and status.pause_reason is None


def test_after_a_loss_live_holders_go_back_in_before_anyone_new(make_limiter, redis_client, key_prefix):
    lease_s, window, margin = 1.2, 1.0, 0.1
    limiter = make_limiter(
        concurrency=2, lease=lease_s, window=window, rate_margin=margin, recheck_interval=600
    )  # only the freeze's own end can let the waiter in
    a = limiter.acquire(HolderInfo(task_id="a"))
    limiter.take_create_token(holder=a, attempt="b:0:1")
    c = limiter.acquire(HolderInfo(task_id="c"))
    results: list = []
    start_waiter(limiter, "waiter", results, timeout=10)
    assert wait_until(lambda: limiter.status().waiters == 1)

    lost_at = lose_limiter_state(redis_client, key_prefix)
    c.release()  # the first call after the loss: it knew the epoch, so the recovery starts
    status = limiter.status()
    assert 0 < status.recovery_seconds_left <= lease_s
    assert status.pause_reason == REASON and status.pause_seconds_left > window
    # a's next renewal puts it back, with what protects its slot (the attempt marker)
    assert wait_until(lambda: a.holder_id in holder_ids(limiter), timeout=lease_s)
    assert [h.attempt for h in limiter.status().holders] == ["b:0:1"]
    # c's slot is free, but nobody new gets it before the freeze ends
    assert wait_until(lambda: results, timeout=lease_s + 1.0)
    waiter = results[0][1]
    assert not isinstance(waiter, AcquireTimeoutError)
    assert lost_at + lease_s <= waiter.granted_at < lost_at + lease_s + 0.5  # promptly at its end
    assert not a.lost and limiter.status().in_use == 2
    assert limiter.take_create_token(timeout=5) >= lost_at + window + margin


def test_a_loss_first_seen_by_a_process_that_knew_nothing_is_still_recognised(
    make_limiter, redis_client, key_prefix
):
    """A process that just started cannot tell a loss from a first start; the first call of one
    that knew the old state can, and the recovery begins then."""
    old = make_limiter(concurrency=3, lease=1.2)
    a = old.acquire(HolderInfo(task_id="a"))
    lose_limiter_state(redis_client, key_prefix)
    fresh = make_limiter(concurrency=3, lease=1.2)
    b = fresh.acquire(HolderInfo(task_id="b"), timeout=0)  # looks like a first start
    assert wait_until(lambda: a.holder_id in holder_ids(fresh), timeout=1.2)  # a's renewal ...
    status = fresh.status()
    assert status.recovery_seconds_left > 0 and status.pause_reason == REASON  # ... proved the loss
    with pytest.raises(AcquireTimeoutError, match="rebuilding"):
        fresh.acquire(HolderInfo(task_id="c"), timeout=0.3)  # a slot is free, but frozen
    assert fresh.acquire(HolderInfo(task_id="c"), timeout=3) is not None
    assert not a.lost and not b.lost


def test_without_room_a_holder_forgotten_by_redis_learns_it_is_lost(make_limiter, redis_client, key_prefix):
    """Processes that never saw the old state took every slot before the renewals came: the
    holders that were forgotten are told they lost their slot; fences keep increasing."""
    # A long lease: the unaware grants must come before a's and b's first renewal (due a third
    # of a lease after their grant), which a loaded machine could delay past a 0.3 s renewal.
    limiter = make_limiter(concurrency=2, lease=6.0)
    a = limiter.acquire(HolderInfo(task_id="a"))
    b = limiter.acquire(HolderInfo(task_id="b"))
    lose_limiter_state(redis_client, key_prefix)
    other = make_limiter(concurrency=2, lease=6.0)
    grabbed = [other.acquire(HolderInfo(task_id=f"new{i}"), timeout=0) for i in range(2)]
    assert a.wait_lost(timeout=6.0) and b.wait_lost(timeout=6.0)
    assert {h.task_id for h in limiter.status().holders} == {"new0", "new1"}
    assert all(g.fence > max(a.fence, b.fence) for g in grabbed)


def test_a_force_released_holder_stays_lost_across_a_state_loss(make_limiter, redis_client, key_prefix):
    limiter = make_limiter(concurrency=2, lease=LIVE_LEASE)
    revoked = limiter.acquire(HolderInfo(task_id="revoked"))
    kept = limiter.acquire(HolderInfo(task_id="kept"))
    assert limiter.force_release(revoked.holder_id)
    assert revoked.wait_lost(timeout=LIVE_LEASE + 1.0)
    lose_limiter_state(redis_client, key_prefix)
    assert wait_until(lambda: kept.holder_id in holder_ids(limiter), timeout=LIVE_LEASE + 1.0)
    time.sleep(LIVE_LEASE)  # three more renewals: only the live holder is ever put back
    assert holder_ids(limiter) == {kept.holder_id}
    assert not kept.lost


def test_an_abandoned_slot_is_put_back_as_an_orphan_if_the_loss_came_first(
    make_limiter, redis_client, key_prefix
):
    """The renewal that re-registers a holder can cross its abandon(); the keeper then abandons
    it again, so the slot ends as an orphan, not as a live lease nor a free slot."""
    # A long lease: the keeper's own first renewal (a third of it after the grant) must not
    # re-register the holder before the crossing this test plays by hand.
    limiter = make_limiter(concurrency=1, lease=6.0)
    lease = limiter.acquire(HolderInfo(task_id="a"))
    limiter.take_create_token(holder=lease, attempt="b:0:1")
    lose_limiter_state(redis_client, key_prefix)
    lease._ended = "abandoned"  # as if abandon() ran while the re-registering renewal was on its way
    agent = limiter._agent
    agent._heartbeat([lease], [], time.monotonic())
    (holder,) = limiter.status().holders
    assert holder.orphaned and holder.abandoned and holder.attempt == "b:0:1"


def test_a_waiter_queued_before_the_loss_was_recognised_is_woken_when_the_freeze_ends(
    make_limiter, redis_client, key_prefix
):
    """It was never told when the freeze ends, and nobody is woken during it: the first call
    after its end wakes the line (here: the waiter's own registration refresh)."""
    old = make_limiter(concurrency=3, lease=1.2)
    a = old.acquire(HolderInfo(task_id="a"))
    lose_limiter_state(redis_client, key_prefix)
    fresh = make_limiter(concurrency=3, lease=1.2, recheck_interval=600)
    taken = [fresh.acquire(HolderInfo(task_id=f"n{i}"), timeout=0) for i in range(3)]  # unaware
    results: list = []
    start_waiter(fresh, "waiter", results, timeout=10)  # queued, told nothing about a freeze
    assert wait_until(lambda: fresh.status().recovery_seconds_left > 0, timeout=1.2)  # a's renewal
    assert a.wait_lost(timeout=1.0)  # no room for it: the unaware grants are not undone
    taken[0].release()  # frees a slot during the freeze: nobody is woken
    time.sleep(0.2)
    assert results == []
    assert wait_until(lambda: results, timeout=2.5)
    assert not isinstance(results[0][1], AcquireTimeoutError)


def test_a_release_while_redis_is_down_says_it_did_not_reach_redis(
    private_redis, settings, key_prefix, caplog
):
    """The operator reads an outage, not a failure (the slot comes back when its lease runs out)."""
    client = private_redis.client(socket_timeout=1, socket_connect_timeout=1, retry=Retry(NoBackoff(), 0))
    limiter = Limiter.from_settings(client, Keys(key_prefix), settings)
    try:
        lease = limiter.acquire(HolderInfo(task_id="cut off"), timeout=0)
        private_redis.stop()
        with caplog.at_level(logging.WARNING, logger="shared.limiter.lease"):
            lease.release()
        assert f"release of {lease.holder_id} did not reach Redis" in caplog.text, caplog.text
    finally:
        limiter.close()
