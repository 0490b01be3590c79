"""Recovery: lost task messages, a producer that died mid-submit, and a worker's warm shutdown.

The ledger tests and the sweep tests run against the real Redis without workers; the others start
real `celery -A workers worker` processes against the stand-in."""

from __future__ import annotations

import json
import signal
import time

import pytest

import producer
from shared.keys import Keys
from shared.ledger import Ledger
from shared.limiter import HolderInfo, Limiter
from shared.scheduler import Scheduler
from tests.support.attempt_path import feed, held_sends
from tests.support.e2e import submit, wait_finished
from tests.support.sim import wait_quiet
from tests.support.wait import wait_until
from tests.support.workers import messages_pending
from workers.dispatch import enqueue_items, producer_app
from workers.recovery import Sweeper, quiet_after, task_arguments

MODEL = "black-forest-labs/flux-dev"


# --- helpers --------------------------------------------------------------------------------------
def queued(redis_client, settings) -> list[tuple[str, int, int]]:
    """The attempts of the messages in the broker."""
    from shared.scheduler import broker_lists

    return [
        task_arguments(raw)
        for name in broker_lists(settings.queue)
        for raw in redis_client.lrange(name, 0, -1)
    ]


def drop_message(redis_client, settings, batch_id: str, index: int) -> None:
    """Take one item's message off the queue, as a worker SIGKILLed between kombu's BRPOP and its
    unacked record (or a Redis restart without persistence) would lose it."""
    from shared.scheduler import broker_lists

    for name in broker_lists(settings.queue):
        for raw in redis_client.lrange(name, 0, -1):
            parsed = task_arguments(raw)
            if parsed is not None and parsed[:2] == (batch_id, index):
                assert redis_client.lrem(name, 1, raw) == 1
                return
    raise AssertionError(f"no message for item {index} of {batch_id}")


def live(redis_client, settings, batch_id: str) -> dict[int, float]:
    return {
        int(m): s
        for m, s in redis_client.zrange(
            Keys(settings.key_prefix).batch_live(batch_id), 0, -1, withscores=True
        )
    }


def requests_for(settings, batch_id: str, prompts: list[str]):
    from pathlib import Path

    from producer.prompts import parse_prompts
    from shared.models import load_registry

    return parse_prompts(
        prompts,
        batch_id=batch_id,
        output_root=Path(settings.output_dir),
        registry=load_registry(),
        model=MODEL,
    )


# --- the ledger's signs of life ------------------------------------------------------------------
def test_ledger_records_enqueues_and_keeps_only_open_items_live(settings, redis_client):
    ledger = Ledger(redis_client, Keys(settings.key_prefix))
    requests = requests_for(settings, "b-live", [f"a paper boat, {i}" for i in range(4)])
    assert ledger.create_batch("b-live", requests, output_root=str(settings.output_dir))
    assert set(live(redis_client, settings, "b-live")) == {0, 1, 2, 3}
    assert ledger.never_enqueued("b-live") == [0, 1, 2, 3]

    assert ledger.mark_enqueued("b-live", [0, 1]) == 2
    assert ledger.never_enqueued("b-live") == [2, 3]
    before = live(redis_client, settings, "b-live")
    ledger.mark_enqueued("b-live", [2], countdown=120)  # a message due in two minutes
    assert live(redis_client, settings, "b-live")[2] >= before[2] + 119

    ledger.transition("b-live", 0, "running", attempt=1, attempt_update={"model": MODEL})
    ledger.transition("b-live", 0, "succeeded", attempt=1, attempt_update={"final": True})
    assert 0 not in live(redis_client, settings, "b-live")
    assert ledger.mark_enqueued("b-live", [0]) == 0  # terminal: not recorded, not live again
    assert 0 not in live(redis_client, settings, "b-live")

    ledger.transition("b-live", 1, "failed", attempt=1, attempt_update={"final": True})
    assert ledger.reset_failed("b-live") == [1]
    assert 1 in live(redis_client, settings, "b-live")
    assert ledger.never_enqueued("b-live") == [1, 3]  # a reset item needs a new message

    assert ledger.cancel("b-live").canceled == 3
    assert live(redis_client, settings, "b-live") == {}
    assert ledger.batches_to_look_after()[0] == []


