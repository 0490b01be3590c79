"""The limiter against the real Redis server, within one process (threads).

Multi-process proofs (hammering, SIGKILL, clock skew, FIFO across processes, pause across
processes, a state loss) are in test_limiter_processes.py; rate limits changed at run time in
test_limiter_rates.py; Redis losing the state in test_limiter_recovery.py; the cost-safety
primitives (attempt markers, abandon, adopt/settle by attempt) in test_limiter_cost.py.
"""

from __future__ import annotations

import json
import math
import threading
import time

import pytest

from shared.errors import AcquireTimeoutError, LimiterError, RedisUnavailableError
from shared.keys import Keys
from shared.limiter import HolderInfo, Limiter, LimiterStatus
from tests.support.limiter import LIVE_LEASE, redis_now, start_waiter
from tests.support.limiter_checks import most_in_any_window, tightest_window
from tests.support.wait import wait_until


# --- slots --------------------------------------------------------------------------------------
def test_grants_up_to_the_limit_with_increasing_fences_and_idempotent_release(make_limiter):
    limiter = make_limiter(concurrency=2)
    a = limiter.acquire(HolderInfo(task_id="a"))
    b = limiter.acquire(HolderInfo(task_id="b"))
    assert b.fence > a.fence
    with pytest.raises(AcquireTimeoutError):
        limiter.acquire(HolderInfo(task_id="c"), timeout=0.2)
    a.release()
    a.release()  # idempotent: must not free a second slot
    with limiter.acquire(HolderInfo(task_id="c"), timeout=1) as c:
        assert c.fence > b.fence
        assert limiter.status().in_use == 2
        with pytest.raises(AcquireTimeoutError):
            limiter.acquire(HolderInfo(task_id="d"), timeout=0.1)
    assert c.released and limiter.status().in_use == 1


def test_release_wakes_the_waiter_without_polling(make_limiter):
    # recheck_interval is huge: only the wake signal can get the waiter in before its timeout
    limiter = make_limiter(concurrency=1, recheck_interval=600)
    held = limiter.acquire(HolderInfo(task_id="first"))
    results: list = []
    thread = start_waiter(limiter, "second", results, timeout=10)
    assert wait_until(lambda: limiter.status().waiters == 1)
    held.release()
    thread.join(5)
    assert results and results[0][0] == "second" and not isinstance(results[0][1], Exception)


def test_a_woken_waiter_reports_the_handoff_from_the_release(make_limiter, redis_client, key_prefix):
    limiter = make_limiter(concurrency=1, recheck_interval=600)
    held = limiter.acquire(HolderInfo(task_id="first"))
    assert held.handoff_seconds is None  # granted at once: nobody woke it
    results: list = []
    thread = start_waiter(limiter, "second", results, timeout=10)
    assert wait_until(lambda: limiter.status().waiters == 1)
    held.release()
    thread.join(5)
    lease = results[0][1]
    # both ends are Redis TIME inside the scripts: the release's and the grant's
    assert lease.handoff_seconds == pytest.approx(lease.granted_at - held.released_at, abs=0.0015)
    assert 0 <= lease.handoff_seconds < 10  # far under the 600 s recheck: the release woke it
    assert redis_client.hlen(Keys(key_prefix).limiter_key("woken")) == 0  # consumed by the grant
    lease.release()


def test_a_wake_that_does_not_lead_to_a_grant_leaves_no_handoff_record(
    make_limiter, redis_client, key_prefix
):
    """The plain wake, for a waiter without a record to be handed the slot with (since the direct
    hand-off of issue 16.4 a queued caller always leaves one; this ghost's is taken away, so the
    release only wakes it, as every release did before)."""
    limiter = make_limiter(concurrency=1, recheck_interval=600)
    woken = Keys(key_prefix).limiter_key("woken")
    held = limiter.acquire(HolderInfo(task_id="holder"))
    # a waiter of a process that is gone: woken by the release, never comes back
    limiter._call("acquire", "ghost-host:1:dead/1", 1500, json.dumps({"task_id": "ghost"}))
    redis_client.hdel(Keys(key_prefix).limiter_key("info"), "ghost-host:1:dead/1")
    held.release()
    assert redis_client.hkeys(woken) == ["ghost-host:1:dead/1"]
    assert wait_until(lambda: limiter.status().waiters == 0, timeout=3)  # pruned after waiter_ttl
    assert redis_client.hlen(woken) == 0


