"""One host's clock moves nobody's work (issue 13, item 10): three workers, one of them with its
wall clock 60 s ahead or behind (libfaketime; its monotonic clock true, as on a real host), a batch whose predictions are aborted at random so that
many attempts are followed by a retry after a backoff. Every follow-up starts after its backoff
(a sender behind once ran them at once) and well before a minute (a sender ahead once delayed
them by its lead), both measured on the ledger's Redis-time records; every image arrives and no
attempt creates twice. The makespans are compared in bench/ (python -m bench.run clock)."""

from __future__ import annotations

import pytest

from bench.hosts import faketime_env
from bench.processes import REPO_ROOT
from shared.keys import Keys
from shared.scheduler import Scheduler
from tests.support.e2e import submit, wait_finished
from workers.stage import WaitBudget

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.needs("faketime")]

N = 40


def gaps(ledger, batch_id: str) -> list[tuple[int, float]]:
    """(retry streak before it, seconds from an attempt's end to the next attempt's start) for
    every retried attempt, from the ledger's attempt records (Redis TIME at both ends)."""
    out = []
    for item in ledger.items(batch_id):
        attempts = sorted(item.attempts, key=lambda a: a.attempt)
        streak = 0
        for before, after in zip(attempts, attempts[1:]):
            if before.status != "retry":
                streak = 0
                continue
            out.append((streak, after.started_at - (before.started_at + before.seconds)))
            streak += 1
    return out


@pytest.mark.parametrize("offset", [60.0, -60.0])
def test_a_skewed_host_neither_delays_nor_hurries_anyones_follow_ups(
    settings, redis_client, sim_factory, worker_factory, offset
):
    settings = settings.with_(concurrency_limit=8, max_transient_retries=20, visibility_timeout=30)
    sim = sim_factory(latency_scale=0.05, image_scale=0.002, abort_rate=0.35, seed=13)
    fleet = worker_factory(settings, count=2, sim=sim, concurrency=6)
    worker_factory(settings, count=1, sim=sim, concurrency=6, **faketime_env(offset, str(REPO_ROOT)))
    ledger, _ = submit(settings, redis_client, "b-skew", [f"a gull on a post, {i}" for i in range(N)])
    wait_finished(ledger, "b-skew", 180, fleet)

    assert ledger.batch("b-skew").counts["succeeded"] == N
    measured = gaps(ledger, "b-skew")
    assert len(measured) >= 5, "the stand-in aborted too few predictions to test anything"
    budget = WaitBudget.from_settings(settings)
    for streak, gap in measured:
        base = min(budget.countdown_cap, 0.5 * 2**streak)
        assert gap >= base / 2 - 0.01, f"a retry ran {gap:.3f} s after its attempt, before its backoff"
        assert gap <= base + 10.0, f"a retry waited {gap:.1f} s after its attempt (backoff {base:g} s)"
    attempts = sum(len(item.attempts) for item in ledger.items("b-skew"))
    assert sim.ledger()["creations"] == attempts  # one prediction per attempt: nothing paid twice
    depths = Scheduler(redis_client, Keys(settings.key_prefix)).depths(settings.queue)
    assert depths.max_late < 2.0  # a delayed send joined its line within 2 s of its due time (Redis time)