# --- the sweep, without workers -------------------------------------------------------------------
def test_sweep_resends_only_items_without_a_message_or_a_claim(settings, redis_client):
    ledger = Ledger(redis_client, Keys(settings.key_prefix))
    requests = requests_for(settings, "b-sweep", [f"a kite over a dune, {i}" for i in range(5)])
    assert ledger.create_batch("b-sweep", requests, output_root=str(settings.output_dir))
    enqueue_items(settings, "b-sweep", requests)
    sweeper = Sweeper(settings, redis_client, producer_app(settings), quiet=0.0)
    assert sweeper.sweep().resent == []  # held by the schedule (PARKED): alive, not even read
    assert len(feed(settings, redis_client)) == 5  # the feeder puts them into the broker
    drop_message(redis_client, settings, "b-sweep", 2)
    drop_message(redis_client, settings, "b-sweep", 3)
    # item 3 is being run by a live execution (it holds the attempt's claim): not lost
    redis_client.set(Keys(settings.key_prefix).claim("b-sweep", 3, 1), "someone", px=60_000)

    report = sweeper.sweep()
    assert report.resent == [("b-sweep", 2, 1)]
    assert sorted(queued(redis_client, settings)) == [("b-sweep", i, 1) for i in (0, 1, 4)]
    assert list(Scheduler(redis_client, Keys(settings.key_prefix)).held("b-sweep")) == [2]  # sent again
    assert sweeper.sweep().resent == []  # queued or claimed: nothing more to send

    # Finished batches cost nothing: their items are not even read.
    for index in range(5):
        ledger.transition("b-sweep", index, "canceled", attempt=1, attempt_update={"final": True})
    assert sweeper.sweep().batches == 0


def test_sends_a_killed_feeder_took_but_never_delivered_are_sent_again(settings, redis_client):
    """The feeder's take (one script) removes sends from the schedule and gives their items a sign
    of life; a feeder SIGKILLed before the broker had the messages leaves those items quiet, and
    the sweep holds them again: nothing is lost. The ones still held are never read."""
    ledger = Ledger(redis_client, Keys(settings.key_prefix))
    requests = requests_for(settings, "b-fed", [f"a buoy at dawn, {i}" for i in range(5)])
    assert ledger.create_batch("b-fed", requests, output_root=str(settings.output_dir))
    enqueue_items(settings, "b-fed", requests)
    scheduler = Scheduler(redis_client, Keys(settings.key_prefix))
    taken, _ = scheduler.take(settings.queue, window=2)  # ... and the feeder dies here
    assert [s.index for s in taken] == [0, 1] and queued(redis_client, settings) == []
    sweeper = Sweeper(settings, redis_client, producer_app(settings), quiet=0.0)
    report = sweeper.sweep()
    assert sorted(report.resent) == [("b-fed", 0, 1), ("b-fed", 1, 1)] and report.quiet == 2
    assert sorted(scheduler.held("b-fed")) == [0, 1, 2, 3, 4]
    assert sweeper.sweep().resent == []


def test_a_stale_message_forwards_the_current_attempt_when_it_is_due_not_at_once(settings, redis_client):
    """A redelivered message of attempt 1 arrives while attempt 2 waits out its backoff (sent with
    a 20 s countdown). It re-sends attempt 2 (its follow-up may have been lost) with the time left
    until it is due, not with countdown 0, which would skip the backoff / retry_after."""
    from tests.support.attempt_path import record_batch, worker_context
    from workers.runner import AttemptRunner, Job, NextTask

    ledger, _ = record_batch(settings, redis_client, "b-stale", ["a tern over the surf", "a second tern"])
    for index in (0, 1):
        assert ledger.transition(
            "b-stale",
            index,
            "pending",
            expect_attempt=1,
            attempt=1,
            fields={"attempt": 2, "current_model": MODEL},
            attempt_update={"model": MODEL, "status": "retry", "final": True},
        ).changed
    ledger.mark_enqueued("b-stale", [0], countdown=20.0)  # item 1: the follow-up was never sent
    with worker_context(settings) as ctx:
        forwarded = AttemptRunner(ctx).run(Job("b-stale", 0, 1, MODEL))
        assert isinstance(forwarded, NextTask) and forwarded.attempt == 2 and forwarded.model == MODEL
        assert 18.0 < forwarded.countdown <= 20.0, forwarded
        lost = AttemptRunner(ctx).run(Job("b-stale", 1, 1, MODEL))
        assert isinstance(lost, NextTask) and lost.attempt == 2 and lost.countdown == 0.0
        ctx.scheduler.push("b-stale", [(1, 2, MODEL)], delay=20.0)  # the schedule holds it: nothing to do
        assert AttemptRunner(ctx).run(Job("b-stale", 1, 1, MODEL)) is None


