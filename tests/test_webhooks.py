"""Webhooks: the completion board on the real Redis, the receiver's signature checks over HTTP, and
real workers that learn of finished predictions from the stand-in's signed webhooks instead of
polling (and still finish when a webhook never comes)."""
from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import httpx
import pytest

from replicate_sim.webhooks import new_secret, sign
from shared.keys import Keys
from tests.support.e2e import submit, wait_finished
from workers.completions import CompletionBoard
from workers.webhook_receiver import PATH, WebhookReceiver, signing_secret

MODEL = "black-forest-labs/flux-dev"


def prediction(pid: str = "p1", status: str = "succeeded") -> dict:
    return {"id": pid, "status": status, "model": MODEL, "version": "hidden", "input": {"prompt": "x" * 500},
            "output": [f"https://replicate.delivery/{pid}/out-0.png"], "error": None, "logs": "lots",
            "created_at": "2026-11-26T00:00:00Z"}


# --- the board ------------------------------------------------------------------------------------
def test_a_completion_reaches_its_waiter_whichever_comes_first(redis_client, key_prefix):
    board = CompletionBoard(redis_client, Keys(key_prefix))
    try:
        # arrived before anyone watched: handed over at once, trimmed of input and logs
        assert board.notify(prediction("early")) is False
        with board.watch("early") as watch:
            got = watch.wait(0)
        assert got["status"] == "succeeded" and got["output"] == prediction("early")["output"]
        assert "input" not in got and "logs" not in got

        # watched first: the notify wakes the waiting thread within milliseconds
        with board.watch("late") as watch:
            assert watch.wait(0.05) is None
            sent_at = []
            threading.Timer(0.3, lambda: (sent_at.append(time.monotonic()), board.notify(prediction("late")))).start()
            got = watch.wait(5)
            woke_after = time.monotonic() - sent_at[0]
        assert got["id"] == "late" and woke_after < 0.2, woke_after
        # consumed: nothing stays behind
        keys = Keys(key_prefix)
        assert not redis_client.exists(keys.completion("late"), keys.completion_watch("late"), keys.completion("early"))
    finally:
        board.close()


def test_many_threads_each_get_their_own_completion(redis_client, key_prefix):
    board = CompletionBoard(redis_client, Keys(key_prefix))
    results: dict[str, str | None] = {}

    def wait_for(pid: str) -> None:
        with board.watch(pid) as watch:
            got = watch.wait(10)
        results[pid] = got and got["id"]

    threads = [threading.Thread(target=wait_for, args=(f"p{i}",)) for i in range(40)]
    try:
        for t in threads:
            t.start()
        time.sleep(0.3)
        for i in reversed(range(40)):
            board.notify(prediction(f"p{i}"))
        for t in threads:
            t.join(15)
        assert results == {f"p{i}": f"p{i}" for i in range(40)}
    finally:
        board.close()


# --- the receiver ---------------------------------------------------------------------------------
@pytest.fixture
def receiver(settings, redis_client):
    secret = new_secret()
    rx = WebhookReceiver(settings.with_(webhook_listen="127.0.0.1:0"), redis_client=redis_client, secret=secret).start()
    rx.secret = secret
    yield rx
    rx.stop()


def deliver(rx, body: str, *, secret: str | None = None, timestamp: int | None = None, path: str = PATH):
    ts = int(time.time()) if timestamp is None else timestamp
    headers = {"webhook-id": "msg_1", "webhook-timestamp": str(ts),
               "webhook-signature": sign(secret or rx.secret, "msg_1", ts, body), "content-type": "application/json"}
    return httpx.post(f"http://127.0.0.1:{rx.port}{path}", content=body, headers=headers, timeout=5)


