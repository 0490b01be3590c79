"""The Prometheus exporter, scraped over HTTP against the real Redis."""

from __future__ import annotations

import os
import threading
import urllib.request
from dataclasses import dataclass, field

import pytest
from prometheus_client.parser import text_string_to_metric_families

from bench.processes import free_port
from shared.keys import Keys
from shared.metrics import (
    PREDICTION_OUTCOMES,
    MetricsRecorder,
    metrics_key,
    observe_handoff,
    observe_slot_wait,
    read_counters,
    record_creation_pause,
    record_fallback,
    record_prediction,
    record_retry,
)
from shared.metrics.batched import FLUSH_INTERVAL
from shared.metrics.recorder import encode_field
from shared.metrics.server import start_metrics_server
from tests.support.e2e import wait_finished
from tests.support.wait import wait_until
from tests.support.workers import forget_queue, pick_image_model


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """{(sample name, sorted labels): value} of one scrape."""
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.status == 200
        text = response.read().decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


@dataclass
class FakeStatus:
    """The limiter's status as the contract describes it, for the mapping test."""

    concurrency_limit: int = 10
    in_use: int = 3
    free: int = 7
    waiters: int = 5
    utilisation: float = 0.3
    creations_in_window: int = 42
    creations_reserved: int = 1
    reads_in_window: int = 99
    reads_reserved: int = 2
    create_limit: int = 600
    read_limit: int = 3000
    rate_window: float = 60.0
    paused_until: float | None = 1e9
    pause_seconds_left: float = 12.5
    holders: list = field(
        default_factory=lambda: [
            {"host": "a", "pid": 1, "task_id": "t1", "prediction_id": "p1", "held_for": 4.0},
            {"host": "a", "pid": 2, "task_id": "t2", "prediction_id": None, "held_for": 9.5},
            {"host": "b", "pid": 3, "task_id": "t3", "prediction_id": "p3", "held_for": 1.0},
        ]
    )

    def to_dict(self):
        return dict(vars(self))


class FakeLimiter:
    def status(self):
        return FakeStatus()


@dataclass
class FakeBatch:
    id: str = "b-fake"
    total: int = 4
    counts: dict = field(default_factory=lambda: {"succeeded": 1, "pending": 3})
    finished: bool = False


class FakeLedger:
    def list_batches(self, limit: int):
        return [FakeBatch()]


def test_worker_counters_aggregate_across_processes_and_scrape(settings, redis_client):
    keys = Keys(settings.key_prefix)
    record_prediction(redis_client, keys, "black-forest-labs/flux-schnell", "succeeded", cost=0.003)
    record_prediction(redis_client, keys, "black-forest-labs/flux-schnell", "succeeded", cost=0.003)
    record_prediction(redis_client, keys, "google/imagen-4", "failed")
    record_retry(redis_client, keys, "google/imagen-4", reason="429")
    record_fallback(redis_client, keys, "google/imagen-4", "black-forest-labs/flux-schnell")
    MetricsRecorder(redis_client, keys).creation("google/imagen-4")
    for seconds in (0.001, 0.2, 0.2, 7.0, 5000.0):
        observe_slot_wait(redis_client, keys, seconds)
    observe_slot_wait(redis_client, keys, 0.02, kind="create")

    # A second "process": another client on the same prefix adds to the same numbers.
    import redis

    other = redis.Redis.from_url(settings.redis_url)
    record_prediction(other, keys, "google/imagen-4", "failed")
    other.close()

    with start_metrics_server(settings, port=0, addr="127.0.0.1", limiter_factory=FakeLimiter) as server:
        samples = scrape(server.url)

    assert (
        value(samples, "fleet_predictions_total", model="black-forest-labs/flux-schnell", outcome="succeeded")
        == 2
    )
    assert value(samples, "fleet_predictions_total", model="google/imagen-4", outcome="failed") == 2
    assert value(samples, "fleet_cost_usd_total", model="black-forest-labs/flux-schnell") == pytest.approx(
        0.006
    )
    assert value(samples, "fleet_retries_total", model="google/imagen-4", reason="429") == 1
    assert (
        value(
            samples,
            "fleet_fallbacks_total",
            from_model="google/imagen-4",
            to_model="black-forest-labs/flux-schnell",
        )
        == 1
    )
    assert value(samples, "fleet_creations_total", model="google/imagen-4") == 1
    # Histogram: cumulative buckets, sum and count.
    assert value(samples, "fleet_limiter_wait_seconds_bucket", kind="slot", le="0.005") == 1
    assert value(samples, "fleet_limiter_wait_seconds_bucket", kind="slot", le="0.25") == 3
    assert value(samples, "fleet_limiter_wait_seconds_bucket", kind="slot", le="10.0") == 4
    assert value(samples, "fleet_limiter_wait_seconds_bucket", kind="slot", le="600.0") == 4
    assert value(samples, "fleet_limiter_wait_seconds_bucket", kind="slot", le="+Inf") == 5
    assert value(samples, "fleet_limiter_wait_seconds_count", kind="slot") == 5
    assert value(samples, "fleet_limiter_wait_seconds_sum", kind="slot") == pytest.approx(5007.401)
    assert value(samples, "fleet_limiter_wait_seconds_count", kind="create") == 1
    assert value(samples, "fleet_exporter_part_up", part="counters") == 1


