"""The spool (downloaded outputs kept on a host until the store takes them, workers.spool) is
pruned by a real worker's sweeper thread: an old file no attempt awaits is removed, a fresh one
and an old one whose item is still unfinished (its write may be retried while its output URL has
expired) are kept."""

from __future__ import annotations

import os
import time

import pytest

from producer import api
from shared.keys import Keys
from tests.support.wait import wait_until
from workers.attempts import AttemptRef

pytestmark = pytest.mark.e2e

FLUX_DEV = "black-forest-labs/flux-dev"
TWO_DAYS = 2 * 24 * 3600


def test_a_worker_prunes_old_spool_files_that_no_attempt_awaits(
    settings, sim_factory, worker_factory, redis_client, tmp_path
):
    sim = sim_factory(latency_scale=1.0, latency_overrides={FLUX_DEV: 120.0}, image_scale=0.01)
    settings = settings.with_(replicate_base_url=sim.url)
    # An item that stays unfinished while the test runs (its prediction takes two minutes).
    batch = api.submit(["a heron waiting"], settings=settings, model=FLUX_DEV)
    worker_tmp = tmp_path / "worker-tmp"
    spool = worker_tmp / f"replicate-fleet-spool-{os.getuid()}"
    spool.mkdir(parents=True, mode=0o700)
    old = time.time() - TWO_DAYS
    orphan, fresh, awaited = spool / "orphanpred0001-0", spool / "freshpred0001-0", spool / "awaitedpred01-0"
    other = spool / "otherattempt1-0"  # of an attempt the item is not on
    for path in (orphan, fresh, awaited, other):
        path.write_bytes(b"\x89PNG\r\n\x1a\n downloaded output")
    os.utime(orphan, (old, old))
    os.utime(awaited, (old, old))
    os.utime(other, (old, old))
    # The awaited file's prediction belongs to the unfinished item (what record_prediction writes).
    owner = Keys(settings.key_prefix).prediction_owner
    redis_client.set(owner("awaitedpred01"), AttemptRef(batch.id, 0, 1).marker)
    redis_client.set(owner("otherattempt1"), AttemptRef(batch.id, 0, 7).marker)

    fleet = worker_factory(settings, count=1, sim=sim, TMPDIR=str(worker_tmp))
    wait_until(
        lambda: not orphan.exists() and not other.exists(),
        60,
        "the old unawaited files removed",
        interval=0.5,
    )
    assert fresh.exists(), "a file younger than a day is kept"
    assert awaited.exists(), "the bytes of an unfinished item are kept, however old"
    unfinished = batch.status(with_slots=False).counts.get("succeeded", 0) == 0
    assert unfinished, "the item stayed unfinished throughout (its file had to be kept)"
    assert "spool: removed 2 downloaded output(s)" in fleet.logs()