def test_a_dead_waiter_handed_the_slot_holds_it_only_its_short_lease(make_limiter, redis_client, key_prefix):
    """Direct hand-off: the release grants the slot to the head waiter in the same script. If
    that waiter's process is gone, the slot is its for min(waiter_ttl, lease) only (a dead waiter
    blocked the head of the line that long before), then the next one gets it; no record is
    left behind."""
    keys = Keys(key_prefix)
    limiter = make_limiter(concurrency=1, recheck_interval=600, waiter_ttl=0.6)
    held = limiter.acquire(HolderInfo(task_id="holder"))
    ghost = "ghost-host:1:dead/1"
    limiter._call("acquire", ghost, 1500, json.dumps({"task_id": "ghost"}))
    held.release()
    assert redis_client.zscore(keys.limiter_key("holders"), ghost) is not None  # handed over
    assert [h.task_id for h in limiter.status().holders] == ["ghost"] and limiter.status().waiters == 0
    assert redis_client.lrange(keys.limiter_key("wake:ghost-host:1:dead"), 0, -1)[0].startswith("{")
    started = time.monotonic()
    nxt = limiter.acquire(HolderInfo(task_id="next"), timeout=5)
    assert time.monotonic() - started < 0.6 + 0.5
    assert nxt.fence > held.fence and [h.task_id for h in limiter.status().holders] == ["next"]
    assert redis_client.hlen(keys.limiter_key("woken")) == 0
    assert redis_client.hkeys(keys.limiter_key("info")) == [nxt.holder_id]
    nxt.release()


def test_waiters_are_granted_in_arrival_order(make_limiter):
    limiter = make_limiter(concurrency=1)
    held = limiter.acquire(HolderInfo(task_id="holder"))
    order: list[str] = []

    def waiter(name):
        lease = limiter.acquire(HolderInfo(task_id=name), timeout=20)
        order.append(name)
        time.sleep(0.01)
        lease.release()

    threads = []
    for i in range(6):
        thread = threading.Thread(target=waiter, args=(f"w{i}",), daemon=True)
        thread.start()
        threads.append(thread)
        assert wait_until(lambda n=i + 1: limiter.status().waiters == n)
    held.release()
    for thread in threads:
        thread.join(10)
    assert order == [f"w{i}" for i in range(6)]


def test_a_waiter_that_gives_up_leaves_no_trace(make_limiter, redis_client, key_prefix):
    limiter = make_limiter(concurrency=1)
    held = limiter.acquire(HolderInfo(task_id="holder"))
    with pytest.raises(AcquireTimeoutError):
        limiter.acquire(HolderInfo(task_id="impatient"), timeout=0.2)
    stop = threading.Event()
    with pytest.raises(AcquireTimeoutError, match="should_stop"):
        threading.Timer(0.2, stop.set).start()
        limiter.acquire(HolderInfo(task_id="stopped"), should_stop=stop.is_set)
    keys = Keys(key_prefix)
    assert redis_client.zcard(keys.limiter_key("waiters")) == 0
    assert redis_client.zcard(keys.limiter_key("waiter_exp")) == 0
    assert limiter.status().waiters == 0
    held.release()
    # the line is empty, so the next caller gets the slot at once
    limiter.acquire(HolderInfo(task_id="next"), timeout=0).release()


def test_a_dead_waiter_is_pruned_and_does_not_block_the_line(make_limiter):
    limiter = make_limiter(concurrency=1)  # waiter_ttl 0.6 s
    held = limiter.acquire(HolderInfo(task_id="holder"))
    # A waiter of a process that no longer exists: registered, never refreshed, never woken.
    res = limiter._call("acquire", "ghost-host:1:dead/1", 1500, json.dumps({"task_id": "ghost"}))
    assert int(res[0]) == 0 and int(res[1]) == 0  # first in line
    results: list = []
    thread = start_waiter(limiter, "alive", results, timeout=10)
    assert wait_until(lambda: limiter.status().waiters == 2)
    held.release()  # the wake goes to the ghost; its registration expires; then "alive" is next
    thread.join(10)
    assert results and results[0][0] == "alive" and not isinstance(results[0][1], Exception)
    assert limiter.status().waiters == 0


