"""The limiter's cost-safety primitives on the real Redis: a holder that took a creation token
for an attempt keeps its slot counted if it dies before it knows its prediction id; an ambiguous
creation abandons the lease (orphan at once); adopt and settle find a slot by prediction or by
attempt; the indexes never keep a holder that is gone."""

from __future__ import annotations

import json
import time

import pytest

from shared.errors import AcquireTimeoutError, LeaseLostError, RedisUnavailableError
from shared.keys import Keys
from shared.limiter import HolderInfo, Limiter
from tests.support.limiter import start_waiter
from tests.support.wait import wait_until

ATTEMPT = "b1:0:1"


def die(limiter: Limiter) -> None:
    """The holding process stops renewing without releasing (SIGKILL, power loss, partition)."""
    limiter.close()


def index(redis_client, key_prefix, name: str) -> dict[str, str]:
    return redis_client.hgetall(Keys(key_prefix).limiter_key(name))


def the_holder(limiter: Limiter):
    (holder,) = limiter.status().holders
    return holder


def test_the_creation_token_marks_its_holder_in_the_same_call(
    make_limiter, redis_client, key_prefix, monkeypatch
):
    limiter = make_limiter(concurrency=1)
    lease = limiter.acquire(HolderInfo(task_id="t", batch_id="b1", index=0))
    calls: list[str] = []
    real_call = limiter._call
    monkeypatch.setattr(limiter, "_call", lambda name, *a: calls.append(name) or real_call(name, *a))
    limiter.take_create_token(holder=lease, attempt=ATTEMPT)
    assert calls == ["token"]  # no extra round trip
    holder = the_holder(limiter)
    assert holder.attempt == ATTEMPT and holder.prediction_id is None and not holder.orphaned
    assert index(redis_client, key_prefix, "byattempt") == {ATTEMPT: lease.holder_id}
    assert lease.attempt == ATTEMPT
    with pytest.raises(ValueError):
        limiter.take_create_token(holder=lease)
    with pytest.raises(ValueError):
        limiter.take_create_token(attempt=ATTEMPT)


def test_a_holder_killed_between_its_token_and_its_prediction_id_keeps_its_slot(make_limiter):
    """SIGKILL inside the POST: the prediction may exist and run. Its slot must not go to new
    work at the end of the lease; the attempt's next execution takes it over by attempt."""
    dead = make_limiter(concurrency=1, lease=0.6)
    lease = dead.acquire(HolderInfo(task_id="a", batch_id="b1", index=0))
    dead.take_create_token(holder=lease, attempt=ATTEMPT)
    die(dead)
    time.sleep(1.0)  # well past the lease
    other = make_limiter(concurrency=1, lease=0.6)
    holder = the_holder(other)
    assert holder.orphaned and holder.attempt == ATTEMPT and holder.prediction_id is None
    with pytest.raises(AcquireTimeoutError):
        other.acquire(HolderInfo(task_id="new work"), timeout=0.5)
    # the next execution reconciles and finds the prediction the POST did create
    resumed = other.adopt(HolderInfo(task_id="resumer", batch_id="b1", index=0), "p-found", attempt=ATTEMPT)
    assert resumed is not None and resumed.fence > lease.fence
    holder = the_holder(other)
    assert (holder.holder_id, holder.prediction_id, holder.attempt) == (resumed.holder_id, "p-found", ATTEMPT)
    assert not holder.orphaned
    time.sleep(1.0)
    assert not resumed.lost


