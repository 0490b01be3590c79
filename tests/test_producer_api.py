"""The Python API and the CLI commands around a recorded batch, without workers: the ledger
is driven by hand where a worker would write, so the producer side is tested on its own (the
end-to-end tests with real workers are in test_producer_e2e.py)."""

from __future__ import annotations

import io
import json
import threading
import time

import pytest
from click.testing import CliRunner

import producer
from producer.cli import cli
from shared.errors import InputError, NoWorkerError
from shared.keys import Keys
from shared.ledger import Ledger

PROMPTS = ["a red fox in snow", "a lighthouse in a storm", "a tiny robot gardener"]


def base_args(settings):
    return ["--redis-url", settings.redis_url, "--env-file", "/nonexistent"]


def queue_length(redis_client, settings) -> int:
    """Sends waiting to run (held by the schedule or in the broker: workers feed them)."""
    from tests.support.attempt_path import held_sends

    return held_sends(settings, redis_client)


def finish(ledger: Ledger, batch_id: str, index: int, status: str = "succeeded", outputs=None):
    ledger.transition(
        batch_id, index, "running", attempt=1, attempt_update={"model": "m", "status": "running"}
    )
    ledger.transition(
        batch_id,
        index,
        status,
        attempt=1,
        fields={"outputs": outputs or [f"{index}.png"], "model": "black-forest-labs/flux-dev"},
        attempt_update={"status": status, "final": True},
    )


def test_submit_records_and_enqueues_one_task_per_item(settings, redis_client):
    batch = producer.submit(PROMPTS, settings=settings, model="black-forest-labs/flux-dev")
    assert batch.created and len(batch.requests) == 3
    assert queue_length(redis_client, settings) == 3
    snap = batch.status()
    assert (snap.total, snap.counts["pending"], snap.finished) == (3, 3, False)
    records = batch.results()
    assert [r["index"] for r in records] == [0, 1, 2]
    assert [r["prompt"] for r in records] == PROMPTS and {r["status"] for r in records} == {"pending"}


def test_resubmitting_the_same_batch_id_enqueues_nothing(settings, redis_client):
    first = producer.submit(PROMPTS, settings=settings, batch_id="same-id")
    assert first.created and queue_length(redis_client, settings) == 3
    again = producer.submit(PROMPTS, settings=settings, batch_id="same-id")
    assert not again.created and queue_length(redis_client, settings) == 3
    with pytest.raises(InputError, match="exists already with other items"):
        producer.submit(PROMPTS[:2], settings=settings, batch_id="same-id")
    assert queue_length(redis_client, settings) == 3

    result = CliRunner().invoke(
        cli, base_args(settings) + ["submit", "-", "--batch-id", "same-id"], env=settings.as_env()
    )
    assert result.exit_code == 2  # "-" is not a file: bad input, still nothing enqueued
    assert queue_length(redis_client, settings) == 3


def test_cli_resubmit_says_nothing_new_was_enqueued(tmp_path, settings, redis_client):
    prompts = tmp_path / "p.json"
    prompts.write_text(json.dumps(PROMPTS))
    runner = CliRunner()
    args = base_args(settings) + ["submit", str(prompts), "--batch-id", "cli-same", "--json"]
    first = runner.invoke(cli, args, env=settings.as_env())
    assert first.exit_code == 0, first.output
    assert json.loads(first.stdout.strip().splitlines()[-1]) == {"batch": "cli-same", "items": 3}
    second = runner.invoke(cli, args, env=settings.as_env())
    assert second.exit_code == 0
    assert "nothing new was enqueued" in second.stderr
    assert json.loads(second.stdout.strip().splitlines()[-1]) == {"batch": "cli-same", "items": 3}
    assert queue_length(redis_client, settings) == 3


def test_submit_wait_without_any_worker_exits_3_quickly(tmp_path, settings, redis_client):
    prompts = tmp_path / "p.json"
    prompts.write_text(json.dumps(PROMPTS))
    started = time.monotonic()
    result = CliRunner().invoke(
        cli, base_args(settings) + ["submit", str(prompts), "--wait"], env=settings.as_env()
    )
    assert result.exit_code == 3, result.output
    assert time.monotonic() - started < 30  # "within a few seconds", with a wide margin for CI
    assert "no worker is consuming queue" in result.stderr and "producer wait" in result.stderr


