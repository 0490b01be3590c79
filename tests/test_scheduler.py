"""The fleet's schedule (shared.scheduler) on the real Redis: sends held until due (on Redis's
clock), one per item, taken by priority and in turn among batches, never more than the broker's
window; the feeder's round trip; the live zset the recovery sweep reads."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from producer.prompts import parse_prompts
from shared.keys import Keys
from shared.ledger import Ledger
from shared.models import load_registry
from shared.scheduler import PARKED, Scheduler, broker_lists

MODEL = "black-forest-labs/flux-dev"


def record(settings, redis_client, batch_id: str, n: int, *, priority: str = "normal") -> Ledger:
    requests = parse_prompts(
        [f"{batch_id} image {i}" for i in range(n)],
        batch_id=batch_id,
        output_root=Path(settings.output_dir),
        registry=load_registry(),
        model=MODEL,
    )
    ledger = Ledger(redis_client, Keys(settings.key_prefix))
    assert ledger.create_batch(
        batch_id, requests, output_root=str(settings.output_dir), options={"priority": priority}
    )
    return ledger


def push_all(scheduler: Scheduler, batch_id: str, n: int, **kwargs) -> int:
    return scheduler.push(batch_id, [(i, 1, MODEL) for i in range(n)], **kwargs)


@pytest.fixture
def scheduler(redis_client, settings):
    yield Scheduler(redis_client, Keys(settings.key_prefix))
    redis_client.delete(*broker_lists(settings.queue))


def test_batches_of_one_priority_take_turns_and_high_goes_first(settings, redis_client, scheduler):
    record(settings, redis_client, "b-big", 50)
    record(settings, redis_client, "b-small", 3)
    record(settings, redis_client, "b-urgent", 2, priority="high")
    record(settings, redis_client, "b-later", 2, priority="low")
    assert push_all(scheduler, "b-big", 50) == 50
    assert push_all(scheduler, "b-later", 2) == 2
    first, _ = scheduler.take(settings.queue, window=1000, limit=4)
    assert [(s.batch_id, s.index) for s in first] == [("b-big", i) for i in range(4)]
    assert push_all(scheduler, "b-small", 3) == 3
    assert push_all(scheduler, "b-urgent", 2) == 2
    sends, _ = scheduler.take(settings.queue, window=1000, limit=10)
    order = [(s.batch_id, s.index) for s in sends]
    # high first, then the two normal batches alternate, each in its own arrival order
    assert order[:2] == [("b-urgent", 0), ("b-urgent", 1)]
    assert order[2:8] == [
        ("b-small", 0),
        ("b-big", 4),
        ("b-small", 1),
        ("b-big", 5),
        ("b-small", 2),
        ("b-big", 6),
    ]
    assert sends[0].priority == "high" and sends[2].priority == "normal"
    rest, _ = scheduler.take(settings.queue, window=1000, limit=1000)
    assert [s.batch_id for s in rest][-2:] == ["b-later", "b-later"]  # low only once nothing else waits
    assert len(rest) == 50 - 9 + 2


def test_the_broker_window_bounds_what_is_taken(settings, redis_client, scheduler):
    record(settings, redis_client, "b-w", 30)
    push_all(scheduler, "b-w", 30)
    sends, _ = scheduler.take(settings.queue, window=8)
    assert len(sends) == 8
    redis_client.lpush(settings.queue, *["m"] * 5)  # five messages no worker took yet
    redis_client.lpush(broker_lists(settings.queue)[1], "m")
    sends, _ = scheduler.take(settings.queue, window=8)
    assert len(sends) == 2
    depths = scheduler.depths(settings.queue)
    assert depths.ready["normal"] == 20 and depths.batches["normal"] == 1
    assert depths.broker == {"high": 5, "normal": 1, "low": 0} and depths.scheduled == 0
    assert depths.waiting == 26


def test_one_held_send_per_item_and_terminal_items_are_skipped(settings, redis_client, scheduler):
    ledger = record(settings, redis_client, "b-one", 3)
    assert push_all(scheduler, "b-one", 3) == 3
    assert push_all(scheduler, "b-one", 3) == 3  # again: replaced, not doubled
    ledger.transition("b-one", 2, "canceled", attempt=1, attempt_update={"final": True})
    assert push_all(scheduler, "b-one", 3) == 2  # a terminal item gets nothing
    # a newer attempt replaces the held one; an older one never replaces a newer one
    scheduler.push("b-one", [(0, 2, "other/model")])
    scheduler.push("b-one", [(0, 1, MODEL)])
    assert scheduler.held("b-one")[0]["a"] == 2
    sends, _ = scheduler.take(settings.queue, window=100)
    assert sorted((s.index, s.attempt, s.model) for s in sends) == [(0, 2, "other/model"), (1, 1, MODEL)]


def test_delayed_sends_are_due_on_redis_time_and_parked_in_the_live_zset(settings, redis_client, scheduler):
    ledger = record(settings, redis_client, "b-late", 2)
    scheduler.push("b-late", [(0, 1, MODEL)], delay=0.6)
    scheduler.push("b-late", [(1, 1, MODEL)])
    live = Keys(settings.key_prefix).batch_live("b-late")
    assert redis_client.zscore(live, "0") == PARKED and redis_client.zscore(live, "1") == PARKED
    assert ledger.quiet_items("b-late", time.time() + 3600) == []  # the sweep never takes them for lost
    sends, next_due = scheduler.take(settings.queue, window=100)
    assert [s.index for s in sends] == [1] and 0.3 < next_due <= 0.6
    assert scheduler.depths(settings.queue).scheduled == 1
    sec, usec = redis_client.time()
    assert abs(redis_client.zscore(live, "1") - (sec + usec / 1e6)) < 1.0  # taken: a sign of life now
    time.sleep(0.7)
    sends, next_due = scheduler.take(settings.queue, window=100)
    assert [s.index for s in sends] == [0] and next_due is None
    depths = scheduler.depths(settings.queue)
    assert depths.moved == 1 and 0 <= depths.max_late < 0.5 and depths.fed == 2


def test_a_canceled_batch_drops_its_held_sends(settings, redis_client, scheduler):
    ledger = record(settings, redis_client, "b-drop", 4)
    push_all(scheduler, "b-drop", 3)
    scheduler.push("b-drop", [(3, 1, MODEL)], delay=60)
    ledger.cancel("b-drop")
    assert scheduler.drop_batch("b-drop") == 4
    assert scheduler.take(settings.queue, window=100) == ([], None)
    depths = scheduler.depths(settings.queue)
    assert depths.waiting == 0 and depths.batches["normal"] == 0


def test_sends_of_canceled_items_are_skipped_by_the_feeder(settings, redis_client, scheduler):
    ledger = record(settings, redis_client, "b-skip", 3)
    push_all(scheduler, "b-skip", 3)
    ledger.cancel("b-skip")  # the items are canceled; the held sends are still there
    assert scheduler.take(settings.queue, window=100)[0] == []


def test_send_again_holds_the_current_attempt_of_each_open_item(settings, redis_client, scheduler):
    """The function for items that waited without a message (the budgets' held items)."""
    from workers.dispatch import send_again

    ledger = record(settings, redis_client, "b-again", 4)
    ledger.transition(
        "b-again",
        1,
        "pending",
        expect_attempt=1,
        attempt=1,
        fields={"attempt": 2, "current_model": "other/model"},
        attempt_update={"status": "retry", "final": True},
    )
    ledger.transition("b-again", 3, "canceled", attempt=1, attempt_update={"final": True})
    assert send_again(settings, "b-again", [0, 1, 3]) == 2
    held = scheduler.held("b-again")
    assert sorted(held) == [0, 1] and held[1]["a"] == 2 and held[1]["m"] == "other/model"
    assert held[0]["p"] == "b-again image 0"