def test_adopt_prefers_the_prediction_and_falls_back_to_the_attempt(make_limiter, redis_client, key_prefix):
    limiter = make_limiter(concurrency=3, lease=0.6)
    by_pred = limiter.acquire(HolderInfo(task_id="p"))
    by_pred.set_prediction("p-1")
    by_attempt = limiter.acquire(HolderInfo(task_id="a"))
    limiter.take_create_token(holder=by_attempt, attempt=ATTEMPT)
    adopted = limiter.adopt(HolderInfo(task_id="x"), "p-1", attempt="b1:5:1")
    assert adopted is not None and by_pred.wait_lost(2)  # taken over by prediction ...
    assert not by_attempt.lost  # ... not the attempt's holder
    assert limiter.adopt(HolderInfo(task_id="y"), "p-unknown", attempt=ATTEMPT) is not None
    assert by_attempt.wait_lost(2)
    assert limiter.adopt(HolderInfo(task_id="z"), "p-other", attempt="other:0:1") is None
    assert limiter.status().in_use == 2
    # one entry per attempt and prediction, each pointing at a counted holder
    holders = {h.holder_id for h in limiter.status().holders}
    assert set(index(redis_client, key_prefix, "byattempt").values()) <= holders
    assert set(index(redis_client, key_prefix, "bypred").values()) <= holders


def test_settle_by_attempt_frees_the_orphan_of_a_creation_that_never_happened(
    make_limiter, redis_client, key_prefix
):
    dead = make_limiter(concurrency=1, lease=0.6)
    lease = dead.acquire(HolderInfo(task_id="a"))
    dead.take_create_token(holder=lease, attempt=ATTEMPT)
    die(dead)
    other = make_limiter(concurrency=1, lease=0.6)
    results: list = []
    start_waiter(other, "next", results, timeout=10)
    assert wait_until(lambda: other.status().holders and other.status().holders[0].orphaned, timeout=3)
    with pytest.raises(ValueError):
        other.settle()
    assert other.settle(attempt=ATTEMPT, orphaned_only=True) is True  # reconciled: nothing created
    assert other.settle(attempt=ATTEMPT) is False
    assert wait_until(lambda: len(results) == 1) and results[0][0] == "next"
    assert index(redis_client, key_prefix, "byattempt") == {}


def test_settle_orphaned_only_leaves_a_live_holder_alone(make_limiter):
    limiter = make_limiter(concurrency=1)
    lease = limiter.acquire(HolderInfo(task_id="a"))
    limiter.take_create_token(holder=lease, attempt=ATTEMPT)
    lease.set_prediction("p-live")
    assert limiter.settle("p-live", orphaned_only=True) is False
    assert limiter.settle(attempt=ATTEMPT, orphaned_only=True) is False
    assert limiter.status().in_use == 1 and not lease.lost


def test_set_prediction_keeps_the_attempt_marker(make_limiter, redis_client, key_prefix):
    limiter = make_limiter(concurrency=1)
    lease = limiter.acquire(HolderInfo(task_id="a"))
    limiter.take_create_token(holder=lease, attempt=ATTEMPT)
    lease.set_prediction("p-1")
    holder = the_holder(limiter)
    assert (holder.prediction_id, holder.attempt) == ("p-1", ATTEMPT)
    lease.set_prediction("p-2")  # a corrected id replaces the old one in the index
    assert index(redis_client, key_prefix, "bypred") == {"p-2": lease.holder_id}
    assert index(redis_client, key_prefix, "byattempt") == {ATTEMPT: lease.holder_id}
    lease.release()
    assert index(redis_client, key_prefix, "bypred") == {}
    assert index(redis_client, key_prefix, "byattempt") == {}


def test_abandon_turns_the_holder_into_an_orphan_at_once(make_limiter, redis_client, key_prefix):
    """An ambiguous POST: the prediction may exist. The slot stays counted, as an orphan, and
    neither a release nor a renewal already on its way gives it back or revives the lease."""
    limiter = make_limiter(concurrency=1, lease=0.6)
    lease = limiter.acquire(HolderInfo(task_id="a"))
    limiter.take_create_token(holder=lease, attempt=ATTEMPT)
    record = json.dumps(lease._record)
    lease.abandon()
    lease.abandon()  # idempotent
    lease.release()  # a no-op now: the slot stays counted on purpose
    assert lease.abandoned and not lease.released and lease not in limiter.held_leases()
    holder = the_holder(limiter)
    assert holder.orphaned and holder.abandoned and holder.attempt == ATTEMPT
    assert holder.expires_in > 0.6  # the orphan deadline, not a lease
    payload = {"h": [[lease.holder_id, lease.epoch, record]], "w": []}
    assert [int(r) for r in limiter._call("heartbeat", 600, json.dumps(payload))[0]] == [0]
    assert the_holder(limiter).orphaned
    time.sleep(1.0)  # more than a lease: still counted
    with pytest.raises(AcquireTimeoutError):
        limiter.acquire(HolderInfo(task_id="b"), timeout=0.3)
    assert limiter.settle(attempt=ATTEMPT, orphaned_only=True) is True
    assert limiter.status().in_use == 0 and index(redis_client, key_prefix, "byattempt") == {}