def test_outcomes_count_each_attempt_once_and_the_rest_apart(settings, redis_client):
    """fleet_predictions_total holds ends of attempts only, so succeeded / sum is the success
    ratio; resumptions and substitutes are their own counters, also when an older worker wrote
    them as predictions{outcome=resumed|substituted}."""
    keys = Keys(settings.key_prefix)
    metrics = MetricsRecorder(redis_client, keys)
    model = "black-forest-labs/flux-dev"
    # item 0: created, worker killed, resumed by another worker, succeeded (one end)
    metrics.prediction(model, "resumed")  # as workers of an older version recorded a resumption
    metrics.prediction(model, "succeeded", 0.025)
    # item 1: a 5xx, then success on the same model (two ends)
    metrics.prediction(model, "transient_error")
    metrics.resumed(model)
    metrics.prediction(model, "succeeded", 0.025)
    # item 2: fails on its only model, substitute written (one end)
    metrics.prediction(model, "failed")
    metrics.prediction(model, "substituted")
    metrics.substituted("google/imagen-4")
    # item 3: its batch canceled (one end)
    metrics.prediction(model, "canceled")
    # as an older worker wrote them
    redis_client.hincrby(metrics_key(keys), encode_field("predictions", model=model, outcome="resumed"), 2)
    redis_client.hincrby(metrics_key(keys), encode_field("resumptions", model=model), 1)

    with start_metrics_server(settings, port=0, addr="127.0.0.1", limiter_factory=FakeLimiter) as server:
        samples = scrape(server.url)
    ends = {
        dict(labels)["outcome"]: v
        for (name, labels), v in samples.items()
        if name == "fleet_predictions_total" and dict(labels).get("model") == model
    }
    assert ends == {"succeeded": 2, "failed": 1, "canceled": 1, "transient_error": 1}
    assert set(ends) == set(PREDICTION_OUTCOMES)
    assert ends["succeeded"] / sum(ends.values()) == pytest.approx(0.4)  # the documented success ratio
    assert value(samples, "fleet_predictions_resumed_total", model=model) == 2 + 2 + 1
    assert value(samples, "fleet_items_substituted_total", model=model) == 1
    assert value(samples, "fleet_items_substituted_total", model="google/imagen-4") == 1
    assert value(samples, "fleet_cost_usd_total", model=model) == pytest.approx(0.05)  # succeeded only


