"""Spending limits (shared.budget): money in micro-dollars, the reservation in the creation
token's round trip, settle / release, held items and their wake-up, racing processes."""

from __future__ import annotations

import dataclasses
import multiprocessing
import random
import uuid
from datetime import date
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.budget import Budget, Reservation, parse_usd, price_micro, usd
from shared.errors import BudgetExceededError, ConfigError
from shared.keys import Keys
from shared.limiter import HolderInfo, Limiter
from shared.settings import Settings
from tests.support.redis_db import delete_prefix


@pytest.mark.unit
def test_money_is_integer_micro_dollars():
    assert parse_usd("0.50") == 500_000
    assert parse_usd("$20") == 20_000_000
    assert parse_usd(5) == 5_000_000
    assert price_micro(0.025) == 25_000
    assert price_micro(0.1 + 0.2) == 300_001  # rounded up: a reservation never under the price
    assert usd(500_000) == "0.50" and usd(12_500) == "0.0125" and usd(20_000_000) == "20.00"
    for bad in ("-1", "nan", "inf", "abc", "0.0000001", "1e9"):
        with pytest.raises(ValueError):
            parse_usd(bad)


@pytest.mark.unit
def test_daily_budget_setting():
    s = Settings.load(environ={"REPLICATE_DAILY_BUDGET": "12.5"}, dotenv_path=None)
    assert s.daily_budget == Decimal("12.5") and s.daily_budget_micro == 12_500_000
    assert s.as_env()["REPLICATE_DAILY_BUDGET"] == "12.5"
    with pytest.raises(ConfigError):
        Settings.load(environ={"REPLICATE_DAILY_BUDGET": "-3"}, dotenv_path=None)
    assert Settings.load(environ={}, dotenv_path=None).daily_budget_micro is None


def _take(limiter: Limiter, marker: str, batch: str, amount: int, daily: int | None = None) -> None:
    limiter.take_create_token(timeout=5, reservation=Reservation(marker, batch, amount, daily))


def test_token_reserves_in_the_same_call_and_refuses_past_the_batch_limit(
    make_limiter, redis_client, key_prefix
):
    limiter = make_limiter(create_limit=1000)
    budget = Budget(redis_client, Keys(key_prefix))
    budget.set_batch_limit("b1", parse_usd("0.05"))
    _take(limiter, "b1:0:1", "b1", 25_000)
    _take(limiter, "b1:1:1", "b1", 25_000)
    _take(limiter, "b1:1:1", "b1", 25_000)  # the same attempt asking again reserves nothing more
    with pytest.raises(BudgetExceededError) as exc:
        _take(limiter, "b1:2:1", "b1", 25_000)
    assert str(exc.value) == "batch limit 0.05 USD reached" and exc.value.scope == "batch"
    assert budget.batch("b1").reserved == 50_000
    # settled to what it cost; released when nothing was created: room for the third
    assert budget.settle("b1:0:1") == 25_000
    assert budget.settle("b1:0:1") is None  # once
    assert budget.release("b1:1:1")
    spend = budget.batch("b1")
    assert (spend.spent, spend.reserved, spend.left) == (25_000, 0, 25_000)
    _take(limiter, "b1:2:1", "b1", 25_000)
    assert budget.batch("b1").left == 0
    # a batch without a limit spends without one, but its spend is counted
    _take(limiter, "b2:0:1", "b2", 10_000)
    assert budget.batch("b2").limit is None and budget.batch("b2").reserved == 10_000


def test_daily_budget_seeded_from_settings_then_set_and_cleared(make_limiter, redis_client, key_prefix):
    limiter = make_limiter(create_limit=1000)
    budget = Budget(redis_client, Keys(key_prefix), daily_default=30_000)
    assert budget.status().daily_source == "settings"
    _take(limiter, "a:0:1", "a", 20_000, daily=30_000)
    with pytest.raises(BudgetExceededError) as exc:
        _take(limiter, "c:0:1", "c", 20_000, daily=30_000)
    assert exc.value.scope == "daily" and str(exc.value) == "daily budget 0.03 USD reached"
    status = budget.status(["a", "c"])
    assert (status.daily_limit, status.daily_source, status.reserved_today, status.left_today) == (
        30_000,
        "redis",
        20_000,
        10_000,
    )
    budget.set_daily(parse_usd("1"))
    _take(limiter, "c:0:1", "c", 20_000, daily=30_000)  # the fleet's setting no longer decides
    budget.set_daily(None)
    assert budget.status().daily_limit is None
    _take(limiter, "c:1:1", "c", 5_000_000, daily=30_000)  # cleared: no daily budget


def test_a_refused_reservation_takes_no_creation_token(make_limiter, redis_client, key_prefix):
    limiter = make_limiter(create_limit=2, window=60)
    Budget(redis_client, Keys(key_prefix)).set_batch_limit("b", 0)
    for n in range(5):
        with pytest.raises(BudgetExceededError):
            _take(limiter, f"b:{n}:1", "b", 1)
    status = limiter.status()
    assert status.creations_in_window == status.creations_reserved == 0


