"""Redis work per step of an image, counted on a redis-server of the test's own (INFO
commandstats: every command, those inside Lua scripts included). Issue 16.4: the bench reports
the fleet's commands per image (BENCHMARKS.md, "Redis work per image"); these bounds keep each
step's share from creeping back: each is today's count, and failed on the code before the issue's
changes (the count then in each docstring). A change that needs more commands raises its bound
on purpose, with the reason."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
import redis

from bench.measure import command_delta, redis_commands, redis_round_trips
from shared.keys import Keys
from shared.ledger import Ledger
from shared.limiter import HolderInfo, Limiter, Limits
from shared.metrics.batched import BatchedCounters
from shared.metrics.recorder import MetricsRecorder
from shared.scheduler import Scheduler
from tests.test_ledger import make_requests


def commands(client: redis.Redis, step: Callable[[], object]) -> dict[str, int]:
    """The commands `step` sent (without the two INFOs that count them)."""
    before = redis_commands(client)
    step()
    delta = command_delta(before, redis_commands(client))
    delta["info"] = delta.get("info", 0) - 1
    return {name: n for name, n in delta.items() if n > 0}


def round_trips(client: redis.Redis, step: Callable[[], object]) -> int:
    """The round trips `step` made (without the INFO that counts them): the server's reads, as
    the steps here send one command or one pipeline at a time."""
    before = redis_round_trips(client)
    step()
    return redis_round_trips(client) - before - 1


@pytest.fixture
def client(private_redis):
    client = private_redis.client()
    yield client
    client.close()


def ledger_with_batch(client: redis.Redis, size: int = 2) -> Ledger:
    """A ledger holding batch "b" of `size` pending items."""
    ledger = Ledger(client, Keys("w"))
    assert ledger.create_batch("b", make_requests(size, "b"), output_root="/out", options={})
    return ledger


def start_attempt(ledger: Ledger, index: int) -> None:
    """Item `index` of batch "b" running its attempt 1, on model "m"."""
    ledger.transition(
        "b", index, "running", allowed_from=("pending",), attempt=1, attempt_update={"model": "m"}
    )


def succeed_attempt(ledger: Ledger, index: int, **options: Any) -> None:
    """Attempt 1 of item `index` of batch "b" succeeded on model "m" (options: the transition's
    own, e.g. expect_attempt=, release_claim=)."""
    ledger.transition(
        "b",
        index,
        "succeeded",
        fields={"error": None, "model": "m"},
        attempt=1,
        attempt_update={"status": "succeeded", "final": True},
        **options,
    )


def test_an_attempts_ledger_transitions(client):
    """Running, the input and the prediction id recorded, succeeded: 51 commands before, in four
    scripts (the item hash read and written field by field, the batch's counters one by one)."""
    ledger = ledger_with_batch(client)

    def attempt(index: int) -> None:
        start_attempt(ledger, index)
        ledger.update_attempt("b", index, 1, {"input": '{"prompt": "p"}'})
        ledger.update_attempt("b", index, 1, {"prediction_id": "p1"})
        succeed_attempt(ledger, index, expect_attempt=1)

    attempt(0)  # scripts loaded
    used = commands(client, lambda: attempt(1))
    assert ledger.item("b", 1).status == "succeeded" and ledger.batch("b").finished_at is not None
    assert sum(used.values()) <= 28, used
    assert used.get("hget", 0) == 0, used  # one HMGET per script, no field-by-field reads


def test_an_attempts_ledger_writes_are_two_transitions(client):
    """The run path's ledger writes of one attempt: running, then its end; the input rides on the
    creation's intent and the prediction id on its record (workers/lua/attempt_intent.lua,
    attempt_record.lua), so the manifest shows both as before, the input before any POST. Four
    ledger_transition calls per attempt before (two of them update_attempt's), and the record
    was SET NX + MULTI/HSET/HDEL/EXPIRE/EXEC: 8 round trips, now 4."""
    from workers.attempts import AttemptRef, CreationRecords

    ledger = ledger_with_batch(client)
    records = CreationRecords(client, Keys("w"))

    def attempt(index: int) -> None:
        ref = AttemptRef("b", index, 1)
        start_attempt(ledger, index)
        records.write_intent(ref, "m", 0, '{"prompt": "p"}')
        assert records.record_prediction(ref, f"p{index}", in_ledger=True)
        succeed_attempt(ledger, index, expect_attempt=1)

    attempt(0)  # scripts loaded
    used = commands(client, lambda: attempt(1))
    item = ledger.manifest("b")["items"][1]
    assert item["status"] == "succeeded", item
    assert item["attempts"][0]["input"] == {"prompt": "p"} and item["attempts"][0]["prediction_id"] == "p1"
    assert used.get("evalsha", 0) == 4, used  # the round trips: four scripts, nothing else
    assert set(used) <= {"evalsha", *LUA_ONLY}, used
    assert sum(used.values()) <= 38, used


def test_the_start_of_a_run_is_one_round_trip(client):
    """The stale check (HMGET), the claim (claim_take), the cancel flag (HGET), the running
    transition, the request (HGET) and the creation record (HGETALL) were six round trips before
    any work; workers/lua/attempt_start.lua does them in one, atomically. A duplicate finds the
    claim held and writes nothing; a stale attempt is told so."""
    from workers.attempts import AttemptRef
    from workers.claims import ClaimKeeper
    from workers.run_start import CLAIMED, OTHER, RUN, RunStarter

    ledger = ledger_with_batch(client)
    keeper = ClaimKeeper(client, ttl=30)
    starter = RunStarter(client, Keys("w"), keeper)
    first = starter.start(AttemptRef("b", 0, 1), "t0")  # script loaded
    assert first.verdict == RUN and first.claim is not None
    started: list = []
    used = commands(client, lambda: started.append(starter.start(AttemptRef("b", 1, 1), "t1")))
    (start,) = started
    assert start.verdict == RUN and start.claim is not None and start.record is not None
    assert start.request().index == 1 and ledger.item("b", 1).status == "running"
    assert used.get("evalsha", 0) == 1, used
    assert set(used) <= {"evalsha", *LUA_ONLY, "hget", "hgetall"}, used
    assert sum(used.values()) <= 13, used
    again: list = []
    duplicate = commands(client, lambda: again.append(starter.start(AttemptRef("b", 1, 1), "t2")))
    assert again[0].verdict == CLAIMED and again[0].claim is None
    assert "hset" not in duplicate and "hincrby" not in duplicate, duplicate
    assert starter.start(AttemptRef("b", 1, 2), "t3").verdict == OTHER
    for claim in (first.claim, start.claim):
        claim.release()


def test_the_end_of_a_run_releases_its_claim_in_the_same_round_trip(client):
    """The final transition and the claim's release were two scripts (ledger_transition,
    claim_release); the transition now releases the claim it is handed (if it still holds the
    token) in the same round trip. Another run's claim is never released."""
    from workers.claims import ClaimKeeper

    ledger = ledger_with_batch(client, 3)
    keeper = ClaimKeeper(client, ttl=30)
    claims = [keeper.try_claim(f"w:claim:b:{i}:1") for i in range(3)]
    assert all(claims)

    def end(index: int, token: str | None = None) -> None:
        claim = claims[index]
        assert claim is not None
        succeed_attempt(ledger, index, release_claim=(claim.key, token or claim.token))

    end(0)  # script loaded
    used = commands(client, lambda: end(1))
    assert used.get("evalsha", 0) == 1 and set(used) <= {"evalsha", *LUA_ONLY, "del"}, used
    assert client.get("w:claim:b:1:1") is None and client.get("w:claim:b:0:1") is None
    end(2, token="another run's")
    assert client.get("w:claim:b:2:1") is not None  # not this token's: left alone
    for claim in claims:
        assert claim is not None
        claim.release()


# Commands only the scripts send (the client never does, in an attempt's ledger writes).
LUA_ONLY = {"hmget", "hset", "hsetnx", "hdel", "hincrby", "zadd", "zrem", "zremrangebyscore", "time"}
LUA_ONLY |= {"expire", "set", "get"}


def test_a_workers_counters_cost_nothing_per_image(client):
    """A dozen increments per image were a dozen commands; added up in the process they are none
    until the interval's one write (each counter once)."""
    counters = BatchedCounters(client, interval=3600)
    metrics = MetricsRecorder(counters, Keys("w"))

    def images() -> None:
        for _ in range(50):
            metrics.slot_wait(0.01, "slot")
            metrics.handoff(0.002)
            metrics.slot_wait(0.01, "create")
            metrics.creation("m")
            metrics.prediction("m", "succeeded", 0.003)
            metrics.end_noticed("webhook")

    try:
        assert commands(client, images) == {}
        written = commands(client, counters.flush)
        assert written.get("hincrby", 0) + written.get("hincrbyfloat", 0) <= 13, written
    finally:
        counters.close()


def test_a_slot_taken_and_released(client):
    """acquire + release of a free slot nobody waits for: the prelude reads each key once, and the
    newcomer does not join the line only to leave it (46 before). 27 -> 21 with the limiter's
    layout 2: epoch, recovery marks and prune bound in one hash (one HMGET), and no prune while
    nothing can have expired (two ZRANGEBYSCOREs and the recovery HGET fewer per script)."""
    limiter = Limiter(client, Keys("w"), Limits(2, 600, 3000, 60.0), lease_seconds=600, orphan_seconds=1200)
    try:
        limiter.acquire(HolderInfo(task_id="warm"), timeout=5).release()
        used = commands(client, lambda: limiter.acquire(HolderInfo(task_id="t"), timeout=5).release())
    finally:
        limiter.close()
    assert sum(used.values()) <= 21, used


def test_a_heartbeat_reads_each_lease_once(client):
    """A process's heartbeat renewing 4 leases: one ZSCORE and one ZADD per lease. Before, each
    renewal read its score twice (8 ZSCOREs), and the script decoded every lease's info JSON, though
    only a lease from another epoch (Redis lost the state) is ever re-registered with it."""
    limiter = Limiter(client, Keys("w"), Limits(4, 600, 3000, 60.0), lease_seconds=600, orphan_seconds=1200)
    try:
        leases = [limiter.acquire(HolderInfo(task_id=f"t{i}"), timeout=5) for i in range(4)]
        payload = {
            "h": [[lease.holder_id, lease.epoch, json.dumps(lease._record)] for lease in leases],
            "w": [],
        }

        def heartbeat() -> list:
            return limiter._call("heartbeat", 600_000, json.dumps(payload))

        renewed = heartbeat()[0]
        used = commands(client, heartbeat)
        for lease in leases:
            lease.release()
    finally:
        limiter.close()
    assert [int(r) for r in renewed] == [1, 1, 1, 1]
    assert used.get("zscore", 0) == 4 and used.get("zadd", 0) == 4, used
    assert sum(used.values()) <= 13, used


def test_a_queued_image_costs_one_acquire_call(client, monkeypatch):
    """Direct hand-off (issue 16.4): the release grants the freed slot to the head waiter in the
    same script and the wake token carries the grant, so a queued caller calls acquire once (it
    called twice before: queued, then again when woken). Counted: the release and everything the
    waiter does until it holds the slot (the drop with the hand-off, the listener's BLMPOP, which
    was BLPOP + LPOP; the short handed-over lease is renewed with the process's next waiter
    refresh, not at once): 33 commands before, 23, 22 with the one-command pop, 21 as the hand-off
    reads the line one waiter past the free slots (it knows the line is empty without a ZCARD)."""
    limiter = Limiter(
        client,
        Keys("w"),
        Limits(1, 600, 3000, 60.0),
        lease_seconds=600,
        orphan_seconds=1200,
        recheck_interval=600,
    )
    calls: Counter[str] = Counter()
    real_call = limiter._call

    def counting(name: str, *args: object) -> object:
        calls[name] += 1
        return real_call(name, *args)

    monkeypatch.setattr(limiter, "_call", counting)
    waiters = Keys("w").limiter_key("waiters")

    def queue_behind_one() -> tuple[dict[str, int], list]:
        held = limiter.acquire(HolderInfo(task_id="first"), timeout=5)
        got: list = []
        waiter = threading.Thread(
            target=lambda: got.append(limiter.acquire(HolderInfo(task_id="queued"), timeout=10))
        )
        waiter.start()
        deadline = time.monotonic() + 5
        while client.zcard(waiters) == 0 and time.monotonic() < deadline:
            time.sleep(0.005)
        time.sleep(0.1)  # the listener blocks in BLPOP
        used = commands(client, lambda: (held.release(), waiter.join(10), time.sleep(0.1)))
        got[0].release()
        return used, got

    try:
        queue_behind_one()  # connections made, scripts loaded
        calls.clear()
        used, got = queue_behind_one()
    finally:
        limiter.close()
    assert got[0].handoff_seconds == 0.0
    assert calls["acquire"] == 2, calls  # one for each image: the first's, and the queued one's
    # 21, and one pop more if the listener's 2 s block happens to end meanwhile
    assert sum(used.values()) <= 22, used
    assert "lpop" not in used and used.get("blmpop", 0) <= 2, used


def test_a_creation_token_for_a_holder(client):
    """The creation token of a held slot (the check that the holder still holds its lease, the
    window, the holder marked as creating for its next attempt): 20 commands (EVALSHA included)
    after issue 16.4's layout 2, 16 now: the holder's info read once (holds() hands it on), the
    log counted once, the drop markers' expiry set when written instead of EXISTS + PTTL +
    PEXPIRE per grant. (A budget reservation adds the budget's own commands.)"""
    limiter = Limiter(client, Keys("w"), Limits(2, 600, 3000, 60.0), lease_seconds=600, orphan_seconds=1200)
    try:
        lease = limiter.acquire(HolderInfo(task_id="t"), timeout=5)
        limiter.take_create_token(timeout=5, holder=lease, attempt="b:0:1")
        used = commands(client, lambda: limiter.take_create_token(timeout=5, holder=lease, attempt="b:0:2"))
        lease.release()
    finally:
        limiter.close()
    assert sum(used.values()) <= 16, used


def test_the_prediction_id_is_one_round_trip(client):
    """The moment the POST answers: the prediction bound to its attempt (owner, creation record,
    the ledger's attempt record) and shown on the slot, in one script call
    (workers/lua/attempt_record_slot.lua). Two before (attempt_record.lua, then the limiter's
    set_prediction.lua with its own prelude): 2 EVALSHAs and 20 commands in all; 18 now (one
    EVALSHA, and one TIME: the record's time is the limiter's). The gain is mostly a round trip
    and a script call, what Redis's CPU goes to (BENCHMARKS.md), not commands."""
    from workers.attempts import AttemptRef, CreationRecords

    ledger = Ledger(client, Keys("w"))
    records = CreationRecords(client, Keys("w"))
    assert ledger.create_batch("b", make_requests(2, "b"), output_root="/out", options={})
    limiter = Limiter(client, Keys("w"), Limits(2, 600, 3000, 60.0), lease_seconds=600, orphan_seconds=1200)
    try:
        for index in (0, 1):
            ledger.transition("b", index, "running", allowed_from=("pending",), attempt=1)
        lease = limiter.acquire(HolderInfo(task_id="t"), timeout=5)
        limiter.take_create_token(timeout=5, holder=lease, attempt="b:0:1")
        assert records.record_on_slot(AttemptRef("b", 0, 1), "p0", lease)  # scripts loaded
        used = commands(client, lambda: records.record_on_slot(AttemptRef("b", 1, 1), "p1", lease))
        assert limiter.status().holders[0].prediction_id == "p1"
        lease.release()
    finally:
        limiter.close()
    assert used.get("evalsha", 0) == 1, used
    assert sum(used.values()) <= 18, used


def test_the_creation_before_its_post_is_one_round_trip(client):
    """The intent, the creation token (its price reserved, the slot marked with the attempt) and
    the last check before the POST (its `posting_at` stamp) were three scripts and three round
    trips per image: 3 EVALSHA and 42 commands in all (still so when the token needs a wait).
    When the token is free at once they are one script (workers/lua/attempt_create.lua): 1
    EVALSHA and 36 commands, the same writes (one TIME instead of three, the slot's lease read
    once instead of by the token and again by the last check)."""
    from shared.budget import Reservation
    from workers.attempts import AttemptRef, CreationRecords, Intent, PostVerdict

    keys = Keys("w")
    ledger = Ledger(client, keys)
    assert ledger.create_batch("b", make_requests(4, "b"), output_root="/out", options={})
    records = CreationRecords(client, keys)
    limiter = Limiter(client, keys, Limits(4, 600, 3000, 60.0), lease_seconds=600, orphan_seconds=1200)

    def creation(index: int, at_once: bool) -> None:
        ledger.transition("b", index, "running", allowed_from=("pending",), attempt=1)
        client.set(f"w:claim:b:{index}:1", "mine")
        lease = limiter.acquire(HolderInfo(task_id=f"t{index}"), timeout=5)
        ref = AttemptRef("b", index, 1)
        reservation, intent = Reservation(ref.marker, "b", 1000), Intent("m", 0, '{"prompt": "p"}')

        def steps() -> None:
            if at_once:
                check = records.begin_at_once(limiter, ref, "mine", lease, reservation, intent)
                assert check is not None and check.verdict is PostVerdict.GO
                return
            records.write_intent(ref, *intent)
            limiter.take_create_token(timeout=5, holder=lease, attempt=ref.marker, reservation=reservation)
            assert records.begin_post(ref, "mine", (lease.holder_id, lease.fence)).verdict is PostVerdict.GO

        used[at_once] = commands(client, steps)

    used: dict[bool, dict[str, int]] = {}
    try:
        for index in range(4):  # 0 and 1: scripts loaded
            creation(index, at_once=index % 2 == 0)
    finally:
        limiter.close()
    steps, at_once = used[False], used[True]
    assert steps["evalsha"] == 3 and at_once["evalsha"] == 1, (steps, at_once)
    assert sum(at_once.values()) <= 36 < sum(steps.values()), (steps, at_once)


def test_the_end_is_one_round_trip(client):
    """The moment the prediction's end is known: the slot released and the attempt's reservation
    settled, in one script call (the limiter's drop_settle.lua). Two before (drop.lua, then the
    budget's settle.lua with its own prelude): 2 EVALSHAs and 18 commands in all (measured here
    side by side), 17 now: the gain is a round trip and a script call, not commands."""
    from shared.budget import Budget, Reservation

    limiter = Limiter(client, Keys("w"), Limits(2, 600, 3000, 60.0), lease_seconds=600, orphan_seconds=1200)
    budget = Budget(client, Keys("w"))

    def held(marker: str):
        lease = limiter.acquire(HolderInfo(task_id=marker), timeout=5)
        reservation = Reservation(marker, "b", 25_000)
        limiter.take_create_token(timeout=5, holder=lease, attempt=marker, reservation=reservation)
        return lease

    try:
        held("b:0:1").release_settling("b:0:1")  # scripts loaded
        budget.load()
        limiter.acquire(HolderInfo(task_id="warm"), timeout=5).release()
        lease = held("b:1:1")
        used = commands(client, lambda: lease.release_settling("b:1:1"))
        apart = held("b:2:1")
        before = commands(client, lambda: (apart.release(), budget.settle("b:2:1")))
    finally:
        limiter.close()
    assert budget.reservation("b:1:1") is None and budget.status().spent_today == 3 * 25_000
    assert before.get("evalsha", 0) == 2, before
    assert used.get("evalsha", 0) == 1, used
    assert sum(used.values()) <= 17, used


def test_a_send_held_and_fed(client):
    """push + take of one send (40 before; 36 until the take read the due zset once when nothing
    is due and stopped counting the broker's step-9 list, which the feeder never fills: 34); a
    take with nothing to take reads no broker list, and with nothing due no range of due sends."""
    ledger_with_batch(client)
    scheduler = Scheduler(client, Keys("w"))
    scheduler.push("b", [(0, 1, "m")])
    scheduler.take("q", window=8)
    used = commands(client, lambda: (scheduler.push("b", [(1, 1, "m")]), scheduler.take("q", window=8)))
    empty = commands(client, lambda: scheduler.take("q", window=8))
    assert sum(used.values()) <= 34, used
    assert used["llen"] <= 3, used
    assert "llen" not in empty, empty
    assert "zrangebyscore" not in empty and empty["zrange"] <= 4, empty


def test_a_models_usual_duration_is_read_once_per_few_seconds(client):
    """A run reads the model's usual duration twice (its sync wait, its first poll) and records
    it once: three commands per image before; a process keeps it for a few seconds, and writes
    its average at most that often."""
    from workers.latencies import SMOOTHING, ModelLatencies

    other = ModelLatencies(client, "w:latency")  # another process
    latencies = ModelLatencies(client, "w:latency")
    assert latencies.expected("m") is None
    other.record("m", 2.0)
    assert other.expected("m") == 2.0

    def images() -> None:
        for _ in range(20):
            latencies.expected("m")
            latencies.expected("m")
            latencies.record("m", 4.0)

    used = commands(client, images)
    # No read within `fresh` s of the last one: the process smooths onto the value it saw (none
    # yet here, so it starts from its own durations; the other process's 2.0 is overwritten).
    # Written once: the first update at once, the next ones at most once per `fresh` s (one
    # HSET per image before).
    assert used == {"hset": 1}, used
    fresh = ModelLatencies(client, "w:latency", fresh=0)
    assert commands(client, lambda: fresh.expected("m")) == {"hget": 1}
    assert fresh.expected("m") == pytest.approx(4.0)
    latencies.fresh = 0
    latencies.record("m", 9.0)
    assert fresh.expected("m") == pytest.approx((1 - SMOOTHING) * 4.0 + SMOOTHING * 9.0)


def test_a_broker_message_delivered_and_acknowledged(private_redis, client):
    """kombu's bookkeeping of one message, delivered unacknowledged and then acknowledged
    (workers.kombu_patches): one script call each, the same keys as kombu's own (10 commands
    before, 8 of them sent by the client: MULTI, EVAL, HSET, EXEC, MULTI, ZREM, HDEL, EXEC)."""
    from kombu import Connection

    from workers import kombu_patches

    kombu_patches.apply()
    with Connection(private_redis.url) as connection:
        queue = connection.SimpleQueue("work-q")
        queue.put({"n": 0})
        queue.get(timeout=5).ack()  # warm: bindings, script cache
        queue.put({"n": 1})

        def deliver_and_ack() -> None:
            message = queue.get(timeout=5)
            assert client.zcard("unacked_index") == 1 and client.hlen("unacked") == 1
            message.ack()

        used = commands(client, deliver_and_ack)
        queue.close()
    used.pop("zcard"), used.pop("hlen")  # the test's own reads
    assert client.zcard("unacked_index") == 0 and client.hlen("unacked") == 0
    # Delivery: the list's pop (as kombu), then EVALSHA (TIME, ZADD, HSET); ack: EVALSHA (ZREM, HDEL).
    assert used.get("multi", 0) == 0 and used.get("exec", 0) == 0, used
    assert used["evalsha"] == 2, used
    assert sum(n for name, n in used.items() if name not in ("rpop", "lpop", "brpop", "llen")) <= 7, used


def test_a_wake_takes_every_pushed_token_in_one_round_trip(client):
    """A process's wake listener (shared.wakeup) took a wake in two round trips: BLPOP for the
    first token, then an LPOP draining the rest (~1.9 LPOP per image beside 2.9 BLPOP in the
    bench). One BLMPOP with a count takes them all now: three waiters woken by one push cost the
    push and one pop."""
    from shared.wakeup import WakeListener, blocking_client

    listener = WakeListener(blocking_client(client), "w:wake:test", name="wake-test")
    events = {waiter: listener.register(waiter) for waiter in ("a", "b", "c")}
    try:
        time.sleep(0.2)  # the listener blocks in Redis
        pushed = json.dumps({"w": "c", "grant": "1"})

        def wake_all() -> None:
            client.rpush("w:wake:test", "a", "b", pushed)
            assert all(event.wait(1) for event in events.values())
            time.sleep(0.05)  # the listener's next pop (blocking) is counted once served

        used = commands(client, wake_all)
    finally:
        listener.stop()
    assert listener.take_payload("c") == {"w": "c", "grant": "1"}
    # (one pop more only if the listener's 2 s block ended meanwhile: a stall of the machine)
    assert used.pop("rpush") == 1 and 1 <= used.pop("blmpop") <= 2 and used == {}, used


def test_a_wake_listener_without_blmpop_pops_as_before(client, monkeypatch):
    """A server before Redis 7.0 has no BLMPOP: the listener says so once and pops with BLPOP +
    LPOP (the server's answer stood in for, on a 7.x server)."""
    from shared.wakeup import WakeListener

    def unknown(*args: object, **kwargs: object) -> None:
        raise redis.ResponseError("unknown command 'BLMPOP', with args beginning with: ")

    listen = redis.Redis(connection_pool=client.connection_pool)
    monkeypatch.setattr(listen, "blmpop", unknown)
    listener = WakeListener(listen, "w:wake:old", name="wake-old")
    events = [listener.register(waiter) for waiter in ("a", "b")]
    try:
        client.rpush("w:wake:old", "a", "b")
        assert all(event.wait(5) for event in events)
    finally:
        listener.stop()
    assert not listener._blmpop


def test_a_webhooks_news_costs_the_worker_no_read_and_no_clean_up(client):
    """The end of a watched prediction, from the watch to the watch closed: the worker's watch
    script, the receiver's notify script and the listener's pop. The worker then read the stored
    prediction (GET) and deleted it with the watch (DEL): five round trips and 11 commands, now
    three and 10, as the wake token carries the prediction and the notify ends the watch (its
    DEL inside the script). Arrived before the watch: the watch script takes it, and nothing is
    left to delete either."""
    from workers.completions import CompletionBoard

    keys = Keys("w")
    worker, receiver = CompletionBoard(client, keys), CompletionBoard(client, keys)
    finished = {"id": "p1", "status": "succeeded", "output": ["https://replicate.delivery/p1/out.png"]}

    def watched_then_finished(pid: str) -> dict | None:
        with worker.watch(pid) as watch:
            time.sleep(0.1)  # the listener blocks in Redis
            assert receiver.notify({**finished, "id": pid}) is True
            return watch.wait(5)

    try:
        watched_then_finished("p0")  # scripts loaded, the listener started
        got: list = []
        used = commands(client, lambda: got.append(watched_then_finished("p1")))
        assert got[0] is not None and got[0]["output"] == finished["output"]
        # The listener's blocking pop may fall outside this window in INFO commandstats (it
        # blocked before the window opened; CI saw 0 once in a few runs), or twice inside it (its
        # 2 s block ended meanwhile): 0 to 2, and never a draining LPOP after it.
        assert used.pop("blmpop", 0) <= 2 and "lpop" not in used, used
        assert sum(used.values()) <= 9 and used["evalsha"] == 2, used
        assert client.pttl(keys.completion("p1")) <= 60_000 and not client.exists(keys.completion_watch("p1"))

        assert receiver.notify({**finished, "id": "p2"}) is False
        early = commands(client, lambda: worker.watch("p2").close())
        assert early == {"evalsha": 1, "get": 1, "del": 1}, early  # the script's GET and DEL
        assert not client.exists(keys.completion("p2"), keys.completion_watch("p2"))
    finally:
        worker.close()


def test_a_webhook_delivery_is_one_script(private_redis, client, tmp_path):
    """A terminal delivery at the receiver: its replay check was a SET NX of its own before the
    notify script (two round trips, and a DEL to undo it when the script failed); it rides in the
    script now. A replay changes nothing and is still answered 200. The outcome's counter was an
    HINCRBY of its own (a third round trip); it is added up in the process and written every few
    seconds, as a worker's counters are."""
    from replicate_sim.webhooks import new_secret, sign
    from shared.settings import Settings
    from workers.webhook_receiver import WebhookReceiver

    settings = Settings.load(
        {
            "redis_url": private_redis.url,
            "key_prefix": "w",
            "output_dir": tmp_path,
            "replicate_api_token": "r8_x",
        },
        environ={},
        dotenv_path=None,
    )
    secret = new_secret()
    receiver = WebhookReceiver(settings, redis_client=client, secret=secret, metrics_interval=3600)

    def deliver(pid: str, webhook_id: str) -> tuple[int, str]:
        body = json.dumps({"id": pid, "status": "succeeded", "output": ["https://replicate.delivery/x.png"]})
        ts = int(time.time())
        headers = {
            "webhook-id": webhook_id,
            "webhook-timestamp": str(ts),
            "webhook-signature": sign(secret, webhook_id, ts, body),
            "content-type": "application/json",
        }
        return receiver.handle(headers, body.encode())

    client.set(Keys("w").completion_watch("p1"), "w:completion-wake:a-worker")  # a worker waits for p1
    deliver("p0", "msg_0")  # scripts loaded
    answers: list = []
    used = commands(client, lambda: answers.append(deliver("p1", "msg_1")))
    assert answers == [(200, "ok")]
    assert used.get("evalsha") == 1 and sum(used.values()) <= 7, used  # SET NX, GET, SET, RPUSH, PEXPIRE, DEL
    replay = commands(client, lambda: answers.append(deliver("p1", "msg_1")))
    assert answers[-1] == (200, "already received")
    assert replay == {"evalsha": 1, "set": 1}, replay
    client.set(Keys("w").completion_watch("p2"), "w:completion-wake:a-worker")
    assert round_trips(client, lambda: deliver("p2", "msg_2")) == 1
    written = commands(client, receiver._counters.flush)
    assert written == {"hincrby": 2}, written  # accepted 3, duplicate 1: one write each


def test_an_output_written_asks_nothing_before_it_is_written(client, tmp_path):
    """An output's write: whether this item wrote the key before (HEXISTS) was asked before every
    write, a round trip per image for a rare case; it is asked only when other bytes are there.
    The record of what was written is one pipelined round trip. An item still replaces its own
    earlier output, never another's."""
    from types import SimpleNamespace

    from shared.errors import OutputExistsError
    from shared.storage.local import LocalStore
    from shared.storage.location import parse_location
    from workers.attempts import AttemptRef
    from workers.outputs import OutputSaver
    from workers.stage import WaitBudget

    budget = WaitBudget(countdown_cap=60, slot_wait=5, recheck_interval=5, max_rechecks=1)
    saver = OutputSaver(SimpleNamespace(keys=Keys("w"), redis=client), budget=budget)  # type: ignore[arg-type]
    store = LocalStore(parse_location(str(tmp_path)))
    png = b"\x89PNG\r\n\x1a\n"
    assert (
        round_trips(client, lambda: saver._write(AttemptRef("b", 0, 1), store, "a.png", png + b"0", False))
        == 1
    )
    saver._write(AttemptRef("b", 0, 2), store, "a.png", png + b"2", False)  # its own: replaced
    assert (tmp_path / "a.png").read_bytes() == png + b"2"
    with pytest.raises(OutputExistsError):
        saver._write(AttemptRef("b", 1, 1), store, "a.png", png + b"1", False)  # another item's
    assert (tmp_path / "a.png").read_bytes() == png + b"2"


def test_a_delivered_message_nudges_the_feeder_in_its_own_script(private_redis, client, monkeypatch):
    """The feeder learns that a worker took a message (room in the broker) from a token on its
    wake list. The task pushed it when it started (RPUSH, a round trip per image); the script
    that records the delivery pushes it now, capped as the feeder's other wakes are."""
    from kombu import Connection

    from shared.scheduler import WAKE_TOKENS_KEPT, feeder_wake_key
    from workers import kombu_patches

    kombu_patches.apply()
    wake = feeder_wake_key(Keys("w"))
    monkeypatch.setattr(kombu_patches._FeederWake, "key", None)
    kombu_patches.wake_feeder_on_delivery(wake, WAKE_TOKENS_KEPT)
    with Connection(private_redis.url) as connection:
        queue = connection.SimpleQueue("work-q")
        for n in range(WAKE_TOKENS_KEPT + 3):
            queue.put({"n": n})
        queue.get(timeout=5).ack()  # warm: bindings, script cache
        client.delete(wake)
        used = commands(client, lambda: queue.get(timeout=5))
        assert used["evalsha"] == 1 and used["rpush"] == 1, used  # inside the delivery's script
        assert client.llen(wake) == 1
        for _ in range(WAKE_TOKENS_KEPT + 1):
            queue.get(timeout=5)
        queue.close()
    assert client.llen(wake) == WAKE_TOKENS_KEPT


def test_an_idle_feeder_renews_its_lock_in_the_request_that_waits(private_redis, client, tmp_path):
    """The feeding process with nothing to feed (workers.feeder): per second one request, the
    lock's renewal, the wait on its wake list and the take after it (3 before: the renewal, the
    take, the wait), and the lock stays held."""
    from shared.scheduler import broker_lists
    from shared.settings import Settings
    from workers.dispatch import producer_app
    from workers.feeder import LOCK_SECONDS, Feeder, FeederThread

    values = {
        "redis_url": private_redis.url,
        "key_prefix": "w",
        "queue": "w-q",
        "output_dir": tmp_path / "output",
        "replicate_api_token": "r8_test_token_not_real",
    }
    settings = Settings.load(values, environ={}, dotenv_path=None)

    def queued() -> int:
        return sum(client.llen(name) for name in broker_lists(settings.queue))

    feeder = FeederThread(Feeder(settings, client, producer_app(settings))).start()
    try:
        time.sleep(1.5)  # the lock taken, the scripts loaded
        assert feeder.leading
        trips = round_trips(client, lambda: time.sleep(5.0))
        assert trips <= 6, trips  # 15-16 before
        lock = feeder.feeder.scheduler.feeder_lock
        assert client.get(lock) == feeder.token and client.pttl(lock) > (LOCK_SECONDS - 1.2) * 1000
        client.script_flush()  # as after a restart: the renewal that rides with a wait loads it again
        time.sleep(LOCK_SECONDS + 0.5)
        assert feeder.leading and client.get(lock) == feeder.token
        ledger_with_batch(client)
        Scheduler(client, Keys("w")).push("b", [(0, 1, "m")])
        began = time.monotonic()  # the push nudges the wait: the take behind it sends at once
        while not queued() and time.monotonic() - began < 2.0:
            time.sleep(0.01)
        assert queued() == 1 and time.monotonic() - began < 0.5
    finally:
        feeder.stop()


def test_a_workers_presence_is_one_request(client, tmp_path):
    """A worker process publishes its wait mode every PUBLISH_EVERY s (shared.presence): one
    script that stamps it on Redis's clock (TIME then HSET from the client before: 2 requests),
    read back as before."""
    from shared.presence import live_modes, publish
    from shared.settings import Settings

    settings = Settings.load(
        {
            "redis_url": "redis://unused",
            "key_prefix": "w",
            "output_dir": tmp_path,
            "replicate_api_token": "r8_x",
        },
        environ={},
        dotenv_path=None,
    )
    publish(client, Keys("w"), settings)  # the script loaded
    assert round_trips(client, lambda: publish(client, Keys("w"), settings)) == 1
    sec, usec = client.time()
    (mode,) = live_modes(client, Keys("w"))
    assert mode.mode == settings.wait_mode_in_use and mode.sync_wait_max == settings.sync_wait_max
    assert 0 <= sec + usec / 1e6 - mode.seen < 1.0