def test_creation_pauses_and_handoff_latency(settings, redis_client):
    keys = Keys(settings.key_prefix)
    metrics = MetricsRecorder(redis_client, keys)
    metrics.creation_pause(5.0)
    metrics.creation_pause(2.5)
    record_creation_pause(redis_client, keys, 1.0)
    metrics.handoff(0.0009)
    metrics.handoff(None)  # the slot was free: no hand-off happened, nothing recorded
    observe_handoff(redis_client, keys, 0.3)
    with start_metrics_server(settings, port=0, addr="127.0.0.1", limiter_factory=FakeLimiter) as server:
        samples = scrape(server.url)
    assert value(samples, "fleet_creation_pauses_total") == 3
    assert value(samples, "fleet_creation_pause_requested_seconds_total") == pytest.approx(8.5)
    assert value(samples, "fleet_limiter_wait_seconds_count", kind="handoff") == 2
    assert value(samples, "fleet_limiter_wait_seconds_bucket", kind="handoff", le="0.005") == 1
    assert value(samples, "fleet_limiter_wait_seconds_sum", kind="handoff") == pytest.approx(0.3009)


def test_a_real_hand_off_is_recorded_from_the_lease(settings, redis_client):
    """What a run records after an acquire: `lease.handoff_seconds` (None when the slot was
    free) goes to the handoff histogram."""
    from shared.limiter import HolderInfo, Limiter

    keys = Keys(settings.key_prefix)
    metrics = MetricsRecorder(redis_client, keys)
    limiter = Limiter.from_settings(redis_client, keys, settings.with_(concurrency_limit=1))
    try:
        first = limiter.acquire(HolderInfo(task_id="first"), timeout=10)
        metrics.handoff(first.handoff_seconds)  # free slot: nothing to record
        leases: list = []
        waiting = threading.Thread(
            target=lambda: leases.append(limiter.acquire(HolderInfo(task_id="next"), timeout=10))
        )
        waiting.start()
        wait_until(lambda: limiter.status().waiters >= 1, 10, "the second caller to wait")
        first.release()
        waiting.join(10)
        [second] = leases
        assert first.handoff_seconds is None and second.handoff_seconds is not None
        metrics.handoff(second.handoff_seconds)
        second.release()
    finally:
        limiter.close()
    with start_metrics_server(settings, port=0, addr="127.0.0.1", limiter_factory=FakeLimiter) as server:
        samples = scrape(server.url)
    assert value(samples, "fleet_limiter_wait_seconds_count", kind="handoff") == 1
    assert 0 <= value(samples, "fleet_limiter_wait_seconds_sum", kind="handoff") < 1


def test_every_metric_call_of_the_workers_exists_on_the_recorder():
    """The stages of an attempt (workers/*.py) call `self._metric("<method>", ...)`, which swallows
    errors: a typo there would silently record nothing."""
    import inspect
    import re
    from pathlib import Path

    workers = Path(__file__).resolve().parent.parent / "workers"
    source = "\n".join(path.read_text() for path in sorted(workers.glob("*.py")))
    calls = re.findall(r"_metric\(\s*\"(\w+)\"((?:[^()]|\([^()]*\))*)\)", source)
    assert calls, "no metric calls found: the test would be vacuous"
    for name, args in calls:
        method = getattr(MetricsRecorder, name, None)
        assert callable(method), f"MetricsRecorder has no {name}()"
        wanted = len([a for a in re.split(r",(?![^()]*\))", args) if a.strip()])
        params = list(inspect.signature(method).parameters.values())[1:]
        required = len([p for p in params if p.default is inspect.Parameter.empty])
        assert required <= wanted <= len(params), f"{name}{args}: {wanted} arguments for {params}"
    outcomes = re.findall(r"_metric\(\s*\"prediction\",\s*\w+,\s*\"(\w+)\"", source)
    assert set(outcomes) <= set(PREDICTION_OUTCOMES) | {"resumed", "substituted"}, outcomes


