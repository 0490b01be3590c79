"""Sync mode (issue 16): without a webhook URL, predictions are created with `Prefer: wait=W` and
most come back ended in the create's answer; those that outlast W are polled. While the create is
held its prediction exists but its id is unknown to the worker: a worker SIGKILLed, a connection
dropped or Redis down during that wait never leads to a second prediction (reconciliation adopts
it). Real worker processes, the stand-in over HTTP with the official client, real Redis."""

from __future__ import annotations

import json
import time

import httpx
import pytest
from click.testing import CliRunner

import producer
from producer.cli import cli
from shared.budget import Budget
from shared.errors import ConfigError
from shared.keys import Keys
from shared.ledger import Ledger
from shared.models import load_registry
from shared.models.pricing import call_cost_micro
from shared.presence import WorkerMode, describe
from shared.settings import Settings
from tests.support.attempt_path import MODEL, mark_running, record_batch, worker_context
from tests.support.e2e import submit, wait_finished
from tests.support.wait import wait_until
from workers.attempts import AttemptRef, CreationRecords
from workers.reconcile import Reconciler
from workers.replicate_calls import BoundedTimeoutTransport, client_timeout, post_in_flight_limit, prefer_wait
from workers.waiting import sync_wait_seconds
from workers.webhook_receiver import PATH, WebhookReceiver

# --- the choices, as pure logic ---------------------------------------------------------------------


@pytest.mark.unit
def test_the_wait_follows_the_models_learned_duration_within_the_cap():
    assert sync_wait_seconds(None, 60) == 60  # not known yet: the most
    assert sync_wait_seconds(0.8, 60) == 5  # a fast model: at least 5 s
    assert sync_wait_seconds(4.2, 60) == 13  # 3x the usual duration
    assert sync_wait_seconds(45.0, 60) == 60  # a video model: the cap, then polls
    assert sync_wait_seconds(4.2, 10) == 10  # FLEET_SYNC_WAIT_MAX


@pytest.mark.unit
def test_the_modes_the_workers_publish_read_as_one_line():
    def worker(pid: int, mode: str, cap: int = 60) -> WorkerMode:
        return WorkerMode("h", pid, mode, cap, 0.0)

    assert describe([]).startswith("no worker seen")
    assert describe([worker(1, "sync"), worker(2, "sync", 20)]) == (
        "sync (2 worker processes, Prefer: wait up to 60 s)"
    )
    assert describe([worker(1, "poll"), worker(2, "sync")]) == (
        "poll (1 worker process), sync (1 worker process, Prefer: wait up to 60 s); MIXED: workers differ"
    )


@pytest.mark.unit
def test_sync_is_the_default_without_a_webhook_url_and_the_mode_is_checked():
    def load(**env: str) -> Settings:
        return Settings.load(environ=env, dotenv_path=None)

    assert load().wait_mode_in_use == "sync"
    assert load(FLEET_WEBHOOK_URL="https://example.org/webhooks/replicate").wait_mode_in_use == "webhook"
    assert load(FLEET_WAIT_MODE="poll").wait_mode_in_use == "poll"
    with_url = {"FLEET_WEBHOOK_URL": "https://example.org/webhooks/replicate"}
    assert load(FLEET_WAIT_MODE="sync", **with_url).wait_mode_in_use == "sync"
    for bad in (
        {"FLEET_WAIT_MODE": "fast"},
        {"FLEET_WAIT_MODE": "webhook"},  # without a URL
        {"FLEET_WAIT_MODE": "poll", **with_url},
        {"FLEET_SYNC_WAIT_MAX": "61"},
        {"FLEET_SYNC_WAIT_MAX": "0"},
    ):
        with pytest.raises(ConfigError):
            load(**bad)
    assert load(FLEET_WAIT_MODE="sync").as_env()["FLEET_WAIT_MODE"] == "sync"  # reaches worker processes


class _Recorder(httpx.BaseTransport):
    def __init__(self) -> None:
        self.timeouts: list[dict] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.timeouts.append(dict(request.extensions["timeout"]))
        return httpx.Response(201, json={})


