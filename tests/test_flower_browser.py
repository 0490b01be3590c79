"""Flower in a real browser: Debian's Chromium, headless, logs in with basic auth, shows the
batch's tasks, and the page has no token. Saves test-artifacts/flower*.png.

Needs `apt-get install -y chromium` (CI installs it in .ci/run). Without Chromium the tests skip —
except where a browser is required (the environment variable CI set, as CI services do, or
FLEET_REQUIRE_BROWSER=1, as .ci/run exports): there a missing Chromium fails, so the browser test
cannot pass vacuously in CI.
Chromium logs in with credentials in the URL (Chrome keeps them for the page's own XHRs, which is
how Flower's task table loads), and `--virtual-time-budget` lets that JS finish before the DOM is
dumped or the screenshot taken.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from bench.processes import free_port
from producer.flower import start_flower
from shared.keys import Keys
from shared.ledger import Ledger
from shared.models import load_registry
from shared.prompts import parse_prompts
from tests.support.flower import (
    FLOWER_PASSWORD,
    FLOWER_USER,
    REDIS_PASSWORD,
    TOKEN,
    flower_answers,
    http_get,
    stop_process,
)
from tests.support.wait import wait_until
from tests.support.workers import compose_worker, forget_queue, pick_image_model
from workers.dispatch import enqueue_items

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"


def browser_required(environ=os.environ) -> bool:
    """CI (any CI=... other than empty/0/false) or FLEET_REQUIRE_BROWSER=1: no skipping."""
    ci = environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")
    return ci or environ.get("FLEET_REQUIRE_BROWSER", "").strip() == "1"


pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(CHROMIUM is None and not browser_required(),
                       reason="headless Chromium is not installed (apt-get install chromium)"),
]


@pytest.fixture
def require_chromium():
    """Fails (does not skip) a browser test when Chromium is missing where it is required."""
    if CHROMIUM is None:  # only reached when a browser is required (see pytestmark)
        pytest.fail("headless Chromium is required here (CI / FLEET_REQUIRE_BROWSER=1) but not installed: "
                    "apt-get install -y chromium", pytrace=False)


def test_a_missing_browser_fails_in_ci_and_skips_elsewhere():
    assert browser_required({"CI": "true"}) and browser_required({"CI": "1"})
    assert browser_required({"FLEET_REQUIRE_BROWSER": "1"})
    assert not browser_required({}) and not browser_required({"CI": "false"}) and not browser_required({"CI": ""})
    ci_script = (Path(__file__).resolve().parent.parent / ".ci" / "run").read_text()
    assert re.search(r"^export FLEET_REQUIRE_BROWSER=1\b", ci_script, flags=re.MULTILINE), \
        ".ci/run must make the browser test mandatory"


def chromium(tmp_path: Path, url: str, *extra: str, budget_ms: int = 5000) -> subprocess.CompletedProcess:
    """One headless Chromium run. The flags keep it off the network (this machine has none but
    loopback) and away from any profile, GPU, or sandbox that root cannot use."""
    profile = tmp_path / f"chromium-profile-{len(list(tmp_path.glob('chromium-profile-*')))}"
    argv = [
        CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--disable-dev-shm-usage", f"--user-data-dir={profile}", f"--virtual-time-budget={budget_ms}",
        "--window-size=1400,900", *extra, url,
    ]
    return subprocess.run(argv, capture_output=True, text=True, timeout=90)


def with_credentials(url: str) -> str:
    return url.replace("http://", f"http://{FLOWER_USER}:{FLOWER_PASSWORD}@", 1)


def dump_dom(tmp_path: Path, url: str) -> str:
    result = chromium(tmp_path, url, "--dump-dom")
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def served_responses(tmp_path: Path, url: str) -> list[list[str]]:
    """The HTTP response headers (status line first) the browser received loading `url`, read from
    Chromium's own network log."""
    netlog = tmp_path / f"netlog-{len(list(tmp_path.glob('netlog-*')))}.json"
    result = chromium(tmp_path, url, f"--log-net-log={netlog}", "--dump-dom")
    assert result.returncode == 0, result.stderr[-2000:]
    text = netlog.read_text(errors="replace")
    return [re.findall(r'"((?:[^"\\]|\\.)*)"', block)
            for block in re.findall(r'"headers":\[("HTTP/[^\]]*)\]', text)]