def test_wait_prints_plain_lines_when_not_a_terminal(settings, redis_client):
    batch = producer.submit(PROMPTS, settings=settings)
    ledger = Ledger(redis_client, Keys(settings.key_prefix))

    def fake_worker():
        for index in range(3):
            time.sleep(0.3)
            finish(ledger, batch.id, index, "failed" if index == 2 else "succeeded")

    thread = threading.Thread(target=fake_worker)
    thread.start()
    out = io.StringIO()
    snap = batch.wait(progress=out, check_workers=False, poll_interval=0.05, interval=0.0)
    thread.join()
    text = out.getvalue()
    assert "\r" not in text and "\x1b" not in text
    lines = text.splitlines()
    assert len(lines) >= 3 and all(line.startswith(f"batch {batch.id}: ") for line in lines)
    assert lines[-1].startswith(f"batch {batch.id}: 3/3 done (ok 2, failed 1)")
    assert snap.finished and not snap.all_succeeded and snap.failed == 1


def test_cli_wait_exit_codes_and_plain_output(settings, redis_client, monkeypatch):
    monkeypatch.setattr("workers.dispatch.workers_alive", lambda *a, **k: ["fake@host"])
    batch = producer.submit(PROMPTS, settings=settings)
    ledger = Ledger(redis_client, Keys(settings.key_prefix))
    for index in range(3):
        finish(ledger, batch.id, index)
    result = CliRunner().invoke(cli, base_args(settings) + ["wait", batch.id], env=settings.as_env())
    assert result.exit_code == 0, result.output
    assert f"batch {batch.id}: 3/3 done" in result.stdout and "all succeeded" in result.stdout
    assert "manifest" in result.stdout

    failed = producer.submit(PROMPTS, settings=settings, again=True)  # the same prompts, a new batch
    finish(ledger, failed.id, 0)
    finish(ledger, failed.id, 1, "failed")
    finish(ledger, failed.id, 2, "substituted")
    result = CliRunner().invoke(
        cli, base_args(settings) + ["wait", failed.id, "--json"], env=settings.as_env()
    )
    assert result.exit_code == 1
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["counts"]["failed"] == 1 and summary["counts"]["substituted"] == 1
    assert f"producer retry {failed.id}" in result.stderr


def test_status_results_list_cancel_retry_through_the_cli(settings, redis_client):
    runner = CliRunner()
    env = settings.as_env()
    batch = producer.submit(PROMPTS, settings=settings)
    queued_task_ids(redis_client, settings)  # a worker's feeder put them into the broker
    ledger = Ledger(redis_client, Keys(settings.key_prefix))
    finish(ledger, batch.id, 0)
    finish(ledger, batch.id, 1, "failed")

    status = runner.invoke(cli, base_args(settings) + ["status", batch.id, "--json"], env=env)
    data = json.loads(status.stdout)
    assert (data["done"], data["queued"], data["counts"]["failed"], data["finished"]) == (2, 1, 1, False)
    human = runner.invoke(cli, base_args(settings) + ["status", batch.id], env=env).stdout
    assert "succeeded 1" in human and "failed 1" in human and "ETA" in human

    results = runner.invoke(cli, base_args(settings) + ["results", batch.id, "--json"], env=env)
    records = [json.loads(line) for line in results.stdout.splitlines()]
    assert [r["status"] for r in records] == ["succeeded", "failed", "pending"]
    assert set(records[0]) >= {
        "index",
        "id",
        "prompt",
        "requested_model",
        "model",
        "status",
        "outputs",
        "attempts",
        "error",
    }

    listed = runner.invoke(cli, base_args(settings) + ["list"], env=env).stdout
    assert batch.id in listed

    before = queue_length(redis_client, settings)
    retried = runner.invoke(cli, base_args(settings) + ["retry", batch.id], env=env)
    assert retried.exit_code == 0 and "1 failed items enqueued again (items 1)" in retried.stdout
    assert queue_length(redis_client, settings) == before + 1
    assert batch.status().counts["pending"] == 2

    canceled = runner.invoke(cli, base_args(settings) + ["cancel", batch.id], env=env)
    assert canceled.exit_code == 0 and "2 queued item(s) canceled now" in canceled.stdout
    snap = batch.status()
    assert snap.finished and snap.counts["canceled"] == 2 and snap.succeeded == 1