def test_abandon_without_a_marker_still_keeps_the_slot(make_limiter):
    limiter = make_limiter(concurrency=1, lease=0.6)
    lease = limiter.acquire(HolderInfo(task_id="a"))
    lease.abandon()
    time.sleep(1.0)
    holder = the_holder(limiter)
    assert holder.orphaned and holder.abandoned and holder.attempt is None


def test_abandon_never_raises_and_the_marker_still_keeps_the_slot(make_limiter, monkeypatch):
    limiter = make_limiter(concurrency=1, lease=0.6)
    lease = limiter.acquire(HolderInfo(task_id="a"))
    limiter.take_create_token(holder=lease, attempt=ATTEMPT)
    real_call = limiter._call

    def unreachable(name, *args):
        raise RedisUnavailableError("cut off")

    monkeypatch.setattr(limiter, "_call", unreachable)
    lease.abandon()  # logged, not raised
    monkeypatch.setattr(limiter, "_call", real_call)
    time.sleep(1.0)  # renewals stopped: the lease ran out, and the marker kept the slot
    holder = the_holder(limiter)
    assert holder.orphaned and holder.attempt == ATTEMPT


def test_release_after_a_token_frees_the_slot_and_the_index(make_limiter, redis_client, key_prefix):
    """A live holder that gives its slot back (the creation was refused, or its prediction
    ended) leaves nothing behind."""
    limiter = make_limiter(concurrency=2, lease=0.6, orphan_seconds=0.8)
    released = limiter.acquire(HolderInfo(task_id="r"))
    limiter.take_create_token(holder=released, attempt="r:0:1")
    forced = limiter.acquire(HolderInfo(task_id="f"))
    limiter.take_create_token(holder=forced, attempt="f:0:1")
    released.release()
    assert limiter.force_release(forced.holder_id)
    assert limiter.status().in_use == 0
    assert index(redis_client, key_prefix, "byattempt") == {}
    # and an orphan that reaches its deadline is cleaned up the same way
    dead = make_limiter(concurrency=2, lease=0.5, orphan_seconds=0.8)
    lease = dead.acquire(HolderInfo(task_id="d"))
    dead.take_create_token(holder=lease, attempt="d:0:1")
    die(dead)
    assert wait_until(lambda: limiter.status().in_use == 0, timeout=5)
    assert index(redis_client, key_prefix, "byattempt") == {}
    assert index(redis_client, key_prefix, "info") == {}


def test_nothing_brings_back_a_force_released_holder(make_limiter, redis_client, key_prefix):
    limiter = make_limiter(concurrency=1, lease=0.6)
    lease = limiter.acquire(HolderInfo(task_id="a"))
    assert limiter.force_release(lease.holder_id)
    assert not lease.set_prediction("p-late")  # the POST answered after the slot was taken away
    assert lease.lost
    with pytest.raises(LeaseLostError):  # no token for a holder that is gone: nothing reserved
        limiter.take_create_token(holder=lease, attempt=ATTEMPT)
    lease.abandon()
    assert limiter.status().in_use == 0 and limiter.status().creations_in_window == 0
    assert index(redis_client, key_prefix, "info") == {}
    assert index(redis_client, key_prefix, "byattempt") == {}
    assert limiter.adopt(HolderInfo(task_id="b"), "p-late", attempt=ATTEMPT) is None
