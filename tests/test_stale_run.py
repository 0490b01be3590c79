"""A run whose claim was lost while it waited for its prediction writes nothing.

Real worker processes, the real Redis, the stand-in over HTTP. Worker A creates the item's
prediction and is stopped (SIGSTOP: a VM pause, a long GC pause, a stopped container) past its
claim's ttl while the prediction runs; its message is redelivered to worker B, which takes the
claim, resumes the same prediction (poll mode) or adopts it by reconciliation (sync mode: the
create A holds open has not answered yet), writes the outputs and ends the item. When A resumes,
it must stop before writing anything: no file written again, no second end of the item, no
second success counted."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

import producer
from shared.keys import Keys
from shared.metrics.batched import FLUSH_INTERVAL
from shared.metrics.recorder import read_counters
from tests.support.e2e import MODEL, submit
from tests.support.wait import wait_until
from workers.attempts import AttemptRef


def _file_ids(paths: list[Path]) -> list[tuple[int, int]]:
    """(inode, mtime) of each file: a write (atomic replace) changes both."""
    return [(p.stat().st_ino, p.stat().st_mtime_ns) for p in paths]


def _succeeded_counted(redis_client, settings) -> float:
    rows = read_counters(redis_client, Keys(settings.key_prefix)).get("predictions", [])
    return sum(value for labels, value in rows if labels.get("outcome") == "succeeded")


@pytest.mark.e2e
@pytest.mark.slow
@pytest.mark.parametrize("mode", ["poll", "sync"])
def test_a_run_whose_claim_was_lost_while_it_waited_writes_no_outputs_and_ends_nothing(
    mode, settings, redis_client, sim_factory, worker_factory
):
    sim = sim_factory(latency_scale=1.0, image_scale=0.01, latency_overrides={MODEL: 12.0})
    settings = settings.with_(lease_seconds=2.0, visibility_timeout=6, wait_mode=mode)
    batch = f"b-stale-{mode}"
    first = worker_factory(settings, count=1, sim=sim, concurrency=1)
    ledger, _ = submit(settings, redis_client, batch, ["a heron in the reeds"])
    wait_until(lambda: sim.ledger(detail=False)["creations"] == 1, 30, "A's creation", explain=first.logs)
    a = first.workers[0]
    a.kill(signal.SIGSTOP)
    try:
        claim_key = AttemptRef(batch, 0, 1).claim_key(Keys(settings.key_prefix))
        wait_until(lambda: not redis_client.exists(claim_key), 15, "A's claim to expire")
        second = worker_factory(settings, count=1, sim=sim, concurrency=2)
        wait_until(
            lambda: ledger.item(batch, 0).status == "succeeded",
            60,
            "B to take the attempt over and end the item",
            explain=lambda: f"{ledger.item(batch, 0)}\n{second.logs()}",
        )
        wait_until(
            lambda: (Path(settings.output_dir) / batch / "manifest.json").is_file(), 10, "B's manifest"
        )
        ended = ledger.item(batch, 0)
        outputs = [Path(url) for url in ended.outputs]
        written = _file_ids([*outputs, Path(settings.output_dir) / batch / "manifest.json"])
        time.sleep(FLUSH_INTERVAL + 1)  # B's counters reach Redis
        counted = _succeeded_counted(redis_client, settings)
    finally:
        a.kill(signal.SIGCONT)
    # A's run ends (its prediction is over: the next poll, or the create's answer, tells it).
    wait_until(
        lambda: "celery.app.trace" in a.log(),  # the end of its task, whatever it was
        30,
        "A's run to end after SIGCONT",
        explain=first.logs,
    )
    time.sleep(FLUSH_INTERVAL + 1)  # anything A counted reaches Redis

    assert sim.ledger(detail=False)["creations"] == 1  # one prediction, paid once
    again = ledger.item(batch, 0)
    assert again.status == "succeeded" and again.outputs == ended.outputs
    assert again.files == ended.files and len(again.attempts) == 1, again
    assert _file_ids([*outputs, Path(settings.output_dir) / batch / "manifest.json"]) == written, (
        "the stale run wrote the outputs (or the manifest) again"
    )
    assert counted == 1 and _succeeded_counted(redis_client, settings) == 1, "success counted twice"
    assert "claim was lost" in a.log(), a.log()
    # Nor did it learn the model's duration from a wait its stall lengthened (B resumed or adopted
    # the prediction: a run that did not create it learns nothing from it).
    assert redis_client.hget(Keys(settings.key_prefix).model_latency, MODEL) is None
    # A's slot was adopted by B and given back at the end; A leaves no orphan counted.
    wait_until(lambda: producer.limits_status(settings).in_use == 0, 10, "every slot to come back")