def test_status_without_an_id_is_the_latest_batch_and_list_speaks_its_words(settings, redis_client):
    """`producer status` alone follows the latest batch; `list` has a header and the state words
    of `status` (queued, running, canceling, finished, canceled) (issue 18.8)."""
    runner = CliRunner()
    env = settings.as_env()
    none_yet = runner.invoke(cli, base_args(settings) + ["status"], env=env)
    assert none_yet.exit_code == 2 and "no batch in Redis yet" in none_yet.stderr
    ledger = Ledger(redis_client, Keys(settings.key_prefix))
    older = producer.submit(PROMPTS, settings=settings)
    finish(ledger, older.id, 0)
    time.sleep(0.01)  # a later creation time
    newest = producer.submit(PROMPTS[:2], settings=settings)
    latest = runner.invoke(cli, base_args(settings) + ["status"], env=env)
    assert latest.exit_code == 0, latest.output
    assert latest.stdout.splitlines()[0] == f"batch {newest.id}: queued"
    assert (
        runner.invoke(cli, base_args(settings) + ["status", older.id], env=env).stdout.splitlines()[0]
        == f"batch {older.id}: running"
    )
    for index in range(2):
        finish(ledger, newest.id, index)
    older.cancel()
    words = {
        json.loads(line)["batch_id"]: json.loads(line)["state"]
        for line in runner.invoke(cli, base_args(settings) + ["list", "--json"], env=env).stdout.splitlines()
    }
    assert words == {newest.id: "finished", older.id: "canceled"}
    listed = runner.invoke(cli, base_args(settings) + ["list"], env=env).stdout.splitlines()
    # The header's words since `list` fits 80 columns (they were CREATED, PRIORITY, SPENT/LIMIT USD).
    assert listed[0].split() == ["BATCH", "AGE", "PRIO", "STATE", "DONE", "USD", "ITEMS"]
    assert max(len(line) for line in listed) <= 80, "\n".join(listed)
    assert listed[1].startswith(newest.id) and " finished " in listed[1] and " 2/2 " in listed[1]
    assert listed[2].startswith(older.id) and " canceled " in listed[2] and " 3/3 " in listed[2]
    for row, batch_id in ((listed[1], newest.id), (listed[2], older.id)):
        status_word = runner.invoke(cli, base_args(settings) + ["status", batch_id], env=env).stdout.split()[
            2
        ]
        assert f" {status_word} " in row


def test_wait_raises_no_worker_error(settings, redis_client):
    batch = producer.submit(PROMPTS[:1], settings=settings)
    with pytest.raises(NoWorkerError, match=f"producer wait {batch.id}"):
        batch.wait(poll_interval=0.1, timeout=30)


def test_wait_timeout_returns_an_unfinished_snapshot(settings, redis_client):
    batch = producer.submit(PROMPTS[:1], settings=settings)
    snap = batch.wait(timeout=0.3, poll_interval=0.1, check_workers=False)
    assert not snap.finished and snap.queued == 1


def test_open_batch_unknown_and_bad_ids(settings, redis_client):
    with pytest.raises(InputError, match="no batch"):
        producer.open_batch("b-missing", settings)
    with pytest.raises(InputError, match="batch id"):
        producer.open_batch("../etc", settings)


def test_resubmitting_other_items_under_a_used_id_is_bad_input(settings, redis_client):
    producer.submit(PROMPTS, settings=settings, batch_id="used-id")
    with pytest.raises(InputError, match="first difference at item 1"):
        producer.submit([PROMPTS[0], "something else", PROMPTS[2]], settings=settings, batch_id="used-id")
    assert queue_length(redis_client, settings) == 3


def test_ctrl_c_stops_waiting_without_cancelling(settings, redis_client, monkeypatch):
    monkeypatch.setattr("workers.dispatch.workers_alive", lambda *a, **k: ["fake@host"])
    batch = producer.submit(PROMPTS, settings=settings)

    def interrupted(_seconds):
        raise KeyboardInterrupt

    monkeypatch.setattr("producer.api.waiting.time.sleep", interrupted)
    result = CliRunner().invoke(cli, base_args(settings) + ["wait", batch.id], env=settings.as_env())
    assert result.exit_code == 130
    assert (
        f"Resume with: producer wait {batch.id}" in result.stderr and "nothing was canceled" in result.stderr
    )
    info = batch.info()
    assert not info.canceled and info.counts["pending"] == 3