def test_sweep_forgets_finished_batches_past_retention_and_keeps_the_rest(settings, redis_client):
    keys = Keys(settings.key_prefix)
    ledger = Ledger(redis_client, keys)
    for batch_id in ("b-old-done", "b-old-open"):
        assert ledger.create_batch(
            batch_id, requests_for(settings, batch_id, ["a", "b"]), output_root=str(settings.output_dir)
        )
    redis_client.hset(keys.uploads("b-old-done", 1), "ref.png", "https://files/ref")
    for index in (0, 1):
        ledger.transition("b-old-done", index, "succeeded", attempt=1, attempt_update={"final": True})
    ledger.transition("b-old-open", 0, "succeeded", attempt=1, attempt_update={"final": True})
    time.sleep(0.3)
    assert ledger.create_batch(
        "b-new-done", requests_for(settings, "b-new-done", ["c"]), output_root=str(settings.output_dir)
    )
    ledger.transition("b-new-done", 0, "failed", attempt=1, attempt_update={"final": True})

    sweeper = Sweeper(settings.with_(batch_retention_days=0.2 / 86400), redis_client, producer_app(settings))
    assert sweeper.sweep().pruned == ["b-old-done"]  # the open one stays, however old
    assert ledger.batch("b-old-done") is None and ledger.batch("b-old-open") is not None
    assert not redis_client.exists(
        keys.item("b-old-done", 0),
        keys.item("b-old-done", 1),
        keys.uploads("b-old-done", 1),
        keys.batch_live("b-old-done"),
    )
    assert [b.id for b in ledger.list_batches()] == ["b-new-done", "b-old-open"]
    assert (
        Sweeper(settings.with_(batch_retention_days=0), redis_client, producer_app(settings)).sweep().pruned
        == []
    )

    # Age counts from the end: an old batch retried and finished just now stays.
    ledger.transition("b-old-open", 1, "succeeded", attempt=1, attempt_update={"final": True})
    assert sweeper.sweep().pruned == [] and ledger.batch("b-old-open").finished


def test_sweep_writes_the_manifest_a_finishing_worker_never_wrote(settings, redis_client):
    ledger = Ledger(redis_client, Keys(settings.key_prefix))
    assert ledger.create_batch(
        "b-nomani", requests_for(settings, "b-nomani", ["a", "b"]), output_root=str(settings.output_dir)
    )
    for index in (0, 1):  # finished, but the worker died before writing the manifest
        ledger.transition("b-nomani", index, "succeeded", attempt=1, attempt_update={"final": True})
    sweeper = Sweeper(settings, redis_client, producer_app(settings))
    assert sweeper.sweep().manifests == ["b-nomani"]
    manifest = json.loads((settings.output_dir / "b-nomani" / "manifest.json").read_text())
    assert [item["status"] for item in manifest["items"]] == ["succeeded", "succeeded"]
    assert sweeper.sweep().manifests == []  # written once


def test_one_sweep_per_interval_across_the_fleet(settings, redis_client):
    one = Sweeper(settings, redis_client, producer_app(settings))
    other = Sweeper(settings, redis_client, producer_app(settings))
    assert one.try_sweep() is not None
    assert other.try_sweep() is None and one.try_sweep() is None
    assert quiet_after(settings) == 60.0  # the default lease of 30 s
    assert quiet_after(settings.with_(lease_seconds=2.0)) == 5.0


# --- with real workers ----------------------------------------------------------------------------
@pytest.mark.e2e
def test_a_lost_message_is_sent_again_and_paid_once(settings, redis_client, sim_factory, worker_factory):
    settings = settings.with_(lease_seconds=2.0)  # quiet after 5 s
    sim = sim_factory(latency_scale=0.02, image_scale=0.01)
    prompts = [f"a stone bridge in fog, view {i}" for i in range(6)]
    ledger, _ = submit(settings, redis_client, "b-lost", prompts)
    assert len(feed(settings, redis_client)) == 6  # into the broker, as a worker's feeder does
    drop_message(redis_client, settings, "b-lost", 3)
    assert len(queued(redis_client, settings)) == 5

    fleet = worker_factory(settings, count=2, sim=sim)
    wait_finished(ledger, "b-lost", 60, fleet)
    assert ledger.batch("b-lost").counts["succeeded"] == 6, ledger.batch("b-lost").counts
    sim_ledger = sim.ledger()
    assert sim_ledger["creations"] == 6 and sim_ledger["duplicate_inputs"] == 0
    assert "sending it again" in fleet.logs(tail=10**6)


