"""Small versions of the fault suite (bench/faults.py): a batch through the real fleet on 3
namespace hosts while a worker is SIGKILLed repeatedly, Redis restarts, a host loses its network,
a host's clock runs 60 s ahead, and the stand-in answers 5xx bursts and 429 storms.
Every image must arrive, none may be paid twice, and the limits must hold throughout."""

from __future__ import annotations

import pytest

from bench.faults import FaultPlan, fault_line, run_fault
from bench.throughput import Scenario
from tests.support.bench import make_test_hosts

pytestmark = [pytest.mark.e2e, pytest.mark.faults, pytest.mark.slow, pytest.mark.needs("redis-server")]

# 120 images, 20 slots, 200 creations per 9 s window, latency 1.2 s; faults every few seconds
SCENARIO = Scenario(n=120, slots=20, create_per_min=200, time_scale=0.15)
PLAN = FaultPlan(
    kill_every=4.0,
    fault_at=3.0,
    cut_for=6.0,
    clock_ahead=60.0,
    burst=12,
    burst_every=4.0,
    storm_for=1.5,
    lease_seconds=5.0,
    visibility_timeout=15,
    http_timeout=2.5,
    timeout=180.0,
)


@pytest.fixture(scope="module")
def bench_env():
    with make_test_hosts(3) as hosts:
        redis = hosts.start_redis(6397, appendonly=True)
        sim = hosts.start_sim(8797)
        yield hosts, redis, sim


@pytest.mark.parametrize(
    "fault",
    [
        "kill",
        "redis_restart",
        pytest.param("partition", marks=pytest.mark.needs("netns")),
        pytest.param("clock", marks=pytest.mark.needs("faketime")),
        "errors",
        "storm",
    ],
)
def test_fault_loses_nothing_pays_once_and_stays_within_limits(bench_env, fault):
    hosts, redis, sim = bench_env
    result = run_fault(fault, SCENARIO, PLAN, hosts, redis, sim)
    print("\n" + fault_line(result))
    f = result.figures
    assert f["faults_injected"] >= 1 or fault == "clock", f["fault_log"]
    assert f["finished"], f["statuses"]
    assert f["images_lost"] == 0
    assert f["duplicate_predictions"] == 0 and f["extra_creations"] == 0
    assert f["peak_in_flight"] <= SCENARIO.slots
    assert f["max_creations_in_window"] <= SCENARIO.create_per_min
    if fault != "storm":  # a storm IS 429s from "another app"; our own calls must cause none
        assert f["http_429"] == 0
