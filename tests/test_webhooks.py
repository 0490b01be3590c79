"""Webhooks: the completion board on the real Redis, the receiver's signature checks over HTTP, and
real workers that learn of finished predictions from the stand-in's signed webhooks instead of
polling (and still finish when a webhook never comes)."""

from __future__ import annotations

import base64
import json
import socket
import threading
import time
import uuid
from pathlib import Path

import httpx
import pytest

from replicate_sim.webhooks import new_secret, sign
from shared.keys import Keys
from shared.metrics.batched import FLUSH_INTERVAL
from tests.support.e2e import submit, wait_finished
from tests.support.limiter import LIVE_LEASE
from tests.support.wait import wait_until
from workers.completions import HANDED_COPY_TTL, CompletionBoard
from workers.webhook_receiver import (
    PATH,
    REPLAY_WINDOW_SECONDS,
    ServerLimits,
    WebhookReceiver,
    signing_secret,
)

MODEL = "black-forest-labs/flux-dev"


def prediction(pid: str = "p1", status: str = "succeeded") -> dict:
    return {
        "id": pid,
        "status": status,
        "model": MODEL,
        "version": "hidden",
        "input": {"prompt": "x" * 500},
        "output": [f"https://replicate.delivery/{pid}/out-0.png"],
        "error": None,
        "logs": "lots",
        "created_at": "2026-11-26T00:00:00Z",
    }


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
            threading.Timer(
                0.3, lambda: (sent_at.append(time.monotonic()), board.notify(prediction("late")))
            ).start()
            got = watch.wait(5)
            woke_after = time.monotonic() - sent_at[0]
        assert got["id"] == "late" and woke_after < 0.2, woke_after
        # consumed: nothing stays behind but the handed-over copy, which expires by itself
        keys = Keys(key_prefix)
        assert not redis_client.exists(keys.completion_watch("late"), keys.completion("early"))
        assert 0 < redis_client.pttl(keys.completion("late")) <= HANDED_COPY_TTL * 1000
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
def receiver_factory(settings, redis_client):
    """The real aiohttp app of `fleet-webhooks` on a real port (in a thread of this process)."""
    started = []

    def start(limits: ServerLimits | None = None, client=None):
        limits = limits or ServerLimits()
        secret = new_secret()
        rx = WebhookReceiver(
            settings.with_(webhook_listen="127.0.0.1:0"),
            redis_client=client or redis_client,
            secret=secret,
            limits=limits,
            metrics_interval=0.05,  # the counters in Redis within the tests' waits
        ).start()
        rx.secret = secret
        started.append(rx)
        return rx

    yield start
    for rx in started:
        rx.stop()


@pytest.fixture
def receiver(receiver_factory):
    return receiver_factory()


def signed_headers(
    secret: str, body: str, *, webhook_id: str | None = None, timestamp: int | None = None
) -> dict:
    webhook_id = webhook_id or f"msg_{uuid.uuid4().hex}"
    ts = int(time.time()) if timestamp is None else timestamp
    return {
        "webhook-id": webhook_id,
        "webhook-timestamp": str(ts),
        "webhook-signature": sign(secret, webhook_id, ts, body),
        "content-type": "application/json",
    }


def deliver(
    rx,
    body: str,
    *,
    secret: str | None = None,
    timestamp: int | None = None,
    path: str = PATH,
    webhook_id: str | None = None,
    changed: dict[str, str | None] | None = None,
):
    """A signed delivery (a new webhook-id each time unless given); `changed` headers replace the
    signed ones, or remove them (None)."""
    headers = signed_headers(secret or rx.secret, body, webhook_id=webhook_id, timestamp=timestamp)
    for name, value in (changed or {}).items():
        headers.pop(name, None)
        if value is not None:
            headers[name] = value
    return httpx.post(f"http://127.0.0.1:{rx.port}{path}", content=body, headers=headers, timeout=5)