@pytest.mark.unit
def test_a_held_create_may_answer_for_its_wait_plus_the_http_timeout():
    """replicate 1.0.7 gives a `wait=N` create a read timeout of N + 0.5 s: an answer that leaves
    Replicate at N would time out on the way, and every prediction that outlasts its wait would
    become an ambiguous create. The fleet's transport gives it N + FLEET_HTTP_TIMEOUT, and the
    settling window after such a create is longer by N."""
    settings = Settings.load({"http_timeout": 15.0}, environ={}, dotenv_path=None)
    recorder = _Recorder()
    transport = BoundedTimeoutTransport(client_timeout(settings), recorder)
    client_asks = httpx.Timeout(5.0, read=20.5).as_dict()  # what the client sends with wait=20
    with httpx.Client(transport=transport) as client:
        client.post("http://sim/v1/predictions", headers={"Prefer": "wait=20"}, timeout=client_asks)
        client.post("http://sim/v1/predictions", timeout=None)  # a create without a wait
    held, plain = recorder.timeouts
    assert held == {"connect": 5.0, "read": 35.0, "write": 15.0, "pool": 30.0}
    assert plain == {"connect": 5.0, "read": 15.0, "write": 15.0, "pool": 30.0}
    assert post_in_flight_limit(settings, 20) == post_in_flight_limit(settings) + 20 == 60.0
    assert [prefer_wait(h) for h in ("wait=7", "wait", "respond-async", None)] == [7, 60, None, None]


def test_a_held_creates_wait_lengthens_its_settling_only_while_no_answer_came(settings, redis_client):
    """The intent carries the wait its POST asks. A sender that died or was cut off during a held
    create may have a POST in flight that much longer (2 x (in-flight limit + wait) after
    `posting_at`); once an answer came (a 5xx, a reset), the wait is over: the usual window."""
    quick = settings.with_(http_timeout=1.0)
    window = post_in_flight_limit(quick)
    keys = Keys(settings.key_prefix)
    records = CreationRecords(redis_client, keys)
    ledger, _ = record_batch(settings, redis_client, "b-wait", ["a grebe"])
    mark_running(ledger, "b-wait", 0)  # the last check wants the item running this attempt
    ref = AttemptRef("b-wait", 0, 1)
    with worker_context(quick) as ctx:
        reconciler = Reconciler(ctx)
        intent = records.write_intent(ref, MODEL, 23)
        assert records.get(ref).post_wait == 23.0
        assert reconciler.settling_ends_at(records.get(ref)).at == intent  # no POST was sent
        redis_client.set(keys.claim("b-wait", 0, 1), "t")
        posting = records.begin_post(ref, "t").posting_at
        ends = reconciler.settling_ends_at(records.get(ref)).at
        assert ends == pytest.approx(posting + 2 * (window + 23))
        returned = records.mark_post_returned(ref)
        assert reconciler.settling_ends_at(records.get(ref)).at == pytest.approx(returned + window)
        records.write_intent(ref, MODEL)
        assert records.get(ref).post_wait == 0.0


# --- real workers ---------------------------------------------------------------------------------------


def _gets(sim) -> int:
    return sim.ledger(detail=False)["reads_by_route"].get("predictions.get", 0)


@pytest.mark.e2e
def test_without_a_webhook_predictions_come_back_ended_in_their_create_answer(
    settings, redis_client, sim_factory, worker_factory
):
    """The default without FLEET_WEBHOOK_URL: no poll at all when every prediction ends within its
    wait; the slot is free as soon as the answer comes."""
    sim = sim_factory(latency_scale=1.0, image_scale=0.01, latency_overrides={MODEL: 1.0})
    fleet = worker_factory(settings, count=1, sim=sim, concurrency=4)
    prompts = [f"a sync fox {i}" for i in range(6)]
    ledger, _ = submit(settings, redis_client, "b-sync", prompts)
    wait_finished(ledger, "b-sync", 60, fleet)

    assert ledger.batch("b-sync").counts["succeeded"] == len(prompts)
    sim_ledger = sim.ledger(detail=False)
    assert sim_ledger["creations"] == len(prompts) and sim_ledger["duplicate_inputs"] == 0
    assert _gets(sim) == 0, sim_ledger["reads_by_route"]  # every end came in the create's answer
    latency = redis_client.hget(Keys(settings.key_prefix).model_latency, MODEL)
    assert latency is not None and 0.5 < float(latency) < 10  # learned from the held creates

    # `producer limits` says which mode the workers use (they publish it in Redis).
    base = ["--redis-url", settings.redis_url, "--env-file", "/nonexistent", "limits"]
    shown = CliRunner().invoke(cli, base, env=settings.as_env())
    assert shown.exit_code == 0, shown.output
    assert "wait mode  sync (1 worker process, Prefer: wait up to 60 s)" in shown.stdout, shown.stdout
    as_json = json.loads(CliRunner().invoke(cli, [*base, "--json"], env=settings.as_env()).stdout)
    [worker] = as_json["workers"]
    assert worker["mode"] == "sync" and worker["pid"] == fleet.workers[0].pid
    assert [m.mode for m in producer.worker_modes(settings)] == ["sync"]  # the Python API
    info = CliRunner().invoke(cli, [*base[:-1], "info"], env=settings.as_env())
    assert "wait mode: sync (1 worker process, Prefer: wait up to 60 s)" in info.stdout, info.output