def test_shrinking_admits_no_one_until_under_the_new_limit(make_limiter):
    limiter = make_limiter(concurrency=3)
    leases = [limiter.acquire(HolderInfo(task_id=f"h{i}")) for i in range(3)]
    limiter.set_limits(concurrency_limit=1)
    status = limiter.status()
    assert (status.concurrency_limit, status.in_use, status.free) == (1, 3, 0)
    assert status.utilisation == 3.0
    results: list = []
    thread = start_waiter(limiter, "w", results, timeout=10)
    assert wait_until(lambda: limiter.status().waiters == 1)
    leases[0].release()
    leases[1].release()
    time.sleep(0.3)
    assert results == []  # in_use 1 == limit 1: still waiting
    leases[2].release()
    thread.join(5)
    assert results and not isinstance(results[0][1], Exception)
    assert not any(lease.lost for lease in leases)


def test_growing_admits_waiters_at_once(make_limiter):
    limiter = make_limiter(concurrency=1, recheck_interval=600)
    limiter.acquire(HolderInfo(task_id="holder"))
    results: list = []
    threads = [start_waiter(limiter, f"w{i}", results, timeout=10) for i in range(3)]
    assert wait_until(lambda: limiter.status().waiters == 3)
    limiter.set_limits(concurrency_limit=4)
    for thread in threads:
        thread.join(5)
    assert len(results) == 3 and not any(isinstance(r[1], Exception) for r in results)
    assert limiter.status().in_use == 4


def test_limits_are_seeded_once_and_shared_by_every_limiter(make_limiter):
    first = make_limiter(concurrency=2, create_limit=5)
    first.status()
    first.acquire(HolderInfo()).release()  # seeds
    second = make_limiter(concurrency=9, create_limit=99)  # other settings: ignored, Redis wins
    assert (second.status().concurrency_limit, second.status().create_limit) == (2, 5)
    second.set_limits(concurrency_limit=7, create_limit=11, read_limit=13, rate_window=2.5)
    status = first.status()
    assert (status.concurrency_limit, status.create_limit, status.read_limit, status.rate_window) == (
        7,
        11,
        13,
        2.5,
    )


def test_set_limits_writes_only_the_limits_given(make_limiter, redis_client, key_prefix):
    """`producer limits set --create-limit 300` from a shell with default settings must not
    store the shell's concurrency (60) for the whole fleet."""
    limits_key = Keys(key_prefix).limiter_key("limits")
    shell = make_limiter(concurrency=60, create_limit=600, read_limit=3000, window=60)
    shell.set_limits(create_limit=300)
    assert redis_client.hgetall(limits_key) == {"create_limit": "300"}
    worker = make_limiter(concurrency=7, create_limit=5, read_limit=50, window=2)
    worker.acquire(HolderInfo(task_id="w")).release()  # seeds the rest from ITS settings
    assert redis_client.hgetall(limits_key) == {
        "create_limit": "300",
        "concurrency_limit": "7",
        "read_limit": "50",
        "rate_window_ms": "2000",
    }
    status = shell.status()
    assert (status.concurrency_limit, status.create_limit, status.read_limit, status.rate_window) == (
        7,
        300,
        50,
        2.0,
    )


BAD_LIMITS = [
    {"concurrency_limit": 0},
    {"concurrency_limit": 100_001},
    {"concurrency_limit": 1e20},
    {"concurrency_limit": True},
    {"create_limit": 1.5},
    {"create_limit": 1_000_001},
    {"read_limit": 0},
    {"read_limit": "10"},
    {"rate_window": 0.5},
    {"rate_window": 86_401},
    {"rate_window": math.nan},
    {"rate_window": math.inf},
]


@pytest.mark.parametrize("bad", BAD_LIMITS, ids=lambda b: f"{next(iter(b))}={next(iter(b.values()))!r}")
def test_limits_out_of_bounds_are_refused_before_anything_is_written(
    make_limiter, redis_client, key_prefix, bad
):
    limiter = make_limiter()
    limiter.acquire(HolderInfo()).release()
    limits_key = Keys(key_prefix).limiter_key("limits")
    before = redis_client.hgetall(limits_key)
    with pytest.raises(ValueError):
        limiter.set_limits(
            concurrency_limit=3, **bad
        ) if "concurrency_limit" not in bad else limiter.set_limits(**bad)
    assert redis_client.hgetall(limits_key) == before