@pytest.mark.e2e
def test_resubmitting_after_a_crash_between_record_and_enqueue(
    settings, redis_client, sim_factory, worker_factory, monkeypatch
):
    # The default lease (30 s) keeps the sweep out of this test: the resubmission alone must do it.
    import workers.dispatch

    prompts = [f"a lantern on a pier, {i}" for i in range(4)]

    def die(*_a, **_k):
        raise KeyboardInterrupt("the producer died here")

    with monkeypatch.context() as patch:
        patch.setattr(workers.dispatch, "enqueue_items", die)
        with pytest.raises(KeyboardInterrupt):
            producer.submit(prompts, settings=settings, model=MODEL, batch_id="b-crash")
    assert held_sends(settings, redis_client) == 0  # recorded, never enqueued

    again = producer.submit(prompts, settings=settings, model=MODEL, batch_id="b-crash")
    assert not again.created
    assert sorted(Scheduler(redis_client, Keys(settings.key_prefix)).held("b-crash")) == [0, 1, 2, 3]
    producer.submit(prompts, settings=settings, model=MODEL, batch_id="b-crash")
    assert held_sends(settings, redis_client) == 4  # sent once: nothing new the second time

    sim = sim_factory(latency_scale=0.02, image_scale=0.01)
    fleet = worker_factory(settings, count=1, sim=sim)
    ledger = Ledger(redis_client, Keys(settings.key_prefix))
    wait_finished(ledger, "b-crash", 60, fleet)
    assert ledger.batch("b-crash").counts["succeeded"] == 4
    keys = Keys(settings.key_prefix)
    sent_before = [redis_client.hget(keys.item("b-crash", i), "sent_tasks") for i in range(4)]
    assert all(sent_before)  # every item records the messages sent for it
    producer.submit(prompts, settings=settings, model=MODEL, batch_id="b-crash")  # finished: nothing
    assert [redis_client.hget(keys.item("b-crash", i), "sent_tasks") for i in range(4)] == sent_before
    assert messages_pending(redis_client, settings.queue) == 0
    assert held_sends(settings, redis_client) == 0
    assert wait_quiet(sim)["creations"] == 4


@pytest.mark.e2e
def test_sigterm_hands_back_waiting_tasks_and_pays_once(settings, redis_client, sim_factory, worker_factory):
    settings = settings.with_(concurrency_limit=1)
    sim = sim_factory(latency_scale=1.0, image_scale=0.01)  # flux-dev ~3 s
    fleet = worker_factory(settings, count=1, sim=sim, concurrency=4)
    [worker] = fleet.workers
    ledger, _ = submit(settings, redis_client, "b-term", [f"a red door in snow, {i}" for i in range(5)])
    limiter = Limiter.from_settings(redis_client, Keys(settings.key_prefix), settings)

    def one_in_flight_three_waiting():
        # in flight: its id on the lease, or (a sync create held open) the attempt its creation
        # token marked the slot with
        status = limiter.status()
        return status.waiters >= 3 and any(h.prediction_id or h.attempt for h in status.holders)

    wait_until(
        one_in_flight_three_waiting,
        30,
        "one prediction in flight and three tasks waiting",
        explain=fleet.logs,
    )
    created_before = sim.ledger()["creations"]
    assert created_before == 1
    worker.kill(signal.SIGTERM)
    worker.proc.wait(30)  # waiters leave at once; the prediction in flight is waited for

    # No paid prediction was started during the shutdown, and the waiters left the queue.
    assert sim.ledger()["creations"] == created_before
    assert limiter.status().in_use == 0 and limiter.status().waiters == 0
    assert "handed back" in worker.log()

    limiter.set_limits(concurrency_limit=4)  # the rest in parallel: a quicker test, the same proof
    second = worker_factory(settings, count=1, sim=sim, concurrency=4)
    wait_finished(ledger, "b-term", 90, second)
    assert ledger.batch("b-term").counts["succeeded"] == 5
    sim_ledger = sim.ledger()
    assert sim_ledger["creations"] == 5 and sim_ledger["duplicate_inputs"] == 0
    assert limiter.status().in_use == 0


