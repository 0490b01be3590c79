"""Data follows the fleet, on three hosts: network namespaces (bench/hosts.py), each worker host with
its own empty OUTPUT_DIR, a real S3-protocol server (moto, a process) as the batch's output
location, references only in the producer's folder (deleted once submit returns), and the store
stopped for 10 s mid-batch.

Every image ends in the bucket, `producer fetch` brings them and the manifest home, the stand-in
saw one creation per image and one upload per distinct reference file, and the writes the stop
interrupted were written later without any new prediction. Run it alone on this machine:
`flock /work/locks/netns.lock .venv/bin/python -m pytest -q tests/test_fleet_storage.py`.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from pathlib import Path

import pytest
from PIL import Image

from bench.moto import start_moto
from bench.processes import worker_argv
from producer import api
from shared.storage import open_store
from tests.support.bench import make_test_hosts
from tests.support.wait import wait_until
from tests.support.workers import worker_env
from workers.dispatch import workers_alive

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.faults, pytest.mark.needs("netns")]

N_PLAIN, N_REFS = 24, 8  # images without and with a reference image


def test_a_batch_over_three_hosts_writes_every_image_to_the_bucket_through_a_store_outage(settings, tmp_path):
    with make_test_hosts(3, workdir=tmp_path / "hosts") as hosts:  # this test run's own prefix and subnet
        redis = hosts.start_redis(6397, appendonly=False)
        sim = hosts.start_sim(8797, latency_scale=0.3, image_scale=0.02, seed=7)
        moto = start_moto(tmp_path / "moto.log", host=hosts.server_address, port=8798)
        try:
            moto.client().create_bucket(Bucket="fleet-outputs")
            run_batch(
                hosts,
                settings.with_(redis_url=redis.url, replicate_base_url=sim.url, concurrency_limit=4),
                sim,
                moto,
                tmp_path,
            )
        finally:
            moto.stop()


def run_batch(hosts, settings, sim, moto, tmp_path: Path) -> None:
    s3_env = moto.environ()
    host_dirs = [tmp_path / f"host-{i}" for i in (1, 2, 3)]
    for i, folder in enumerate(host_dirs, start=1):
        (folder / "out").mkdir(parents=True)
        # A short store timeout: a write caught by the stop gives up and is written by a later run.
        env = worker_env(
            settings, sim_url=sim.url, OUTPUT_DIR=str(folder / "out"), FLEET_STORE_TIMEOUT="3", **s3_env
        )
        hosts.popen(
            i,
            worker_argv(settings, f"w{i}@%h", concurrency=8),
            env=env,
            log_path=folder / "worker.log",
            cwd=folder,
        )
    producer_dir = tmp_path / "producer"
    refs = producer_dir / "refs"
    refs.mkdir(parents=True)
    Image.new("RGB", (32, 32), "red").save(refs / "day.png")
    Image.new("RGB", (32, 32), "navy").save(refs / "night.png")
    items = [
        {"prompt": f"a lighthouse, study {i}", "model": "black-forest-labs/flux-dev"} for i in range(N_PLAIN)
    ]
    items += [
        {
            "prompt": f"the same scene, variant {i}",
            "model": "black-forest-labs/flux-kontext-max",
            "input_image": f"refs/{'day' if i % 2 else 'night'}.png",
        }
        for i in range(N_REFS)
    ]
    prompts = producer_dir / "prompts.json"
    prompts.write_text(json.dumps(items))

    url = "s3://fleet-outputs/runs"
    for name, value in s3_env.items():  # the producer's own environment (the standard variables)
        os.environ[name] = value
    try:
        batch = api.submit(prompts, settings=settings.with_(output_dir=url))
        shutil.rmtree(refs)  # the references exist nowhere now but as uploaded files
        wait_until(lambda: len(workers_alive(settings, timeout=1.0)) >= 3, 60, "the three workers to answer")
        wait_until(
            lambda: batch.status(with_slots=False).counts.get("succeeded", 0) >= 5,
            120,
            "progress before the store outage",
            interval=0.2,
        )
        moto.pause()  # the store stops answering mid-batch
        time.sleep(10)
        moto.resume()
        snap = batch.wait(timeout=240, check_workers=False)
        logs = "\n".join((d / "worker.log").read_text(errors="replace") for d in host_dirs)
        assert snap.finished and snap.all_succeeded, (snap.counts, logs[-6000:])
        total = N_PLAIN + N_REFS
        ledger = sim.ledger()
        assert ledger["creations"] == total, "one creation per image: a write never creates again"
        assert ledger["duplicate_inputs"] == 0
        assert ledger["files_uploaded"] == 2, "one upload per distinct reference file"
        assert "will be written again (no new prediction)" in logs, "the stop should have hit some writes"

        bucket = open_store(url)
        stored = dict(bucket.list())
        results = batch.results()
        keys = [f["key"] for record in results for f in record["files"]]
        assert len(keys) == total and all(key in stored for key in keys)
        assert {f"{batch.id}/manifest.json", f"{batch.id}/index.html"} <= set(stored)
        assert all(not any((d / "out").rglob("*")) for d in host_dirs), "no worker wrote to its own folder"

        home = tmp_path / "home"
        report = batch.fetch(home)
        assert report.complete and report.fetched == total
        for record in results:
            for f in record["files"]:
                assert hashlib.sha256((home / f["key"]).read_bytes()).hexdigest() == f["sha256"]
        assert json.loads((home / batch.id / "manifest.json").read_text())["batch"]["id"] == batch.id
    finally:
        for name in s3_env:
            os.environ.pop(name, None)