def test_the_documented_metrics_are_the_exported_ones(settings, redis_client):
    """Every metric in docs/operations.md's table is exported, and every exported one is documented."""
    import re
    from pathlib import Path

    keys = Keys(settings.key_prefix)
    metrics = MetricsRecorder(redis_client, keys)
    metrics.prediction("m", "succeeded", 0.01)
    metrics.resumed("m")
    metrics.substituted("m")
    metrics.creation("m")
    metrics.retry("m")
    metrics.fallback("m", "n")
    metrics.rate_limited()
    metrics.creation_pause(1)
    metrics.slot_wait(0.1)
    metrics.end_noticed("poll")
    metrics.webhook("accepted")
    with start_metrics_server(
        settings, port=0, addr="127.0.0.1", limiter_factory=FakeLimiter, ledger_factory=FakeLedger
    ) as server:
        exported = {name for name, _ in scrape(server.url)}
    docs = (Path(__file__).resolve().parent.parent / "docs" / "operations.md").read_text()
    table = docs[docs.index("| metric | type |") :]
    table = table[: table.index("\n\n")]
    documented = set(re.findall(r"`(fleet_\w+)`", table))
    assert documented, "no metric table found"
    for name in documented:
        assert name in exported or f"{name}_bucket" in exported, f"{name} is documented but not exported"
    for name in exported:
        base = re.sub(r"_(bucket|sum|count)$", "", name) if name.startswith("fleet_limiter_wait") else name
        assert base in documented, f"{name} is exported but not in the docs table"


def test_limiter_status_mapping(settings, redis_client):
    with start_metrics_server(settings, port=0, addr="127.0.0.1", limiter_factory=FakeLimiter) as server:
        samples = scrape(server.url)
    assert value(samples, "fleet_slots_limit") == 10
    assert value(samples, "fleet_slots_in_use") == 3
    assert value(samples, "fleet_slot_waiters") == 5
    assert value(samples, "fleet_creations_in_window") == 42
    assert value(samples, "fleet_reads_in_window") == 99
    assert value(samples, "fleet_creation_pause_active") == 1
    assert value(samples, "fleet_creation_pause_seconds_left") == 12.5
    assert value(samples, "fleet_slots_held", host="a") == 2
    assert value(samples, "fleet_slots_held", host="b") == 1
    assert value(samples, "fleet_slot_oldest_hold_seconds") == 9.5
    assert value(samples, "fleet_exporter_part_up", part="limiter") == 1


def test_a_failing_part_does_not_empty_the_scrape(settings, redis_client):
    class BrokenLimiter:
        def status(self):
            raise RuntimeError("limiter exploded")

    keys = Keys(settings.key_prefix)
    record_prediction(redis_client, keys, "m", "succeeded")
    with start_metrics_server(settings, port=0, addr="127.0.0.1", limiter_factory=BrokenLimiter) as server:
        samples = scrape(server.url)
    assert value(samples, "fleet_exporter_part_up", part="limiter") == 0
    assert value(samples, "fleet_predictions_total", model="m", outcome="succeeded") == 1


def test_counters_live_under_the_key_prefix_only(settings, redis_client):
    keys = Keys(settings.key_prefix)
    record_retry(redis_client, keys, "m")
    assert read_counters(redis_client, Keys(settings.key_prefix + "-other")) == {}
    assert all(k.startswith(settings.key_prefix) for k in redis_client.keys(f"*{settings.key_prefix}*"))


def test_real_limiter_status_is_exported(settings, redis_client):
    from shared.limiter import HolderInfo, Limiter

    limiter = Limiter.from_settings(
        redis_client, Keys(settings.key_prefix), settings.with_(concurrency_limit=4)
    )
    lease = limiter.acquire(
        HolderInfo(host="host-a", pid=os.getpid(), task_id="t-1", batch_id="b", index=0, model="m"),
        timeout=10,
    )
    try:
        limiter.take_create_token(timeout=10)
        limiter.pause_creations(30, reason="test 429")
        with start_metrics_server(settings, port=0, addr="127.0.0.1") as server:
            samples = scrape(server.url)
    finally:
        lease.release()
        limiter.close()
    assert value(samples, "fleet_exporter_part_up", part="limiter") == 1
    assert value(samples, "fleet_slots_limit") == 4
    assert value(samples, "fleet_slots_in_use") == 1
    assert value(samples, "fleet_slots_held", host="host-a") == 1
    assert value(samples, "fleet_creations_in_window") >= 1
    assert value(samples, "fleet_creation_pause_active") == 1
    assert 0 < value(samples, "fleet_creation_pause_seconds_left") <= 30


