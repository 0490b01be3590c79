"""Failures with real workers, real Redis and the stand-in: every image ends accounted for, and no
attempt pays twice. Each test prints the creations it cost against the minimum (shown with -s)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from PIL import Image

from shared.keys import Keys
from shared.limiter import Limiter
from tests.support.e2e import served_hashes, sha256, submit, wait_finished, wait_manifest
from tests.support.wait import wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.faults]

FLUX_DEV, QWEN, IMAGEN = "black-forest-labs/flux-dev", "qwen/qwen-image", "google/imagen-4-ultra"


def report(name: str, sim_ledger: dict, minimum: int) -> None:
    print(
        f"\n[cost] {name}: {sim_ledger['creations']} creations (minimum {minimum}), "
        f"duplicate inputs {sim_ledger['duplicate_inputs']}, 429s {sim_ledger['rejected_429']}, "
        f"5xx {sim_ledger['errors_5xx']}, ghost creates {sim_ledger.get('ghost_creates', 0)}"
    )


def limiter_for(redis_client, settings) -> Limiter:
    return Limiter.from_settings(redis_client, Keys(settings.key_prefix), settings)


def test_model_failures_walk_the_route_and_the_manifest_shows_it(
    settings, redis_client, sim_factory, worker_factory
):
    sim = sim_factory(always_fail_models=[FLUX_DEV, QWEN], latency_scale=0.02, image_scale=0.01)
    fleet = worker_factory(settings, count=1, sim=sim)
    prompts = [f"a glass city under snow, take {i}" for i in range(4)]
    prompts.append("nsfw-trigger in a garden")  # refused by every model of the route
    ledger, requests = submit(settings, redis_client, "b-route", prompts)
    assert requests[0].models == (FLUX_DEV, QWEN, IMAGEN)
    wait_finished(ledger, "b-route", 60, fleet)

    items = ledger.items("b-route")
    served = served_hashes(sim.ledger())
    for item in items[:4]:
        assert item.status == "succeeded" and item.model == IMAGEN
        assert [(a.model, a.status) for a in item.attempts] == [
            (FLUX_DEV, "failed"),
            (QWEN, "failed"),
            (IMAGEN, "succeeded"),
        ]
        assert all(a.prediction_id and a.seconds is not None for a in item.attempts)
        assert "model error" in item.attempts[0].error
        assert sha256(item.outputs[0]) in served
    blocked = items[4]
    assert blocked.status == "failed" and blocked.outputs == []
    assert [a.model for a in blocked.attempts] == [FLUX_DEV, QWEN, IMAGEN]
    assert all("sensitive content" in a.error for a in blocked.attempts)
    assert "no model left" in blocked.error
    manifest = ledger.manifest("b-route")["items"]
    assert manifest[0]["model"] == IMAGEN and len(manifest[0]["attempts"]) == 3
    # Each attempt records the input it sent to its model (issue 18.8).
    assert [a["input"]["prompt"] for a in manifest[0]["attempts"]] == [prompts[0]] * 3
    wait_manifest(settings.output_dir, "b-route")
    sim_ledger = sim.ledger()
    report("route walk", sim_ledger, minimum=15)
    assert sim_ledger["creations"] == 15  # 3 models x 5 items: each failure costs exactly one
    assert sim_ledger["creations_by_model"] == {FLUX_DEV: 5, QWEN: 5, IMAGEN: 5}


def test_a_prediction_replicate_interrupted_is_tried_again_on_the_same_model(
    settings, redis_client, sim_factory, worker_factory
):
    """`failed` with one of Replicate's retryable errors is transient: a new attempt on the same
    model, not a fallback to the next one."""
    sim = sim_factory(
        fail_next=2,
        fail_error="Prediction interrupted; please retry (code: PA)",
        latency_scale=0.02,
        image_scale=0.01,
    )
    fleet = worker_factory(settings, count=1, sim=sim)
    ledger, _ = submit(settings, redis_client, "b-interrupted", [f"a tide pool, view {i}" for i in range(3)])
    wait_finished(ledger, "b-interrupted", 60, fleet)

    items = ledger.items("b-interrupted")
    assert all(item.status == "succeeded" and item.model == FLUX_DEV for item in items), items
    attempts = [a for item in items for a in item.attempts]
    retried = [a for a in attempts if a.status != "succeeded"]
    assert len(retried) == 2 and all(a.model == FLUX_DEV and a.status == "retry" for a in retried), attempts
    assert all("please retry" in a.error for a in retried)
    sim_ledger = sim.ledger()
    report("2 predictions interrupted by Replicate", sim_ledger, minimum=5)
    assert sim_ledger["creations"] == 5 and sim_ledger["creations_by_model"] == {FLUX_DEV: 5}


def test_substitute_only_when_asked_and_never_a_success(settings, redis_client, sim_factory, worker_factory):
    sim = sim_factory(latency_scale=0.02, image_scale=0.01)
    fleet = worker_factory(settings, count=1, sim=sim)
    ledger, requests = submit(
        settings,
        redis_client,
        "b-subst",
        ["nsfw-trigger on a beach", "a calm lake"],
        options={"substitute_on_failure": True},
    )
    wait_finished(ledger, "b-subst", 60, fleet)
    blocked, fine = ledger.items("b-subst")
    assert fine.status == "succeeded"
    assert blocked.status == "substituted" and blocked.model is None and "no model left" in blocked.error
    [path] = blocked.outputs
    with Image.open(path) as image:
        assert image.size == (1600, 900) and image.getextrema() in (((0, 0), (0, 0), (0, 0)), (0, 0))
    assert ledger.batch("b-subst").counts["substituted"] == 1


def test_429_storm_and_5xx_bursts_end_with_every_image_and_no_double_payment(
    settings, redis_client, sim_factory, worker_factory
):
    # 12 creates refused (someone else uses the account), 10 API calls answering 5xx, and
    # 3 creations that DO happen but answer 502: the workers must reconcile and adopt those.
    sim = sim_factory(
        storm_next=12,
        storm_retry_after=1,
        error_burst=10,
        ghost_create_next=3,
        latency_scale=0.05,
        image_scale=0.01,
    )
    # A create answered 5xx settles for the POST in-flight limit before "none was created" is
    # concluded: 2 + 2 + 2 + 5 = 11 s with this timeout (40 s with the default 15 s).
    fleet = worker_factory(settings, count=2, sim=sim, FLEET_HTTP_TIMEOUT="2")
    prompts = [f"a windmill in a storm, sketch {i}" for i in range(20)]
    ledger, _ = submit(settings, redis_client, "b-storm", prompts)
    wait_finished(ledger, "b-storm", 90, fleet)

    assert ledger.batch("b-storm").counts["succeeded"] == 20, ledger.batch("b-storm").counts
    sim_ledger = sim.ledger()
    report("429 storm + 5xx bursts + ghost creates", sim_ledger, minimum=20)
    assert sim_ledger["rejected_429"]["storm"] == 12
    assert sim_ledger["ghost_creates"] == 3
    assert sim_ledger["duplicate_inputs"] == 0
    assert sim_ledger["creations"] == 20
    served = served_hashes(sim_ledger)
    assert all(sha256(item.outputs[0]) in served for item in ledger.items("b-storm"))
    assert limiter_for(redis_client, settings).status().in_use == 0


@pytest.mark.slow
def test_worker_sigkilled_mid_prediction_loses_nothing_and_pays_once(
    settings, redis_client, sim_factory, worker_factory
):
    # Each worker runs 4 tasks and both are saturated when the kill comes: kombu moves a message
    # from the queue to its unacked set in two steps (BRPOP, then HSET), and a process killed
    # between them loses that message -- a transport limit this test must not depend on.
    # poll: the victim is found by the prediction id on its lease, which a held sync create does
    # not know yet (a SIGKILL during a held create: tests/test_sync_mode.py)
    settings = settings.with_(visibility_timeout=10, lease_seconds=5.0, concurrency_limit=8, wait_mode="poll")
    sim = sim_factory(latency_scale=1.0, image_scale=0.01)  # flux-dev ~3 s: plenty of time to kill
    fleet = worker_factory(settings, count=2, sim=sim, concurrency=4)
    prompts = [f"an old tram in the rain, frame {i}" for i in range(12)]
    ledger, _ = submit(settings, redis_client, "b-kill", prompts)
    limiter = limiter_for(redis_client, settings)
    pids = {w.pid: w for w in fleet.workers}

    def victim():
        holders = [h for h in limiter.status().holders if h.pid in pids and h.prediction_id]
        return pids[holders[0].pid] if holders else None

    worker = wait_until(victim, 30, "a worker holding a running prediction", explain=fleet.logs)
    in_flight_at_kill = [
        h.prediction_id for h in limiter.status().holders if h.pid == worker.pid and h.prediction_id
    ]
    worker.kill()
    assert not worker.alive()
    wait_finished(ledger, "b-kill", 90, fleet)

    assert ledger.batch("b-kill").counts["succeeded"] == 12, ledger.batch("b-kill").counts
    sim_ledger = sim.ledger()
    report(f"SIGKILL with {len(in_flight_at_kill)} predictions in flight", sim_ledger, minimum=12)
    assert sim_ledger["duplicate_inputs"] == 0
    assert sim_ledger["creations"] == 12
    # the killed worker's predictions were resumed, not recreated
    produced = {a.prediction_id for item in ledger.items("b-kill") for a in item.attempts}
    assert set(in_flight_at_kill) <= produced
    served = served_hashes(sim_ledger)
    assert all(sha256(item.outputs[0]) in served for item in ledger.items("b-kill"))
    wait_until(lambda: limiter.status().in_use == 0, 10, "the dead worker's slots to expire")


@pytest.mark.slow
def test_a_killed_worker_holding_every_slot_never_lets_the_account_go_over(
    settings, redis_client, sim_factory, worker_factory
):
    """The killed worker's predictions run on at Replicate: their slots must stay counted after
    its leases run out, until they are resumed (adopted) or seen to have ended."""
    # poll: the victim is chosen when its 4 leases show their predictions' ids (see above)
    settings = settings.with_(visibility_timeout=30, lease_seconds=2.0, concurrency_limit=4, wait_mode="poll")
    sim = sim_factory(latency_scale=2.0, image_scale=0.01)  # flux-dev ~6 s
    holder = worker_factory(settings, count=1, sim=sim, concurrency=4)
    ledger, _ = submit(
        settings, redis_client, "b-orphans", [f"a lantern on a jetty, take {i}" for i in range(10)]
    )
    limiter = limiter_for(redis_client, settings)
    victim = holder.workers[0]
    wait_until(
        lambda: sum(1 for h in limiter.status().holders if h.pid == victim.pid and h.prediction_id) == 4,
        30,
        "the first worker to hold every slot with a running prediction",
        explain=holder.logs,
    )
    others = worker_factory(settings, count=2, sim=sim, concurrency=4)  # 8 threads waiting for slots
    victim.kill()
    wait_until(
        lambda: any(h.orphaned for h in limiter.status().holders), 10, "the dead worker's slots to orphan"
    )
    wait_finished(ledger, "b-orphans", 120, others)

    assert ledger.batch("b-orphans").counts["succeeded"] == 10
    sim_ledger = sim.ledger()
    report("SIGKILL of the worker holding every slot", sim_ledger, minimum=10)
    assert sim_ledger["peak_in_flight"] <= 4, sim_ledger["peak_in_flight"]
    assert sim_ledger["creations"] == 10 and sim_ledger["duplicate_inputs"] == 0
    wait_until(lambda: limiter.status().in_use == 0, 10, "every slot to come back")


def test_disk_error_fails_the_item_without_a_second_creation(
    settings, redis_client, sim_factory, worker_factory
):
    sim = sim_factory(latency_scale=0.02, image_scale=0.01)
    ledger, _ = submit(settings, redis_client, "b-disk", ["a red kite over dunes", "a blue kite"])
    # After validation, the batch directory becomes impossible to create: a regular file stands
    # where it should be (root ignores permission bits, so chmod would prove nothing here).
    Path(settings.output_dir).mkdir(parents=True, exist_ok=True)
    (Path(settings.output_dir) / "b-disk").write_text("not a directory")
    fleet = worker_factory(settings, count=1, sim=sim)
    wait_finished(ledger, "b-disk", 60, fleet)

    items = ledger.items("b-disk")
    sim_ledger = sim.ledger()
    report("unwritable output dir", sim_ledger, minimum=2)
    for item in items:
        assert item.status == "failed" and "cannot write" in item.error
        [attempt] = item.attempts  # no retry, no paid fallback
        assert attempt.model == FLUX_DEV and attempt.prediction_id
    assert sim_ledger["creations"] == 2


def test_cancel_stops_a_running_batch_and_frees_every_slot(
    settings, redis_client, sim_factory, worker_factory
):
    # poll: a held sync create can only be canceled once its answer comes (workers/README.md)
    settings = settings.with_(concurrency_limit=4, wait_mode="poll")
    sim = sim_factory(latency_scale=5.0, image_scale=0.01)  # ~15 s predictions: still running at cancel
    fleet = worker_factory(settings, count=2, sim=sim, concurrency=8)
    ledger, _ = submit(settings, redis_client, "b-cancel", [f"a quiet harbour, plate {i}" for i in range(12)])
    limiter = limiter_for(redis_client, settings)
    wait_until(
        lambda: sum(1 for h in limiter.status().holders if h.prediction_id) == 4,
        30,
        "4 predictions in flight",
        explain=fleet.logs,
    )

    # Items still queued are canceled by the ledger at once; the tasks waiting for a slot and the
    # 4 predictions in flight (~15 s each) are stopped by their workers within a few seconds.
    canceled_at = time.monotonic()
    ledger.cancel("b-cancel")
    wait_finished(ledger, "b-cancel", 20, fleet)
    assert time.monotonic() - canceled_at < 10

    assert ledger.batch("b-cancel").counts["canceled"] == 12
    wait_until(lambda: limiter.status().in_use == 0, 5, "every slot released", explain=fleet.logs)
    sim_ledger = sim.ledger()
    report("cancel mid-batch", sim_ledger, minimum=0)
    assert sim_ledger["creations"] == 4
    assert sim_ledger["predictions_by_status"].get("canceled", 0) == 4
    wait_manifest(settings.output_dir, "b-cancel")