@pytest.mark.e2e
def test_a_prediction_that_outlasts_its_wait_is_polled_to_its_end(
    settings, redis_client, sim_factory, worker_factory
):
    """Replicate answers a held create a little after its wait when the prediction outlasts it
    (1.5 s here): the answer is read (replicate 1.0.7's own read timeout of wait + 0.5 s would
    turn it into an ambiguous create and a reconciliation), and the end comes from polls."""
    sim = sim_factory(latency_scale=1.0, image_scale=0.01, latency_overrides={MODEL: 5.0}, wait_overrun=1.5)
    settings = settings.with_(sync_wait_max=1)
    fleet = worker_factory(settings, count=1, sim=sim, concurrency=2)
    ledger, _ = submit(settings, redis_client, "b-outlast", ["a slow heron"])
    wait_finished(ledger, "b-outlast", 60, fleet)

    assert ledger.item("b-outlast", 0).status == "succeeded"
    sim_ledger = sim.ledger(detail=False)
    assert sim_ledger["creations"] == 1 and sim_ledger["errors_5xx"] == 0
    assert _gets(sim) >= 1  # its end came from a poll
    assert "reconcil" not in fleet.logs(tail=200_000)  # a wait that ran out is not an ambiguous create


@pytest.mark.e2e
def test_sync_with_a_webhook_learns_the_end_of_a_longer_prediction_from_the_webhook(
    settings, redis_client, sim_factory, worker_factory
):
    """FLEET_WAIT_MODE=sync with FLEET_WEBHOOK_URL: the create waits 1 s, the prediction runs
    ~3 s, and its webhook (not a poll) tells the worker that it ended."""
    sim = sim_factory(latency_scale=1.0, image_scale=0.01, latency_overrides={MODEL: 3.0})
    rx = WebhookReceiver(
        settings.with_(webhook_listen="127.0.0.1:0", replicate_base_url=sim.url), redis_client=redis_client
    ).start()
    try:
        url = f"http://127.0.0.1:{rx.port}{PATH}"
        mixed = settings.with_(wait_mode="sync", sync_wait_max=1, webhook_url=url)
        fleet = worker_factory(mixed, count=1, sim=sim, concurrency=4)
        ledger, _ = submit(mixed, redis_client, "b-synchook", [f"a curlew {i}" for i in range(3)])
        wait_finished(ledger, "b-synchook", 60, fleet)
        assert ledger.batch("b-synchook").counts["succeeded"] == 3
        sim_ledger = sim.ledger(detail=False)
        assert sim_ledger["creations"] == 3 and _gets(sim) == 0, sim_ledger["reads_by_route"]
        assert rx.counts["accepted"] == 3
    finally:
        rx.stop()


def _held_create_started(sim, fleet) -> None:
    wait_until(
        lambda: sim.ledger(detail=False)["creations"] >= 1,
        30,
        "the held create to reach the stand-in",
        explain=fleet.logs,
    )


def _one_creation_adopted(sim, redis_client, settings, ledger: Ledger, batch_id: str) -> dict:
    item = ledger.item(batch_id, 0)
    assert item.status == "succeeded", item
    sim_ledger = sim.ledger(detail=False)
    assert sim_ledger["creations"] == 1 and sim_ledger["duplicate_inputs"] == 0, sim_ledger
    record = redis_client.hgetall(Keys(settings.key_prefix).attempt(batch_id, 0, 1))
    assert record.get("origin") == "adopted", record
    [attempt] = item.attempts
    assert attempt.prediction_id == record["prediction_id"]
    return sim_ledger


