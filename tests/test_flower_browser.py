"""Flower in a real browser: Debian's Chromium, headless, logs in with basic auth, shows the
batch's tasks, and the page has no token. Saves test-artifacts/flower*.png (tests/support/browser.py).

Needs `apt-get install -y chromium` (.ci/run installs it): `needs("browser")`, so without Chromium
these tests skip, except where the browser is required (FLEET_REQUIRE, as in CI), where they fail.
Chromium logs in with credentials in the URL (Chrome keeps them for the page's own XHRs, which is
how Flower's task table loads), and `--virtual-time-budget` lets that JS finish before the DOM is
dumped or the screenshot taken.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from shared.models import load_registry
from tests.support.attempt_path import record_batch
from tests.support.browser import dump_dom, screenshot, served_responses
from tests.support.flower import (
    FLOWER_PASSWORD,
    FLOWER_USER,
    REDIS_PASSWORD,
    TOKEN,
    flower_beside_a_worker,
    http_get,
)
from tests.support.wait import wait_until
from tests.support.workers import pick_image_model
from workers.dispatch import enqueue_items

pytestmark = [pytest.mark.browser, pytest.mark.needs("browser")]


def with_credentials(url: str) -> str:
    return url.replace("http://", f"http://{FLOWER_USER}:{FLOWER_PASSWORD}@", 1)


def check_tasks_page(
    tmp_path: Path, flower_url: str, batch_id: str, task_ids: list[str], shot: str, token: str = TOKEN
) -> None:
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
            dump_dom(tmp_path, with_credentials(f"{flower_url}/tasks"))
        ),
        60,
        "every task of the batch on Flower's tasks page",
        interval=1,
    )
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
def test_flower_tasks_page_with_stub_worker(stub_fleet, tmp_path):
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
def test_flower_during_a_real_batch(settings, redis_client, sim_factory, tmp_path):
    """The real pipeline: the project's worker (as compose runs it), the stand-in, a small batch;
    Flower (started by producer.flower) opened in Chromium while the batch runs, and the
    screenshot taken while predictions are still in flight."""

    sim = sim_factory(latency_scale=BROWSER_BATCH_LATENCY)
    settings = settings.with_(replicate_base_url=sim.url, replicate_api_token=RUN_TOKEN, concurrency_limit=3)
    registry = load_registry()
    batch_id = f"browser-{settings.key_prefix}"
    ledger, requests = record_batch(
        settings,
        redis_client,
        batch_id,
        [f"a paper boat on a pond, take {i}" for i in range(6)],
        model=pick_image_model(registry),
    )
    with flower_beside_a_worker(settings, redis_client, tmp_path, "browser") as flower_url:
        try:
            enqueue_items(settings, batch_id, requests)
            _during_the_batch(tmp_path, flower_url, ledger, batch_id, requests)
        finally:
            try:
                ledger.cancel(batch_id)  # the worker stops waiting at once, not after ~20 s predictions
            except Exception:  # noqa: BLE001 - cleanup only
                pass
    for log in (tmp_path / "flower.log", tmp_path / "worker.log"):
        assert RUN_TOKEN not in log.read_text(errors="replace"), log
    assert RUN_TOKEN not in sim.log(), "the stand-in's log"


def _during_the_batch(tmp_path, flower_url, ledger, batch_id, requests) -> None:
    import json

    def batch_tasks() -> dict[str, dict]:
        tasks = json.loads(http_get(f"{flower_url}/api/tasks")[1])
        return {t: info for t, info in tasks.items() if batch_id in (info.get("args") or "")}

    def started() -> list[str] | None:
        tasks = batch_tasks()
        return (
            list(tasks)
            if len(tasks) >= len(requests) and any(info.get("state") == "STARTED" for info in tasks.values())
            else None
        )

    task_ids = wait_until(started, 60, "the batch's tasks in Flower, some started", interval=0.5)
    check_tasks_page(tmp_path, flower_url, batch_id, task_ids, "flower.png", token=RUN_TOKEN)
    # The screenshot is of a batch in progress: tasks were still running after it was taken.
    states = {info.get("state") for info in batch_tasks().values()}
    assert states & set(RUNNING_STATES), f"every task had ended before the screenshot: {states}"
    assert not ledger.batch(batch_id).finished
    assert RUN_TOKEN not in http_get(f"{flower_url}/api/tasks")[1]


@pytest.mark.e2e
def test_flower_shows_failed_retried_and_succeeded_attempts(settings, redis_client, sim_factory, tmp_path):
    """Issue 18.3: a batch whose first model always fails. Flower, in the browser, shows the failed
    flux-dev attempts as FAILURE with their reason and the next task of the route, and the final
    attempts as SUCCESS with their model and files; the first prediction, aborted, shows RETRY."""
    import json
    from collections import Counter

    sim = sim_factory(always_fail_models=["black-forest-labs/flux-dev"], abort_next=1, latency_scale=0.02)
    settings = settings.with_(replicate_base_url=sim.url, replicate_api_token=RUN_TOKEN)
    batch_id = f"browser-fail-{settings.key_prefix}"
    ledger, requests = record_batch(
        settings,
        redis_client,
        batch_id,
        [f"a windmill in fog, take {i}" for i in range(2)],
        model="black-forest-labs/flux-dev",
    )
    with flower_beside_a_worker(settings, redis_client, tmp_path, "states") as flower_url:
        enqueue_items(settings, batch_id, requests)
        wait_until(lambda: ledger.batch(batch_id).finished, 90, "the batch to finish", interval=0.3)

        def ended() -> dict[str, dict] | None:
            tasks = json.loads(http_get(f"{flower_url}/api/tasks")[1])
            mine = {t: info for t, info in tasks.items() if batch_id in (info.get("args") or "")}
            states = Counter(i.get("state") for i in mine.values())
            return mine if states["SUCCESS"] >= 2 and states["FAILURE"] >= 2 and states["RETRY"] else None

        tasks = wait_until(ended, 30, "every attempt's end in Flower", interval=0.5)
        states = Counter(info["state"] for info in tasks.values())
        # 2 x (flux-dev failed, qwen succeeded) + the aborted one (more RETRY on a loaded machine:
        # a run handed back for later, e.g. no slot in time, is a RETRY of the same attempt too)
        assert states["FAILURE"] == 2 and states["SUCCESS"] == 2 and states["RETRY"] >= 1, [
            (info["args"], info["state"], info.get("exception")) for info in tasks.values()
        ]
        failed = next(t for t, info in tasks.items() if info["state"] == "FAILURE")
        succeeded = next(t for t, info in tasks.items() if info["state"] == "SUCCESS")

        page = dump_dom(tmp_path, with_credentials(f"{flower_url}/tasks"))
        assert "FAILURE" in page and "SUCCESS" in page and "RETRY" in page
        detail = dump_dom(tmp_path, with_credentials(f"{flower_url}/task/{failed}"))
        assert "black-forest-labs/flux-dev failed" in detail and "next: attempt" in detail
        assert "qwen/qwen-image" in detail
        detail = dump_dom(tmp_path, with_credentials(f"{flower_url}/task/{succeeded}"))
        assert "qwen/qwen-image" in detail and batch_id in detail
        assert RUN_TOKEN not in page + detail
        screenshot(tmp_path, with_credentials(f"{flower_url}/tasks?state=FAILURE"), "flower-failures.png")
        assert sim.ledger()["creations"] == 5  # failing tasks were acked, never redelivered
