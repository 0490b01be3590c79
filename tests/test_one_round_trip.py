"""Two moments of an attempt, each one round trip (issue 16.4), on the real Redis, at each of their
failure points: the prediction id (the attempt's record and the slot's id: attempt_record_slot.lua)
and the end (the slot released and the spend settled: the limiter's drop_settle.lua). Fused, the
two steps of a moment must still fail apart where they failed apart before."""

from __future__ import annotations

import pytest

from shared.budget import Budget, Reservation
from shared.keys import Keys
from shared.ledger import Ledger
from shared.limiter import HolderInfo, Limiter
from tests.support.attempt_path import MODEL, record_batch, worker_context
from tests.test_ledger import make_requests
from workers.attempts import AttemptRef, CreationRecords
from workers.runner import AttemptRunner, Job

REF = AttemptRef("b", 0, 1)


@pytest.fixture
def running(redis_client, key_prefix):
    """Item 0 of batch "b" running attempt 1; the creation records of the prefix."""
    ledger = Ledger(redis_client, Keys(key_prefix))
    assert ledger.create_batch("b", make_requests(1, "b"), output_root="/out", options={})
    ledger.transition("b", 0, "running", allowed_from=("pending",), attempt=1, attempt_update={"model": "m"})
    return ledger, CreationRecords(redis_client, Keys(key_prefix))


def creating(make_limiter):
    """A slot whose creation token marked it with the attempt (the moment before the POST)."""
    limiter = make_limiter(concurrency=1)
    lease = limiter.acquire(HolderInfo(task_id="t", batch_id="b", index=0))
    limiter.take_create_token(holder=lease, attempt=REF.marker)
    return limiter, lease


def slot_shows(limiter) -> str | None:
    (holder,) = limiter.status().holders
    return holder.prediction_id


# --- the prediction id: the record and the slot ------------------------------------------------
def test_the_prediction_is_recorded_and_shown_on_its_slot(make_limiter, running):
    ledger, records = running
    limiter, lease = creating(make_limiter)
    assert records.record_on_slot(REF, "p-1", lease)
    assert records.get(REF).prediction_id == "p-1" and records.get(REF).created_here
    assert ledger.item("b", 0).attempts[0].prediction_id == "p-1"
    assert slot_shows(limiter) == "p-1" and limiter.settle("p-1", orphaned_only=True) is False
    assert not lease.lost


def test_a_refused_record_leaves_the_slot_without_the_prediction(
    make_limiter, running, redis_client, key_prefix
):
    """Another attempt with the same input adopted the prediction between the POST's answer and
    this record: the record refuses, and the slot must not show (nor be found by) a prediction
    another attempt owns. Failed on a pipeline of the two scripts as they were: set_prediction
    ran whatever the record answered."""
    _, records = running
    limiter, lease = creating(make_limiter)
    owner = Keys(key_prefix).prediction_owner("p-1")
    redis_client.set(owner, "other:3:1")
    assert not records.record_on_slot(REF, "p-1", lease)
    assert redis_client.get(owner) == "other:3:1" and records.get(REF).prediction_id is None
    assert slot_shows(limiter) is None
    assert redis_client.hgetall(Keys(key_prefix).limiter_key("bypred")) == {}
    assert lease._record.get("prediction_id") is None  # not re-registered with it either
    assert not lease.lost


def test_a_failed_slot_part_never_costs_the_record(make_limiter, running, redis_client, key_prefix):
    """The limiter's part of the call fails (here its state key has a type no limiter version
    wrote): the record, what cost safety needs, is made all the same (the two steps apart, as
    before the fusion: the slot's failure logged). Failed on the fused call alone: the error
    escaped with nothing recorded."""
    ledger, records = running
    limiter, lease = creating(make_limiter)
    state = Keys(key_prefix).limiter_key("epoch")
    saved = redis_client.hgetall(state)
    redis_client.delete(state)
    redis_client.rpush(state, "not a state")
    try:
        assert records.record_on_slot(REF, "p-1", lease)
    finally:
        redis_client.delete(state)
        redis_client.hset(state, mapping=saved)
    assert records.get(REF).prediction_id == "p-1"
    assert ledger.item("b", 0).attempts[0].prediction_id == "p-1"
    assert lease._record["prediction_id"] == "p-1"  # re-registered with it, should Redis forget


# --- the end: the slot released and the spend settled -------------------------------------------
def test_the_end_releases_the_slot_and_settles_the_spend(make_limiter, redis_client, key_prefix):
    limiter = make_limiter(concurrency=1)
    budget = Budget(redis_client, Keys(key_prefix))
    lease = limiter.acquire(HolderInfo(task_id="t", batch_id="b", index=0))
    limiter.take_create_token(
        holder=lease, attempt=REF.marker, reservation=Reservation(REF.marker, "b", 25_000)
    )
    assert lease.release_settling(REF.marker)
    assert lease.released and limiter.status().in_use == 0
    assert budget.reservation(REF.marker) is None and budget.status().spent_today == 25_000
    assert not lease.release_settling(REF.marker)  # ended already: the caller would settle (a no-op)


def broken_at_the_end(settings, redis_client, sim, key: str, batch: str):
    """Run item 0 of `batch` (sync mode: the create answers with the end) with `key` turned into
    a list right after the prediction is recorded (a type no version writes: every script that
    reads it fails), and put back afterwards. Returns (slots in use, the attempt's reservation)."""
    record_batch(settings, redis_client, batch, ["a wren on a fence"])
    keys = Keys(settings.key_prefix)
    limiter = Limiter.from_settings(redis_client, keys, settings)
    saved: list[bytes] = []
    try:
        with worker_context(settings, sim, wait_mode="sync") as ctx:
            real = ctx.creations.record_on_slot

            def record_then_break(*args, **kwargs):
                recorded = real(*args, **kwargs)
                saved.append(redis_client.dump(key))
                redis_client.delete(key)
                redis_client.rpush(key, "not what the scripts wrote")
                return recorded

            ctx.creations.record_on_slot = record_then_break
            assert AttemptRunner(ctx).run(Job(batch, 0, 1, MODEL)) is None
        redis_client.delete(key)
        if saved[0] is not None:
            redis_client.restore(key, 0, saved[0])
        return limiter.status().in_use, Budget(redis_client, keys).reservation(f"{batch}:0:1")
    finally:
        limiter.close()


def test_a_failed_settle_never_keeps_the_slot(settings, redis_client, sim):
    """The budget's part of the end fails (its reservations' hash unreadable): the slot is given
    back all the same, at once (the reservation stays: the limit errs on the safe side). Failed
    with the settle first in the fused script: the error stopped the script before the release."""
    in_use, reserved = broken_at_the_end(
        settings, redis_client, sim, Keys(settings.key_prefix).limiter_key("budget:res"), "b-settle-fails"
    )
    assert in_use == 0 and reserved is not None


def test_a_failed_release_never_leaves_the_spend_unsettled(settings, redis_client, sim):
    """The limiter's part of the end fails (its state unreadable: the script stops before any
    write): the spend is settled all the same, by the run's own settle (the slot comes back when
    its lease runs out, or as an orphan the sweep settles, as with any release that fails).
    Failed with the fused call alone: the settle went down with the release."""
    in_use, reserved = broken_at_the_end(
        settings, redis_client, sim, Keys(settings.key_prefix).limiter_key("epoch"), "b-release-fails"
    )
    assert reserved is None and in_use == 1  # (released when its lease runs out)
