"""What a new user meets in the first hour (issue 18): `producer info`, the words of `status`,
`cancel` and `limits` against what the account saw, and the quiet surprises of `submit`. Real
workers, real Redis, the stand-in, the CLI as a subprocess."""

from __future__ import annotations

import json

import pytest

from producer import api
from tests.support.wait import wait_until
from tests.test_producer_e2e import cli

pytestmark = pytest.mark.e2e

FLUX_DEV = "black-forest-labs/flux-dev"


def slow_sim(sim_factory, seconds: float = 6.0):
    """Predictions that stay in flight long enough to be looked at."""
    return sim_factory(latency_scale=1.0, latency_overrides={FLUX_DEV: seconds}, image_scale=0.01)


def test_producer_info_one_view_of_the_fleet(settings, sim_factory, worker_factory, tmp_path):
    sim = slow_sim(sim_factory)
    settings = settings.with_(concurrency_limit=2, replicate_base_url=sim.url)
    fleet = worker_factory(settings, count=2, sim=sim, concurrency=3)
    prompts = tmp_path / "prompts.json"
    prompts.write_text(json.dumps([f"a heron in reeds, take {i}" for i in range(6)]))
    batch = api.submit(prompts, settings=settings, model=FLUX_DEV)

    def full():
        # A slot is taken a moment before its creation token marks it as at Replicate: wait for both.
        info = api.fleet_info(settings)
        marked = info.at_replicate.get(batch.id) == 2
        return info if info.limits.in_use == 2 and info.limits.waiters >= 1 and marked else None

    info = wait_until(full, 60, "two slots in use, both at Replicate, and someone waiting", interval=0.3)
    pids = sorted(w.pid for w in fleet.workers)
    assert sorted(w.pid for w in info.workers) == pids
    assert all(w.threads == 3 for w in info.workers) and sum(w.busy for w in info.workers) >= 3
    assert [snap.batch_id for _, snap in info.batches] == [batch.id]
    assert info.at_replicate == {batch.id: 2}

    shown = cli(settings, sim, "info")
    assert shown.returncode == 0, shown.stderr
    text = shown.stdout
    assert "workers 2 alive" in text and all(str(pid) in text for pid in pids)
    assert "slots   2/2 in use" in text and "waiting for one" in text
    assert batch.id in text and "running" in text
    assert "  normal " in text and "  high " in text and "  low " in text
    assert max(len(line) for line in text.splitlines()) <= 80
    data = json.loads(cli(settings, sim, "info", "--json").stdout)
    assert {w["pid"] for w in data["workers"]} == set(pids)
    assert data["limits"]["in_use"] == 2 and data["batches"][0]["batch_id"] == batch.id
    assert set(data["queues"]["ready"]) == {"high", "normal", "low"}
    batch.cancel()