def test_terminal_gets_a_live_bar(settings, redis_client):
    """`producer wait` in a pseudo-terminal draws the bar in place instead of printing lines."""
    import os
    import pty
    import subprocess
    import sys

    batch = producer.submit(PROMPTS, settings=settings)
    ledger = Ledger(redis_client, Keys(settings.key_prefix))
    for index in range(3):
        finish(ledger, batch.id, index)
    primary, secondary = pty.openpty()
    env = {**os.environ, **settings.as_env(), "COLUMNS": "120"}
    process = subprocess.Popen(
        [sys.executable, "-m", "producer.cli", "--env-file", "/nonexistent", "wait", batch.id],
        stdin=secondary,
        stdout=secondary,
        stderr=secondary,
        env=env,
    )
    os.close(secondary)
    chunks = []
    while True:
        try:
            data = os.read(primary, 4096)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    assert process.wait(30) == 0
    os.close(primary)
    text = b"".join(chunks).decode(errors="replace")
    assert "\r\x1b[2K" in text and "━" in text and "3/3" in text  # rich redraws the line in place


SKETCH_MODEL_TOML = """
[models."acme/sketch"]
kind = "image"
output = "single"
default_format = "png"
price = 0.002
price_unit = "image"
"""


def test_producer_and_workers_load_the_same_models_file(tmp_path, settings, redis_client, sim):
    from workers.celery_app import celery_config
    from workers.context import WorkerContext

    # Not in the registry: its schema is asked of Replicate (the stand-in), which has no such model.
    with pytest.raises(InputError, match="acme/sketch: not found on Replicate"):
        producer.submit(
            ["a pencil owl"], settings=settings.with_(replicate_base_url=sim.url), model="acme/sketch"
        )
    models = tmp_path / "models.toml"
    models.write_text(SKETCH_MODEL_TOML)
    with_file = settings.with_(models_file=models)
    batch = producer.submit(["a pencil owl"], settings=with_file, model="acme/sketch")
    assert batch.created and batch.requests[0].model == "acme/sketch"
    ctx = WorkerContext.build(with_file)
    try:
        assert ctx.registry.get("acme/sketch").name == "acme/sketch"
    finally:
        ctx.close()
    # and the worker's thread count comes from FLEET_WORKER_CONCURRENCY when given
    from shared.settings import Settings

    loaded = Settings.load(environ={"FLEET_WORKER_CONCURRENCY": "5"}, dotenv_path=None)
    assert loaded.worker_concurrency == 5 and celery_config(loaded)["worker_concurrency"] == 5
    assert celery_config(settings)["worker_concurrency"] == 32


# --- the same content twice -------------------------------------------------------------------------
def batch_count(redis_client, settings) -> int:
    return int(redis_client.zcard(Keys(settings.key_prefix).batches))


