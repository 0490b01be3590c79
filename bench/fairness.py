"""Fair share and priorities (issue 17), and what the feeder costs a large batch.

    python -m bench.run fairness [--n 2000] [--small 10]    # the issue's figure
    python -m bench.run feed [--n 2000]                      # one batch: feeder vs direct enqueueing

fairness: on one fleet, a small batch alone (its reference time), then a large batch; once the
large one keeps every slot busy, the same small batch again (normal priority), then once more
with --priority high. Each small batch's time is the ledger's (created_at -> finished_at, Redis
time); the claim is "beside <= 3 x alone + 1 s" and "high <= 1.5 x alone + 1 s".

feed: one large batch, sent through the schedule and the feeder (as `producer submit` does), and
the same batch with every message put straight into the broker at submit (today's direct
enqueueing before the schedule existed; the follow-ups still go through the schedule). Same
fleet size, same stand-in settings; makespan and efficiency against the bound.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

from bench.fleet import submit, wait_finished
from bench.hosts import Hosts
from bench.processes import RedisServer
from bench.throughput import (
    RunResult,
    Scenario,
    _scenario_dict,
    fleet_settings,
    prompts_for,
    run_fleet,
    scenario_fleet,
    sim_options,
)


def _duration(client: Any, settings: Any, batch_id: str) -> float:
    from shared.keys import Keys
    from shared.ledger import Ledger

    info = Ledger(client, Keys(settings.key_prefix)).batch(batch_id)
    return round(info.finished_at - info.created_at, 3)


def run_fairness(
    sc: Scenario, hosts: Hosts, redis: RedisServer, sim: Any, *, small: int = 10, log: Any = print
) -> RunResult:
    """The small batch alone, beside sc.n images at normal priority, and with high priority."""
    sim.reset(**sim_options(sc))
    settings = fleet_settings(sc, redis, hosts.workdir / f"fair-{uuid.uuid4().hex[:6]}")
    fleet = scenario_fleet(sc, hosts, settings, sim.url)
    client = redis.client()
    tag = settings.key_prefix
    try:
        fleet.start()
        fleet.wait_ready()

        def small_batch(name: str, priority: str = "normal") -> float:
            from producer.api import submit as producer_submit

            prompts = [f"{name} {tag} small {i}: a heron in the reeds" for i in range(small)]
            batch = producer_submit(prompts, settings=settings, model=sc.model, priority=priority)
            ok, _, _ = wait_finished(settings, batch.id, timeout=600, redis_client=client)
            assert ok, f"small batch {name} did not finish"
            return _duration(client, settings, batch.id)

        alone = small_batch("alone")
        started = time.time()
        big = submit(settings, prompts_for(sc.n, tag), model=sc.model)
        saturated = sc.slots * 2
        while _done(client, settings, big) < saturated:
            time.sleep(0.2)
        beside = small_batch("beside")
        high = small_batch("high", "high")
        big_done_at_end = _done(client, settings, big)
        finished, finished_at, _ = wait_finished(settings, big, timeout=3600, redis_client=client)
        figures = {
            "small": small,
            "small_alone_s": alone,
            "small_beside_s": beside,
            "small_high_s": high,
            "beside_ratio": round(beside / alone, 2),
            "high_ratio": round(high / alone, 2),
            "beside_ok": beside <= 3 * alone + 1.0,
            "high_ok": high <= 1.5 * alone + 1.0,
            "big_still_running": big_done_at_end < sc.n,
            "big_makespan_s": round(finished_at - started, 2),
            "big_finished": finished,
            "creations": sim.ledger(detail=False).get("creations"),
            "duplicate_predictions": sim.ledger(detail=False).get("duplicate_inputs"),
        }
        log(
            f"[fairness {sc.name}] alone {alone:.2f}s beside {beside:.2f}s ({figures['beside_ratio']}x) "
            f"high {high:.2f}s ({figures['high_ratio']}x) big {figures['big_makespan_s']}s"
        )
        return RunResult("fairness", _scenario_dict(sc), figures)
    finally:
        fleet.stop()
        client.close()


def _done(client: Any, settings: Any, batch_id: str) -> int:
    from shared.keys import Keys
    from shared.ledger import Ledger

    info = Ledger(client, Keys(settings.key_prefix)).batch(batch_id)
    return info.done if info else 0


@contextlib.contextmanager
def direct_enqueueing() -> Iterator[None]:
    """`producer submit` as it was before the schedule: every item's message put straight into the
    broker at submit, in submission order."""
    import workers.dispatch as dispatch
    from shared.keys import Keys
    from shared.ledger import Ledger
    from shared.redis_conn import connect
    from workers.attempts import AttemptRef

    original = dispatch.enqueue_items

    def enqueue_directly(settings: Any, batch_id: str, requests: Any) -> int:
        client = connect(settings)
        ledger = Ledger(client, Keys(settings.key_prefix))
        app = dispatch.producer_app(settings)
        sent, ids = [], []
        with app.producer_or_acquire() as producer:
            for request in requests:
                ids.append(
                    dispatch.send_attempt(
                        app,
                        settings,
                        AttemptRef(batch_id, request.index, 1),
                        request.model,
                        prompt=request.prompt,
                        rank=0,
                        producer=producer,
                    )
                )
                sent.append(request.index)
        ledger.mark_enqueued(batch_id, sent, task_ids=ids)
        client.close()
        return len(sent)

    dispatch.enqueue_items = enqueue_directly
    try:
        yield
    finally:
        dispatch.enqueue_items = original


def run_feed_comparison(
    sc: Scenario, hosts: Hosts, redis: RedisServer, sim: Any, *, log: Any = print
) -> list[RunResult]:
    """The same large batch through the feeder and with direct enqueueing."""
    fed = run_fleet(sc, hosts, redis, sim, log=log)
    fed.system = "fleet-feeder"
    with direct_enqueueing():
        direct = run_fleet(sc, hosts, redis, sim, log=log)
    direct.system = "fleet-direct"
    return [fed, direct]


def fairness_scenario(n: int = 2000) -> Scenario:
    """Slot-bound (the rate leaves room): 20 slots, 8 s predictions scaled to 2 s (10 images/s)."""
    return Scenario(n=n, slots=20, create_per_min=6000, latency=8.0, time_scale=0.25)


def feed_scenario(n: int = 2000) -> Scenario:
    return replace(fairness_scenario(n), time_scale=None)
