"""Spending limits on real processes: the real Redis, real celery workers, the stand-in, and the
producer CLI as a user runs it."""

from __future__ import annotations

import json

import pytest

from tests.support.sim import wait_quiet
from tests.test_producer_e2e import cli

pytestmark = pytest.mark.e2e

MODEL = "black-forest-labs/flux-dev"  # $0.025 per image in the registry


def test_batch_limit_holds_the_rest_and_raising_it_finishes_them(
    settings, redis_client, sim, worker_factory, tmp_path
):
    """40 images at 0.025 USD under --max-cost 0.50: exactly 20 predictions, 20 items held with
    the reason, exit 1; raising the limit sends the 20 held items again and they complete."""
    worker_factory(settings, count=2, sim=sim)
    prompts = tmp_path / "prompts.json"
    prompts.write_text(json.dumps([f"a lighthouse number {n}" for n in range(40)]))
    run = cli(
        settings, sim, "submit", str(prompts), "--model", MODEL, "--max-cost", "0.50", "--wait", "--json"
    )
    assert run.returncode == 1, run.stderr
    summary = json.loads(run.stdout.strip().splitlines()[-1])
    batch_id = summary["batch"]
    assert summary["held"] == 20 and summary["counts"]["succeeded"] == 20, summary
    assert "20 of 40 items HELD by a spending limit (20 x batch limit 0.50 USD reached)" in run.stderr
    assert wait_quiet(sim)["creations"] == 20

    status = cli(settings, sim, "status", batch_id)
    assert "held     20 item(s): batch limit 0.50 USD reached" in status.stdout, status.stdout
    assert "0.50 spent, 0.00 reserved of 0.50 USD (0.00 left)" in status.stdout
    listed = cli(settings, sim, "list")
    row = next(line for line in listed.stdout.splitlines() if line.startswith(batch_id))
    assert " held " in row and "0.50/0.50" in row, listed.stdout
    shown = json.loads(cli(settings, sim, "budget", "--batch", batch_id, "--json").stdout)
    assert shown["batches"][0] == {
        "batch_id": batch_id,
        "limit_usd": 0.5,
        "spent_usd": 0.5,
        "reserved_usd": 0.0,
        "left_usd": 0.0,
        "held": 20,
    }

    raised = cli(settings, sim, "budget", "set", "--batch", batch_id, "1.00")
    assert raised.returncode == 0 and "20 held item(s) sent again" in raised.stdout, (
        raised.stdout + raised.stderr
    )
    waited = cli(settings, sim, "wait", batch_id, "--json")
    assert waited.returncode == 0, waited.stdout + waited.stderr
    assert json.loads(waited.stdout.strip().splitlines()[-1])["counts"]["succeeded"] == 40
    ledger = wait_quiet(sim)
    assert ledger["creations"] == 40 and ledger["duplicate_inputs"] == 0
    final = json.loads(cli(settings, sim, "budget", "--batch", batch_id, "--json").stdout)["batches"][0]
    assert (final["spent_usd"], final["reserved_usd"], final["held"]) == (1.0, 0.0, 0)


def test_cancel_ends_held_items(settings, redis_client, sim, worker_factory, tmp_path):
    worker_factory(settings, count=1, sim=sim)
    prompts = tmp_path / "prompts.json"
    prompts.write_text(
        json.dumps({"max_cost": "0.05", "model": MODEL, "items": [f"fox {n}" for n in range(5)]})
    )
    run = cli(settings, sim, "submit", str(prompts), "--wait", "--json")
    assert run.returncode == 1, run.stderr
    batch_id = json.loads(run.stdout.strip().splitlines()[-1])["batch"]
    assert wait_quiet(sim)["creations"] == 2
    canceled = cli(settings, sim, "cancel", batch_id)
    assert canceled.returncode == 0, canceled.stderr
    status = json.loads(cli(settings, sim, "status", batch_id, "--json").stdout)
    assert (
        status["counts"]["canceled"] == 3 and status["state"] == "finished" or status["state"] == "canceled"
    )
    assert (
        json.loads(cli(settings, sim, "budget", "--batch", batch_id, "--json").stdout)["batches"][0]["held"]
        == 0
    )