def test_held_items_wake_when_room_appears(redis_client, key_prefix):
    budget = Budget(redis_client, Keys(key_prefix))
    budget.set_batch_limit("b", 50_000)
    budget.reserve(Reservation("b:0:1", "b", 25_000))
    budget.reserve(Reservation("b:1:1", "b", 25_000))
    for index in (2, 3, 4):
        budget.hold("b", index, 1, 25_000, "batch")
    assert budget.wake() == {}
    assert budget.batch("b").held == 3
    budget.set_batch_limit("b", 100_000)  # room for two more: the two held first
    assert budget.wake() == {"b": [2, 3]}
    assert budget.wake() == {}  # not picked again while their sends are on the way
    budget.unhold("b", 2)  # its run started (and reserved)
    budget.reserve(Reservation("b:2:1", "b", 25_000))
    assert budget.wake() == {}  # 3 is still on its way: no room for 4
    budget.set_batch_limit("b", None)
    assert budget.wake() == {"b": [4]}
    assert budget.wake(again_after=0) == {"b": [3, 4]}
    assert budget.drop_held("b") == 2 and budget.held("b") == {}


# --- racing processes -----------------------------------------------------------------------------


def _racer(redis_url: str, prefix: str, seed: int, attempts: int, out) -> None:
    import redis as redis_lib

    client = redis_lib.Redis.from_url(redis_url, decode_responses=True)
    settings = Settings.load({"redis_url": redis_url, "key_prefix": prefix}, environ={}, dotenv_path=None)
    limiter = Limiter.from_settings(client, Keys(prefix), settings.with_(create_limit=1_000_000))
    budget = Budget(client, Keys(prefix))
    rng = random.Random(seed)
    granted = []
    for n in range(attempts):
        batch = f"b{rng.randrange(3)}"
        amount = rng.choice([1, 7, 25_000, 33_333, 100_000])
        marker = f"{batch}:{seed}:{n}"
        try:
            with limiter.acquire(HolderInfo(task_id=marker), timeout=30) as lease:
                limiter.take_create_token(
                    timeout=30,
                    holder=lease,
                    attempt=marker,
                    reservation=Reservation(marker, batch, amount, 700_000),
                )
        except BudgetExceededError:
            continue
        granted.append((batch, amount))
        roll = rng.random()
        if roll < 0.2:
            budget.release(marker)  # nothing created
            granted.pop()
        elif roll < 0.7:
            budget.settle(marker)
        # else: stays reserved (ambiguous, or still running)
    limiter.close()
    out.put(granted)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_racing_processes_never_pass_a_limit(redis_url, redis_client, key_prefix, seed):
    """Eight processes, each with its own Redis connection and limiter, race reservations
    against three batch limits and one daily budget; with spend and release in between. Every
    amount ever granted (and not released) adds up to no more than each limit."""
    rng = random.Random(seed)
    budget = Budget(redis_client, Keys(key_prefix))
    limits = {f"b{i}": rng.choice([150_000, 250_000, 400_000]) for i in range(3)}
    for batch, limit in limits.items():
        budget.set_batch_limit(batch, limit)
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    procs = [
        ctx.Process(target=_racer, args=(redis_url, key_prefix, seed * 100 + p, 40, out)) for p in range(8)
    ]
    for proc in procs:
        proc.start()
    granted = [g for _ in procs for g in out.get(timeout=120)]
    for proc in procs:
        proc.join(30)
    status = budget.status(list(limits))
    assert status.daily_limit == 700_000
    assert status.spent_today + status.reserved_today == sum(a for _, a in granted) <= 700_000
    for spend in status.batches:
        mine = sum(a for b, a in granted if b == spend.batch_id)
        assert spend.spent + spend.reserved == mine <= limits[spend.batch_id]
    # the limits were reached, not avoided: something was refused in each run
    assert len(granted) < 8 * 40


def test_the_daily_budget_is_per_utc_day_of_redis_time(redis_client, key_prefix):
    """What the UTC day turning does: today's spend starts from zero, so items held by the
    daily budget fit again (the day's spend moved to yesterday stands for the clock passing)."""
    budget = Budget(redis_client, Keys(key_prefix), daily_default=50_000)
    budget.reserve(Reservation("b:0:1", "b", 25_000, 50_000))
    budget.reserve(Reservation("b:1:1", "b", 25_000, 50_000))
    budget.settle("b:0:1")
    budget.settle("b:1:1")
    with pytest.raises(BudgetExceededError):
        budget.reserve(Reservation("b:2:1", "b", 25_000, 50_000))
    budget.hold("b", 2, 1, 25_000, "daily")
    assert budget.wake() == {}
    today = budget.today()
    state = Keys(key_prefix).limiter_key("budget")
    assert budget.status().day.toordinal() - date(1970, 1, 1).toordinal() == today
    redis_client.hset(state, f"spent:d:{today - 1}", redis_client.hget(state, f"spent:d:{today}"))
    redis_client.hdel(state, f"spent:d:{today}")
    assert budget.wake() == {"b": [2]}
    budget.reserve(Reservation("b:2:1", "b", 25_000, 50_000))
    assert budget.status().spent_today == 0 and budget.status().reserved_today == 25_000
    # spend settles on the day it was reserved
    assert budget.settle("b:2:1") == 25_000 and budget.status().spent_today == 25_000


