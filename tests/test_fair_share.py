"""Priorities and fair share on real workers (issue 17, items 2 and 3): a small batch submitted
while a large one keeps every slot busy finishes close to its time alone, sooner still with
--priority high; the feeder SIGKILLed mid-batch loses nothing, pays nothing twice, and the next
one keeps the turns. Durations are the ledger's own (created_at -> finished_at, Redis time) and
compared with the same small batch alone on the same fleet, never with a fixed number; the
full-size figures (2 000 images) are in bench/ (python -m bench.run fairness)."""

from __future__ import annotations

import signal

import pytest

from shared.keys import Keys
from shared.ledger import Ledger
from shared.scheduler import Scheduler
from tests.support.e2e import MODEL, wait_finished
from tests.support.wait import wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

SLOTS = 6
LATENCY = 0.6  # seconds per prediction at the stand-in: the big batch takes ~BIG x LATENCY / SLOTS
BIG = 160
SMALL = 6


def start(settings, sim_factory, worker_factory):
    settings = settings.with_(concurrency_limit=SLOTS, lease_seconds=2.0)  # quiet after 5 s
    sim = sim_factory(
        latency_scale=1.0, latency_overrides={MODEL: LATENCY}, image_scale=0.002, max_in_flight=SLOTS
    )
    fleet = worker_factory(settings, count=2, sim=sim, concurrency=8)
    return settings, sim, fleet


def submit(settings, tag: str, n: int, priority: str = "normal") -> str:
    import producer

    batch = producer.submit(
        [f"{tag} image {i}: a heron in reeds" for i in range(n)],
        settings=settings,
        model=MODEL,
        priority=priority,
    )
    return batch.id


def duration(ledger: Ledger, batch_id: str) -> float:
    info = ledger.batch(batch_id)
    return info.finished_at - info.created_at


def test_a_small_batch_beside_a_large_one_finishes_near_its_time_alone(
    settings, redis_client, sim_factory, worker_factory
):
    settings, sim, fleet = start(settings, sim_factory, worker_factory)
    ledger = Ledger(redis_client, Keys(settings.key_prefix))
    alone = submit(settings, "alone", SMALL)
    wait_finished(ledger, alone, 60, fleet)
    time_alone = duration(ledger, alone)

    big = submit(settings, "big", BIG)
    wait_until(lambda: ledger.batch(big).done >= 2 * SLOTS, 60, "the big batch to fill the fleet")
    same = submit(settings, "same", SMALL)
    wait_finished(ledger, same, 60, fleet)
    urgent = submit(settings, "urgent", SMALL, priority="high")
    wait_finished(ledger, urgent, 60, fleet)
    assert not ledger.batch(big).finished, "the big batch must still be running for the comparison"
    wait_finished(ledger, big, 240, fleet)

    beside, high = duration(ledger, same), duration(ledger, urgent)
    print(
        f"\nsmall batch alone {time_alone:.2f} s, beside {BIG} images {beside:.2f} s, "
        f"high priority {high:.2f} s"
    )
    assert beside <= 3 * time_alone + 1.0
    assert high <= 1.5 * time_alone + 1.0
    sim_ledger = sim.ledger()
    assert sim_ledger["creations"] == BIG + 3 * SMALL and sim_ledger["duplicate_inputs"] == 0
    assert sim_ledger["peak_in_flight"] <= SLOTS
    for batch_id in (alone, big, same, urgent):
        assert ledger.batch(batch_id).counts["succeeded"] == ledger.batch(batch_id).total
    assert [b.priority for b in ledger.list_batches()][:1] == ["high"]


def test_the_feeder_killed_mid_batch_loses_nothing_and_the_next_keeps_the_turns(
    settings, redis_client, sim_factory, worker_factory
):
    settings, sim, fleet = start(settings, sim_factory, worker_factory)
    ledger = Ledger(redis_client, Keys(settings.key_prefix))
    scheduler = Scheduler(redis_client, Keys(settings.key_prefix))
    big = submit(settings, "big", BIG)
    wait_until(lambda: ledger.batch(big).done >= 2 * SLOTS, 60, "the big batch to run")
    holder = redis_client.get(scheduler.feeder_lock)
    pid = int(holder.split(":")[1])
    victim = next(w for w in fleet.workers if w.pid == pid)
    victim.kill(signal.SIGKILL)
    small = submit(settings, "small", SMALL)
    wait_until(
        lambda: (redis_client.get(scheduler.feeder_lock) or holder) != holder,
        20,
        "another worker to take the feeder over",
    )
    wait_finished(ledger, small, 60, fleet)
    assert ledger.batch(big).done < BIG, "fairness: the small batch did not wait for the big one"
    wait_finished(ledger, big, 240, fleet)
    sim_ledger = sim.ledger()
    assert ledger.batch(big).counts["succeeded"] == BIG and ledger.batch(small).counts["succeeded"] == SMALL
    assert sim_ledger["creations"] == BIG + SMALL and sim_ledger["duplicate_inputs"] == 0