def test_the_same_content_twice_is_refused_unless_again(settings, redis_client):
    first = producer.submit(PROMPTS, settings=settings, model="black-forest-labs/flux-dev")
    assert first.created and first.duplicate_of is None
    with pytest.raises(producer.DuplicateBatchError) as info:
        producer.submit(PROMPTS, settings=settings, model="black-forest-labs/flux-dev")
    assert info.value.batch_id == first.id
    message = str(info.value)
    for text in (
        f"batch {first.id}",
        "created 0s ago",
        "running: 0/3 done",
        f"producer status {first.id}",
        "--again",
        "nothing was enqueued",
    ):
        assert text in message, (text, message)
    assert queue_length(redis_client, settings) == 3 and batch_count(redis_client, settings) == 1
    # flags that only name the same thing differently do not make it new: the routed requests count
    with pytest.raises(producer.DuplicateBatchError):
        producer.submit({"model": "flux-dev", "items": PROMPTS}, settings=settings)

    again = producer.submit(PROMPTS, settings=settings, model="black-forest-labs/flux-dev", again=True)
    assert again.created and again.id != first.id and again.duplicate_of.id == first.id
    assert queue_length(redis_client, settings) == 6
    named = producer.submit(PROMPTS, settings=settings, model="black-forest-labs/flux-dev", batch_id="named")
    assert named.created and named.duplicate_of.id == again.id  # an explicit new id is on purpose too
    # other content is not a duplicate: other params, other options, one prompt less
    assert producer.submit(PROMPTS, settings=settings, substitute_on_failure=True).created
    assert producer.submit(PROMPTS[:2], settings=settings).created
    seeded = producer.submit(PROMPTS, settings=settings, params={"seed": 7})
    assert seeded.created
    # a finished batch is still a duplicate while Redis keeps it; once retention removed it, not
    ledger = Ledger(redis_client, Keys(settings.key_prefix))
    for index in range(3):
        finish(ledger, seeded.id, index)
    with pytest.raises(producer.DuplicateBatchError, match="finished, all 3 succeeded"):
        producer.submit(PROMPTS, settings=settings, params={"seed": 7})
    assert ledger.prune_finished(before=float(redis_client.time()[0]) + 1) == [seeded.id]
    assert producer.submit(PROMPTS, settings=settings, params={"seed": 7}).created


def test_resubmitting_a_used_id_with_other_params_is_refused(settings, redis_client):
    producer.submit(PROMPTS, settings=settings, batch_id="params-id")
    with pytest.raises(InputError, match=r"first difference at item 0, field params"):
        producer.submit(PROMPTS, settings=settings, batch_id="params-id", params={"seed": 3})
    with pytest.raises(InputError, match="other options"):
        producer.submit(PROMPTS, settings=settings, batch_id="params-id", substitute_on_failure=True)
    assert not producer.submit(PROMPTS, settings=settings, batch_id="params-id").created
    assert queue_length(redis_client, settings) == 3


def test_cli_refuses_the_same_file_twice_and_again_submits_it(tmp_path, settings, redis_client):
    prompts = tmp_path / "p.json"
    prompts.write_text(json.dumps(PROMPTS))
    runner = CliRunner()
    args = base_args(settings) + ["submit", str(prompts), "-m", "black-forest-labs/flux-dev"]
    first = runner.invoke(cli, args, env=settings.as_env())
    assert first.exit_code == 0, first.output
    first_id = first.stdout.split("batch ", 1)[1].split(":", 1)[0]
    second = runner.invoke(cli, args, env=settings.as_env())
    assert second.exit_code == 2
    assert second.stderr.startswith(
        f"error: the same items were submitted already as batch {first_id}, created "
    )
    assert f"producer status {first_id}" in second.stderr and "--again" in second.stderr
    assert second.stdout == "" and queue_length(redis_client, settings) == 3
    third = runner.invoke(cli, args + ["--again", "--json"], env=settings.as_env())
    assert third.exit_code == 0, third.output
    assert f"note: the same items were submitted as batch {first_id}" in third.stderr
    assert json.loads(third.stdout.strip().splitlines()[-1])["items"] == 3
    assert queue_length(redis_client, settings) == 6 and batch_count(redis_client, settings) == 2


# --- what is printed before enqueueing ----------------------------------------------------------------
def test_submit_prints_notes_plan_and_routing_warnings_before_enqueueing(
    tmp_path, settings, redis_client, monkeypatch, sim
):
    from PIL import Image

    settings = settings.with_(replicate_base_url=sim.url)  # reference images are uploaded at submit

    for name, colour in (("a.png", "red"), ("b.png", "blue")):
        Image.new("RGB", (4, 4), colour).save(tmp_path / name)
    prompts = tmp_path / "p.json"
    prompts.write_text(
        json.dumps(
            [
                "a fox",
                {
                    "prompt": "fuse them",
                    "model": "black-forest-labs/flux-dev",
                    "image_input": ["a.png", "b.png"],
                    "params": {"num_outputs": 2},
                },
            ]
        )
    )

    def no_enqueue(*_args, **_kwargs):
        raise RuntimeError("enqueue reached")

    monkeypatch.setattr("workers.dispatch.enqueue_items", no_enqueue)
    result = CliRunner().invoke(cli, base_args(settings) + ["submit", str(prompts)], env=settings.as_env())
    assert isinstance(result.exception, RuntimeError)  # it got as far as enqueueing ...
    out = result.stdout  # ... after printing all of this
    assert "note: no model given for 1 item(s); using black-forest-labs/flux-dev" in result.stderr
    assert out.startswith("Plan: 2 item(s) on 2 model(s)")
    assert "Routing changes (1):" in out and "google/nano-banana" in out
    assert "num_outputs=2 dropped" in out and "Estimated cost: $" in out
    assert "Routes (" not in out and "queued" not in out
    assert sim.ledger()["files_uploaded"] == 2  # the references, before anything is enqueued
    dry = CliRunner().invoke(
        cli, base_args(settings) + ["submit", str(prompts), "--dry-run"], env=settings.as_env()
    )
    assert dry.exit_code == 0 and "note: no model given for 1 item(s)" in dry.stderr


