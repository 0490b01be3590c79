"""The creation in one call (workers/lua/attempt_create.lua, `CreationRecords.begin_at_once`):
when the creation token can be granted at once, the intent, the token (with the attempt's price
reserved and the slot marked with the attempt) and the last check before the POST are ONE
script, atomic: GO with everything written, or nothing written and the answer says why. A token
that needs a wait (busy) or a pause sends the creation to the three steps one by one, which can
sleep until a reserved grant. Real Redis, a real Limiter and Budget; the stand-in over HTTP where
a run creates."""

from __future__ import annotations

import json
import time

import pytest
import redis

from shared.budget import Budget, Reservation
from shared.errors import BudgetExceededError, LeaseLostError
from shared.keys import Keys
from shared.limiter import HolderInfo
from tests.support.attempt_path import MODEL, mark_running, record_batch, worker_context
from workers.attempts import AttemptRef, CreationRecords, Intent, PostVerdict
from workers.runner import AttemptRunner, Job

BATCH = "b-once"
REF = AttemptRef(BATCH, 0, 1)
INPUT = {"prompt": "a heron in the reeds"}
PRICE = 25_000  # micro-USD


@pytest.fixture
def world(settings, redis_client, redis_url, key_prefix, make_limiter):
    """A running attempt with its claim ("mine"), a held slot, and the store."""
    ledger, _ = record_batch(settings, redis_client, BATCH, ["a heron in the reeds"])
    mark_running(ledger, BATCH, 0)
    keys = Keys(key_prefix)
    redis_client.set(keys.claim(BATCH, 0, 1), "mine")
    limiter = make_limiter(concurrency=2, create_limit=3, window=60.0, lease=30.0)
    lease = limiter.acquire(HolderInfo(task_id="t", batch_id=BATCH, index=0), timeout=5)
    raw = redis.Redis.from_url(redis_url)
    world = World(ledger, keys, limiter, lease, CreationRecords(redis_client, keys), redis_client, raw)
    yield world
    raw.close()


class World:
    def __init__(self, ledger, keys, limiter, lease, store, client, raw):
        self.ledger, self.keys, self.limiter, self.lease = ledger, keys, limiter, lease
        self.store, self.client, self.raw = store, client, raw

    def begin(self, reservation: Reservation | None = None):
        reservation = reservation or Reservation(REF.marker, BATCH, PRICE)
        intent = Intent(MODEL, 0, json.dumps(INPUT))
        return self.store.begin_at_once(self.limiter, REF, "mine", self.lease, reservation, intent)

    def snapshot(self) -> dict[bytes, bytes | None]:
        """Every key of the test with its value (DUMP): "nothing written" is an equal snapshot."""
        prefix = self.keys.prefix
        found = set(self.raw.scan_iter(match=f"{prefix}*")) | set(self.raw.scan_iter(match=f"{{{prefix}*"))
        return {key: self.raw.dump(key) for key in sorted(found)}

    def holder(self) -> dict:
        return json.loads(self.client.hget(self.keys.limiter_key("info"), self.lease.holder_id))


def test_go_writes_the_intent_the_token_the_reservation_the_mark_and_posting_at(world):
    """Everything the three scripts wrote, in one call, with one Redis time."""
    before = world.client.time()
    check = world.begin()
    assert check is not None and check.verdict is PostVerdict.GO
    record = world.store.get(REF)
    assert record.model == MODEL and record.posting_marked and record.post_wait == 0
    assert record.intent_at == check.posting_at == record.posting_at  # one call, one time
    assert abs(check.posting_at - (before[0] + before[1] / 1e6)) < 2
    assert record.prediction_id is None
    assert world.client.zscore(world.keys.unresolved_creates(MODEL), REF.marker) == pytest.approx(
        record.intent_at
    )
    # the token: in the window, and the slot marked with the attempt (in Redis and on the lease)
    creates = world.client.zrange(world.keys.limiter_key("creates"), 0, -1)
    assert creates == [world.lease._create_token]
    assert world.holder()["attempt"] == REF.marker and world.lease.attempt == REF.marker
    assert world.client.hget(world.keys.limiter_key("byattempt"), REF.marker) == world.lease.holder_id
    # the price reserved, once
    assert Budget(world.client, world.keys).reservation(REF.marker) == PRICE
    # the input in the manifest's attempt record (while the item runs this attempt)
    [attempt] = world.ledger.manifest(BATCH)["items"][0]["attempts"]
    assert attempt["input"] == INPUT
    # an unused token goes back as one taken the slow way (a 429: nothing was created)
    world.limiter.give_back_create_token(world.lease)
    assert world.client.zcard(world.keys.limiter_key("creates")) == 0
    assert "attempt" not in world.holder()


