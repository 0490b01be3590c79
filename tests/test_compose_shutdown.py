"""The worker as docker-compose.yml runs it (`celery -A workers worker --pool=threads ...`), stopped
the way `docker compose stop` / `--scale worker=N` stops it (SIGTERM), in the middle of a batch
against the stand-in. Then a fresh worker finishes the batch.

The worker has more threads (8) than the account has slots (2), so at the SIGTERM two predictions
are in flight and other tasks are waiting for a slot: both halves of the warm shutdown are
exercised. Checks (issue 6, "Shutdown"): the predictions in flight finish on the stopping worker;
the waiting tasks hand their attempt back at once (logged) and are finished by the fresh worker;
nothing is lost (every item succeeds, every file exists); nothing is paid twice (the stand-in saw
exactly one creation per item and no duplicate input); the stopped worker left no slot behind; and
nothing the run wrote — worker logs, output files, manifest, the fleet's Redis keys — contains the
token.
"""

from __future__ import annotations

import json
import os
import re
import signal
from pathlib import Path

import pytest

from producer.prompts import parse_prompts
from shared.keys import Keys
from shared.ledger import Ledger
from shared.limiter import Limiter
from shared.models import load_registry
from tests.support.wait import wait_until
from tests.support.workers import compose_worker, forget_queue, pick_image_model
from workers.dispatch import enqueue_items

TOKEN = "r8_" + "ShutD0wn" * 4  # shaped like a real token
HANDED_BACK = "worker shutting down; attempt handed back before any creation"

pytestmark = pytest.mark.e2e


def items_logged(log: str, message: str) -> set[int]:
    """Item indexes of the structured log lines whose message contains `message`."""
    return {
        int(m.group(1))
        for line in log.splitlines()
        if message in line
        for m in [re.search(r"\bitem=(\d+)\b", line)]
        if m
    }


def test_sigterm_mid_batch_loses_nothing_and_pays_nothing_twice(
    settings, redis_client, sim_factory, tmp_path
):
    sim = sim_factory(latency_scale=float(os.environ.get("FLEET_TEST_SHUTDOWN_LATENCY", "0.3")))
    slots, threads, n_items = 2, 8, 12
    settings = settings.with_(replicate_base_url=sim.url, replicate_api_token=TOKEN, concurrency_limit=slots)
    keys = Keys(settings.key_prefix)
    registry = load_registry()
    model = pick_image_model(registry)
    batch_id = f"shutdown-{settings.key_prefix}"
    requests = parse_prompts(
        [f"a lighthouse in a storm, study {i}" for i in range(n_items)],
        batch_id=batch_id,
        output_root=settings.output_dir,
        registry=registry,
        model=model,
    )
    ledger = Ledger(redis_client, keys)
    assert ledger.create_batch(batch_id, requests, output_root=str(settings.output_dir), options={})
    limiter = Limiter.from_settings(redis_client, keys, settings)

    logs = [tmp_path / "worker-a.log", tmp_path / "worker-b.log"]
    first = compose_worker(settings, "a", logs[0], concurrency=threads)
    second = None
    try:
        enqueue_items(settings, batch_id, requests)
        # SIGTERM, as `docker compose stop` sends it, while every slot holds a prediction in flight
        # and further tasks of this worker wait for a slot.
        at_sigterm = wait_until(
            # a slot counts once its prediction exists (an id, or the attempt its creation token
            # marked): with the direct hand-off a slot is taken a moment before its create
            lambda: (
                lambda st: (
                    st
                    if sum(1 for h in st.holders if h.prediction_id or h.attempt) >= slots and st.waiters >= 2
                    else None
                )
            )(limiter.status()),
            60,
            "predictions in flight and tasks waiting for a slot on worker a",
        )
        first.kill(signal.SIGTERM)
        assert first.proc.wait(timeout=120) == 0, first.log(3000)
        # The stopped worker left no slot behind.
        status = limiter.status()
        assert status.in_use == 0, [h.to_dict() for h in status.holders]

        second = compose_worker(settings, "b", logs[1])
        wait_until(
            lambda: ledger.batch(batch_id).finished,
            180,
            "the second worker to finish the batch",
            interval=0.5,
        )
    finally:
        for process in (first, second):
            if process is not None:
                process.stop(timeout=60)
        limiter.close()
        forget_queue(redis_client, settings.queue)

    items = ledger.items(batch_id)
    results = [item.to_result() for item in items]
    assert [r["status"] for r in results] == ["succeeded"] * n_items, json.dumps(results, indent=1)[:3000]
    for result in results:
        for output in result["outputs"]:
            path = Path(output) if Path(output).is_absolute() else settings.output_dir / output
            assert path.is_file() and path.stat().st_size > 0, path

    # Nothing paid twice: one creation per item, no input sent twice.
    book = sim.ledger()
    assert book["creations"] == n_items, book
    assert book["duplicate_inputs"] == 0, book

    log_a, log_b = (path.read_text(errors="replace") for path in logs)
    assert "warm shutdown" in log_a.lower()
    # The predictions in flight at the SIGTERM were waited for and finished on worker a ...
    created_on_a = items_logged(log_a, "created prediction")
    assert len(created_on_a) >= slots, log_a[-3000:]
    assert created_on_a <= items_logged(log_a, "item succeeded"), log_a[-3000:]
    # ... while the tasks waiting for a slot handed their attempt back at once, before creating
    # anything, and the fresh worker made them.
    handed_back = items_logged(log_a, HANDED_BACK)
    assert handed_back, f"no hand-back logged (status at SIGTERM: {at_sigterm.to_dict()})\n{log_a[-3000:]}"
    assert not handed_back & created_on_a, (handed_back, created_on_a)
    assert handed_back <= items_logged(log_b, "item succeeded"), log_b[-3000:]
    assert items_logged(log_b, "created prediction") == set(range(n_items)) - created_on_a

    # Grep everything the run wrote for the token.
    written = [p for p in settings.output_dir.rglob("*") if p.is_file()] + logs
    for path in written:
        assert TOKEN.encode() not in path.read_bytes(), path
    import redis

    raw = redis.Redis.from_url(settings.redis_url)  # DUMP payloads are binary
    try:
        for key in raw.scan_iter(match=f"*{settings.key_prefix}*"):
            assert TOKEN.encode() not in (raw.dump(key) or b""), key
    finally:
        raw.close()
    assert TOKEN not in sim.log(), "the stand-in's log"