# --- cancel revokes, retry after a cancel ------------------------------------------------------------
def queued_task_ids(redis_client, settings) -> list[str]:
    """The ids of the messages in the broker, after one round of the feeder."""
    from shared.scheduler import broker_lists
    from tests.support.attempt_path import feed

    feed(settings, redis_client)
    return [
        json.loads(raw)["headers"]["id"]
        for name in broker_lists(settings.queue)
        for raw in redis_client.lrange(name, 0, -1)
    ]


def test_cancel_revokes_the_queued_messages_of_the_items_it_cancels(settings, redis_client, monkeypatch):
    from celery.app.control import Control

    revoked: list[str] = []
    real_revoke = Control.revoke

    def recording_revoke(self, task_id, *args, **kwargs):
        revoked.extend(task_id if isinstance(task_id, list) else [task_id])
        return real_revoke(self, task_id, *args, **kwargs)

    monkeypatch.setattr(Control, "revoke", recording_revoke)
    monkeypatch.setattr("producer.api.canceling.REVOKE_CHUNK", 2)
    batch = producer.submit(PROMPTS, settings=settings)
    sent = queued_task_ids(redis_client, settings)
    ledger = Ledger(redis_client, Keys(settings.key_prefix))
    assert redis_client.hget(Keys(settings.key_prefix).item(batch.id, 0), "sent_tasks") in sent
    ledger.transition(batch.id, 0, "running")  # item 0 runs: its worker cancels it, nothing to revoke
    result = CliRunner().invoke(cli, base_args(settings) + ["cancel", batch.id], env=settings.as_env())
    assert result.exit_code == 0, result.output
    assert "2 queued item(s) canceled now, 2 queued task message(s) revoked" in result.stdout
    running_task = redis_client.hget(Keys(settings.key_prefix).item(batch.id, 0), "sent_tasks")
    assert sorted(revoked) == sorted(set(sent) - {running_task}) and len(revoked) == 2
    assert int(batch.cancel()) == 0  # nothing new to cancel or revoke


def test_revoking_is_best_effort(settings, redis_client, monkeypatch):
    from celery.app.control import Control

    def broken(self, *args, **kwargs):
        raise ConnectionError("broker went away")

    monkeypatch.setattr(Control, "revoke", broken)
    batch = producer.submit(PROMPTS, settings=settings)
    assert len(queued_task_ids(redis_client, settings)) == 3  # fed into the broker: revoked at cancel
    outcome = batch.cancel()
    assert (outcome.canceled, outcome.revoked) == (3, 0) and "broker went away" in outcome.revoke_error
    assert batch.status().finished and batch.status().counts["canceled"] == 3


