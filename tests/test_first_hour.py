"""What a new user meets in the first hour (issue 18): `producer info`, the words of `status`,
`cancel` and `limits` against what the account saw, and the quiet surprises of `submit`. Real
workers, real Redis, the stand-in, the CLI as a subprocess."""

from __future__ import annotations

import json

import pytest

from producer import api
from tests.support.wait import wait_until
from tests.test_producer_e2e import cli

pytestmark = pytest.mark.e2e

FLUX_DEV = "black-forest-labs/flux-dev"


def slow_sim(sim_factory, seconds: float = 6.0):
    """Predictions that stay in flight long enough to be looked at."""
    return sim_factory(latency_scale=1.0, latency_overrides={FLUX_DEV: seconds}, image_scale=0.01)


def test_producer_info_one_view_of_the_fleet(settings, sim_factory, worker_factory, tmp_path):
    sim = slow_sim(sim_factory)
    settings = settings.with_(concurrency_limit=2, replicate_base_url=sim.url)
    fleet = worker_factory(settings, count=2, sim=sim, concurrency=3)
    prompts = tmp_path / "prompts.json"
    prompts.write_text(json.dumps([f"a heron in reeds, take {i}" for i in range(6)]))
    batch = api.submit(prompts, settings=settings, model=FLUX_DEV)

    def full():
        info = api.fleet_info(settings)
        return info if info.limits.in_use == 2 and info.limits.waiters >= 1 else None

    info = wait_until(full, 60, "two slots in use and someone waiting", interval=0.3)
    pids = sorted(w.pid for w in fleet.workers)
    assert sorted(w.pid for w in info.workers) == pids
    assert all(w.threads == 3 for w in info.workers) and sum(w.busy for w in info.workers) >= 3
    assert [snap.batch_id for _, snap in info.batches] == [batch.id]
    assert info.at_replicate == {batch.id: 2}

    shown = cli(settings, sim, "info")
    assert shown.returncode == 0, shown.stderr
    text = shown.stdout
    assert "workers 2 alive" in text and all(str(pid) in text for pid in pids)
    assert "slots   2/2 in use" in text and "waiting for one" in text
    assert batch.id in text and "running" in text
    assert "  normal " in text and "  high " in text and "  low " in text
    assert max(len(line) for line in text.splitlines()) <= 80
    data = json.loads(cli(settings, sim, "info", "--json").stdout)
    assert {w["pid"] for w in data["workers"]} == set(pids)
    assert data["limits"]["in_use"] == 2 and data["batches"][0]["batch_id"] == batch.id
    assert set(data["queues"]["ready"]) == {"high", "normal", "low"}
    batch.cancel()
