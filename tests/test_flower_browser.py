"""Flower in a real browser: Debian's Chromium, headless, logs in with basic auth, shows the
batch's tasks, and the page has no token. Saves test-artifacts/flower*.png.

Needs `apt-get install -y chromium` (CI installs it in .ci/run); skipped when Chromium is absent.
Chromium logs in with credentials in the URL (Chrome keeps them for the page's own XHRs, which is
how Flower's task table loads), and `--virtual-time-budget` lets that JS finish before the DOM is
dumped or the screenshot taken.
"""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.test_flower_support import (  # noqa: F401  (stub_fleet is a fixture)
    FLOWER_PASSWORD,
    FLOWER_USER,
    REDIS_PASSWORD,
    TOKEN,
    http_get,
    stub_fleet,
    wait_until,
)

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium is not installed (apt-get install chromium)"),
]


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


def screenshot(tmp_path: Path, url: str, name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / name
    path.unlink(missing_ok=True)
    result = chromium(tmp_path, url, f"--screenshot={path}")
    assert result.returncode == 0 and path.is_file() and path.stat().st_size > 10_000, result.stderr[-2000:]
    return path


def check_tasks_page(tmp_path: Path, flower_url: str, batch_id: str, task_ids: list[str], shot: str,
                     token: str = TOKEN) -> None:
    # Without credentials the browser gets Flower's 401, not the tasks.
    anonymous = dump_dom(tmp_path, f"{flower_url}/tasks")
    assert not any(task_id in anonymous for task_id in task_ids)

    page = wait_until(
        lambda: (lambda dom: dom if all(t in dom for t in task_ids) else None)(
            dump_dom(tmp_path, with_credentials(f"{flower_url}/tasks"))),
        60, interval=1, what="every task of the batch on Flower's tasks page")
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
def test_flower_tasks_page_with_stub_worker(stub_fleet, tmp_path):  # noqa: F811 (fixture)
    """Flower's configuration as producer.flower sets it, with a stand-in worker app."""
    task_ids = stub_fleet.send_batch("b-browser", [f"a lighthouse at dusk {i}" for i in range(4)])
    check_tasks_page(tmp_path, stub_fleet.url, "b-browser", task_ids, "flower-stub.png")


def _real_pipeline_available() -> bool:
    from tests.test_compose_shutdown import _available

    return _available()


@pytest.mark.e2e
@pytest.mark.skipif(not _real_pipeline_available(), reason="workers, ledger, prompts or the stand-in have not landed yet")
def test_flower_during_a_real_batch(settings, redis_client, sim_factory, tmp_path):
    """The real pipeline: the project's worker (as compose runs it), the stand-in, a small batch;
    Flower (started by producer.flower) opened in Chromium while the batch runs."""
    import json
    import signal

    from producer.flower import start_flower
    from shared.keys import Keys
    from shared.ledger import Ledger
    from shared.models import load_registry
    from shared.prompts import parse_prompts
    from tests.test_compose_shutdown import TOKEN as RUN_TOKEN
    from tests.test_compose_shutdown import delete_queue_bindings, pick_image_model, start_worker
    from tests.test_flower_support import _answers, _stop, free_port
    from workers.dispatch import enqueue_items

    sim = sim_factory()
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
    worker = start_worker(settings, "browser", tmp_path / "worker.log")
    try:
        wait_until(lambda: _answers(flower_url), 30, what="Flower to answer")
        enqueue_items(settings, batch_id, requests)

        def batch_tasks():
            tasks = json.loads(http_get(f"{flower_url}/api/tasks")[1])
            ours = [t for t, info in tasks.items() if batch_id in (info.get("args") or "")]
            return ours if len(ours) >= len(requests) else None

        task_ids = wait_until(batch_tasks, 90, interval=0.5, what="the batch's tasks in Flower")
        check_tasks_page(tmp_path, flower_url, batch_id, task_ids, "flower.png", token=RUN_TOKEN)
        assert RUN_TOKEN not in http_get(f"{flower_url}/api/tasks")[1]
    finally:
        if worker.poll() is None:
            worker.send_signal(signal.SIGTERM)
        _stop(worker)
        _stop(flower)
        delete_queue_bindings(redis_client, settings.queue)
    for log in (tmp_path / "flower.log", tmp_path / "worker.log"):
        assert RUN_TOKEN not in log.read_text(errors="replace"), log