def test_receiver_stores_signed_terminal_predictions_and_rejects_the_rest(receiver, redis_client, key_prefix):
    keys = Keys(key_prefix)
    good = json.dumps(prediction("ok"))
    assert deliver(receiver, good).status_code == 200
    assert json.loads(redis_client.get(keys.completion("ok")))["status"] == "succeeded"

    forged = json.dumps(prediction("forged"))
    assert deliver(receiver, forged, secret=new_secret()).status_code == 401  # another key
    assert deliver(receiver, forged, timestamp=int(time.time()) - 3600).status_code == 401  # replayed
    unsigned = httpx.post(f"http://127.0.0.1:{receiver.port}{PATH}", content=forged, timeout=5)
    assert unsigned.status_code == 401
    assert not redis_client.exists(keys.completion("forged"))

    assert deliver(receiver, json.dumps(prediction("run", "processing"))).status_code == 200
    assert not redis_client.exists(keys.completion("run"))  # start/output/logs events change nothing
    assert deliver(receiver, "not json").status_code == 400
    assert deliver(receiver, good, path="/elsewhere").status_code == 404
    assert httpx.get(f"http://127.0.0.1:{receiver.port}/healthz", timeout=5).status_code == 200
    assert receiver.counts == {"accepted": 1, "ignored": 1, "rejected": 4, "unavailable": 0}


def test_receiver_answers_503_when_redis_is_down_so_replicate_delivers_again(settings):
    import redis

    down = redis.Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.5)
    secret = new_secret()
    rx = WebhookReceiver(settings.with_(webhook_listen="127.0.0.1:0"), redis_client=down, secret=secret).start()
    rx.secret = secret
    try:
        assert deliver(rx, json.dumps(prediction("x"))).status_code == 503
        assert httpx.get(f"http://127.0.0.1:{rx.port}/healthz", timeout=5).status_code == 503
    finally:
        rx.stop()


def test_signing_secret_is_fetched_from_the_account_when_not_configured(settings, sim_factory):
    secret = new_secret()
    sim = sim_factory(webhook_secret=secret)
    assert signing_secret(settings.with_(replicate_base_url=sim.url)) == secret
    assert signing_secret(settings.with_(webhook_secret="whsec_given")) == "whsec_given"


def counter_values(redis_client, settings) -> dict[tuple[str, str], float]:
    from shared.metrics.recorder import read_counters

    return {(metric, next(iter(labels.values()), "")): value
            for metric, rows in read_counters(redis_client, Keys(settings.key_prefix)).items()
            for labels, value in rows}


# --- real workers ---------------------------------------------------------------------------------
@pytest.mark.e2e
def test_workers_learn_of_the_end_from_webhooks_without_polling(settings, redis_client, sim_factory, worker_factory):
    sim = sim_factory(latency_scale=0.05, image_scale=0.01)
    rx = WebhookReceiver(settings.with_(webhook_listen="127.0.0.1:0", replicate_base_url=sim.url),
                         redis_client=redis_client).start()  # secret fetched from the stand-in
    try:
        url = f"http://127.0.0.1:{rx.port}{PATH}"
        fleet = worker_factory(settings, count=2, sim=sim, FLEET_WEBHOOK_URL=url)
        ledger, requests = submit(settings, redis_client, "b-hook", [f"a heron, study {i}" for i in range(20)])
        wait_finished(ledger, "b-hook", 60, fleet)
        assert ledger.batch("b-hook").counts["succeeded"] == 20
        for item in ledger.items("b-hook"):
            assert item.outputs and Path(item.outputs[0]).stat().st_size > 0
        sim_ledger = sim.ledger(detail=False)
        assert sim_ledger["creations"] == 20 and sim_ledger["duplicate_inputs"] == 0
        assert sim_ledger["reads_by_route"].get("predictions.get", 0) == 0, sim_ledger["reads_by_route"]
        assert sim_ledger["webhooks"]["sent"] >= 20
        assert rx.counts["accepted"] == 20
        counters = counter_values(redis_client, settings)
        assert counters[("ends_noticed", "webhook")] == 20 and ("ends_noticed", "poll") not in counters
        assert counters[("webhooks", "accepted")] == 20
    finally:
        rx.stop()


