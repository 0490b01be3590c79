"""Spending limits on real processes: the real Redis, real celery workers, the stand-in, and the
producer CLI as a user runs it."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest

import producer
import producer.api
from shared.keys import Keys
from shared.limiter import Limiter
from tests.support.sim import wait_quiet
from tests.support.wait import wait_until
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
    assert "batch limit (--max-cost): 0.50 USD; estimate $1.00: does NOT fit" in run.stderr  # the plan
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


def test_fallbacks_and_failed_predictions_spend_from_the_same_limit(
    settings, redis_client, sim_factory, worker_factory
):
    """flux-dev fails every prediction (billed: it counts), each item falls back to qwen-image:
    4 items under 0.15 USD make exactly 6 predictions at 0.025, whatever the order."""
    sim = sim_factory(always_fail_models=[MODEL])
    worker_factory(settings, count=2, sim=sim)
    settings = settings.with_(replicate_base_url=sim.url)
    data = {"model": MODEL, "max_cost": 0.15, "items": [f"a harbour at dawn, {n}" for n in range(4)]}
    batch = producer.submit(data, settings=settings)
    snap = batch.wait(timeout=90, poll_interval=0.2)
    assert snap.stalled_on_budget, snap
    assert snap.succeeded + snap.held == 4 and snap.succeeded >= 2, snap.counts
    assert set(batch.held_items().values()) == {"batch limit 0.15 USD reached"}
    assert wait_quiet(sim)["creations"] == 6
    spend = batch.spend()
    assert (spend.spent, spend.reserved, spend.held) == (150_000, 0, snap.held)


def test_dry_run_shows_the_estimate_against_the_limits(settings, redis_client, sim, tmp_path):
    prompts = tmp_path / "prompts.json"
    prompts.write_text(json.dumps([f"a kite {n}" for n in range(40)]))
    run = cli(settings, sim, "submit", str(prompts), "--model", MODEL, "--max-cost", "0.50", "--dry-run")
    assert run.returncode == 0, run.stderr
    assert "batch limit (--max-cost): 0.50 USD; estimate $1.00: does NOT fit" in run.stdout, run.stdout
    run = cli(
        settings, sim, "submit", str(prompts), "--model", MODEL, "--max-cost", "5", "--dry-run", "--json"
    )
    plan = json.loads(run.stdout.strip().splitlines()[-1])
    assert plan["batch_limit_usd"] == 5.0 and plan["estimated_cost_usd"] == 1.0
    # a model without a price cannot be kept under a limit: refused, nothing recorded
    run = cli(settings, sim, "submit", str(prompts), "--model", "someone/unpriced-model", "--max-cost", "5")
    assert run.returncode == 2
    bad = cli(settings, sim, "submit", str(prompts), "--model", MODEL, "--max-cost", "-1", "--dry-run")
    assert bad.returncode == 2 and "--max-cost" in bad.stderr


@pytest.mark.slow
def test_daily_budget_is_never_passed_under_a_429_storm_and_sigkills(
    settings, redis_client, sim_factory, worker_factory
):
    """Three workers, a daily budget of 0.30 USD (12 images at 0.025), 30 items, a 429 storm,
    creates that time out after creating (reconciled), and two workers SIGKILLed while they hold
    predictions: the stand-in's ledger shows exactly 12 predictions, never one more, and the rest
    are held with the reason."""
    settings = settings.with_(
        visibility_timeout=15, lease_seconds=3.0, concurrency_limit=6, daily_budget=Decimal("0.30")
    )
    # Predictions of several seconds: the 12 the budget allows must still be running when the
    # second victim is looked for (at 0.7 x the model's latency they could all have ended).
    sim = sim_factory(
        storm_next=25, storm_retry_after=1, ghost_create_next=2, latency_scale=2.5, image_scale=0.01
    )
    fleet = worker_factory(settings, count=3, sim=sim, concurrency=4, FLEET_HTTP_TIMEOUT="2")
    batch = producer.submit(
        [f"a paper boat on a canal, {n}" for n in range(30)],
        model=MODEL,
        settings=settings.with_(replicate_base_url=sim.url),
    )
    limiter = Limiter.from_settings(redis_client, Keys(settings.key_prefix), settings)
    for _ in range(2):
        pids = {w.pid: w for w in fleet.workers if w.alive()}

        def victim(pids=pids):
            holders = [h for h in limiter.status().holders if h.pid in pids and h.prediction_id]
            return pids[holders[0].pid] if holders else None

        worker = wait_until(victim, 60, "a worker holding a running prediction", explain=fleet.logs)
        worker.kill()
        fleet.start_one()
    limiter.close()

    def settled():
        snap = batch.status(with_slots=False)
        return snap.stalled_on_budget and batch.spend().reserved == 0

    wait_until(settled, 150, "every item to end or be held, nothing reserved", explain=fleet.logs)
    ledger = wait_quiet(sim)
    assert ledger["rejected_429"]["storm"] == 25 and ledger["duplicate_inputs"] == 0
    assert ledger["creations"] * 25_000 <= 300_000, ledger["creations"]
    assert ledger["creations"] == 12
    snap = batch.status(with_slots=False)
    assert snap.succeeded == 12 and snap.held == 18, snap.counts
    assert set(batch.held_items().values()) == {"daily budget 0.30 USD reached"}
    status = producer.api.budget_status(settings, [batch.id])
    assert (status.spent_today, status.reserved_today, status.left_today) == (300_000, 0, 0)


def test_the_sweep_wakes_held_items_when_room_appears(settings, redis_client, sim, worker_factory):
    """Room that appears without `producer budget set` (here: the daily budget changed in Redis
    directly, as the UTC day turning does) is found by the recovery sweep, which sends the held
    items again."""
    from shared.budget import Budget

    settings = settings.with_(lease_seconds=2.0, daily_budget=Decimal("0.05"))
    worker_factory(settings, count=1, sim=sim)
    batch = producer.submit(
        [f"a lamp post {n}" for n in range(4)],
        model=MODEL,
        settings=settings.with_(replicate_base_url=sim.url),
    )
    snap = batch.wait(timeout=60, poll_interval=0.2)
    assert snap.stalled_on_budget and snap.held == 2, snap.counts
    Budget(redis_client, Keys(settings.key_prefix)).set_daily(100_000)
    snap = wait_until(
        lambda: (s := batch.status(with_slots=False)).finished and s, 60, "the held items to finish"
    )
    assert snap.succeeded == 4, snap.counts
    assert wait_quiet(sim)["creations"] == 4


def test_the_daily_budget_is_set_and_cleared_at_run_time(settings, redis_client, sim):
    shown = json.loads(cli(settings, sim, "budget", "--json").stdout)
    assert (shown["daily_limit_usd"], shown["daily_limit_from"]) == (None, "none")
    run = cli(settings, sim, "budget", "set", "--daily", "12.50")
    assert run.returncode == 0 and "daily budget 12.50 USD (set for the fleet)" in run.stdout, run.stdout
    shown = json.loads(cli(settings, sim, "budget", "--json").stdout)
    assert (shown["daily_limit_usd"], shown["left_today_usd"]) == (12.5, 12.5)
    assert cli(settings, sim, "budget", "clear", "--daily").returncode == 0
    assert json.loads(cli(settings, sim, "budget", "--json").stdout)["daily_limit_usd"] is None
    assert cli(settings, sim, "budget", "set", "--daily", "-3").returncode == 2
    assert cli(settings, sim, "budget", "set", "--batch", "b-nope", "1").returncode == 2
    assert cli(settings, sim, "budget", "set").returncode == 2