@pytest.mark.e2e
@pytest.mark.faults
@pytest.mark.slow
def test_a_worker_killed_during_a_held_create_leaves_one_prediction_which_is_adopted(
    settings, redis_client, sim_factory, worker_factory
):
    """The worker is SIGKILLed 1 s into a create held for a 12 s prediction (its id never known
    to it). The next run of the attempt, on another worker, lists the account's predictions and
    adopts that one: one creation."""
    sim = sim_factory(latency_scale=1.0, image_scale=0.01, latency_overrides={MODEL: 12.0})
    settings = settings.with_(http_timeout=2.0, lease_seconds=2.0, visibility_timeout=8)
    first = worker_factory(settings, count=1, sim=sim, concurrency=1, FLEET_HTTP_TIMEOUT="2")
    ledger, _ = submit(settings, redis_client, "b-killheld", ["a wren held open"])
    _held_create_started(sim, first)
    time.sleep(1.0)
    assert sim.ledger(detail=False)["in_flight"] == 1  # still held: the worker does not know its id
    first.workers[0].kill()
    others = worker_factory(settings, count=1, sim=sim, concurrency=4, FLEET_HTTP_TIMEOUT="2")
    wait_finished(ledger, "b-killheld", 120, others)

    sim_ledger = _one_creation_adopted(sim, redis_client, settings, ledger, "b-killheld")
    print(f"\n[cost] SIGKILL during a held create: {sim_ledger['creations']} creation(s) (minimum 1)")


@pytest.mark.e2e
@pytest.mark.faults
def test_a_connection_dropped_during_a_held_create_is_reconciled_not_paid_twice(
    settings, redis_client, sim_factory, worker_factory
):
    """The stand-in creates the prediction, holds the answer 2 s, then resets the connection: the
    worker gets a transport error with no id (an ambiguous create), and adopts the prediction."""
    sim = sim_factory(
        latency_scale=1.0,
        image_scale=0.01,
        latency_overrides={MODEL: 6.0},
        drop_create_next=1,
        drop_create_after=2.0,
    )
    settings = settings.with_(http_timeout=2.0)
    fleet = worker_factory(settings, count=1, sim=sim, concurrency=2, FLEET_HTTP_TIMEOUT="2")
    ledger, _ = submit(settings, redis_client, "b-drop", ["a kestrel cut off"])
    wait_finished(ledger, "b-drop", 90, fleet)

    sim_ledger = _one_creation_adopted(sim, redis_client, settings, ledger, "b-drop")
    assert sim_ledger["dropped_creates"] == 1


@pytest.mark.e2e
@pytest.mark.faults
@pytest.mark.slow
def test_a_redis_outage_during_a_held_create_is_ridden_out_and_pays_once(
    private_redis, settings, sim_factory, worker_factory
):
    """Redis goes down 1 s into a create held for a 10 s prediction, and stays down until the
    answer has come and the worker failed to record its id (the task then waits for Redis). Redis
    comes back with the intent (append-only file): the re-run of the attempt reconciles and adopts
    the prediction: one creation."""
    settings = settings.with_(
        redis_url=private_redis.url, http_timeout=2.0, lease_seconds=60.0, redis_ride_out=3.0
    )
    sim = sim_factory(latency_scale=1.0, image_scale=0.01, latency_overrides={MODEL: 10.0})
    fleet = worker_factory(settings, count=1, sim=sim, concurrency=2, FLEET_HTTP_TIMEOUT="2")
    client = private_redis.client(socket_timeout=5)
    submit(settings, client, "b-redisheld", ["a dipper under water"])
    _held_create_started(sim, fleet)
    time.sleep(1.0)
    private_redis.stop()
    wait_until(
        lambda: sim.ledger(detail=False)["predictions_by_status"].get("succeeded", 0) == 1,
        30,
        "the held prediction to end (its answer comes while Redis is down)",
    )
    wait_until(
        lambda: "Redis unavailable (" in fleet.workers[0].log(),
        60,
        "the outage to reach the task",
        interval=0.5,
        explain=fleet.logs,
    )
    private_redis.start()
    client = private_redis.client(socket_timeout=5)
    ledger = Ledger(client, Keys(settings.key_prefix))
    wait_finished(ledger, "b-redisheld", 60, fleet)

    _one_creation_adopted(sim, client, settings, ledger, "b-redisheld")


