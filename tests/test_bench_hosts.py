"""The benchmark harness itself: hosts as network namespaces, their faults, and the bound."""

from __future__ import annotations

import subprocess
import sys

import pytest

from bench.hosts import Hosts, HostsError, cleanup_stale
from bench.measure import Series, bound, ideal_makespan
from tests.support.bench import make_test_hosts


def _namespaces() -> str:
    return subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout


@pytest.mark.needs("netns", "redis-server")
def test_hosts_reach_only_the_bridge_and_are_removed_afterwards():
    with make_test_hosts(3) as hosts:
        prefix = hosts.prefix
        assert hosts.isolated
        redis = hosts.start_redis(6395, appendonly=False)
        assert redis.client().ping()
        assert all(hosts.reachable(i, 6395) for i in (1, 2, 3))
        # the shared Redis on the machine's loopback is NOT reachable from a host
        probe = hosts.run(
            1,
            [
                sys.executable,
                "-c",
                "import socket; s=socket.socket(); s.settimeout(1); print(s.connect_ex(('127.0.0.1', 6379)))",
            ],
        )
        assert probe.stdout.strip() != "0"
        hosts.cut(2)
        assert not hosts.reachable(2, 6395)
        assert hosts.reachable(1, 6395)
        hosts.restore(2)
        assert hosts.reachable(2, 6395)
        pid = redis.process.pid
    assert f"{prefix}-h1" not in _namespaces()
    assert subprocess.run(["kill", "-0", str(pid)], capture_output=True).returncode != 0


@pytest.mark.needs("netns")
def test_teardown_runs_when_the_block_raises_and_stale_hosts_are_cleaned():
    with pytest.raises(RuntimeError):
        with make_test_hosts(2) as hosts:
            prefix = hosts.prefix
            hosts.popen(1, ["sleep", "300"])
            raise RuntimeError("boom")
    assert f"{prefix}-h1" not in _namespaces()
    # a namespace left by a "crashed" run of the same prefix is removed by the next run
    subprocess.run(["ip", "netns", "add", f"{prefix}-h9"], check=True)
    assert f"{prefix}-h9" in cleanup_stale(prefix)
    assert f"{prefix}-h9" not in _namespaces()


@pytest.mark.needs("faketime")
@pytest.mark.parametrize("offset", [60, -60])
def test_a_host_can_run_with_its_clock_off_and_still_waits_as_long_as_it_means(offset):
    """Only the wall clock is off, as on a real host: timed waits and sleeps last what they say
    (with the monotonic clock faked too, every Event.wait(timeout) of the process hung)."""
    code = (
        "import threading, time; t = time.perf_counter(); threading.Event().wait(0.3); "
        "time.sleep(0.3); print(time.perf_counter() - t, time.time())"
    )
    with make_test_hosts(1, isolate=False) as hosts:
        proc = hosts.popen(
            1, [sys.executable, "-c", code], log_path=hosts.workdir / "t.log", clock_offset=offset
        )
        assert proc.wait(30) == 0, (hosts.workdir / "t.log").read_text()
        import time

        waited, then = map(float, (hosts.workdir / "t.log").read_text().split()[-2:])
        assert 0.55 < waited < 3.0
        assert offset - 5 < then - time.time() < offset + 5


def test_plain_process_fallback_says_so_and_refuses_cuts():
    with Hosts(2, isolate=False, quiet=True) as hosts:
        assert not hosts.isolated and hosts.server_address == "127.0.0.1"
        with pytest.raises(HostsError):
            hosts.cut(1)
        proc = hosts.popen(2, [sys.executable, "-c", "print('ok')"], log_path=hosts.workdir / "o.log")
        assert proc.wait(30) == 0


@pytest.mark.unit
def test_bound_is_the_larger_of_the_slot_and_the_rate_limits():
    # 1000 images, 10 slots, 2 s each: 200 s of slot time; the rate (600/60 s) allows the last at 60 s
    assert bound(1000, latency=2.0, slots=10, create_limit=600, window=60)["bound"] == pytest.approx(200.0)
    # 60 per 6 s: creation 999 no earlier than floor(999/60)*6 = 96 s, done at 98 s
    b = bound(1000, latency=2.0, slots=60, create_limit=60, window=6)
    assert b["by_rate"] == pytest.approx(98.0) and b["bound"] == pytest.approx(98.0)


@pytest.mark.unit
def test_ideal_makespan_packs_slots_and_spaces_windows():
    # 4 predictions of 1 s on 2 slots, no rate limit that binds: two waves, done at 2 s
    assert ideal_makespan([1.0] * 4, slots=2, create_limit=100, window=60) == pytest.approx(2.0)
    # a slow one in the last wave decides the end, not the mean: 1+1, then 1 and 3 -> 4 s
    assert ideal_makespan([1.0, 1.0, 1.0, 3.0], slots=2, create_limit=100, window=60) == pytest.approx(4.0)
    # 2 per 10 s window, plenty of slots: creations at 0, 0, 10, 10, 20 -> last ends at 21
    assert ideal_makespan([1.0] * 5, slots=10, create_limit=2, window=10) == pytest.approx(21.0)
    # a long first prediction holds its slot while the other slot serves the rest in order
    assert ideal_makespan([5.0, 1.0, 1.0, 1.0], slots=2, create_limit=100, window=60) == pytest.approx(5.0)


@pytest.mark.unit
def test_series_counts_windows_exactly():
    events = [
        {"kind": "create", "ts": t, "id": str(i), "in_flight": 1}
        for i, t in enumerate([0.0, 0.5, 1.0, 1.99, 2.0])
    ]
    events += [{"kind": "complete", "ts": 3.0, "id": "0", "in_flight": 0}]
    series = Series.from_events(events)
    # a window of 2 s holds creations less than 2 s apart: {0.5,1.0,1.99,2.0} = 4
    assert series.max_in_window(2.0) == 4
    assert series.latencies == [3.0]
    assert series.latencies_by_creation == [3.0]


@pytest.mark.unit
def test_partial_bench_runs_add_up_to_one_report(tmp_path, monkeypatch):
    import json

    from bench import run

    monkeypatch.setattr(run, "RESULTS_DIR", tmp_path)

    def result(system: str, name: str, makespan: float) -> dict:
        return {"system": system, "scenario": {"name": name}, "figures": {"makespan_s": makespan}}

    run._save(
        "throughput", [result("fleet", "n1000-s10-r600", 1.0), result("baseline", "n1000-s10-r600", 2.0)]
    )
    run._record_run("partial run", "throughput --n 1000", True)
    run._save("throughput", [result("fleet", "n5000-s60-r600", 3.0), result("fleet", "n1000-s10-r600", 4.0)])
    run._record_run("partial run", "throughput --n 5000", True)

    saved = json.loads((tmp_path / "throughput.json").read_text())
    assert {(r["system"], r["scenario"]["name"], r["figures"]["makespan_s"]) for r in saved} == {
        ("baseline", "n1000-s10-r600", 2.0),
        ("fleet", "n5000-s60-r600", 3.0),
        ("fleet", "n1000-s10-r600", 4.0),
    }
    assert json.loads((tmp_path / "runs.json").read_text())["commands"] == [
        "throughput --n 1000",
        "throughput --n 5000",
    ]
    run._clear_saved()  # what --all and --quick do first
    run._record_run("full run", "--all", True)
    assert json.loads((tmp_path / "runs.json").read_text())["commands"] == ["--all"]
    assert not (tmp_path / "throughput.json").exists()
