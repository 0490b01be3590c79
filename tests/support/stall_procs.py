"""Child-process bodies for tests/test_stalls.py: a worker's creation path (the real
PredictionCreator, WorkerContext, claim and limiter) in a process the test freezes with SIGSTOP
at a chosen step, as a VM pause, a long GC pause or a stopped container would.

Each takes plain arguments (spawn pickles them) and reports through Redis lists."""

from __future__ import annotations

import json
import os
from typing import Any

from shared.budget import Reservation
from shared.settings import Settings
from tests.support.limiter_procs import blpop_wait


def create_after_a_stall(
    env: dict[str, str], batch_id: str, model: str, input_: dict[str, Any], lists: str
) -> None:
    """Claim attempt 1 of item 0, take a slot, report `held` with this pid on `<lists>:report`,
    wait for `<lists>:go` (the test stops this process meanwhile), then create exactly as a
    worker does (creation token, the last check, the POST) and report what happened."""
    from workers.context import WorkerContext
    from workers.creator import PredictionCreator
    from workers.messages import Job

    ctx = WorkerContext.build(Settings.load(environ=env, dotenv_path=None))
    job = Job(batch_id, 0, 1, model)
    creator = PredictionCreator(ctx)
    claim = ctx.claims.try_claim(job.ref.claim_key(ctx.keys))
    assert claim is not None
    lease = creator.acquire_slot(job, model)
    ctx.redis.rpush(f"{lists}:report", json.dumps({"held": lease.holder_id, "pid": os.getpid()}))
    blpop_wait(ctx.redis, f"{lists}:go", 120)
    try:
        reservation = Reservation(job.ref.marker, batch_id, 0)  # no budget in these tests
        outcome = {"created": creator.create(job.ref, claim, model, input_, lease, reservation).id}
    except Exception as exc:  # noqa: BLE001 - reported to the test
        outcome = {"error": type(exc).__name__, "message": str(exc)}
    ctx.redis.rpush(f"{lists}:report", json.dumps(outcome))
    ctx.close()


def hold_a_claim(redis_url: str, key: str, ttl: float, lists: str) -> None:
    """Take claim `key` with a ClaimKeeper (renewed every ttl/3), report `claimed`, wait for
    `<lists>:go` (the test stops this process past the claim's ttl meanwhile), give the keeper
    a renewal, then report whether the claim is lost and still ours."""
    import time

    import redis

    from workers.claims import ClaimKeeper

    client = redis.Redis.from_url(redis_url, decode_responses=True)
    keeper = ClaimKeeper(client, ttl=ttl)
    claim = keeper.try_claim(key)
    assert claim is not None
    client.rpush(f"{lists}:report", json.dumps({"claimed": claim.token, "pid": os.getpid()}))
    blpop_wait(client, f"{lists}:go", 120)
    time.sleep(ttl)  # a renewal or two
    client.rpush(f"{lists}:report", json.dumps({"lost": claim.lost, "ours": claim.still_ours()}))


def post_after_the_last_check(
    env: dict[str, str], batch_id: str, model: str, input_: dict[str, Any], lists: str
) -> None:
    """Claim, slot, intent, creation token and the last check of attempt 1 of item 0 (as the
    creator does), report `checked`, wait for `<lists>:go` (the test stops this process
    meanwhile), then send the POST with the send-by time the last check gave; report."""
    from workers.context import WorkerContext
    from workers.creator import PredictionCreator
    from workers.messages import Job

    ctx = WorkerContext.build(Settings.load(environ=env, dotenv_path=None))
    job = Job(batch_id, 0, 1, model)
    creator = PredictionCreator(ctx)
    claim = ctx.claims.try_claim(job.ref.claim_key(ctx.keys))
    assert claim is not None
    lease = creator.acquire_slot(job, model)
    ctx.creations.write_intent(job.ref, model)
    creator._take_create_token(job.ref, lease, Reservation(job.ref.marker, batch_id, 0), timeout=10)
    send_by, _ = creator._last_check(job.ref, claim, lease)
    ctx.redis.rpush(f"{lists}:report", json.dumps({"checked": True, "pid": os.getpid()}))
    blpop_wait(ctx.redis, f"{lists}:go", 120)
    try:
        outcome = {"created": ctx.calls.create(model, input_, send_by=send_by).id}
    except Exception as exc:  # noqa: BLE001 - reported to the test
        outcome = {"error": type(exc).__name__, "message": str(exc)}
    ctx.redis.rpush(f"{lists}:report", json.dumps(outcome))
    lease.release()
    ctx.close()