def screenshot(tmp_path: Path, url: str, name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / name
    path.unlink(missing_ok=True)
    result = chromium(tmp_path, url, f"--screenshot={path}")
    assert result.returncode == 0 and path.is_file() and path.stat().st_size > 10_000, result.stderr[-2000:]
    return path


def check_tasks_page(tmp_path: Path, flower_url: str, batch_id: str, task_ids: list[str], shot: str,
                     token: str = TOKEN) -> None:
    # Without credentials the browser is served Flower's 401 (a basic-auth challenge), not the tasks.
    anonymous = dump_dom(tmp_path, f"{flower_url}/tasks")
    assert not any(task_id in anonymous for task_id in task_ids)
    responses = served_responses(tmp_path, f"{flower_url}/tasks")
    statuses = [int(headers[0].split()[1]) for headers in responses]
    assert 401 in statuses and not any(200 <= status < 300 for status in statuses), responses
    challenge = next(headers for headers in responses if headers[0].split()[1] == "401")
    assert any(re.match(r"(?i)www-authenticate: basic", h) for h in challenge), challenge

    page = wait_until(
        lambda: (lambda dom: dom if all(t in dom for t in task_ids) else None)(
            dump_dom(tmp_path, with_credentials(f"{flower_url}/tasks"))),
        60, "every task of the batch on Flower's tasks page", interval=1)
    assert "Tasks" in page
    assert f"batch={batch_id}" in page  # the argsrepr column: readable arguments
    assert token not in page and REDIS_PASSWORD not in page
    # The same through the API, with the same credentials, as a second check.
    api = http_get(f"{flower_url}/api/tasks")[1]
    assert all(t in api for t in task_ids) and token not in api
    # A task's own page too (arguments, result, worker), and the screenshot of the list.
    detail = dump_dom(tmp_path, with_credentials(f"{flower_url}/task/{task_ids[0]}"))
    assert task_ids[0] in detail and token not in detail and REDIS_PASSWORD not in detail
    screenshot(tmp_path, with_credentials(f"{flower_url}/tasks"), shot)


@pytest.mark.e2e
def test_flower_tasks_page_with_stub_worker(require_chromium, stub_fleet, tmp_path):
    """Flower's configuration as producer.flower sets it, with a stand-in worker app."""
    task_ids = stub_fleet.send_batch("b-browser", [f"a lighthouse at dusk {i}" for i in range(4)])
    check_tasks_page(tmp_path, stub_fleet.url, "b-browser", task_ids, "flower-stub.png")


RUN_TOKEN = "r8_" + "Br0wserRun" * 3  # the real batch's token, shaped like a real one
# Latency of the stand-in for the real-batch test: the picked model takes ~10 s at scale 1, so at
# scale 2 each prediction runs ~20 s and the screenshot (~10 s after the enqueue) catches the first
# wave running; the batch is then canceled, so the test does not wait for it (~25 s in all).
BROWSER_BATCH_LATENCY = float(os.environ.get("FLEET_TEST_BROWSER_LATENCY", "2.0"))
RUNNING_STATES = ("PENDING", "RECEIVED", "STARTED", "RETRY")


@pytest.mark.e2e
def test_flower_during_a_real_batch(require_chromium, settings, redis_client, sim_factory, tmp_path):
    """The real pipeline: the project's worker (as compose runs it), the stand-in, a small batch;
    Flower (started by producer.flower) opened in Chromium while the batch runs, and the
    screenshot taken while predictions are still in flight."""
    import json
    import signal

    sim = sim_factory(latency_scale=BROWSER_BATCH_LATENCY)
    settings = settings.with_(replicate_base_url=sim.url, replicate_api_token=RUN_TOKEN, global_max_concurrent=3)
    registry = load_registry()
    batch_id = f"browser-{settings.key_prefix}"
    requests = parse_prompts([f"a paper boat on a pond, take {i}" for i in range(6)], batch_id=batch_id,
                             output_root=settings.output_dir, registry=registry, model=pick_image_model(registry))
    ledger = Ledger(redis_client, Keys(settings.key_prefix))
    assert ledger.create_batch(batch_id, requests, output_root=str(settings.output_dir), options={})

    port = free_port()
    flower_url = f"http://127.0.0.1:{port}"
    flower = start_flower(settings, port, f"{FLOWER_USER}:{FLOWER_PASSWORD}", tmp_path / "flower" / "flower.db",
                          address="127.0.0.1", stdout=(tmp_path / "flower.log").open("w"), stderr=subprocess.STDOUT)
    worker = compose_worker(settings, "browser", tmp_path / "worker.log")
    try:
        wait_until(lambda: flower_answers(flower_url), 30, "Flower to answer", interval=0.2)
        enqueue_items(settings, batch_id, requests)

        def batch_tasks() -> dict[str, dict]:
            tasks = json.loads(http_get(f"{flower_url}/api/tasks")[1])
            return {t: info for t, info in tasks.items() if batch_id in (info.get("args") or "")}

        def started() -> list[str] | None:
            tasks = batch_tasks()
            return list(tasks) if len(tasks) >= len(requests) and any(
                info.get("state") == "STARTED" for info in tasks.values()) else None

        task_ids = wait_until(started, 60, "the batch's tasks in Flower, some started", interval=0.5)
        check_tasks_page(tmp_path, flower_url, batch_id, task_ids, "flower.png", token=RUN_TOKEN)
        # The screenshot is of a batch in progress: tasks were still running after it was taken.
        states = {info.get("state") for info in batch_tasks().values()}
        assert states & set(RUNNING_STATES), f"every task had ended before the screenshot: {states}"
        assert not ledger.batch(batch_id).finished
        assert RUN_TOKEN not in http_get(f"{flower_url}/api/tasks")[1]
    finally:
        try:
            ledger.cancel(batch_id)  # the worker stops waiting at once instead of for ~20 s predictions
        except Exception:  # noqa: BLE001 - cleanup only
            pass
        if worker.poll() is None:
            worker.send_signal(signal.SIGTERM)
        stop_process(worker)
        stop_process(flower)
        forget_queue(redis_client, settings.queue)
    for log in (tmp_path / "flower.log", tmp_path / "worker.log"):
        assert RUN_TOKEN not in log.read_text(errors="replace"), log
    assert RUN_TOKEN not in sim.log(), "the stand-in's log"