def test_active_batch_counts_are_exported(settings, redis_client):
    from shared.ledger import Ledger
    from shared.request import ImageRequest

    keys = Keys(settings.key_prefix)
    requests = [
        ImageRequest(
            index=i, id=str(i), prompt=f"p{i}", requested_model="m", model="m", output=f"b1/{i:04d}_p.png"
        )
        for i in range(3)
    ]
    ledger = Ledger(redis_client, keys)
    assert ledger.create_batch("b-metrics", requests, output_root=str(settings.output_dir), options={})
    with start_metrics_server(settings, port=0, addr="127.0.0.1", limiter_factory=FakeLimiter) as server:
        samples = scrape(server.url)
    assert value(samples, "fleet_exporter_part_up", part="ledger") == 1
    assert value(samples, "fleet_batch_items_total", batch="b-metrics") == 3
    assert value(samples, "fleet_batch_items", batch="b-metrics", status="pending") == 3


def test_queue_depths_are_exported_per_priority(settings, redis_client):
    from shared.ledger import Ledger
    from shared.request import ImageRequest
    from shared.scheduler import Scheduler

    keys = Keys(settings.key_prefix)
    ledger = Ledger(redis_client, keys)
    for batch_id, priority, n in (("b-q-high", "high", 2), ("b-q-normal", "normal", 3)):
        requests = [
            ImageRequest(
                index=i,
                id=str(i),
                prompt=f"p{i}",
                requested_model="m",
                model="m",
                output=f"{batch_id}/{i:04d}_p.png",
            )
            for i in range(n)
        ]
        assert ledger.create_batch(
            batch_id, requests, output_root=str(settings.output_dir), options={"priority": priority}
        )
        Scheduler(redis_client, keys).push(batch_id, [(i, 1, "m") for i in range(n)])
    Scheduler(redis_client, keys).push("b-q-normal", [(0, 1, "m")], delay=60)
    with start_metrics_server(settings, port=0, addr="127.0.0.1", limiter_factory=FakeLimiter) as server:
        samples = scrape(server.url)
    assert value(samples, "fleet_exporter_part_up", part="queue") == 1
    assert value(samples, "fleet_queue_ready", priority="high") == 2
    assert value(samples, "fleet_queue_ready", priority="normal") == 2
    assert value(samples, "fleet_queue_batches", priority="normal") == 1
    assert value(samples, "fleet_queue_broker", priority="low") == 0
    assert value(samples, "fleet_queue_scheduled") == 1
    assert value(samples, "fleet_batches_active") >= 1


def test_serve_metrics_blocks_until_stopped(settings, redis_client):
    from producer.metrics_server import serve_metrics

    ready, stop = threading.Event(), threading.Event()
    servers = []

    def on_ready(server):
        servers.append(server)
        ready.set()

    thread = threading.Thread(
        target=serve_metrics,
        args=(settings, 0),
        kwargs={"addr": "127.0.0.1", "stop": stop, "on_ready": on_ready},
        daemon=True,
    )
    thread.start()
    assert ready.wait(10)
    samples = scrape(servers[0].url)
    assert ("fleet_exporter_part_up", (("part", "counters"),)) in samples
    stop.set()
    thread.join(10)
    assert not thread.is_alive()


