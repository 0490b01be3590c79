"""A worker that cannot work does not start (issue 18.2): real `celery -A workers worker` processes,
each refused with one line on stderr and a non-zero exit before Celery consumes anything; a worker
that can work says what it checked and answers on its queue."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from bench.processes import free_port, worker_argv, worker_env

pytestmark = pytest.mark.timeout(120)


def run_worker(settings, tmp_path: Path, sim_url: str | None, **env: str) -> subprocess.CompletedProcess:
    """A worker started as a user would; one that passes its checks is stopped by the timeout."""
    return subprocess.run(
        worker_argv(settings, "preflight@%h", concurrency=2),
        env=worker_env(settings, sim_url=sim_url, **env),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )


def refusal(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 2, result.stdout + result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr  # one clear line, no traceback
    assert "ready" not in result.stdout + result.stderr
    return lines[0]


def test_no_token(settings, sim, tmp_path):
    line = refusal(run_worker(settings.with_(replicate_api_token=None), tmp_path, sim.url))
    assert line.startswith("error: this worker cannot work") and "REPLICATE_API_TOKEN is not set" in line


def test_token_refused_by_the_account(settings, sim_factory, tmp_path):
    sim = sim_factory(token="r8_the_right_one")
    line = refusal(run_worker(settings, tmp_path, sim.url))
    assert "REPLICATE_API_TOKEN" in line and "rejected the token (HTTP 401)" in line
    assert "r8_test_token_not_real" not in line


def test_account_unreachable(settings, tmp_path):
    line = refusal(run_worker(settings, tmp_path, f"http://127.0.0.1:{free_port()}"))
    assert "REPLICATE_BASE_URL" in line and "Connection refused" in line


def test_redis_unreachable(settings, sim, tmp_path):
    line = refusal(
        run_worker(settings.with_(redis_url=f"redis://127.0.0.1:{free_port()}/0"), tmp_path, sim.url)
    )
    assert "cannot reach Redis" in line


def test_output_location_not_writable(settings, sim, tmp_path):
    blocker = tmp_path / "a-file"  # a folder inside a file: refused even to root
    blocker.write_text("not a folder")
    line = refusal(run_worker(settings.with_(output_dir=blocker / "out"), tmp_path, sim.url))
    assert "OUTPUT_DIR" in line and str(blocker / "out") in line
    assert sim.ledger()["creations"] == 0  # nothing was paid for


def test_object_store_not_writable(settings, sim, tmp_path, moto_s3):
    line = refusal(
        run_worker(
            settings.with_(output_dir="s3://no-such-bucket/out"), tmp_path, sim.url, **moto_s3.environ()
        )
    )
    assert "OUTPUT_DIR s3://no-such-bucket/out cannot be written" in line


def test_a_worker_that_can_work_starts(settings, sim, worker_factory):
    fleet = worker_factory(settings, count=1, sim=sim)
    log = fleet.workers[0].log()
    assert "preflight: token, Redis, output location and account replicate-sim: ok" in log
    assert sim.ledger()["unauthorized"] == 0