@pytest.mark.e2e
def test_a_lost_webhook_is_caught_by_the_safety_poll(settings, redis_client, sim_factory, worker_factory):
    sim = sim_factory(latency_scale=0.05, image_scale=0.01)
    # The model's usual duration is known (0.1 s): the safety poll comes ~10 s after creation.
    redis_client.hset(Keys(settings.key_prefix).model_latency, MODEL, "0.1")
    fleet = worker_factory(settings, count=1, sim=sim, FLEET_WEBHOOK_URL="http://127.0.0.1:9/nobody-listens")
    ledger, _ = submit(settings, redis_client, "b-lost-hook", ["a crane, study 1", "a crane, study 2"])
    wait_finished(ledger, "b-lost-hook", 40, fleet)
    assert ledger.batch("b-lost-hook").counts["succeeded"] == 2
    sim_ledger = sim.ledger(detail=False)
    assert sim_ledger["webhooks"]["failed"] >= 2 and sim_ledger["creations"] == 2
    assert 1 <= sim_ledger["reads_by_route"].get("predictions.get", 0) <= 4
    assert counter_values(redis_client, settings)[("ends_noticed", "poll")] == 2  # what an alert watches


def test_a_delivery_frees_the_slot_a_dead_worker_left_but_never_a_live_one(receiver, settings, redis_client,
                                                                           key_prefix):
    from shared.limiter import HolderInfo, Limiter

    s = settings.with_(concurrency_limit=2, lease_seconds=0.6)
    dead = Limiter.from_settings(redis_client, Keys(key_prefix), s)
    dead.acquire(HolderInfo(task_id="dead")).set_prediction("p-dead")
    dead.close()  # died while its prediction ran
    live = Limiter.from_settings(redis_client, Keys(key_prefix), s)
    lease = live.acquire(HolderInfo(task_id="live"))
    lease.set_prediction("p-live")
    time.sleep(1.0)
    assert live.status().in_use == 2 and [h.task_id for h in live.status().holders if h.orphaned] == ["dead"]

    assert deliver(receiver, json.dumps(prediction("p-dead"))).status_code == 200
    assert deliver(receiver, json.dumps(prediction("p-live"))).status_code == 200
    assert [h.task_id for h in live.status().holders] == ["live"]  # its worker releases it itself
    lease.release()
    live.close()


def test_the_receivers_log_never_shows_the_token_or_the_signing_secret(settings, sim_factory, tmp_path):
    """`fleet-webhooks` as deployed, at DEBUG: it fetches the signing secret with the token, then
    takes good, forged, unsigned and malformed deliveries. Its whole output carries neither."""
    import os
    import signal
    import subprocess
    import sys

    from bench.processes import free_port
    from tests.support.wait import wait_until

    token = "r8_" + "W3bh00kT0k3n" * 3
    secret = new_secret()
    sim = sim_factory(token=token, webhook_secret=secret)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REPLICATE_", "FLEET_", "REDIS_URL"))}
    env.update(settings.with_(replicate_api_token=token, replicate_base_url=sim.url, log_level="DEBUG").as_env(),
               PYTHONPATH=str(Path(__file__).resolve().parent.parent))
    log_path = tmp_path / "webhooks.log"
    with log_path.open("w") as log:
        process = subprocess.Popen([str(Path(sys.executable).parent / "fleet-webhooks"), "--listen",
                                    f"127.0.0.1:{port}", "--env-file", "/nonexistent"], env=env, stdout=log,
                                   stderr=subprocess.STDOUT, start_new_session=True)
    try:
        def healthy() -> bool:
            try:
                return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(healthy, 30, "fleet-webhooks to answer", interval=0.2)
        rx = type("Receiver", (), {"port": port, "secret": secret})()
        body = json.dumps(prediction("p-log") | {"logs": f"Authorization: Bearer {token}"})
        assert deliver(rx, body).status_code == 200  # fetched secret == the stand-in's: accepted
        assert deliver(rx, body, secret=new_secret()).status_code == 401
        assert httpx.post(f"http://127.0.0.1:{port}{PATH}?token={token}", content=body, timeout=5).status_code == 401
        assert deliver(rx, f"not json {token}").status_code == 400
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(15)
    text = log_path.read_text(errors="replace")
    assert "receiving Replicate webhooks" in text and "DEBUG" in text, text  # it did log, at DEBUG
    assert "?token=[REDACTED]" in text, text  # the access log line was written, redacted
    assert token not in text and token[3:20] not in text, text
    assert secret not in text and secret.removeprefix("whsec_")[:16] not in text, text