def test_retry_after_cancel_runs_the_retried_items(settings, redis_client):
    runner = CliRunner()
    env = settings.as_env()
    batch = producer.submit(PROMPTS, settings=settings)
    ledger = Ledger(redis_client, Keys(settings.key_prefix))
    finish(ledger, batch.id, 0, "failed")
    ledger.transition(batch.id, 1, "running")
    batch.cancel()  # item 2 canceled now, item 1 is being canceled by its worker
    refused = runner.invoke(cli, base_args(settings) + ["retry", batch.id], env=env)
    assert refused.exit_code == 2 and "still being canceled: 1 item(s)" in refused.stderr
    ledger.transition(batch.id, 1, "canceled")  # the worker stopped it

    before = queue_length(redis_client, settings)
    retried = runner.invoke(cli, base_args(settings) + ["retry", batch.id], env=env)
    assert retried.exit_code == 0, retried.output
    assert "1 failed items enqueued again (items 0)" in retried.stdout
    assert "cancel is lifted" in retried.stdout and "canceled items stay canceled" in retried.stdout
    assert not ledger.is_canceled(batch.id)  # so a worker runs item 0 instead of canceling it again
    assert queue_length(redis_client, settings) == before + 1
    counts = batch.status().counts
    assert (counts["pending"], counts["canceled"], counts["failed"]) == (1, 2, 0)

    finish(ledger, batch.id, 0)
    nothing = runner.invoke(cli, base_args(settings) + ["retry", batch.id], env=env)
    assert "no failed items to retry" in nothing.stdout and "--include-canceled" in nothing.stdout
    resumed = runner.invoke(cli, base_args(settings) + ["retry", batch.id, "--include-canceled"], env=env)
    assert "2 failed or canceled items enqueued again (items 1, 2)" in resumed.stdout
    assert queue_length(redis_client, settings) == before + 3


def test_retry_help_documents_the_cancel_semantics():
    result = CliRunner().invoke(cli, ["retry", "--help"])
    assert "--include-canceled" in result.output and "lifts the batch's cancel" in result.output


# --- no settings argument -----------------------------------------------------------------------------
def test_submit_and_generate_without_settings_use_the_environment(
    tmp_path, settings, redis_client, monkeypatch
):
    monkeypatch.chdir(tmp_path)  # no .env here
    for name, value in settings.as_env().items():
        monkeypatch.setenv(name, value)
    batch = producer.submit(PROMPTS)
    assert batch.created and batch.settings.key_prefix == settings.key_prefix
    assert queue_length(redis_client, settings) == 3
    assert producer.open_batch(batch.id).id == batch.id
    assert batch.id in [info.id for info in producer.list_batches()]
    assert producer.limits_status().concurrency_limit == settings.concurrency_limit
    monkeypatch.setattr("producer.api.waiting.WORKER_PING_SECONDS", 0.5)
    with pytest.raises(NoWorkerError):  # it got as far as waiting for a worker: submitted without settings
        producer.generate(
            "a paper boat on a pond", "black-forest-labs/flux-dev", aspect_ratio="1:1", timeout=30
        )
    assert queue_length(redis_client, settings) == 4


# --- priorities -------------------------------------------------------------------------------------
def test_priority_is_recorded_listed_and_checked(tmp_path, settings, redis_client):
    runner = CliRunner()
    env = settings.as_env()
    prompts = tmp_path / "p.json"
    prompts.write_text(json.dumps(PROMPTS))
    result = runner.invoke(
        cli, base_args(settings) + ["submit", str(prompts), "--priority", "high", "--json"], env=env
    )
    assert result.exit_code == 0, result.output
    batch_id = json.loads(result.stdout.strip().splitlines()[-1])["batch"]
    assert producer.open_batch(batch_id, settings).info().priority == "high"
    listed = [
        json.loads(line)
        for line in runner.invoke(cli, base_args(settings) + ["list", "--json"], env=env).stdout.splitlines()
    ]
    assert {(d["batch_id"], d["priority"], d["state"]) for d in listed} >= {(batch_id, "high", "queued")}
    human = runner.invoke(cli, base_args(settings) + ["list"], env=env).stdout
    assert batch_id in human and "high" in human and "queued" in human
    with pytest.raises(InputError, match="priority must be one of high, normal, low"):
        producer.submit(["another"], settings=settings, priority="urgent")
    bad = runner.invoke(cli, base_args(settings) + ["submit", "x.json", "--priority", "urgent"], env=env)
    assert bad.exit_code == 2


def test_queue_depths_count_what_waits_per_priority(settings, redis_client):
    from producer.api import queue_depths

    producer.submit(PROMPTS, settings=settings, priority="high")
    producer.submit(["one more"], settings=settings)
    depths = queue_depths(settings)
    assert depths.ready == {"high": 3, "normal": 1, "low": 0}
    assert depths.batches == {"high": 1, "normal": 1, "low": 0}
    assert depths.scheduled == 0 and depths.waiting == 4
    assert depths.to_dict()["waiting"] == 4