def test_status_cancel_limits_and_metrics_say_what_the_account_saw(
    settings, redis_client, sim_factory, worker_factory, tmp_path
):
    """Issue 18.5. The fleet allows 6 in flight where the account allows 2 (429s on create): status
    tells the items at Replicate from those waiting; cancel on the running batch says what it
    stopped; afterwards the limiter's creation window holds what the account created (a refused
    or never-sent create gives its token back) and the metric's `canceled` counts the predictions
    canceled at Replicate, not the items; cancel on a finished batch has nothing to cancel."""
    from producer.progress import in_flight_by_batch
    from shared.keys import Keys
    from shared.limiter import Limiter
    from shared.metrics.server import start_metrics_server
    from tests.support.sim import wait_quiet
    from tests.test_metrics import scrape

    sim = sim_factory(latency_scale=1.0, latency_overrides={FLUX_DEV: 20}, max_in_flight=2, image_scale=0.01)
    # Polling: a sync create (Prefer: wait) is answered only when its prediction is done, too late
    # to cancel it; with polls (or webhooks) a prediction in flight has an id to cancel.
    settings = settings.with_(concurrency_limit=6, replicate_base_url=sim.url, wait_mode="poll")
    worker_factory(settings, count=1, sim=sim, concurrency=8)
    prompts = tmp_path / "prompts.json"
    prompts.write_text(json.dumps([f"a lantern in rain, take {i}" for i in range(12)]))
    batch = api.submit(prompts, settings=settings, model=FLUX_DEV)
    limiter = Limiter.from_settings(redis_client, Keys(settings.key_prefix), settings)

    def marked_at_replicate() -> int:
        return in_flight_by_batch(limiter.status().holders).get(batch.id, 0)

    # Read once the refused creates have been answered: a 429 pauses creations on every host for
    # its retry_after (the time until the account's first prediction ends, ~20 s), so the slots
    # marked by a creation token are then the 2 with predictions. A create still waiting for its
    # 429 is counted as possibly at Replicate, rightly; reading then would race with its answer.
    wait_until(
        lambda: (
            sim.ledger()["rejected_429"].get("in_flight", 0) >= 3
            and batch.status().running >= 6
            and marked_at_replicate() == 2
        ),
        60,
        "the account refusing creates while the batch runs",
        interval=0.3,
    )
    shown = cli(settings, sim, "status", batch.id)
    assert shown.returncode == 0, shown.stderr
    assert "at Replicate," in shown.stdout and "waiting to be created" in shown.stdout, shown.stdout

    canceled = cli(settings, sim, "cancel", batch.id)
    assert canceled.returncode == 0, canceled.stderr
    out = canceled.stdout
    stopping = int(out.split(" running item(s) are being stopped")[0].rsplit("\n", 1)[-1].strip())
    queued = int(out.split(" queued item(s) canceled now")[0].rsplit(" ", 1)[-1])
    ended_since = batch.status().counts.get("succeeded", 0)  # items may end while cancel runs
    assert stopping >= 5 and 12 - ended_since <= queued + stopping <= 12, out
    in_flight = int(out.split(" prediction(s) at Replicate, canceled there")[0].rsplit(" ", 1)[-1])
    assert in_flight <= 2, out  # the account's limit: slots held without a prediction are not counted
    snap = batch.wait(timeout=60, poll_interval=0.3)
    assert snap.finished and snap.counts.get("canceled", 0) + snap.counts.get("succeeded", 0) == 12

    account = wait_quiet(sim)
    assert limiter.status().creations_in_window == account["creations"], account
    assert account["predictions_by_status"].get("canceled", 0) >= 1
    key = ("fleet_predictions_total", (("model", FLUX_DEV), ("outcome", "canceled")))
    with start_metrics_server(settings, port=0, addr="127.0.0.1") as server:
        # the workers' counters reach Redis within their flush interval
        wait_until(
            lambda: scrape(server.url).get(key, 0.0) == account["predictions_by_status"]["canceled"],
            20,
            "the canceled predictions in fleet_predictions_total",
            interval=0.5,
        )
        samples = scrape(server.url)
    assert samples.get(key, 0.0) == account["predictions_by_status"]["canceled"]  # not the items

    # A finished batch: nothing to cancel, and it is not marked canceled.
    done = cli(settings, sim, "cancel", batch.id)
    assert done.returncode == 0 and "nothing to cancel" in done.stdout
    finished = api.submit(["a quiet pond"], settings=settings.with_(concurrency_limit=2), model=FLUX_DEV)
    sim.configure(latency_overrides={FLUX_DEV: 0.1})
    assert finished.wait(timeout=60, poll_interval=0.3).all_succeeded
    again = cli(settings, sim, "cancel", finished.id)
    assert again.returncode == 0 and f"batch {finished.id} is finished: nothing to cancel" in again.stdout
    assert not finished.info().canceled
    assert "finished" in cli(settings, sim, "status", finished.id).stdout


def test_submit_without_wait_says_when_no_worker_consumes_the_queue(settings, sim, tmp_path):
    """Issue 18.7: recorded and queued, exit 0 as before, but not silently."""
    prompts = tmp_path / "prompts.json"
    prompts.write_text(json.dumps(["a moth on a lamp"]))
    result = cli(settings, sim, "submit", str(prompts))
    assert result.returncode == 0, result.stderr
    assert f"warning: no worker consumes queue {settings.queue!r} right now" in result.stderr
    assert "queued" in result.stdout


def test_resubmitting_a_file_reports_the_duplicate_before_overwrite(settings, sim, worker_factory, tmp_path):
    """Issue 18.7: the second submission of a file whose outputs the first one wrote is refused as
    the duplicate it is, not with "pass --overwrite" (which would lead to that refusal next)."""
    worker_factory(settings, count=1, sim=sim)
    prompts = tmp_path / "prompts.json"
    prompts.write_text(json.dumps([{"prompt": "a snail on a leaf", "output": "snail.webp"}]))
    first = cli(settings, sim, "submit", str(prompts), "--wait")
    assert first.returncode == 0, first.stdout + first.stderr
    assert "warning: no worker" not in first.stderr
    again = cli(settings, sim, "submit", str(prompts))
    assert again.returncode == 2, again.stdout + again.stderr
    assert "--overwrite" not in again.stderr and "--again" in again.stderr, again.stderr
    batch_id = json.loads(cli(settings, sim, "list", "--json").stdout.splitlines()[0])["batch_id"]
    assert batch_id in again.stderr