def _run_batch(settings, redis_client, sim, worker_factory, prompt: str, n: int):
    """`n` images of one image model through one real worker, to the end: (the batch, the model, the
    fleet)."""
    from producer.prompts import parse_prompts
    from shared.ledger import Ledger
    from shared.models import load_registry
    from workers.dispatch import enqueue_items

    registry = load_registry()
    model = pick_image_model(registry)
    batch_id = f"metrics-{settings.key_prefix}"
    requests = parse_prompts(
        [f"{prompt}, take {i}" for i in range(n)],
        batch_id=batch_id,
        output_root=settings.output_dir,
        registry=registry,
        model=model,
    )
    ledger = Ledger(redis_client, Keys(settings.key_prefix))
    assert ledger.create_batch(batch_id, requests, output_root=str(settings.output_dir), options={})
    fleet = worker_factory(settings, count=1, sim=sim, concurrency=4)
    enqueue_items(settings, batch_id, requests)
    wait_finished(ledger, batch_id, 90)
    return batch_id, model, fleet


@pytest.mark.e2e
def test_a_real_batch_shows_up_in_the_metrics(settings, redis_client, sim_factory, worker_factory):
    """Workers of the project's app increment the Redis counters; the exporter shows them."""
    sim = sim_factory()
    settings = settings.with_(replicate_base_url=sim.url, concurrency_limit=3)
    batch_id, model, _ = _run_batch(settings, redis_client, sim, worker_factory, "a quiet harbour", 5)

    # Workers write their counters every few seconds (BatchedCounters): scrape until they are in.
    with start_metrics_server(settings, port=0, addr="127.0.0.1") as server:
        samples = wait_until(
            lambda: (
                (s := scrape(server.url)).get(
                    ("fleet_predictions_total", (("model", model), ("outcome", "succeeded")))
                )
                == 5
                and s
            ),
            2 * FLUSH_INTERVAL + 10,
            "the workers' counters written",
        )
    forget_queue(redis_client, settings.queue)
    assert value(samples, "fleet_predictions_total", model=model, outcome="succeeded") == 5
    assert value(samples, "fleet_creations_total", model=model) == 5
    assert value(samples, "fleet_cost_usd_total", model=model) > 0
    assert value(samples, "fleet_limiter_wait_seconds_count", kind="slot") >= 5
    assert value(samples, "fleet_slots_in_use") == 0
    assert value(samples, "fleet_slots_limit") == 3
    assert (
        "fleet_batch_items_total",
        (("batch", batch_id),),
    ) not in samples  # finished: not active


def _answers_on(host: str, port: int) -> bool:
    import socket

    try:
        with socket.create_connection((host, port), timeout=2):
            return True
    except OSError:
        return False


def test_producer_metrics_listens_on_loopback_unless_given_an_address(settings, redis_client):
    """`producer metrics` has no auth: like Flower it listens on 127.0.0.1 by default (127.0.0.2,
    another address of this host, is refused), says where, and `--address` opens it wider."""
    import subprocess
    import sys
    from pathlib import Path

    from bench.processes import free_port

    env = {k: v for k, v in os.environ.items() if not k.startswith(("REPLICATE_", "FLEET_", "REDIS_URL"))}
    env.update(settings.as_env(), PYTHONPATH=str(Path(__file__).resolve().parent.parent))
    for extra, wide in (([], False), (["--address", "0.0.0.0"], True)):
        port = free_port()
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "producer.cli",
                "--env-file",
                "/nonexistent",
                "metrics",
                "--port",
                str(port),
                *extra,
            ],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        try:
            wait_until(lambda port=port: _answers_on("127.0.0.1", port), 20, "the exporter")
            assert _answers_on("127.0.0.2", port) is wide
            assert ("fleet_exporter_part_up", (("part", "counters"),)) in scrape(
                f"http://127.0.0.1:{port}/metrics"
            )
        finally:
            process.terminate()
            output = process.communicate(timeout=10)[0]
        assert f"listening on {'0.0.0.0' if wide else '127.0.0.1'}:{port}" in output, output


