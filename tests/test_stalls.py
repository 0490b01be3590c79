"""A worker process that stalls (SIGSTOP: a VM pause, a long GC pause, a stopped container) past
its slot's lease or its claim never creates beside the run that took over. The real creation
path (tests/support/stall_procs.py) in a child process, the real Redis, the stand-in over HTTP."""

from __future__ import annotations

import json
import os
import signal
import time

import pytest

from shared.keys import Keys
from shared.limiter import HolderInfo, Limiter
from shared.models import load_registry
from shared.routing import build_input
from tests.support import stall_procs
from tests.support.attempt_path import MODEL, mark_running, record_batch
from tests.support.limiter_procs import blpop_wait
from tests.support.sim import wait_quiet
from tests.support.wait import wait_until
from workers.creator import POST_SEND_SLACK
from workers.replicate_calls import ReplicateCalls


def report(redis_client, lists: str, timeout: float = 60) -> dict:
    item = blpop_wait(redis_client, f"{lists}:report", timeout)
    assert item is not None, f"no report on {lists} within {timeout} s"
    return json.loads(item)


@pytest.mark.e2e
def test_a_holder_stalled_past_its_lease_never_creates_beside_the_next_holder(
    settings, redis_client, sim_factory, children
):
    """Concurrency 1. A holds the slot and is stopped past its lease (its claim, 3 s, still
    holds); B is granted the slot and creates; A resumes and goes on to create: the check
    before its POST must find in Redis that its lease is gone and refuse."""
    sim = sim_factory(latency_scale=3.0)  # B's prediction stays in flight ~15 s
    s = settings.with_(concurrency_limit=1, lease_seconds=1.2, replicate_base_url=sim.url)
    ledger, [request] = record_batch(s, redis_client, "b-stall", ["a lark at dawn"])
    mark_running(ledger, "b-stall", 0)
    input_, _ = build_input(request, MODEL, load_registry())
    lists = f"{s.key_prefix}:stall"
    env = {**s.as_env(), "REPLICATE_BASE_URL": sim.url}
    child = children(stall_procs.create_after_a_stall, env, "b-stall", MODEL, input_, lists)
    assert "held" in report(redis_client, lists)
    os.kill(child.pid, signal.SIGSTOP)
    limiter = Limiter.from_settings(redis_client, Keys(s.key_prefix), s)
    try:
        lease_b = limiter.acquire(HolderInfo(task_id="B"), timeout=20)  # once A's lease ran out
        limiter.take_create_token(timeout=10, holder=lease_b, attempt="b-other:0:1")
        lease_b.set_prediction(ReplicateCalls(s).create(MODEL, input_).id)
        redis_client.rpush(f"{lists}:go", "1")
        os.kill(child.pid, signal.SIGCONT)
        outcome = report(redis_client, lists)
        assert "created" not in outcome, outcome
        assert outcome["error"] == "RequeueError" and "lease" in outcome["message"], outcome
        quiet = wait_quiet(sim)
        assert quiet["creations"] == 1 and quiet["peak_in_flight"] == 1, quiet
        record = redis_client.hgetall(Keys(s.key_prefix).attempt("b-stall", 0, 1))
        assert "intent_at" not in record and "posting_at" not in record, record  # nothing was sent
        lease_b.release()
    finally:
        limiter.close()


def test_a_claim_that_expired_while_its_process_was_stopped_stays_lost(
    redis_client, redis_url, key_prefix, children
):
    """The claim's run is stopped past the claim's ttl; meanwhile another run claimed the attempt
    and finished (released it). When the first resumes, its keeper must not take the claim back:
    an expired claim is lost for good (only a claim Redis itself lost is re-asserted)."""
    key, lists = f"{key_prefix}:claim:b:0:1", f"{key_prefix}:claims"
    child = children(stall_procs.hold_a_claim, redis_url, key, 1.0, lists)
    first = report(redis_client, lists)
    os.kill(child.pid, signal.SIGSTOP)
    wait_until(lambda: not redis_client.exists(key), 10, "the stopped run's claim to expire")
    assert redis_client.set(key, "the next run", nx=True, px=60_000)  # the attempt runs again...
    redis_client.delete(key)  # ... and ends, releasing its claim
    redis_client.rpush(f"{lists}:go", "1")
    os.kill(child.pid, signal.SIGCONT)
    assert report(redis_client, lists) == {"lost": True, "ours": False}
    assert redis_client.get(key) is None, "the stale run re-created the claim"
    assert first["claimed"]


@pytest.mark.e2e
def test_a_post_stalled_past_the_settling_allowance_after_the_last_check_is_never_sent(
    settings, redis_client, sim_factory, children
):
    """The last check stamped `posting_at`; the process then stops longer than the settling
    window allows between that stamp and the send. Another run may already have concluded from
    `posting_at` that nothing was created and created itself: the late POST must not leave."""
    sim = sim_factory()
    s = settings.with_(replicate_base_url=sim.url)
    ledger, [request] = record_batch(s, redis_client, "b-late", ["a wren on a gate"])
    mark_running(ledger, "b-late", 0)
    input_, _ = build_input(request, MODEL, load_registry())
    lists = f"{s.key_prefix}:late"
    env = {**s.as_env(), "REPLICATE_BASE_URL": sim.url}
    child = children(stall_procs.post_after_the_last_check, env, "b-late", MODEL, input_, lists)
    assert report(redis_client, lists)["checked"]
    os.kill(child.pid, signal.SIGSTOP)
    time.sleep(POST_SEND_SLACK + 1.5)  # the stall itself: longer than the allowance
    redis_client.rpush(f"{lists}:go", "1")
    os.kill(child.pid, signal.SIGCONT)
    outcome = report(redis_client, lists)
    assert outcome.get("error") == "UnsentPostError", outcome
    assert wait_quiet(sim)["creations"] == 0
    record = redis_client.hgetall(Keys(s.key_prefix).attempt("b-late", 0, 1))
    assert "posting_at" in record  # the next run reconciles from it before any creation