@pytest.mark.parametrize(
    "changes",
    [
        {"concurrency_limit": 5, "create_limit": 0},  # one valid change first: still nothing written
        {"concurrency_limit": 1e20},
        {"create_limit": 2.5},
        {"read_limit": -1},
        {"rate_window_ms": 999},
        {"rate_window_ms": 86_400_001},
        {"rate_window_ms": "60000"},
        {"nonsense": 3},
    ],
)
def test_the_script_checks_limits_too_and_writes_nothing_on_error(
    make_limiter, redis_client, key_prefix, changes
):
    """Another client (an older CLI, a hand-written call) must not store what breaks every
    later script: the script refuses before its first write."""
    limiter = make_limiter()
    limiter.acquire(HolderInfo()).release()
    limits_key = Keys(key_prefix).limiter_key("limits")
    before = redis_client.hgetall(limits_key)
    with pytest.raises(LimiterError, match="limiter:"):
        limiter._call("set_limits", json.dumps(changes), 0)
    assert redis_client.hgetall(limits_key) == before
    limiter.acquire(HolderInfo()).release()  # and everything keeps working


def test_a_stored_value_out_of_bounds_is_replaced_not_obeyed(make_limiter, redis_client, key_prefix):
    """Left by a version that did not check: with concurrency 1e20 stored, every release used to
    fail. The scripts ignore it and write the caller's default instead."""
    limiter = make_limiter(concurrency=2)
    limits_key = Keys(key_prefix).limiter_key("limits")
    redis_client.hset(limits_key, mapping={"concurrency_limit": "1e+20", "rate_window_ms": "0"})
    lease = limiter.acquire(HolderInfo())
    lease.release()
    assert lease.released_at is not None  # the release script ran
    assert redis_client.hmget(limits_key, "concurrency_limit", "rate_window_ms") == ["2", "1000"]
    assert limiter.limits().concurrency_limit == 2


def test_settings_out_of_bounds_are_a_config_error(settings, redis_client, key_prefix):
    from shared.errors import ConfigError

    with pytest.raises(ConfigError, match="window"):
        Limiter.from_settings(redis_client, Keys(key_prefix), settings.with_(rate_window=0.1))
    with pytest.raises(ConfigError, match="concurrency"):
        Limiter.from_settings(redis_client, Keys(key_prefix), settings.with_(concurrency_limit=10**6))


def test_renewal_keeps_a_long_hold_and_force_release_is_noticed(make_limiter):
    limiter = make_limiter(concurrency=1, lease=LIVE_LEASE)
    lease = limiter.acquire(HolderInfo(task_id="long"))
    time.sleep(2.2 * LIVE_LEASE)  # more than two leases: only renewal keeps it
    assert not lease.lost and limiter.status().in_use == 1
    assert limiter.force_release(lease.holder_id) is True
    assert limiter.force_release(lease.holder_id) is False
    assert lease.wait_lost(timeout=LIVE_LEASE + 1.0)
    assert "force-released" in lease.lost_reason
    lease.release()  # still fine to call


def test_status_reports_holders_and_is_json_friendly(make_limiter):
    limiter = make_limiter(concurrency=3)
    lease = limiter.acquire(HolderInfo(host="h1", pid=42, task_id="t-1", batch_id="b", index=7, model="m/x"))
    lease.set_prediction("pred-123")
    limiter.take_create_token()
    limiter.take_read_token()
    status = limiter.status()
    assert isinstance(status, LimiterStatus)
    data = json.loads(json.dumps(status.to_dict()))
    assert (data["concurrency_limit"], data["in_use"], data["free"], data["waiters"]) == (3, 1, 2, 0)
    assert data["creations_in_window"] == 1 and data["reads_in_window"] == 1
    (holder,) = data["holders"]
    assert holder["host"] == "h1" and holder["pid"] == 42 and holder["task_id"] == "t-1"
    assert holder["prediction_id"] == "pred-123" and holder["index"] == 7
    assert holder["fence"] == lease.fence and holder["held_for"] >= 0
    assert 0 < holder["expires_in"] <= 1.5


def test_keeper_survives_an_outage_and_marks_leases_it_could_not_renew(make_limiter, monkeypatch):
    limiter = make_limiter(concurrency=2, lease=LIVE_LEASE)
    lease = limiter.acquire(HolderInfo(task_id="x"))
    real_call = limiter._call

    def broken(name, *args):
        if name == "heartbeat":
            raise RedisUnavailableError("simulated outage")
        return real_call(name, *args)

    monkeypatch.setattr(limiter, "_call", broken)
    assert lease.wait_lost(timeout=2 * LIVE_LEASE + 1.0)
    assert "could not renew" in lease.lost_reason
    monkeypatch.setattr(limiter, "_call", real_call)
    again = limiter.acquire(HolderInfo(task_id="y"), timeout=2)
    time.sleep(1.2 * LIVE_LEASE)  # longer than its lease: the same keeper thread renews it
    assert not again.lost