def raw_exchange(port: int, data: bytes, *, timeout: float = 5.0) -> bytes:
    """Send raw bytes, return everything the server answers before it closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        return read_until_closed(sock)


def read_until_closed(sock: socket.socket) -> bytes:
    answer = b""
    try:
        while chunk := sock.recv(65536):
            answer += chunk
    except ConnectionResetError:  # closed with bytes of ours still unread: the same for the test
        pass
    return answer


def webhook_counter(redis_client, settings, outcome: str) -> float:
    return counter_values(redis_client, settings).get(("webhooks", outcome), 0)


def test_receiver_stores_signed_terminal_predictions_and_rejects_the_rest(receiver, redis_client, key_prefix):
    keys = Keys(key_prefix)
    good = json.dumps(prediction("ok"))
    assert deliver(receiver, good).status_code == 200
    assert json.loads(redis_client.get(keys.completion("ok")))["status"] == "succeeded"

    forged = json.dumps(prediction("forged"))
    assert deliver(receiver, forged, secret=new_secret()).status_code == 401  # another key
    assert deliver(receiver, forged, timestamp=int(time.time()) - 3600).status_code == 401  # too old
    assert deliver(receiver, forged, timestamp=int(time.time()) + 3600).status_code == 401  # from the future
    unsigned = httpx.post(
        f"http://127.0.0.1:{receiver.port}{PATH}",
        content=forged,
        headers={"content-type": "application/json"},
        timeout=5,
    )
    assert unsigned.status_code == 400  # no signature headers at all: malformed
    assert not redis_client.exists(keys.completion("forged"))

    assert deliver(receiver, json.dumps(prediction("run", "processing"))).status_code == 200
    assert not redis_client.exists(keys.completion("run"))  # start/output/logs events change nothing
    assert deliver(receiver, "not json").status_code == 400
    assert deliver(receiver, good, path="/elsewhere").status_code == 404
    assert httpx.get(f"http://127.0.0.1:{receiver.port}/healthz", timeout=5).status_code == 200
    assert receiver.counts == {
        "accepted": 1,
        "ignored": 1,
        "duplicate": 0,
        "rejected": 5,
        "unavailable": 0,
        "timed_out": 0,
        "overloaded": 0,
    }


def test_every_malformed_delivery_gets_400_and_is_counted(receiver, redis_client, settings, key_prefix):
    """Malformed timestamps and signatures used to raise past the validator (the connection
    dropped, nothing counted). Each one now gets 400 (413 for a body over the cap) and counts as
    rejected, here and in the metrics; none of them stores anything."""
    body = json.dumps(prediction("bad"))
    short_mac = "v1," + base64.b64encode(b"0" * 10).decode()
    answers = [
        deliver(receiver, body, changed={"webhook-timestamp": "yesterday"}).status_code,
        deliver(receiver, body, changed={"webhook-timestamp": "1.7e9"}).status_code,
        deliver(receiver, body, changed={"webhook-signature": "v1,not*base64!"}).status_code,
        deliver(receiver, body, changed={"webhook-signature": "v1,QUJD="}).status_code,  # bad padding
        deliver(receiver, body, changed={"webhook-signature": short_mac}).status_code,
        deliver(receiver, body, changed={"webhook-signature": "v1a,c2lnbmF0dXJl"}).status_code,  # no v1 entry
        deliver(receiver, body, changed={"webhook-id": None}).status_code,
        deliver(receiver, body, webhook_id="msg with spaces").status_code,
        deliver(receiver, body, changed={"content-type": "text/plain"}).status_code,
        deliver(receiver, body, changed={"content-type": None}).status_code,
        deliver(receiver, "").status_code,
        deliver(receiver, "[1, 2]").status_code,  # JSON, not a prediction
    ]
    headers = signed_headers(receiver.secret, "x")
    answers.append(
        httpx.post(
            f"http://127.0.0.1:{receiver.port}{PATH}",
            content=b"\xff\xfe not UTF-8",
            headers=headers,
            timeout=5,
        ).status_code
    )
    assert answers == [400] * len(answers), answers
    # a body over the cap: refused from its Content-Length, before a byte of it is read
    head = "".join(f"{k}: {v}\r\n" for k, v in signed_headers(receiver.secret, body).items())
    oversized = raw_exchange(
        receiver.port,
        (f"POST {PATH} HTTP/1.1\r\nHost: x\r\n{head}Content-Length: {11 * 1024 * 1024}\r\n\r\n").encode(),
    )
    assert oversized.startswith(b"HTTP/1.1 413"), oversized
    # a request aiohttp cannot even parse (a header line without a colon): answered 400 by aiohttp
    garbage = raw_exchange(
        receiver.port, f"POST {PATH} HTTP/1.1\r\nHost: x\r\nno colon here\r\n\r\n".encode()
    )
    assert garbage.split(b" ", 2)[1] == b"400", garbage
    rejected = len(answers) + 2
    wait_until(lambda: receiver.counts["rejected"] == rejected, 5, f"{rejected} rejections counted")
    wait_until(
        lambda: webhook_counter(redis_client, settings, "rejected") == rejected,
        5,
        what="the rejections in the metrics",
    )
    assert sum(receiver.counts.values()) == rejected
    assert not redis_client.keys(f"{key_prefix}:completion*")
    assert deliver(receiver, body).status_code == 200  # and the receiver is none the worse


def test_a_replayed_webhook_id_is_answered_but_handed_on_once(receiver, redis_client, settings, key_prefix):
    """Replicate delivers again when it saw no answer, and a captured delivery can be replayed
    within the timestamp tolerance: the same webhook-id gets 200 (so the sender stops), and the
    prediction is not handed on a second time."""
    keys = Keys(key_prefix)
    body = json.dumps(prediction("p-once"))
    headers = signed_headers(receiver.secret, body)
    url = f"http://127.0.0.1:{receiver.port}{PATH}"
    assert httpx.post(url, content=body, headers=headers, timeout=5).status_code == 200
    assert redis_client.exists(keys.completion("p-once"))
    redis_client.delete(keys.completion("p-once"))  # what the waiting worker does when it takes it
    for _ in range(3):
        answer = httpx.post(url, content=body, headers=headers, timeout=5)
        assert answer.status_code == 200 and answer.text == "already received"
    assert not redis_client.exists(keys.completion("p-once"))  # not handed on again
    assert 0 < redis_client.ttl(keys.webhook_delivery(headers["webhook-id"])) <= REPLAY_WINDOW_SECONDS
    # another delivery about the same prediction (another id) is a new message
    assert deliver(receiver, body).status_code == 200 and redis_client.exists(keys.completion("p-once"))
    assert receiver.counts["accepted"] == 2 and receiver.counts["duplicate"] == 3
    wait_until(lambda: webhook_counter(redis_client, settings, "duplicate") == 3, 5, "3 duplicates counted")


def test_slow_clients_are_cut_off_and_counted(receiver_factory, redis_client, settings):
    """A client trickling its headers (slowloris) or stalling in its body holds nothing for long."""
    rx = receiver_factory(ServerLimits(header_timeout=1.0, body_timeout=1.0))
    body = json.dumps(prediction("p-slow"))
    head = "".join(f"{k}: {v}\r\n" for k, v in signed_headers(rx.secret, body).items())
    with socket.create_connection(("127.0.0.1", rx.port), timeout=10) as trickler:
        started = time.monotonic()
        trickler.sendall(f"POST {PATH} HTTP/1.1\r\nHost: x\r\n".encode())
        try:
            for byte in head.encode():  # one byte every 0.2 s: never a whole head within the timeout
                trickler.sendall(bytes([byte]))
                time.sleep(0.2)
        except OSError:
            pass  # cut off while sending
        assert read_until_closed(trickler) == b"" and time.monotonic() - started < 8
    with socket.create_connection(("127.0.0.1", rx.port), timeout=10) as staller:
        staller.sendall(
            f"POST {PATH} HTTP/1.1\r\nHost: x\r\n{head}Content-Length: {len(body)}\r\n\r\n"
            f"{body[:10]}".encode()
        )  # then nothing more
        assert read_until_closed(staller).startswith(b"HTTP/1.1 408")
    with socket.create_connection(("127.0.0.1", rx.port), timeout=10) as silent:  # connects, says nothing
        assert read_until_closed(silent) == b""
    wait_until(lambda: webhook_counter(redis_client, settings, "timed_out") == 3, 5, "3 time-outs counted")
    assert rx.counts["timed_out"] == 3 and rx.counts["accepted"] == 0
    assert deliver(rx, body).status_code == 200


def test_connections_and_handlers_are_bounded(receiver_factory, redis_client, settings):
    """60 connections against a cap of 20: 40 get 503 at once and are closed (the first 20 are
    cut off after the header timeout). Two deliveries stalled in their bodies hold both handlers:
    a third waits `handler_wait`, then gets 503. Every one is counted."""
    rx = receiver_factory(
        ServerLimits(
            max_connections=20, max_handlers=2, header_timeout=3.0, body_timeout=3.0, handler_wait=0.5
        )
    )
    sockets = [socket.create_connection(("127.0.0.1", rx.port), timeout=10) for _ in range(60)]
    try:
        answers = [read_until_closed(sock) for sock in sockets[20:]]
        assert (
            answers
            == [b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"] * 40
        )
        assert [read_until_closed(sock) for sock in sockets[:20]] == [b""] * 20  # idle: cut off
    finally:
        for sock in sockets:
            sock.close()
    wait_until(lambda: rx.counts["overloaded"] == 40 and rx.counts["timed_out"] == 20, 5, "the counts")

    body = json.dumps(prediction("p-busy"))
    head = "".join(f"{k}: {v}\r\n" for k, v in signed_headers(rx.secret, body).items())
    stalled = [socket.create_connection(("127.0.0.1", rx.port), timeout=10) for _ in range(2)]
    try:
        for sock in stalled:
            sock.sendall(
                f"POST {PATH} HTTP/1.1\r\nHost: x\r\n{head}Content-Length: {len(body)}\r\n\r\n{{".encode()
            )
        time.sleep(0.3)  # both are in a handler, waiting for their bodies
        busy = deliver(rx, body)
        assert busy.status_code == 503 and busy.text == "busy"
        assert [read_until_closed(sock)[:12] for sock in stalled] == [b"HTTP/1.1 408"] * 2
    finally:
        for sock in stalled:
            sock.close()
    assert deliver(rx, body).status_code == 200  # handlers free again
    wait_until(
        lambda: (
            (
                webhook_counter(redis_client, settings, "overloaded"),
                webhook_counter(redis_client, settings, "timed_out"),
            )
            == (41, 22)
        ),
        5,
        "the metrics",
    )
    assert rx.counts["overloaded"] == 41 and rx.counts["timed_out"] == 22 and rx.counts["accepted"] == 1


def test_receiver_answers_503_when_redis_is_down_so_replicate_delivers_again(receiver_factory):
    import redis

    rx = receiver_factory(client=redis.Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.5))
    assert deliver(rx, json.dumps(prediction("x"))).status_code == 503
    assert httpx.get(f"http://127.0.0.1:{rx.port}/healthz", timeout=5).status_code == 503
    assert rx.counts["unavailable"] == 1


def test_signing_secret_is_fetched_from_the_account_when_not_configured(settings, sim_factory):
    secret = new_secret()
    sim = sim_factory(webhook_secret=secret)
    assert signing_secret(settings.with_(replicate_base_url=sim.url)) == secret
    assert signing_secret(settings.with_(webhook_secret="whsec_given")) == "whsec_given"


def counter_values(redis_client, settings) -> dict[tuple[str, str], float]:
    from shared.metrics.recorder import read_counters

    return {
        (metric, next(iter(labels.values()), "")): value
        for metric, rows in read_counters(redis_client, Keys(settings.key_prefix)).items()
        for labels, value in rows
    }


# --- real workers ---------------------------------------------------------------------------------
@pytest.mark.e2e
def test_workers_learn_of_the_end_from_webhooks_without_polling(
    settings, redis_client, sim_factory, worker_factory
):
    sim = sim_factory(latency_scale=0.05, image_scale=0.01)
    rx = WebhookReceiver(
        settings.with_(webhook_listen="127.0.0.1:0", replicate_base_url=sim.url), redis_client=redis_client
    ).start()  # secret fetched from the stand-in
    try:
        url = f"http://127.0.0.1:{rx.port}{PATH}"
        fleet = worker_factory(settings, count=2, sim=sim, FLEET_WEBHOOK_URL=url)
        ledger, requests = submit(
            settings, redis_client, "b-hook", [f"a heron, study {i}" for i in range(20)]
        )
        wait_finished(ledger, "b-hook", 60, fleet)
        assert ledger.batch("b-hook").counts["succeeded"] == 20
        for item in ledger.items("b-hook"):
            assert item.outputs and Path(item.outputs[0]).stat().st_size > 0
        sim_ledger = sim.ledger(detail=False)
        assert sim_ledger["creations"] == 20 and sim_ledger["duplicate_inputs"] == 0
        assert sim_ledger["reads_by_route"].get("predictions.get", 0) == 0, sim_ledger["reads_by_route"]
        assert sim_ledger["webhooks"]["sent"] >= 20
        assert rx.counts["accepted"] == 20
        # Workers and the receiver write their counters every few seconds (BatchedCounters).
        counters = wait_until(
            lambda: (
                (c := counter_values(redis_client, settings)).get(("ends_noticed", "webhook")) == 20
                and c.get(("webhooks", "accepted")) == 20
                and c
            ),
            2 * FLUSH_INTERVAL + 10,
            "the counters written",
        )
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
    wait_until(  # what an alert watches; written every few seconds (BatchedCounters)
        lambda: counter_values(redis_client, settings).get(("ends_noticed", "poll")) == 2,
        2 * FLUSH_INTERVAL + 10,
        "ends noticed by polls counted",
    )


def test_a_delivery_frees_the_slot_a_dead_worker_left_but_never_a_live_one(
    receiver, settings, redis_client, key_prefix
):
    from shared.limiter import HolderInfo, Limiter

    s = settings.with_(concurrency_limit=2, lease_seconds=0.6)
    dead = Limiter.from_settings(redis_client, Keys(key_prefix), s)
    dead.acquire(HolderInfo(task_id="dead")).set_prediction("p-dead")
    dead.close()  # died while its prediction ran
    live = Limiter.from_settings(redis_client, Keys(key_prefix), s.with_(lease_seconds=LIVE_LEASE))
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

    token = "r8_" + "W3bh00kT0k3n" * 3
    secret = new_secret()
    sim = sim_factory(token=token, webhook_secret=secret)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REPLICATE_", "FLEET_", "REDIS_URL"))}
    env.update(
        settings.with_(replicate_api_token=token, replicate_base_url=sim.url, log_level="DEBUG").as_env(),
        PYTHONPATH=str(Path(__file__).resolve().parent.parent),
    )
    log_path = tmp_path / "webhooks.log"
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [
                str(Path(sys.executable).parent / "fleet-webhooks"),
                "--listen",
                f"127.0.0.1:{port}",
                "--env-file",
                "/nonexistent",
            ],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
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
        assert (
            httpx.post(f"http://127.0.0.1:{port}{PATH}?token={token}", content=body, timeout=5).status_code
            == 400
        )
        assert deliver(rx, f"not json {token}").status_code == 400
        # what used to escape the validator as a traceback and drop the connection
        assert deliver(rx, body, changed={"webhook-timestamp": "soon"}).status_code == 400
        assert deliver(rx, body, changed={"webhook-signature": "v1,%%%"}).status_code == 400
        assert (
            raw_exchange(port, f"POST {PATH} HTTP/1.1\r\nHost: x\r\nno colon\r\n\r\n".encode()).split(
                b" ", 2
            )[1]
            == b"400"
        )
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(15)
    text = log_path.read_text(errors="replace")
    assert "receiving Replicate webhooks" in text and "DEBUG" in text, text  # it did log, at DEBUG
    assert "?token=[REDACTED]" in text, text  # the access log line was written, redacted
    assert "Traceback" not in text and "malformed HTTP request" in text, text  # one line, no traceback
    assert token not in text and token[3:20] not in text, text
    assert secret not in text and secret.removeprefix("whsec_")[:16] not in text, text


def test_a_bare_wake_from_a_receiver_of_the_version_before_is_read(redis_client, key_prefix):
    """A receiver of the version before stored the prediction and pushed the bare id (no
    prediction in the token, the watch left): the worker reads it and cleans both up, as then."""
    keys = Keys(key_prefix)
    board = CompletionBoard(redis_client, keys)
    try:
        with board.watch("old") as watch:
            wake_list = redis_client.get(keys.completion_watch("old"))
            redis_client.set(keys.completion("old"), json.dumps(prediction("old")), px=60_000)
            redis_client.rpush(wake_list, "old")
            got = watch.wait(5)
        assert got is not None and got["id"] == "old"
        assert not redis_client.exists(keys.completion("old"), keys.completion_watch("old"))
    finally:
        board.close()
