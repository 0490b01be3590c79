"""A small fleet-level benchmark run across 3 hosts, against the plain-Celery baseline.
No timing assertions: the figures that must hold whatever the machine's speed (limits, 429s,
duplicates, lost images) are asserted; makespan and efficiency are only printed (run -s)."""

from __future__ import annotations

import pytest

from bench.throughput import Scenario, run_baseline, run_fleet, summary_line
from tests.support.bench import make_test_hosts

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.needs("redis-server")]


@pytest.fixture(scope="module")
def bench_env():
    with make_test_hosts(3) as hosts:
        redis = hosts.start_redis(6396, appendonly=False)
        sim = hosts.start_sim(8796)
        yield hosts, redis, sim


def test_fleet_stays_within_both_limits_and_loses_nothing(bench_env):
    hosts, redis, sim = bench_env
    # 120 images, 10 slots, 30 creations per 4.8 s window, latency 0.64 s
    sc = Scenario(n=120, slots=10, create_per_min=30, time_scale=0.08)
    result = run_fleet(sc, hosts, redis, sim)
    print("\n" + summary_line(result))
    f = result.figures
    assert f["finished"] and f["images_lost"] == 0
    assert f["peak_in_flight"] <= sc.slots
    assert f["max_creations_in_window"] <= sc.create_per_min
    assert f["http_429"] == 0 and f["duplicate_predictions"] == 0 and f["creations"] == sc.n
    assert f["redis_cmds_per_image"] > 0 and f["worker_cpu_s_per_1000"] > 0
    # a round trip carries one command or more (a pipeline, a script); never the reverse
    assert 0 < f["redis_round_trips_per_image"] <= f["redis_cmds_per_image"]


def test_baseline_without_a_global_limiter_goes_over_the_slot_limit(bench_env):
    hosts, redis, sim = bench_env
    sc = Scenario(n=60, slots=6, create_per_min=600, time_scale=0.1)
    result = run_baseline(sc, hosts, redis, sim, mode="naive")
    print("\n" + summary_line(result))
    # three workers each sized to the account's limit: up to 3x the slots in flight at once
    assert result.figures["peak_in_flight"] > sc.slots
