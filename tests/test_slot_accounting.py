"""A running prediction's slot is never freed while the prediction may still run: a run that
stops before its prediction ended abandons the slot (an orphan, still counted) instead of
releasing it; one whose prediction ended gives it back before anything else. Real worker
processes (the attempt in the test process where a hand is needed), the real Redis, the stand-in
over HTTP."""

from __future__ import annotations

import pytest

from shared.budget import Budget
from shared.keys import Keys
from shared.limiter import Limiter
from tests.support.attempt_path import MODEL, record_batch, worker_context
from tests.support.e2e import submit, wait_finished
from tests.support.sim import wait_quiet
from tests.support.wait import wait_until
from workers.attempts import AttemptRef
from workers.runner import AttemptRunner, Job


@pytest.mark.e2e
def test_a_run_that_stops_while_its_prediction_runs_keeps_the_slot_counted(
    settings, redis_client, sim_factory, worker_factory
):
    """Concurrency 1. Item A's prediction runs ~15 s; the stand-in then refuses the fleet's token
    (401 on the poll), so A's run ends as a local failure while its prediction still runs. A
    second batch submitted then must not create until that prediction has ended: the stand-in
    never sees two in flight."""
    sim = sim_factory(latency_scale=1.0, latency_overrides={"black-forest-labs/flux-dev": 15.0})
    s = settings.with_(concurrency_limit=1)
    ledger, _ = submit(s, redis_client, "b-run", ["a crane in the mist"])
    # Polling: the poll is what the stand-in refuses (a sync create would hold the answer open).
    fleet = worker_factory(s, count=1, sim=sim, FLEET_LEASE_SECONDS="3", FLEET_WAIT_MODE="poll")
    wait_until(lambda: sim.ledger(detail=False)["in_flight"] == 1, 30, "A's prediction to run")
    sim.configure(token="not-the-fleets-token")
    wait_finished(ledger, "b-run", 60, fleet)
    assert ledger.item("b-run", 0).status == "failed"
    sim.configure(token=None)
    assert sim.ledger(detail=False)["in_flight"] == 1, "A's prediction ended too early for the test"
    submit(s, redis_client, "b-next", ["a heron at dusk"])
    wait_finished(ledger, "b-next", 90, fleet)
    quiet = wait_quiet(sim)
    assert ledger.item("b-next", 0).status == "succeeded"
    assert quiet["creations"] == 2 and quiet["peak_in_flight"] == 1, quiet


@pytest.mark.e2e
def test_a_create_that_cannot_leave_the_process_fails_the_item_at_once(
    settings, redis_client, sim_factory, worker_factory
):
    """Stored text the POST cannot encode (a lone surrogate, written by an older producer or by
    hand): the request never left the process, so the create is not ambiguous. The item fails
    with that local reason at once: no orphaned slot, no settling wait, nothing created."""
    sim = sim_factory()
    ledger, _ = submit(settings, redis_client, "b-surrogate", ["a moth at the window"])
    item_key = Keys(settings.key_prefix).item("b-surrogate", 0)
    stored = redis_client.hget(item_key, "request")
    assert '"a moth at the window"' in stored
    redis_client.hset(item_key, "request", stored.replace('"a moth at the window"', '"a moth \\ud83d"'))
    fleet = worker_factory(settings, count=1, sim=sim)
    wait_finished(ledger, "b-surrogate", 30, fleet)
    item = ledger.item("b-surrogate", 0)
    assert item.status == "failed" and "could not be built" in (item.error or ""), item
    assert len(item.attempts) == 1, item.attempts
    limiter = Limiter.from_settings(redis_client, Keys(settings.key_prefix), settings)
    try:
        assert limiter.status().in_use == 0  # no slot left counted for a prediction that cannot exist
    finally:
        limiter.close()
    assert wait_quiet(sim)["creations"] == 0


@pytest.mark.parametrize("mode", ["sync", "poll"])
def test_the_slot_is_back_before_anything_that_follows_the_predictions_end(mode, settings, redis_client, sim):
    """Issue 16: the slot is held exactly as long as the prediction runs. The claim check and the
    model's duration learnt (Redis round trips) come after the slot is given back, whether the
    create answers with the end (sync) or a poll finds it (poll); the spend is settled in the
    release's own round trip (issue 16.4: drop_settle.lua), so no settle call of its own."""
    batch = f"b-back-{mode}"
    ledger, _ = record_batch(settings, redis_client, batch, ["a wren on a fence"])
    claim_key = AttemptRef(batch, 0, 1).claim_key(Keys(settings.key_prefix))
    limiter = Limiter.from_settings(redis_client, Keys(settings.key_prefix), settings)
    in_use: dict[str, int] = {}  # slots counted when each step began

    def noting(step, call):
        def noted(*args, **kwargs):
            if step != "claim check" or args[:2] == ("GET", claim_key):
                in_use.setdefault(step, limiter.status().in_use)
            return call(*args, **kwargs)

        return noted

    try:
        with worker_context(settings, sim, wait_mode=mode) as ctx:
            ctx.redis.execute_command = noting("claim check", ctx.redis.execute_command)
            ctx.budget.settle = noting("spend settle", ctx.budget.settle)
            ctx.latencies.record = noting("duration learnt", ctx.latencies.record)
            assert AttemptRunner(ctx).run(Job(batch, 0, 1, MODEL)) is None
    finally:
        limiter.close()
    assert ledger.item(batch, 0).status == "succeeded"
    assert in_use == {"claim check": 0, "duration learnt": 0}, in_use
    assert Budget(redis_client, Keys(settings.key_prefix)).reservation(f"{batch}:0:1") is None  # settled