def test_spending_limits_are_exported(settings, redis_client):
    from shared.budget import Budget, Reservation

    budget = Budget(redis_client, Keys(settings.key_prefix))
    budget.set_daily(2_000_000)
    budget.reserve(Reservation("b-m:0:1", "b-m", 25_000))
    budget.reserve(Reservation("b-m:1:1", "b-m", 25_000))
    budget.settle("b-m:0:1")
    budget.hold("b-m", 2, 1, 25_000, "batch")
    with start_metrics_server(
        settings, port=0, addr="127.0.0.1", limiter_factory=FakeLimiter, ledger_factory=FakeLedger
    ) as server:
        samples = scrape(server.url)
    assert value(samples, "fleet_exporter_part_up", part="budget") == 1
    assert value(samples, "fleet_budget_spent_today_usd") == 0.025
    assert value(samples, "fleet_budget_reserved_usd") == 0.025
    assert value(samples, "fleet_budget_daily_limit_usd") == 2.0
    assert value(samples, "fleet_budget_left_today_usd") == 1.95
    assert value(samples, "fleet_budget_held_items") == 1


def test_a_workers_counters_are_added_up_and_written_once_per_interval(settings, redis_client):
    """A worker's increments (BatchedCounters) reach Redis as one write per counter and interval,
    whatever the number of images; a write that fails keeps them for the next one."""
    import redis

    from shared.metrics.batched import BatchedCounters

    keys = Keys(settings.key_prefix)
    down = redis.Redis(port=free_port(), socket_connect_timeout=0.2)
    counters = BatchedCounters(down, interval=3600)  # written only when flushed here
    metrics = MetricsRecorder(counters, keys)
    try:
        for _ in range(100):
            metrics.slot_wait(0.02, "slot")
            metrics.creation("m")
            metrics.prediction("m", "succeeded", 0.003)
        assert read_counters(redis_client, keys) == {}  # nothing written per image
        counters.flush()  # Redis unreachable: kept
        counters.client = redis_client
        counters.flush()
        counts = {
            (metric, tuple(sorted(labels.items()))): v
            for metric, rows in read_counters(redis_client, keys).items()
            for labels, v in rows
        }
        assert counts[("creations", (("model", "m"),))] == 100
        assert counts[("predictions", (("model", "m"), ("outcome", "succeeded")))] == 100
        assert counts[("wait_count", (("kind", "slot"),))] == 100
        assert counts[("cost_usd", (("model", "m"),))] == pytest.approx(0.3)
        assert len(counts) == 6  # one field per counter: 6 increments per flush, not 600
        counters.flush()  # nothing new: nothing written
        assert read_counters(redis_client, keys)["creations"] == [({"model": "m"}, 100.0)]
    finally:
        counters.close()
        down.close()


@pytest.mark.e2e
def test_a_worker_writes_its_counters_when_it_stops(settings, redis_client, sim_factory, worker_factory):
    """A worker adds its counters up and writes them every few seconds; a warm shutdown (SIGTERM,
    what `docker compose stop` sends) writes what it added since, so nothing is lost to a stop."""
    sim = sim_factory(latency_scale=0.05, image_scale=0.01)
    settings = settings.with_(replicate_base_url=sim.url)
    _, model, fleet = _run_batch(settings, redis_client, sim, worker_factory, "a lighthouse at dusk", 3)
    fleet.stop()  # SIGTERM; returns once the process is gone
    assert fleet.workers[0].proc.returncode == 0, fleet.logs()  # a warm shutdown, not SIGKILLed
    forget_queue(redis_client, settings.queue)
    counters = {
        (metric, tuple(sorted(labels.items()))): v
        for metric, rows in read_counters(redis_client, Keys(settings.key_prefix)).items()
        for labels, v in rows
    }
    assert counters.get(("predictions", (("model", model), ("outcome", "succeeded")))) == 3, counters
    assert counters.get(("creations", (("model", model),))) == 3, counters