def test_outputs_not_written_are_downloaded_again_never_created_again(
    settings, sim_factory, worker_factory, s3_bucket, tmp_path, monkeypatch
):
    """Issue 18.2: the predictions succeeded but the store stopped answering; the bytes kept on
    the host are lost too (its spool emptied). The items are finished by downloading the outputs
    again from their still valid URLs: one creation per item, files identical to what was served."""
    import hashlib
    import shutil

    for name, value in s3_bucket.environ().items():
        monkeypatch.setenv(name, value)
    sim = slow_sim(sim_factory, seconds=2.0)
    settings = settings.with_(replicate_base_url=sim.url, output_dir=f"{s3_bucket.url}/runs")
    worker_tmp = tmp_path / "worker-tmp"
    worker_tmp.mkdir()
    fleet = worker_factory(
        settings, count=1, sim=sim, FLEET_STORE_TIMEOUT="2", TMPDIR=str(worker_tmp), **s3_bucket.environ()
    )
    prompts = tmp_path / "prompts.json"
    prompts.write_text(json.dumps([f"a fern unfurling, study {i}" for i in range(3)]))
    batch = api.submit(prompts, settings=settings, model=FLUX_DEV)
    s3_bucket.server.pause()  # the store stops answering before any output is written
    try:
        wait_until(
            lambda: fleet.logs().count("will be written again (no new prediction)") >= 3,
            90,
            "every write to fail and be retried",
            interval=0.5,
        )
        spool = next(worker_tmp.glob("replicate-fleet-spool-*"))
        assert len(list(spool.iterdir())) == 3  # the downloaded bytes were kept ...
        # ... and are lost now: only the output URLs are left (a retry may be downloading into
        # the spool at this moment: remove until it is gone)
        wait_until(
            lambda: shutil.rmtree(spool, ignore_errors=True) or not spool.exists(), 10, "the spool removed"
        )
    finally:
        s3_bucket.server.resume()
    snap = batch.wait(timeout=120, poll_interval=0.3)
    assert snap.all_succeeded, (batch.results(), fleet.logs()[-4000:])
    account = sim.ledger()
    assert account["creations"] == 3 and account["duplicate_inputs"] == 0  # never created again
    stored = s3_bucket.keys(f"runs/{batch.id}/")
    served = set(account["files_served"].values())
    for record in batch.results():
        data = stored[f"runs/{record['files'][0]['key']}"]
        assert hashlib.sha256(data).hexdigest() in served


def test_retry_of_an_item_whose_outputs_were_refused_resumes_its_prediction(
    settings, sim_factory, worker_factory, tmp_path
):
    """Issue 18.2: the prediction succeeded, the output location refused the file (here a file
    stands where its folder should be: a refusal, so the item fails at once, no paid fallback).
    Once the location is fixed, `producer retry` finishes the item on the same prediction,
    downloading its output again: never created again."""
    sim = slow_sim(sim_factory, seconds=3.0)
    settings = settings.with_(replicate_base_url=sim.url)
    fleet = worker_factory(settings, count=1, sim=sim)
    prompts = tmp_path / "prompts.json"
    prompts.write_text(json.dumps([{"prompt": "a kingfisher diving", "output": "birds/kingfisher.webp"}]))
    batch = api.submit(prompts, settings=settings, model=FLUX_DEV)
    blocker = settings.output_dir / "birds"
    blocker.write_text("a file where the folder should be")  # while the prediction runs
    snap = batch.wait(timeout=60, poll_interval=0.3)
    [record] = batch.results()
    assert snap.counts.get("failed") == 1 and record["attempts"][0]["prediction_id"], record
    assert sim.ledger()["creations"] == 1

    blocker.unlink()
    retried = cli(settings, sim, "retry", batch.id, "--wait")
    assert retried.returncode == 0, retried.stdout + retried.stderr + fleet.logs()[-3000:]
    [record] = batch.results()
    assert record["status"] == "succeeded" and (settings.output_dir / "birds").is_dir()
    first, second = record["attempts"]
    assert second["prediction_id"] == first["prediction_id"] and second["model"] == FLUX_DEV
    assert sim.ledger()["creations"] == 1  # the same prediction, its output downloaded again