@pytest.mark.parametrize(
    "spoil, verdict",
    [
        (lambda w: w.client.set(w.keys.claim(BATCH, 0, 1), "another run"), PostVerdict.LOST),
        (
            lambda w: w.client.hset(w.keys.attempt(BATCH, 0, 1), "prediction_id", "p-other"),
            PostVerdict.RECORDED,
        ),
        (lambda w: w.ledger.cancel(BATCH), PostVerdict.CANCELED),
        (lambda w: w.client.hset(w.keys.item(BATCH, 0), "attempt", 2), PostVerdict.MOVED_ON),
        (lambda w: w.client.hset(w.keys.item(BATCH, 0), "status", "pending"), PostVerdict.MOVED_ON),
    ],
    ids=["claim-lost", "recorded", "canceled", "moved-on", "not-running"],
)
def test_a_refused_last_check_writes_nothing(world, spoil, verdict):
    """The token could be granted, but the last check refuses: no intent, no token, no mark, no
    reservation, no input, no stamp (so nothing to give back)."""
    spoil(world)
    snapshot = world.snapshot()
    check = world.begin()
    assert check is not None and check.verdict is verdict and check.posting_at is None
    assert world.snapshot() == snapshot
    assert world.lease._create_token is None and world.lease.attempt is None


def test_a_token_that_needs_a_wait_writes_nothing_and_falls_back(world):
    """The window is full (busy), then creations are paused: None (the three steps will wait)."""
    for _ in range(3):
        world.limiter.take_create_token(timeout=1)
    snapshot = world.snapshot()
    assert world.begin() is None
    assert world.snapshot() == snapshot
    world.client.delete(world.keys.limiter_key("creates"))
    world.limiter.pause_creations(30, reason="429 on create")
    snapshot = world.snapshot()
    assert world.begin() is None
    assert world.snapshot() == snapshot
    assert world.lease._create_token is None and world.lease.attempt is None


def test_a_price_over_the_limit_is_refused_with_nothing_written(world):
    budget = Budget(world.client, world.keys)
    budget.set_batch_limit(BATCH, PRICE - 1)
    snapshot = world.snapshot()
    with pytest.raises(BudgetExceededError) as refused:
        world.begin()
    assert (refused.value.scope, refused.value.limit) == ("batch", PRICE - 1)
    assert world.snapshot() == snapshot
    budget.set_batch_limit(BATCH, PRICE)  # it fits exactly: granted
    assert world.begin().verdict is PostVerdict.GO


def test_a_slot_whose_lease_ran_out_is_refused_with_nothing_written(world):
    """The lease ran out in Redis while this run stalled (the slot may be another's by now)."""
    world.client.zadd(world.keys.limiter_key("holders"), {world.lease.holder_id: 1})
    snapshot = world.snapshot()
    with pytest.raises(LeaseLostError):
        world.begin()
    assert world.snapshot() == snapshot
    assert world.lease.lost


def test_another_grant_of_the_same_slot_is_refused(world):
    """The same holder id with another fence (a new grant of the slot): not this run's lease."""
    world.lease.fence += 1
    with pytest.raises(LeaseLostError):
        world.begin()


# --- a run: the fast path, and the fall-back when the window is full ------------------------------


def test_a_full_window_falls_back_to_the_steps_that_wait_and_each_image_is_created_once(
    settings, redis_client, sim
):
    """Two images, one creation per 3 s: the first is created in one call, the second finds the
    window full (busy), takes the three steps, sleeps until its reserved grant and creates once.
    Every item's manifest tells its input, and its prediction is recorded."""
    settings = settings.with_(create_limit=1, rate_window=3.0)
    ledger, _ = record_batch(settings, redis_client, "b-full", ["a heron", "an egret"])
    keys = Keys(settings.key_prefix)
    with worker_context(settings, sim) as ctx:
        steps: list[str] = []
        real_at_once, real_intent = ctx.creations.begin_at_once, ctx.creations.write_intent

        def at_once(*args, **kwargs):
            check = real_at_once(*args, **kwargs)
            steps.append("busy" if check is None else check.verdict.value)
            return check

        def write_intent(*args, **kwargs):
            steps.append("intent")
            return real_intent(*args, **kwargs)

        ctx.creations.begin_at_once, ctx.creations.write_intent = at_once, write_intent
        runner = AttemptRunner(ctx)
        began = time.monotonic()
        assert runner.run(Job("b-full", 0, 1, MODEL)) is None
        assert runner.run(Job("b-full", 1, 1, MODEL)) is None
        took = time.monotonic() - began
    assert steps == ["go", "busy", "intent"], steps
    assert took >= 3.0  # the second waited for its token: the window held
    for index in (0, 1):
        item = ledger.manifest("b-full")["items"][index]
        assert item["status"] == "succeeded", item
        assert item["attempts"][0]["input"]["prompt"] in ("a heron", "an egret")
        record = CreationRecords(redis_client, keys).get(AttemptRef("b-full", index, 1))
        assert record.posting_marked and record.prediction_id is not None and record.created_here
    assert sim.ledger(detail=False)["creations"] == 2
