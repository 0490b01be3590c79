"""End to end: prompts -> ledger -> real Celery worker processes -> the stand-in -> files on disk.

Everything is real: Redis, `celery -A workers worker` subprocesses, the stand-in over HTTP, the
official replicate client. The stand-in runs fast (latency_scale, image_scale) so this stays quick.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from shared.keys import Keys
from shared.limiter import Limiter
from tests.support.e2e import MODEL, served_hashes, sha256, submit, wait_finished, wait_manifest
from tests.support.sim import wait_quiet
from tests.support.wait import wait_until
from tests.support.workers import messages_pending
from workers.dispatch import enqueue_items

pytestmark = pytest.mark.e2e


def test_twenty_images_through_two_workers(settings, redis_client, sim_factory, worker_factory):
    sim = sim_factory(latency_scale=0.02, image_scale=0.01)
    fleet = worker_factory(settings, count=2, sim=sim)
    prompts = [f"a lighthouse at dusk, study {i}" for i in range(20)]
    ledger, requests = submit(settings, redis_client, "b-e2e-20", prompts)
    wait_finished(ledger, "b-e2e-20", 60, fleet)

    info = ledger.batch("b-e2e-20")
    assert info.counts["succeeded"] == 20, info.counts
    items = ledger.items("b-e2e-20")
    sim_ledger = sim.ledger()
    served = served_hashes(sim_ledger)
    for item, request in zip(items, requests):
        assert item.status == "succeeded" and item.model == MODEL
        [path] = item.outputs
        assert Path(path) == (Path(settings.output_dir) / request.output).resolve()
        assert sha256(path) in served, f"{path} does not hold bytes the stand-in served"
        [attempt] = item.attempts
        assert attempt.prediction_id and attempt.status == "succeeded"
    assert sim_ledger["creations"] == 20
    assert sim_ledger["duplicate_inputs"] == 0
    assert sim_ledger["rejected_429"]["create"] == 0
    # no temp files left behind, and the manifest sits next to the outputs
    out_dir = Path(settings.output_dir) / "b-e2e-20"
    assert not list(out_dir.glob(".*.part"))
    manifest_path = wait_manifest(settings.output_dir, "b-e2e-20")
    # readable by others as any new file would be (the workers inherit this process's umask)
    umask = os.umask(0o022)
    os.umask(umask)
    assert {Path(p).stat().st_mode & 0o777 for p in [manifest_path, *(i.outputs[0] for i in items)]} == {
        0o666 & ~umask
    }
    manifest = json.loads(manifest_path.read_text())
    assert [r["index"] for r in manifest["items"]] == list(range(20))
    assert all(r["status"] == "succeeded" and r["attempts"][0]["model"] == MODEL for r in manifest["items"])
    # every slot was given back
    status = Limiter.from_settings(redis_client, Keys(settings.key_prefix), settings).status()
    assert status.in_use == 0


@pytest.mark.slow
def test_limiter_holds_the_account_limits_across_three_workers(
    settings, redis_client, sim_factory, worker_factory
):
    """The issue's proof as specified: three worker processes, the stand-in set to 10 in flight
    and 30 creations per 20 s window (the limiter too), 90 images: peak in flight <= 10, no
    window over 30, no 429, all 90 files. 90 creations at 30 per 20 s take three windows."""
    settings = settings.with_(concurrency_limit=10, create_limit=30, rate_window=20.0)
    sim = sim_factory(max_in_flight=10, create_limit=30, window=20.0, latency_scale=0.5, image_scale=0.01)
    fleet = worker_factory(settings, count=3, sim=sim, concurrency=16)
    prompts = [f"a paper boat on a pond, variation {i}" for i in range(90)]
    ledger, requests = submit(settings, redis_client, "b-limits", prompts)
    wait_finished(ledger, "b-limits", 240, fleet)

    sim_ledger = sim.ledger()
    assert ledger.batch("b-limits").counts["succeeded"] == 90
    assert sim_ledger["creations"] == 90 and sim_ledger["duplicate_inputs"] == 0
    assert sim_ledger["peak_in_flight"] <= 10
    assert sim_ledger["peak_in_flight"] >= 5  # the limit was actually exercised
    assert sim_ledger["max_creations_in_window"] <= 30
    assert sim_ledger["max_creations_in_window"] >= 25  # the rate limit was actually exercised
    assert sum(sim_ledger["rejected_429"].values()) == 0, sim_ledger["rejected_429"]
    served = served_hashes(sim_ledger)
    for item in ledger.items("b-limits"):
        assert item.status == "succeeded" and sha256(item.outputs[0]) in served
    assert Limiter.from_settings(redis_client, Keys(settings.key_prefix), settings).status().in_use == 0


def test_duplicate_messages_never_pay_twice(settings, redis_client, sim_factory, worker_factory):
    """Every task delivered twice at once (a double submission, a redelivery while the first
    still runs): the claim and the attempt record keep it to one creation per item."""
    sim = sim_factory(latency_scale=0.1, image_scale=0.01)
    fleet = worker_factory(settings, count=2, sim=sim, concurrency=8)
    prompts = [f"a tin robot reading, panel {i}" for i in range(10)]
    ledger, requests = submit(settings, redis_client, "b-dup", prompts)
    enqueue_items(settings, "b-dup", requests)  # the same ten attempts, again
    wait_finished(ledger, "b-dup", 60, fleet)
    assert ledger.batch("b-dup").counts["succeeded"] == 10
    enqueue_items(settings, "b-dup", requests)  # after the end: items are terminal, nothing is sent
    # Every copy delivered and done with (the late ones find their item terminal), then nothing
    # more at the stand-in: only then is "ten creations" the final count.
    wait_until(
        lambda: messages_pending(redis_client, settings.queue) == 0,
        30,
        "every copy to be consumed",
        explain=fleet.logs,
    )
    sim_ledger = wait_quiet(sim)
    assert sim_ledger["creations"] == 10 and sim_ledger["duplicate_inputs"] == 0


def test_worker_reads_settings_at_start_and_keeps_the_token_out_of_task_arguments(
    settings, redis_client, sim_factory, worker_factory
):
    sim = sim_factory(latency_scale=0.02, image_scale=0.01)
    fleet = worker_factory(settings, count=1, sim=sim)
    from workers.dispatch import producer_app, workers_alive

    assert workers_alive(settings, timeout=1.0)
    assert not workers_alive(settings.with_(queue="nobody-listens-here"), timeout=0.5)
    ledger, _ = submit(settings, redis_client, "b-token", ["a small lantern"])
    wait_finished(ledger, "b-token", 30, fleet)
    conf = producer_app(settings).control.inspect(timeout=2).conf() or {}
    assert conf, "the worker did not answer inspect conf"
    for worker_conf in conf.values():
        assert worker_conf["task_default_queue"] == settings.queue
        assert worker_conf["worker_prefetch_multiplier"] == 1 and worker_conf["task_acks_late"] is True
    token = settings.replicate_api_token
    assert token not in fleet.logs()
    assert token not in json.dumps(ledger.manifest("b-token"))


def test_an_output_on_a_refused_address_fails_the_item_without_paying_again(
    settings, redis_client, sim_factory, worker_factory
):
    """FLEET_ALLOW_PRIVATE_OUTPUT_URLS=false refuses even the stand-in's own 127.0.0.1 (allowed by
    default because REPLICATE_BASE_URL is there). A refused output is a local error: the item
    fails at once with the reason, no new prediction, no fallback, nothing fetched or written."""
    sim = sim_factory(latency_scale=0.02, image_scale=0.01)
    fleet = worker_factory(settings, count=1, sim=sim, FLEET_ALLOW_PRIVATE_OUTPUT_URLS="false")
    ledger, _ = submit(settings, redis_client, "b-private", ["a brass key, study 1", "a brass key, study 2"])
    wait_finished(ledger, "b-private", 40, fleet)
    for item in ledger.items("b-private"):
        assert item.status == "failed" and not item.outputs, item
        [attempt] = item.attempts
        assert attempt.kind == "local" and attempt.prediction_id, attempt
        assert "refused" in attempt.error and "127.0.0.1" in attempt.error, attempt.error
    sim_ledger = sim.ledger()
    assert sim_ledger["creations"] == 2 and not served_hashes(
        sim_ledger
    )  # one prediction each, no file served
    out_dir = Path(settings.output_dir) / "b-private"
    # no image and no temporary file of one (the manifest and the gallery may still be being written)
    assert not list(out_dir.glob("0*")) and not list(out_dir.glob(".0*.part"))