def test_keeper_survives_a_bug_of_its_own_and_keeps_renewing(make_limiter, monkeypatch):
    """A keeper thread that died would let leases expire under live predictions (over the limit)."""
    limiter = make_limiter(concurrency=1, lease=LIVE_LEASE)
    lease = limiter.acquire(HolderInfo(task_id="x"))
    agent = limiter._agent
    real_tick = agent._next_tick_in
    crashes = []

    def crash_once(now):
        if not crashes:
            crashes.append(now)
            raise RuntimeError("simulated bug in the keeper")
        return real_tick(now)

    monkeypatch.setattr(agent, "_next_tick_in", crash_once)
    time.sleep(
        2.2 * LIVE_LEASE
    )  # two leases after the crash (its first tick): only a keeper that came back keeps it
    assert crashes, "the keeper never ran the patched code"
    assert not lease.lost, lease.lost_reason
    assert limiter.status().in_use == 1


# --- rates ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("margin", [0.1, 0.25])
def test_creation_tokens_never_exceed_the_limit_in_any_window(make_limiter, redis_client, margin):
    """Checked twice: the grant times the script reserved (R+1 grants always span window+margin)
    and the moments callers actually went, read from Redis TIME right after take_create_token
    returned: no window holds more than R of those (the margin absorbs scheduling delays)."""
    window, rate = 1.0, 4
    limiter = make_limiter(create_limit=rate, window=window, rate_margin=margin)
    grants: list[float] = []
    went: list[float] = []
    lock = threading.Lock()

    def take():
        for _ in range(3):
            granted = limiter.take_create_token(timeout=10)
            now = redis_now(redis_client)
            with lock:
                grants.append(granted)
                went.append(now)

    threads = [threading.Thread(target=take) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(15)
    assert len(grants) == 12
    assert tightest_window(grants, rate) >= window + margin - 1e-5
    assert most_in_any_window(grants, window) == rate  # and the limit is actually used
    assert all(w >= g for g, w in zip(grants, went))  # nobody went before its grant time
    assert most_in_any_window(went, window) <= rate


def test_token_timeout_reserves_nothing_and_says_when_to_retry(make_limiter):
    limiter = make_limiter(read_limit=2, window=1.0)
    limiter.take_read_token()
    limiter.take_read_token()
    with pytest.raises(AcquireTimeoutError) as info:
        limiter.take_read_token(timeout=0.1)
    assert 0.1 < info.value.retry_after <= 1.25
    status = limiter.status()
    assert status.reads_in_window == 2 and status.reads_reserved == 0
    stop = threading.Event()
    threading.Timer(0.1, stop.set).start()
    with pytest.raises(AcquireTimeoutError, match="should_stop"):
        limiter.take_read_token(should_stop=stop.is_set)  # had a reservation: given back
    assert limiter.status().reads_reserved == 0


def test_pause_blocks_creations_not_reads_and_keeps_the_longest(make_limiter):
    limiter = make_limiter(create_limit=50, read_limit=50)
    until = limiter.pause_creations(0.8, reason="429 from replicate")
    assert limiter.pause_creations(0.1) == until  # a shorter pause does not cut it short
    status = limiter.status()
    assert status.pause_reason == "429 from replicate" and 0.5 < status.pause_seconds_left <= 0.8
    with pytest.raises(AcquireTimeoutError, match="paused"):
        limiter.take_create_token(timeout=0.2)
    limiter.take_read_token(timeout=0.1)
    granted = limiter.take_create_token(timeout=5)
    assert granted >= until


# --- a dead holder's prediction still runs: its slot stays counted --------------------------------
def die(limiter: Limiter) -> None:
    """The holding process stops renewing without releasing (SIGKILL, power loss, partition)."""
    limiter.close()


def test_a_dead_holders_running_prediction_keeps_its_slot_until_adopted(make_limiter):
    dead = make_limiter(concurrency=1, lease=0.6)
    lease = dead.acquire(HolderInfo(task_id="a", batch_id="b", index=0))
    lease.set_prediction("p-running")
    die(dead)
    time.sleep(1.0)  # well past the lease: without the prediction the slot would be free now

    other = make_limiter(concurrency=1, lease=LIVE_LEASE)
    status = other.status()
    assert (
        status.in_use == 1 and status.holders[0].orphaned and status.holders[0].prediction_id == "p-running"
    )
    with pytest.raises(AcquireTimeoutError):
        other.acquire(HolderInfo(task_id="new work"), timeout=0.5)  # no creation over the limit

    waiting: list = []
    start_waiter(other, "queued", waiting, timeout=10)  # queued first: adoption does not wait behind it
    assert wait_until(lambda: other.status().waiters == 1)
    resumed = other.adopt(HolderInfo(task_id="resumer", batch_id="b", index=0), "p-running")
    assert resumed is not None and resumed.fence > lease.fence
    status = other.status()
    assert status.in_use == 1 and not status.holders[0].orphaned and status.holders[0].task_id == "resumer"
    time.sleep(1.2 * LIVE_LEASE)
    assert not resumed.lost  # an adopted slot is an ordinary renewed lease
    assert other.adopt(HolderInfo(task_id="second"), "p-running").holder_id != resumed.holder_id  # one slot
    assert other.status().in_use == 1
    assert other.adopt(HolderInfo(task_id="x"), "p-unknown") is None


def test_settling_a_finished_prediction_frees_its_orphaned_slot_and_wakes_the_next(make_limiter):
    dead = make_limiter(concurrency=1, lease=0.6)
    dead.acquire(HolderInfo(task_id="a")).set_prediction("p-done")
    die(dead)
    other = make_limiter(concurrency=1, lease=0.6)
    results: list = []
    start_waiter(other, "next", results, timeout=10)
    time.sleep(1.0)
    assert results == [] and other.status().holders[0].orphaned
    assert other.settle("p-done") is True and other.settle("p-done") is False
    assert wait_until(lambda: len(results) == 1) and results[0][0] == "next"
    assert not isinstance(results[0][1], AcquireTimeoutError)


def test_an_orphaned_slot_is_freed_after_the_longest_a_prediction_can_run(make_limiter):
    dead = make_limiter(concurrency=1, lease=0.5, orphan_seconds=1.0)
    dead.acquire(HolderInfo(task_id="a")).set_prediction("p-forgotten")
    die(dead)
    other = make_limiter(concurrency=1, lease=0.5, orphan_seconds=1.0)
    time.sleep(0.8)
    assert other.status().in_use == 1
    lease = other.acquire(HolderInfo(task_id="later"), timeout=3)  # nothing is leaked for ever
    assert lease is not None


def test_a_holder_without_a_prediction_frees_its_slot_at_the_end_of_its_lease(make_limiter):
    dead = make_limiter(concurrency=1, lease=0.6)
    dead.acquire(HolderInfo(task_id="a"))  # died before creating anything
    die(dead)
    other = make_limiter(concurrency=1, lease=0.6)
    assert other.acquire(HolderInfo(task_id="b"), timeout=3) is not None


def test_a_cut_off_holder_keeps_its_slot_counted_until_its_prediction_ends(make_limiter):
    limiter = make_limiter(concurrency=1, lease=0.6)
    lease = limiter.acquire(HolderInfo(task_id="a"))
    lease.set_prediction("p-cut")
    agent = limiter._agent

    def unreachable(due, waiters, sent_at):  # this host lost Redis; its prediction goes on
        raise RedisUnavailableError("cut off")

    agent._heartbeat = unreachable
    assert lease.wait_lost(3)  # it learns it can no longer count on the slot ...
    other = make_limiter(concurrency=1, lease=0.6)
    # ... but the account still counts its prediction (the local deadline, measured from before
    # the last renewal, runs out a little before the lease in Redis does)
    assert wait_until(lambda: other.status().holders[0].orphaned, timeout=2)
    with pytest.raises(AcquireTimeoutError):
        other.acquire(HolderInfo(task_id="b"), timeout=0.5)
    lease.release()  # the prediction ended: its worker gives the slot back
    assert other.status().in_use == 0


def test_a_renewal_that_arrives_after_orphaning_makes_it_an_ordinary_lease_again(make_limiter):
    limiter = make_limiter(concurrency=1, lease=0.6)
    lease = limiter.acquire(HolderInfo(task_id="a"))
    lease.set_prediction("p-late")
    limiter._agent.remove_lease(lease.holder_id)  # renewals stop for a while
    time.sleep(1.0)
    assert limiter.status().holders[0].orphaned
    payload = {"h": [[lease.holder_id, lease.epoch, json.dumps(lease._record)]], "w": []}
    holder_results = limiter._call("heartbeat", 600, json.dumps(payload))[0]
    assert [int(r) for r in holder_results] == [1]
    holder = limiter.status().holders[0]
    assert not holder.orphaned and holder.holder_id == lease.holder_id and holder.expires_in <= 0.6
