"""The producer against real celery workers, the real Redis and the stand-in: the Python API,
`generate`, and the CLI's --wait / --json / exit codes / retry as a user runs them."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import producer
from shared.keys import Keys
from shared.scheduler import Scheduler

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parent.parent
MIXED = {
    "params": {"output_format": "png"},
    "items": [
        {"id": "fox", "prompt": "a red fox in snow", "model": "black-forest-labs/flux-dev"},
        {"id": "market", "prompt": "a night market in the rain", "model": "qwen/qwen-image"},
        {
            "id": "whale",
            "prompt": "a blue whale, aurora",
            "model": "google/nano-banana",
            "params": {"output_format": "jpg"},
        },
        "a lighthouse in a storm",
        "a tiny robot gardener",
    ],
    "model": "black-forest-labs/flux-dev",
}
ROUTE = ["black-forest-labs/flux-dev", "qwen/qwen-image", "google/imagen-4-ultra"]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def cli(settings, sim, *args, timeout=120):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REPLICATE_", "FLEET_", "REDIS_URL"))}
    env.update(settings.as_env(), REPLICATE_BASE_URL=sim.url, PYTHONPATH=str(ROOT))
    return subprocess.run(
        [sys.executable, "-m", "producer.cli", "--env-file", "/nonexistent", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
    )


def test_python_api_end_to_end(settings, redis_client, sim, worker_factory):
    import io

    worker_factory(settings, count=2, sim=sim)
    settings = settings.with_(replicate_base_url=sim.url)
    batch = producer.submit(MIXED, settings=settings)
    out = io.StringIO()
    snap = batch.wait(progress=out, timeout=90, poll_interval=0.2, interval=1.0)
    assert snap.finished and snap.all_succeeded, batch.results()
    assert out.getvalue().splitlines()[-1].startswith(f"batch {batch.id}: 5/5 done (ok 5, failed 0)")

    records = batch.results()
    assert [r["id"] for r in records] == ["fox", "market", "whale", "3", "4"]
    assert [r["model"] for r in records[:3]] == [
        "black-forest-labs/flux-dev",
        "qwen/qwen-image",
        "google/nano-banana",
    ]
    ledger = sim.ledger()
    assert ledger["creations"] == 5 and ledger["duplicate_inputs"] == 0
    for record in records:
        paths = batch.output_paths(record)
        assert len(paths) == 1 and paths[0].is_file()
        assert paths[0].is_relative_to(Path(settings.output_dir).resolve() / batch.id)
        prediction = record["attempts"][-1]["prediction_id"]
        assert sha256(paths[0]) in ledger["outputs_sha256"][prediction]
    assert batch.output_paths(records[2])[0].suffix == ".jpg"
    manifest = json.loads(batch.write_manifest().read_text())
    assert [item["id"] for item in manifest["items"]] == ["fox", "market", "whale", "3", "4"]

    # the same batch id again: nothing new is enqueued, nothing is created at the stand-in
    again = producer.submit(MIXED, settings=settings, batch_id=batch.id)
    assert not again.created and again.wait(timeout=10).all_succeeded
    assert sim.ledger()["creations"] == 5

    paths = producer.generate(
        "a paper boat on a pond",
        "black-forest-labs/flux-dev",
        settings=settings,
        output="single/boat.png",
        aspect_ratio="1:1",
        timeout=60,
    )
    assert (
        paths == [Path(settings.output_dir).resolve() / "single" / "boat.png"] and paths[0].stat().st_size > 0
    )


def test_cli_submit_wait_failures_retry_and_exit_codes(tmp_path, settings, redis_client, sim, worker_factory):
    worker_factory(settings, count=2, sim=sim)
    prompts = tmp_path / "prompts.json"
    prompts.write_text(json.dumps(["a red fox", "a blue whale", "a green forest"]))

    ok = cli(
        settings,
        sim,
        "submit",
        str(prompts),
        "-m",
        "black-forest-labs/flux-dev",
        "-p",
        "aspect_ratio=16:9",
        "--wait",
    )
    assert ok.returncode == 0, ok.stderr + ok.stdout
    lines = ok.stdout.splitlines()
    assert "\r" not in ok.stdout and "\x1b[" not in ok.stdout  # not a terminal: plain lines
    assert any(line.startswith("batch ") and "3/3 done (ok 3, failed 0)" in line for line in lines)
    assert any("all succeeded" in line for line in lines) and any("manifest" in line for line in lines)

    # every model of the route fails: the items end failed, exit 1, and retry fixes them
    sim.configure(always_fail_models=ROUTE)
    failed = cli(
        settings,
        sim,
        "submit",
        str(prompts),
        "-m",
        "black-forest-labs/flux-dev",
        "--wait",
        "--json",
        "--batch-id",
        "cli-fail",
    )
    assert failed.returncode == 1, failed.stderr
    summary = json.loads(failed.stdout.strip().splitlines()[-1])
    assert summary["batch"] == "cli-fail" and summary["items"] == 3 and summary["counts"]["failed"] == 3
    assert "producer retry cli-fail" in failed.stderr
    results = cli(settings, sim, "results", "cli-fail", "--json")
    records = [json.loads(line) for line in results.stdout.splitlines()]
    assert [r["status"] for r in records] == ["failed"] * 3
    assert [a["model"] for a in records[0]["attempts"]] == ROUTE

    # --no-fallback: the first model fails for good, the item fails; no other model is paid for.
    before = sim.ledger()["creations_by_model"]
    sim.configure(always_fail_models=ROUTE[:1])
    alone = cli(
        settings,
        sim,
        "submit",
        str(prompts),
        "-m",
        ROUTE[0],
        "--wait",
        "--no-fallback",
        "--batch-id",
        "cli-alone",
    )
    assert alone.returncode == 1, alone.stderr + alone.stdout
    records = [
        json.loads(line) for line in cli(settings, sim, "results", "cli-alone", "--json").stdout.splitlines()
    ]
    assert [(r["status"], [a["model"] for a in r["attempts"]]) for r in records] == [
        ("failed", ROUTE[:1])
    ] * 3
    after = sim.ledger()["creations_by_model"]
    assert {m: after.get(m, 0) - before.get(m, 0) for m in ROUTE} == {ROUTE[0]: 3, ROUTE[1]: 0, ROUTE[2]: 0}

    sim.configure(always_fail_models=[])
    retried = cli(settings, sim, "retry", "cli-fail", "--wait")
    assert retried.returncode == 0, retried.stderr + retried.stdout
    assert "3 failed items enqueued again" in retried.stdout
    status = json.loads(cli(settings, sim, "status", "cli-fail", "--json").stdout)
    assert status["counts"]["succeeded"] == 3 and status["finished"]


def test_cancel_mid_batch_then_retry_including_canceled_finishes_every_item(
    settings, redis_client, sim_factory, worker_factory
):
    """`cancel` while predictions run, then `retry --include-canceled`: the cancel is lifted and
    every item ends succeeded, on the same worker processes that saw the cancel."""
    import time

    from tests.support.wait import wait_until

    # The default wait mode (sync): the predictions running at the cancel are inside held creates.
    settings = settings.with_(concurrency_limit=3)
    sim = sim_factory(latency_scale=3.0, image_scale=0.01)  # several seconds each: running at cancel
    fleet = worker_factory(settings, count=1, sim=sim, concurrency=4)  # takes 4 tasks, 12 stay queued
    settings = settings.with_(replicate_base_url=sim.url)
    batch = producer.submit(
        [f"a small boat at dawn, plate {i}" for i in range(16)],
        settings=settings,
        model="black-forest-labs/flux-dev",
    )
    wait_until(
        lambda: batch.status(with_slots=False).running >= 3, 30, "predictions in flight", explain=fleet.logs
    )
    outcome = batch.cancel()
    # Only the messages already in the broker (the feeder keeps FLEET_FEED_WINDOW there) need
    # revoking; the other sends were still held in the schedule, which dropped them.
    assert outcome.canceled >= 10 and 0 < outcome.revoked <= settings.feed_window
    assert outcome.revoke_error is None
    assert Scheduler(redis_client, Keys(settings.key_prefix)).held(batch.id) == {}
    snap = batch.wait(timeout=30, poll_interval=0.2)
    assert snap.finished and snap.counts["canceled"] == 16, batch.results()
    # the worker dropped the queued messages it was told about instead of running them
    wait_until(
        lambda: "Discarding revoked task" in fleet.logs(), 20, "revoked messages dropped", explain=fleet.logs
    )

    sim.configure(latency_scale=0.01)
    retried = batch.retry(include_canceled=True)
    assert retried == list(range(16)) and not batch.info().canceled
    started = time.monotonic()
    snap = batch.wait(timeout=60, poll_interval=0.2)
    assert snap.finished and snap.all_succeeded, (batch.results(), fleet.logs())
    assert time.monotonic() - started < 60