def _listed(sim) -> dict[str, dict]:
    """Every prediction the stand-in has, as its API lists them (one page holds a test's)."""
    response = httpx.get(
        f"{sim.url}/v1/predictions", headers={"Authorization": "Bearer r8_sim_test"}, timeout=10
    )
    response.raise_for_status()
    return {p["id"]: p for p in response.json()["results"]}


def _unix(iso: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


@pytest.mark.e2e
def test_a_cancel_reaches_predictions_whose_creates_are_held_open(
    settings, redis_client, sim_factory, worker_factory
):
    """`producer cancel` while every prediction of the batch runs inside a held create (30 s
    predictions, a 60 s wait: their ids unknown to the workers): each is found by its model and
    input and canceled at Replicate within seconds of the cancel, not when its create would have
    answered; no second creation; every item ends canceled, its slot released."""
    sim = sim_factory(latency_scale=1.0, image_scale=0.01, latency_overrides={MODEL: 30.0})
    settings = settings.with_(wait_mode="sync", sync_wait_max=60)
    fleet = worker_factory(settings, count=1, sim=sim, concurrency=6)
    prompts = [f"a held heron {i}" for i in range(4)]
    ledger, _ = submit(settings, redis_client, "b-heldcancel", prompts)
    wait_until(
        lambda: sim.ledger(detail=False)["in_flight"] == 4, 30, "4 predictions in flight", explain=fleet.logs
    )

    base = ["--redis-url", settings.redis_url, "--env-file", "/nonexistent"]
    canceled_at = time.time()
    done = CliRunner().invoke(cli, [*base, "cancel", "b-heldcancel"], env=settings.as_env())
    assert done.exit_code == 0, done.output
    wait_finished(ledger, "b-heldcancel", 20, fleet)  # the predictions would run 30 s

    assert ledger.batch("b-heldcancel").counts["canceled"] == len(prompts)
    listed = _listed(sim)
    assert len(listed) == len(prompts) and sim.ledger(detail=False)["creations"] == len(prompts)
    for prediction in listed.values():
        assert prediction["status"] == "canceled", prediction
        assert _unix(prediction["completed_at"]) - canceled_at < 10, prediction  # not at its end (30 s)
    for index in range(len(prompts)):  # each attempt's prediction is known, and its slot free
        assert ledger.item("b-heldcancel", index).attempts[-1].prediction_id in listed
    assert producer.limits_status(settings).in_use == 0
    # Each reservation settled as spend (a canceled prediction is billed for the time it ran).
    spend = Budget.from_settings(redis_client, settings).batch("b-heldcancel")
    assert spend.reserved == 0 and spend.spent == len(prompts) * call_cost_micro(
        load_registry().get(MODEL), ledger.request("b-heldcancel", 0).params
    )


@pytest.mark.e2e
def test_a_held_create_is_not_canceled_when_another_batch_may_own_its_prediction(
    settings, redis_client, sim_factory, worker_factory
):
    """Two batches send the same model the same input, both creates held; one batch is
    canceled. The two predictions cannot be told apart while the creates are held, so neither is
    canceled then (the other batch's prediction is never canceled): both run to their end."""
    sim = sim_factory(latency_scale=1.0, image_scale=0.01, latency_overrides={MODEL: 8.0})
    settings = settings.with_(wait_mode="sync", sync_wait_max=60)
    fleet = worker_factory(settings, count=1, sim=sim, concurrency=4)
    ledger, _ = submit(settings, redis_client, "b-twin-a", ["the same grebe"])
    submit(settings, redis_client, "b-twin-b", ["the same grebe"])
    wait_until(
        lambda: sim.ledger(detail=False)["in_flight"] == 2, 30, "2 predictions in flight", explain=fleet.logs
    )
    ledger.cancel("b-twin-a")
    wait_finished(ledger, "b-twin-b", 60, fleet)
    wait_finished(ledger, "b-twin-a", 60, fleet)

    assert ledger.item("b-twin-b", 0).status == "succeeded"
    assert [p["status"] for p in _listed(sim).values()] == ["succeeded", "succeeded"]
    assert "cannot be told from another batch's" in fleet.logs(tail=200_000)