# --- the accounting, against a model (hypothesis) ---------------------------------------------------

OPS = st.lists(
    st.one_of(
        st.tuples(
            st.just("reserve"),
            st.integers(0, 9),
            st.sampled_from(["a", "b"]),
            st.sampled_from([1, 7, 25_000, 99_999]),
        ),
        st.tuples(
            st.just("settle"), st.integers(0, 9), st.none(), st.one_of(st.none(), st.integers(0, 50_000))
        ),
        st.tuples(st.just("release"), st.integers(0, 9), st.none(), st.none()),
        st.tuples(
            st.just("limit"),
            st.none(),
            st.sampled_from(["a", "b"]),
            st.one_of(st.none(), st.integers(0, 200_000)),
        ),
        st.tuples(st.just("daily"), st.none(), st.none(), st.one_of(st.none(), st.integers(0, 300_000))),
    ),
    max_size=40,
)


@given(ops=OPS)
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_the_accounting_matches_a_model(redis_or_fakeredis, ops):
    """Any sequence of reservations, settlements, releases and limit changes: the scripts grant
    exactly the reservations a plain model grants, and spent/reserved add up to the model's."""
    prefix = f"hyp-{uuid.uuid4().hex[:8]}"
    budget = Budget(redis_or_fakeredis, Keys(prefix))
    limits: dict[str, int | None] = {"a": None, "b": None}
    daily: int | None = None
    res: dict[str, tuple[str, int]] = {}  # marker -> (batch, amount)
    spent = {"a": 0, "b": 0}
    try:
        for op, n, batch, amount in ops:
            if op == "reserve":
                marker = f"{batch}:{n}:1"
                reserved = {b: sum(a for bb, a in res.values() if bb == b) for b in limits}
                if marker in res:
                    fits = True
                else:
                    day_room = None if daily is None else daily - sum(spent.values()) - sum(reserved.values())
                    room = None if limits[batch] is None else limits[batch] - spent[batch] - reserved[batch]
                    fits = (day_room is None or amount <= day_room) and (room is None or amount <= room)
                try:
                    budget.reserve(Reservation(marker, batch, amount))
                    granted = True
                except BudgetExceededError:
                    granted = False
                assert granted == fits, (op, marker, amount)
                if fits and marker not in res:
                    res[marker] = (batch, amount)
            elif op in ("settle", "release"):
                marker = next((m for m in sorted(res) if m.split(":")[1] == str(n)), f"x:{n}:1")
                cost = 0 if op == "release" else amount
                got = budget.settle(marker, cost)
                if marker in res:
                    b, reserved_amount = res.pop(marker)
                    spent[b] += reserved_amount if cost is None else cost
                    assert got == (reserved_amount if cost is None else cost)
                else:
                    assert got is None
            elif op == "limit":
                limits[batch] = amount
                budget.set_batch_limit(batch, amount)
            else:
                daily = amount
                budget.set_daily(amount)
            status = budget.status(["a", "b"])
            assert status.spent_today == sum(spent.values())
            assert status.reserved_today == sum(a for _, a in res.values())
            for spend in status.batches:
                assert spend.spent == spent[spend.batch_id]
                assert spend.reserved == sum(a for b, a in res.values() if b == spend.batch_id)
    finally:
        delete_prefix(redis_or_fakeredis, prefix)


@pytest.mark.unit
def test_what_an_attempt_reserves():
    """The registry's price for the item's params (per image x outputs, per call, per second x the
    requested duration), else the item's --price-per-call; in micro-dollars."""
    from shared.models import load_registry
    from shared.request import ImageRequest
    from workers.runner import AttemptRunner

    registry = load_registry()

    def reserved(model: str, params: dict, price_per_call: float | None = None) -> int:
        request = ImageRequest(0, "0", "p", model, model, params=params, price_per_call=price_per_call)
        return AttemptRunner._price(registry.get(model), request)

    assert reserved("black-forest-labs/flux-dev", {}) == 25_000
    assert reserved("black-forest-labs/flux-dev", {"num_outputs": 4}) == 100_000
    assert reserved("google/veo-3-fast", {}) == 3_320_000
    assert reserved("kwaivgi/kling-v2.1-master", {"duration": 10}) == 2_800_000
    unpriced = dataclasses.replace(registry.get("black-forest-labs/flux-dev"), price=None)
    request = ImageRequest(0, "0", "p", "x/y", "x/y", price_per_call=0.5)
    assert AttemptRunner._price(unpriced, request) == 500_000
    assert AttemptRunner._price(unpriced, dataclasses.replace(request, price_per_call=None)) == 0