def test_the_orphan_check_frees_the_slots_of_ended_predictions_only(settings, redis_client):
    from workers.replicate_calls import PredictionView

    s = settings.with_(concurrency_limit=3, lease_seconds=0.6)
    dead = Limiter.from_settings(redis_client, Keys(s.key_prefix), s)
    for pid in ("p-ended", "p-running"):
        dead.acquire(HolderInfo(task_id=pid)).set_prediction(pid)
    dead.close()
    time.sleep(1.0)

    class Replicate:  # what GET /v1/predictions/{id} says about each
        def get(self, pid):
            return PredictionView(id=pid, status="succeeded" if pid == "p-ended" else "processing")

    limiter = Limiter.from_settings(redis_client, Keys(s.key_prefix), s)
    sweeper = Sweeper(s, redis_client, producer_app(s), limiter=limiter, calls=Replicate())
    assert sweeper.try_settle_orphans() == ["p-ended"]
    assert sweeper.try_settle_orphans() is None  # one check per interval, fleet-wide
    assert [h.prediction_id for h in limiter.status().holders] == ["p-running"]
    limiter.close()


def test_the_orphan_check_frees_a_dead_creators_slot_only_when_no_creation_can_follow(settings, redis_client):
    """Slots orphaned by creators that died after their creation token (marked with the attempt,
    no prediction id): freed when the attempt never sent its POST and nobody holds its claim;
    judged by the prediction when the attempt recorded one since; kept while a POST may have been
    sent (the attempt's reconciliation decides) or a live execution holds the claim."""
    from workers.attempts import AttemptRef, CreationRecords
    from workers.replicate_calls import PredictionView

    s = settings.with_(concurrency_limit=5, lease_seconds=0.6)
    keys = Keys(s.key_prefix)
    attempts = CreationRecords(redis_client, keys)
    # b:0 died waiting for its token; b:1 died inside its POST; b:2 recorded its (ended) prediction
    # before its holder expired; b:3 never POSTed but a live execution holds its claim.
    for index in range(4):
        attempts.write_intent(AttemptRef("b", index, 1), "m")
    redis_client.hset(keys.item("b", 1), mapping={"status": "running", "attempt": 1})
    assert attempts.begin_post(AttemptRef("b", 1, 1), "t1")[0] == "lost"  # no claim: no stamp
    redis_client.set(keys.claim("b", 1, 1), "t1")
    assert attempts.begin_post(AttemptRef("b", 1, 1), "t1")[0] == "go"
    redis_client.delete(keys.claim("b", 1, 1))  # its claim expired with its process
    attempts.record_prediction(AttemptRef("b", 2, 1), "p-ended")
    redis_client.set(keys.claim("b", 3, 1), "alive", px=60_000)
    dead = Limiter.from_settings(redis_client, keys, s)
    for index in range(4):
        lease = dead.acquire(HolderInfo(task_id=f"t{index}"))
        dead.take_create_token(holder=lease, attempt=f"b:{index}:1")
    dead.close()
    time.sleep(1.0)

    class Replicate:
        def get(self, pid):
            return PredictionView(id=pid, status="succeeded")

    limiter = Limiter.from_settings(redis_client, keys, s)
    sweeper = Sweeper(s, redis_client, producer_app(s), limiter=limiter, calls=Replicate())
    assert sorted(sweeper.settle_orphans()) == ["b:0:1", "p-ended"]
    assert sorted(h.attempt for h in limiter.status().holders) == ["b:1:1", "b:3:1"]
    limiter.close()


@pytest.mark.e2e
def test_one_batch_the_sweep_cannot_handle_never_stops_it_for_the_others(
    settings, redis_client, sim_factory, worker_factory
):
    """A batch whose stored state makes the sweep fail (an item's attempt that is not a number:
    bad stored text of an older or buggy writer) is skipped and logged; a lost message of
    another batch is still sent again, and paid once."""
    from tests.support.attempt_path import record_batch

    settings = settings.with_(lease_seconds=2.0)  # quiet after 5 s
    sim = sim_factory(latency_scale=0.02, image_scale=0.01)
    record_batch(settings, redis_client, "b-broken", ["a broken gate"])
    redis_client.hset(Keys(settings.key_prefix).item("b-broken", 0), "attempt", "one")
    ledger, _ = record_batch(settings, redis_client, "b-orphaned", ["a lamp post in snow"])  # never sent
    fleet = worker_factory(settings, count=1, sim=sim)
    wait_finished(ledger, "b-orphaned", 60, fleet)
    assert ledger.item("b-orphaned", 0).status == "succeeded"
    assert wait_quiet(sim)["creations"] == 1
    assert "batch b-broken skipped" in fleet.logs(tail=10**6)
