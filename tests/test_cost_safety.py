"""Never paying twice when the first creation's fate is unknown: a POST that may still be in
flight, an attempt that cannot be settled, a claim Redis forgot, an answer the client cannot read.
Real Redis, the stand-in over HTTP, real worker processes where the behaviour is theirs."""

from __future__ import annotations

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from shared.errors import CanceledError, RedisUnavailableError, SupersededError, TransientError
from shared.keys import Keys
from shared.models import load_registry
from shared.routing import build_input
from tests.support.attempt_path import mark_running, record_batch, worker_context
from tests.support.e2e import submit, wait_finished
from tests.support.sim import wait_quiet
from tests.support.wait import wait_until
from workers import claims
from workers.attempts import AttemptRef, CreationRecords
from workers.claims import Claim, ClaimKeeper, seen_key
from workers.outage import is_redis_unavailable
from workers.reconcile import Reconciler
from workers.replicate_calls import ReplicateCalls, is_ambiguous, post_in_flight_limit
from workers.runner import AttemptRunner, Job, NextTask

MODEL = "black-forest-labs/flux-dev"


@pytest.mark.e2e
def test_a_post_still_in_flight_is_waited_out_and_adopted_not_paid_twice(
    settings, redis_client, sim_factory, worker_factory
):
    """A worker died mid-POST (intent written, no answer): its POST reaches Replicate 3 s later.
    The next execution must not conclude "nothing was created" before that POST could land."""
    sim = sim_factory(latency_scale=0.02, image_scale=0.01)
    settings = settings.with_(http_timeout=1.0)  # a POST is over within 1 + 1 + 1 + 5 s
    ledger, [request] = submit(settings, redis_client, "b-inflight", ["a heron in the reeds"])
    # The dead worker's last steps: intent, its claim, the last check before the POST (which
    # stamps posting_at); its claim then expires with it.
    keys = Keys(settings.key_prefix)
    store = CreationRecords(redis_client, keys)
    store.write_intent(AttemptRef("b-inflight", 0, 1), MODEL)
    redis_client.set(keys.claim("b-inflight", 0, 1), "dead-worker", px=1000)
    mark_running(ledger, "b-inflight", 0)
    assert store.begin_post(AttemptRef("b-inflight", 0, 1), "dead-worker")[0] == "go"
    sent_input, _ = build_input(request, MODEL, load_registry())

    def the_late_post() -> None:
        time.sleep(3.0)
        calls = ReplicateCalls(settings.with_(replicate_base_url=sim.url))
        calls.create(MODEL, sent_input)

    late = threading.Thread(target=the_late_post)
    late.start()
    fleet = worker_factory(settings, count=1, sim=sim, FLEET_HTTP_TIMEOUT="1")
    wait_finished(ledger, "b-inflight", 60, fleet)
    late.join()

    item = ledger.item("b-inflight", 0)
    assert item.status == "succeeded", item
    sim_ledger = sim.ledger(detail=False)
    assert sim_ledger["creations"] == 1 and sim_ledger["duplicate_inputs"] == 0
    record = redis_client.hgetall(Keys(settings.key_prefix).attempt("b-inflight", 0, 1))
    assert record["origin"] == "adopted"


@pytest.mark.e2e
def test_an_attempt_that_cannot_be_settled_fails_the_item_instead_of_paying_again(
    settings, redis_client, sim_factory, worker_factory
):
    """Every API call answers 5xx: the create is ambiguous and the reconciliation cannot list.
    After the bounded tries the item fails with a reason; no second attempt creates anything."""
    sim = sim_factory(latency_scale=0.02, image_scale=0.01, error_rate=1.0)
    ledger, _ = submit(settings, redis_client, "b-unsettled", ["a gull over a pier"])
    fleet = worker_factory(settings, count=1, sim=sim, FLEET_MAX_TRANSIENT_RETRIES="2")
    wait_finished(ledger, "b-unsettled", 60, fleet)
    item = ledger.item("b-unsettled", 0)
    assert item.status == "failed" and "could not tell whether a prediction was created" in item.error
    assert [a.attempt for a in item.attempts] == [1]  # no new attempt was started, nothing created
    assert sim.ledger(detail=False)["creations"] == 0


def test_a_claim_redis_forgot_is_taken_back_by_its_live_owner(redis_client, key_prefix):
    keeper = ClaimKeeper(redis_client, ttl=0.6)
    key = f"{key_prefix}:claim:x"
    claim = keeper.try_claim(key)
    assert claim is not None and keeper.try_claim(key) is None
    redis_client.delete(key, seen_key(key))  # a restart from a slightly older append-only file
    wait_until(lambda: redis_client.get(key) == claim.token, 3, "the keeper to re-assert the claim")
    assert keeper.try_claim(key) is None and claim.still_ours() and not claim.lost
    redis_client.set(key, "someone else")
    wait_until(lambda: claim.lost, 3, "the keeper to notice another owner")
    assert not claim.still_ours()
    claim.release()
    assert redis_client.get(key) == "someone else"  # never releases another execution's claim


def test_a_create_answer_the_client_cannot_read_is_treated_as_maybe_created(settings):
    """replicate 1.0.7 rejects some statuses (`aborted`) while parsing: the POST went through."""

    class Replicate(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            body = json.dumps(
                {
                    "id": "p1",
                    "model": MODEL,
                    "version": "hidden",
                    "input": {},
                    "status": "aborted",
                    "output": None,
                    "error": None,
                    "created_at": "2026-11-26T00:00:00Z",
                    "urls": {},
                }
            ).encode()
            self.send_response(201)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Replicate)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        calls = ReplicateCalls(
            settings.with_(replicate_base_url=f"http://127.0.0.1:{server.server_address[1]}")
        )
        with pytest.raises(Exception) as info:
            calls.create(MODEL, {"prompt": "x"})
        assert is_ambiguous(info.value), info.value
    finally:
        server.shutdown()
        server.server_close()


# --- a create that never answers ---------------------------------------------------------------


def test_a_create_that_gets_no_answer_ends_on_its_timeout_not_never(settings):
    """replicate 1.0.7 sends a create without `wait` with timeout=None: no timeout at all. A
    server that takes the request and never answers must end the call as an ambiguous timeout
    within the configured read timeout (so `post_in_flight_limit` holds)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    held: list[socket.socket] = []

    def accept_and_stay_silent() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            held.append(conn)

    threading.Thread(target=accept_and_stay_silent, daemon=True).start()
    quick = settings.with_(
        http_timeout=0.5, replicate_base_url=f"http://127.0.0.1:{listener.getsockname()[1]}"
    )
    calls = ReplicateCalls(quick)
    outcome: dict = {}

    def create() -> None:
        began = time.monotonic()
        try:
            calls.create(MODEL, {"prompt": "a lighthouse"})
        except Exception as exc:  # noqa: BLE001 - inspected below
            outcome["error"] = exc
        outcome["seconds"] = time.monotonic() - began

    thread = threading.Thread(target=create, daemon=True)  # never hangs the suite, even unfixed
    thread.start()
    thread.join(10)
    try:
        assert not thread.is_alive(), "the create is still waiting for an answer after 10 s"
        assert isinstance(outcome.get("error"), TransientError) and is_ambiguous(outcome["error"]), outcome
        assert outcome["seconds"] < post_in_flight_limit(quick), outcome
        assert held, "the request reached the server"
    finally:
        listener.close()
        for conn in held:
            conn.close()
        calls.close()


@pytest.mark.e2e
def test_a_stalled_create_ends_on_its_timeout_and_the_item_completes_paying_once(
    settings, redis_client, sim_factory, worker_factory
):
    """The stand-in takes the create and never answers (it would hold it for 10 minutes and then
    create nothing). The worker's create times out after FLEET_HTTP_TIMEOUT, reconciles after the
    settling window, finds nothing and creates once: the item is done in seconds, not never."""
    sim = sim_factory(
        latency_scale=0.02,
        image_scale=0.01,
        stall_create_next=1,
        stall_create_seconds=600,
        stall_create_creates=False,
    )
    # settling window 1 + 1 + 1 + 5 = 8 s; poll: a create without a wait (a sync create's read
    # timeout is its wait longer: tests/test_sync_mode.py)
    settings = settings.with_(http_timeout=1.0, wait_mode="poll")
    fleet = worker_factory(settings, count=1, sim=sim, FLEET_HTTP_TIMEOUT="1")
    began = time.monotonic()
    ledger, _ = submit(settings, redis_client, "b-stall", ["a kestrel hovering"])
    wait_finished(ledger, "b-stall", 45, fleet)
    took = time.monotonic() - began

    item = ledger.item("b-stall", 0)
    assert item.status == "succeeded", item
    [attempt] = item.attempts
    assert attempt.prediction_id
    sim_ledger = sim.ledger(detail=False)
    print(
        f"\n[cost] stalled create: {sim_ledger['creations']} creations (minimum 1), duplicate inputs "
        f"{sim_ledger['duplicate_inputs']}, stalled {sim_ledger['stalled_creates']}, done in {took:.1f} s"
    )
    assert sim_ledger["stalled_creates"] == 1
    assert sim_ledger["creations"] == 1 and sim_ledger["duplicate_inputs"] == 0
    record = redis_client.hgetall(Keys(settings.key_prefix).attempt("b-stall", 0, 1))
    assert record["origin"] == "created" and record["prediction_id"] == attempt.prediction_id


# --- a 504 whose prediction is created later -------------------------------------------------------


@pytest.mark.e2e
def test_a_504_whose_prediction_appears_later_is_adopted_not_paid_twice(
    settings, redis_client, sim_factory, worker_factory
):
    """A gateway answers 504 at once and Replicate creates the prediction 4 s later. The worker's
    first reconciliation (about a second after the 504) finds nothing; it must not conclude "none
    was created" before the settling window (8 s here) has passed since the POST ended, and then
    adopts the late prediction: 1 creation, 0 duplicates. Every log event of the attempt after the
    adoption carries the prediction id as a structured field."""
    sim = sim_factory(latency_scale=0.02, image_scale=0.01, late_create_next=1, late_create_after=4.0)
    settings = settings.with_(http_timeout=1.0)
    fleet = worker_factory(settings, count=1, sim=sim, FLEET_HTTP_TIMEOUT="1", FLEET_LOG_JSON="1")
    submitted = time.monotonic()
    ledger, _ = submit(settings, redis_client, "b-late", ["a barn owl at dusk"])
    wait_finished(ledger, "b-late", 45, fleet)
    time.sleep(max(0.0, submitted + 4.0 + 1.0 - time.monotonic()))  # the late creation has landed

    item = ledger.item("b-late", 0)
    assert item.status == "succeeded", item
    sim_ledger = sim.ledger(detail=False)
    print(
        f"\n[cost] 504 now, created 4 s later: {sim_ledger['creations']} creations (minimum 1), "
        f"duplicate inputs {sim_ledger['duplicate_inputs']}, late creates {sim_ledger['late_creates']}"
    )
    assert sim_ledger["late_creates"] == 1
    assert sim_ledger["creations"] == 1 and sim_ledger["duplicate_inputs"] == 0
    record = redis_client.hgetall(Keys(settings.key_prefix).attempt("b-late", 0, 1))
    assert record["origin"] == "adopted"
    [attempt] = item.attempts
    assert attempt.prediction_id == record["prediction_id"]

    events = [json.loads(line) for line in fleet.workers[0].log().splitlines() if line.startswith("{")]
    ours = [e for e in events if e.get("batch") == "b-late" and e.get("logger", "").startswith("workers.")]
    adopted = next(k for k, e in enumerate(ours) if e["msg"].startswith("adopted prediction"))
    after = ours[adopted:]
    assert any(e["msg"] == "item succeeded" for e in after), ours
    assert all(e.get("prediction") == attempt.prediction_id for e in after), after
    assert all("prediction" not in e for e in ours[:adopted]), ours[:adopted]  # not known before


def test_when_an_unresolved_create_may_be_concluded_to_have_made_nothing(settings, redis_client):
    """The settling rule: a window (the POST in-flight limit) after the POST ended; from posting_at
    when the sender vanished (+ the limit for the POST itself); nothing to wait for when no POST
    was sent (no posting_at); an older worker's record keeps its rule (the limit after the intent)."""
    quick = settings.with_(http_timeout=1.0)
    window = post_in_flight_limit(quick)
    assert window == 8.0
    keys = Keys(settings.key_prefix)
    store = CreationRecords(redis_client, keys)
    ledger, _ = record_batch(settings, redis_client, "b-settle", ["a plover"])
    mark_running(ledger, "b-settle", 0)
    with worker_context(quick) as ctx:
        reconciler, ref = Reconciler(ctx), AttemptRef("b-settle", 0, 1)
        intent = store.write_intent(ref, MODEL)
        assert reconciler.settling_ends_at(store.get(ref))[0] == intent  # no POST was sent
        redis_client.set(keys.claim("b-settle", 0, 1), "t")
        _, posting = store.begin_post(ref, "t")
        assert reconciler.settling_ends_at(store.get(ref))[0] == pytest.approx(posting + 2 * window)
        returned = store.mark_post_returned(ref)
        assert returned >= posting
        assert reconciler.settling_ends_at(store.get(ref))[0] == pytest.approx(returned + window)
        legacy = keys.attempt("b-settle", 0, 2)  # written by an older worker: no mark, "1" flag
        redis_client.hset(
            legacy, mapping={"model": MODEL, "intent_at": f"{intent:.6f}", "post_returned_at": "1"}
        )
        old = store.get(AttemptRef("b-settle", 0, 2))
        assert old.post_returned and old.post_returned_at is None and not old.posting_marked
        assert reconciler.settling_ends_at(old)[0] == pytest.approx(intent + window)


# --- between the creation token and the POST ---------------------------------------------------------


@pytest.mark.parametrize("path", ["at once", "steps"])
def test_one_redis_round_trip_between_the_creation_token_and_the_post(settings, redis_client, sim, path):
    """The checks between the token and the POST (claim still ours, batch not canceled) are one
    script, which also stamps `posting_at`: the in-flight window starts there, not at the intent
    written before the (possibly long) token wait. When the token is free at once, the intent,
    the token and that check are all that one script (workers/lua/attempt_create.lua): counted
    from before it, one round trip in all; when the token needs a wait (forced here), the three
    steps, and one round trip after the token."""
    ledger, _ = record_batch(settings, redis_client, "b-onetrip", ["a cormorant drying its wings"])
    with worker_context(settings, sim) as ctx:
        main = threading.get_ident()
        seen: dict = {"armed": False, "commands": []}
        real_execute = ctx.redis.execute_command
        real_token = ctx.limiter.take_create_token
        real_at_once = ctx.creations.begin_at_once
        real_create = ctx.calls.create

        def execute(*args, **kwargs):
            if seen["armed"] and threading.get_ident() == main:
                seen["commands"].append(args[0])
            return real_execute(*args, **kwargs)

        def token(*args, **kwargs):
            granted = real_token(*args, **kwargs)
            seen["armed"] = True
            return granted

        def at_once(*args, **kwargs):
            if path == "steps":
                return None  # as when the token needs a wait
            seen["armed"] = True
            return real_at_once(*args, **kwargs)

        def create(*args, **kwargs):
            seen["armed"] = False
            seen["record"] = redis_client.hgetall(Keys(settings.key_prefix).attempt("b-onetrip", 0, 1))
            return real_create(*args, **kwargs)

        ctx.redis.execute_command = execute
        ctx.limiter.take_create_token = token
        ctx.creations.begin_at_once = at_once
        ctx.calls.create = create
        assert AttemptRunner(ctx).run(Job("b-onetrip", 0, 1, MODEL)) is None

    assert seen["commands"] == ["EVALSHA"], seen["commands"]
    at_post = seen["record"]
    assert float(at_post["posting_at"]) >= float(at_post["intent_at"])
    assert "prediction_id" not in at_post
    item = ledger.item("b-onetrip", 0)
    assert item.status == "succeeded"
    assert sim.ledger(detail=False)["creations"] == 1


def test_a_run_canceled_before_its_intent_shows_its_input_and_releases_its_claim(settings, redis_client, sim):
    """The input is recorded by the creation's intent (before any POST; issue 16.4) instead of
    a ledger write of its own. A run that stops before its intent (canceled while it waits for a
    slot) carries it in its end: the manifest shows what it would have sent, as before. That end
    releases the run's claim in the same round trip."""
    keys = Keys(settings.key_prefix)
    ledger, _ = record_batch(settings, redis_client, "b-early", ["a kingfisher on a branch"])
    with worker_context(settings, sim) as ctx:
        runner = AttemptRunner(ctx)

        def canceled_while_waiting(*args, **kwargs):
            raise CanceledError("batch canceled")

        runner.creator.acquire_slot = canceled_while_waiting
        assert runner.run(Job("b-early", 0, 1, MODEL)) is None
    item = ledger.manifest("b-early")["items"][0]
    assert item["status"] == "canceled", item
    [attempt] = item["attempts"]
    assert attempt["input"]["prompt"] == "a kingfisher on a branch", attempt
    assert "intent_at" not in redis_client.hgetall(keys.attempt("b-early", 0, 1))  # never posted
    assert redis_client.get(keys.claim("b-early", 0, 1)) is None
    assert sim.ledger(detail=False)["creations"] == 0


def test_the_last_check_before_a_post_stamps_only_when_the_attempt_is_ours_to_create(settings, redis_client):
    keys = Keys(settings.key_prefix)
    ledger, _ = record_batch(settings, redis_client, "b-check", ["a swift over a roof"])
    store = CreationRecords(redis_client, keys)
    claim_key = keys.claim("b-check", 0, 1)
    attempt_key = keys.attempt("b-check", 0, 1)
    store.write_intent(AttemptRef("b-check", 0, 1), MODEL)
    redis_client.set(claim_key, "mine")
    assert store.begin_post(AttemptRef("b-check", 0, 1), "mine") == ("moved_on", None)  # not running
    mark_running(ledger, "b-check", 0)
    redis_client.hset(keys.item("b-check", 0), "attempt", 2)  # another run moved the item on
    assert store.begin_post(AttemptRef("b-check", 0, 1), "mine") == ("moved_on", None)
    redis_client.hset(keys.item("b-check", 0), "attempt", 1)

    redis_client.set(claim_key, "someone else")
    assert store.begin_post(AttemptRef("b-check", 0, 1), "mine") == ("lost", None)
    redis_client.set(claim_key, "mine")
    verdict, posting_at = store.begin_post(AttemptRef("b-check", 0, 1), "mine")
    assert verdict == "go" and abs(posting_at - store.redis_now()) < 2
    assert float(redis_client.hget(attempt_key, "posting_at")) == pytest.approx(posting_at)

    store.write_intent(
        AttemptRef("b-check", 0, 1), MODEL
    )  # a new try (after a 429) starts without posting_at
    assert not redis_client.hexists(attempt_key, "posting_at")
    ledger.cancel("b-check")
    assert store.begin_post(AttemptRef("b-check", 0, 1), "mine") == ("canceled", None)
    redis_client.hset(attempt_key, "prediction_id", "p-other")
    assert store.begin_post(AttemptRef("b-check", 0, 1), "mine") == ("recorded", None)
    assert not redis_client.hexists(attempt_key, "posting_at")


def test_cannot_tell_is_not_lost_a_claim_check_without_redis_raises(redis_client, key_prefix):
    keeper = ClaimKeeper(redis_client, ttl=5)
    claim = keeper.try_claim(f"{key_prefix}:claim:y")
    try:
        dead = redis.Redis(
            port=1, socket_connect_timeout=0.2, retry=Retry(NoBackoff(), 0)
        )  # nothing on port 1
        cut_off = Claim(ClaimKeeper(dead, ttl=5), claim.key, claim.token)
        with pytest.raises(RedisUnavailableError) as info:
            cut_off.still_ours()
        assert is_redis_unavailable(info.value)
        # taken back after an outage: ours again (also when Redis forgot it), never someone else's
        redis_client.delete(claim.key, seen_key(claim.key))
        assert keeper.reassert(claim) is claim and redis_client.get(claim.key) == claim.token
        redis_client.set(claim.key, "another execution")
        assert keeper.reassert(claim) is None and claim.lost
    finally:
        claim.release()


def test_a_claim_is_ours_until_redis_says_otherwise_and_one_lost_with_its_marker_is_taken_back(
    redis_client, key_prefix, monkeypatch
):
    """Claim.ensure_ours, checked at the prediction's end and before every write: Redis is asked
    unless it confirmed the claim within CLAIM_FRESH_SECONDS; another run's claim is lost for
    good; a claim Redis lost together with its marker (restart, failover) is ours again."""
    keeper = ClaimKeeper(redis_client, ttl=5)
    claim = keeper.try_claim(f"{key_prefix}:claim:z")
    forgotten = keeper.try_claim(f"{key_prefix}:claim:w")
    try:
        claim.ensure_ours("writing")
        redis_client.set(claim.key, "another execution")
        claim.ensure_ours("writing")  # confirmed just now: Redis is not asked again
        monkeypatch.setattr(claims, "CLAIM_FRESH_SECONDS", 0.0)
        with pytest.raises(SupersededError, match="lost before writing"):
            claim.ensure_ours("writing")
        assert claim.lost and redis_client.get(claim.key) == "another execution"
        redis_client.delete(forgotten.key, seen_key(forgotten.key))
        forgotten.ensure_ours("writing")
        assert not forgotten.lost and redis_client.get(forgotten.key) == forgotten.token
    finally:
        claim.release()
        forgotten.release()


# --- a fresh prediction adopted by an identical item before its creator records it ----------------


def test_a_creator_whose_prediction_was_adopted_first_reconciles_instead_of_going_on(
    settings, redis_client, sim
):
    """Two identical prompts; the other item, reconciling an ambiguous create of its own, adopts
    our fresh prediction between our POST's answer and our record. We must not continue with no
    recorded prediction: keep the intent (as a POST that returned) and reconcile, paying nothing."""
    keys = Keys(settings.key_prefix)
    record_batch(settings, redis_client, "b-twins", ["a red fox", "a red fox"])
    with worker_context(settings, sim, http_timeout=1.0) as ctx:
        real_create = ctx.calls.create

        def create_then_lose_it(*args, **kwargs):
            view = real_create(*args, **kwargs)
            redis_client.set(keys.prediction_owner(view.id), "b-twins:1:1")  # item 1 adopted it first
            return view

        ctx.calls.create = create_then_lose_it
        runner = AttemptRunner(ctx)
        follow_up = runner.run(Job("b-twins", 0, 1, MODEL))
        assert isinstance(follow_up, NextTask) and follow_up.attempt == 1 and follow_up.countdown > 0
        record = ctx.creations.get(AttemptRef("b-twins", 0, 1))
        assert record.prediction_id is None and record.intent_at is not None
        assert record.post_returned_at is not None  # the POST is over: reconcile from its end
        [attempt] = ctx.ledger.item("b-twins", 0).attempts
        assert not attempt.prediction_id

        # The re-run lists: the only matching prediction is item 1's, so it waits out the
        # settling window (not counted as a try) instead of adopting it or creating again.
        again = AttemptRunner(ctx).run(Job("b-twins", 0, 1, MODEL))
        assert isinstance(again, NextTask) and again.attempt == 1 and 0 < again.countdown <= 9.5
        assert ctx.creations.get(AttemptRef("b-twins", 0, 1)).prediction_id is None
    assert sim.ledger(detail=False)["creations"] == 1


# --- the slot of a create whose prediction is unknown stays counted ------------------------------


@pytest.mark.e2e
def test_an_ambiguous_create_keeps_its_slot_counted_until_its_late_prediction_is_adopted(
    settings, redis_client, sim_factory, worker_factory
):
    """One slot, two items. Item 0's create answers 504 and its prediction appears 3 s later and
    runs 3 s. Had the worker released its slot on the 504, item 1 would be created beside the late
    prediction: two in flight on a one-slot account. The slot is kept (abandoned, counted) until the
    reconciliation adopts the late prediction, so the stand-in never sees more than one."""
    sim = sim_factory(
        latency_scale=1.0,
        image_scale=0.01,
        late_create_next=1,
        late_create_after=3.0,
        latency_overrides={MODEL: 3.0},
    )
    settings = settings.with_(http_timeout=1.0, concurrency_limit=1)
    fleet = worker_factory(settings, count=1, sim=sim, concurrency=4, FLEET_HTTP_TIMEOUT="1")
    ledger, _ = submit(settings, redis_client, "b-abandon", ["a stoat in snow", "a hare in snow"])
    wait_finished(ledger, "b-abandon", 60, fleet)

    assert ledger.batch("b-abandon").counts["succeeded"] == 2
    sim_ledger = sim.ledger(detail=False)
    print(
        f"\n[cost] 504 then a late prediction, one slot: {sim_ledger['creations']} creations (minimum 2), "
        f"duplicate inputs {sim_ledger['duplicate_inputs']}, peak in flight {sim_ledger['peak_in_flight']}"
    )
    assert sim_ledger["late_creates"] == 1
    assert sim_ledger["creations"] == 2 and sim_ledger["duplicate_inputs"] == 0
    assert sim_ledger["peak_in_flight"] == 1
    wait_until(lambda: _slots_in_use(redis_client, settings) == 0, 10, "every slot to come back")


@pytest.mark.e2e
@pytest.mark.slow
def test_a_worker_killed_inside_its_post_keeps_the_slot_counted_until_the_attempt_is_reconciled(
    settings, redis_client, sim_factory, worker_factory
):
    """One slot, two items. The worker is SIGKILLed while item 0's POST is held by the gateway;
    the POST goes through 4 s later and its prediction runs 3 s. The dead holder took its creation
    token for that attempt, so its slot stays counted (an orphan) after its lease runs out, and the
    next execution of item 0 adopts it with the late prediction: item 1 never runs beside it."""
    sim = sim_factory(
        latency_scale=1.0,
        image_scale=0.01,
        stall_create_next=1,
        stall_create_seconds=4.0,
        stall_create_creates=True,
        latency_overrides={MODEL: 3.0},
    )
    settings = settings.with_(http_timeout=2.0, concurrency_limit=1, lease_seconds=2.0, visibility_timeout=8)
    # The first worker takes item 0 only (one thread: one message); the second starts once item
    # 0's POST is held, takes item 1 and waits for the slot.
    first = worker_factory(settings, count=1, sim=sim, concurrency=1, FLEET_HTTP_TIMEOUT="2")
    ledger, _ = submit(settings, redis_client, "b-killpost", ["a wren on a gate", "a robin on a gate"])
    wait_until(
        lambda: sim.ledger(detail=False)["stalled_creates"] >= 1,
        20,
        "a POST held by the gateway",
        explain=first.logs,
    )
    others = worker_factory(settings, count=1, sim=sim, concurrency=4, FLEET_HTTP_TIMEOUT="2")
    wait_until(
        lambda: ledger.item("b-killpost", 1).status == "running",
        20,
        "item 1 waiting for the slot",
        explain=others.logs,
    )
    first.workers[0].kill()
    wait_finished(ledger, "b-killpost", 120, others)

    assert ledger.batch("b-killpost").counts["succeeded"] == 2
    sim_ledger = sim.ledger(detail=False)
    print(
        f"\n[cost] SIGKILL inside the POST, one slot: {sim_ledger['creations']} creations (minimum 2), "
        f"duplicate inputs {sim_ledger['duplicate_inputs']}, peak in flight {sim_ledger['peak_in_flight']}"
    )
    assert sim_ledger["creations"] == 2 and sim_ledger["duplicate_inputs"] == 0
    assert sim_ledger["peak_in_flight"] == 1
    record = redis_client.hgetall(Keys(settings.key_prefix).attempt("b-killpost", 0, 1))
    assert record.get("origin") == "adopted", record
    wait_until(lambda: _slots_in_use(redis_client, settings) == 0, 10, "every slot to come back")


def _slots_in_use(redis_client, settings) -> int:
    from shared.limiter import Limiter

    return Limiter.from_settings(redis_client, Keys(settings.key_prefix), settings).status().in_use


@pytest.mark.e2e
def test_a_listed_prediction_whose_input_was_removed_means_cannot_tell_never_create(
    settings, redis_client, sim_factory, worker_factory
):
    """The earlier POST of an attempt answered 502 but created its prediction; by the time the
    attempt is reconciled, the stand-in has removed that prediction's input (as Replicate does
    after about an hour). The listing shows a prediction of the same model from that time that
    matches nothing: "none was created" cannot be concluded. The item fails saying so, and
    nothing is created a second time."""
    sim = sim_factory(latency_scale=0.02, image_scale=0.01, output_ttl=0.5)
    settings = settings.with_(http_timeout=1.0)  # settling window: 1 + 1 + 1 + 5 s
    ledger, [request] = record_batch(settings, redis_client, "b-removed", ["an owl on a fence"])
    mark_running(ledger, "b-removed", 0)
    ref, keys = AttemptRef("b-removed", 0, 1), Keys(settings.key_prefix)
    store = CreationRecords(redis_client, keys)
    store.write_intent(ref, MODEL)
    redis_client.set(keys.claim("b-removed", 0, 1), "dead-worker", px=500)
    assert store.begin_post(ref, "dead-worker")[0] == "go"
    sent_input, _ = build_input(request, MODEL, load_registry())
    calls = ReplicateCalls(settings.with_(replicate_base_url=sim.url))
    made = calls.create(MODEL, sent_input)
    store.mark_post_returned(ref)  # ... and its answer was a 502
    wait_until(lambda: not calls.get(made.id).input, 15, "the stand-in to remove the input")

    from workers.dispatch import enqueue_items

    enqueue_items(settings, "b-removed", [request])
    fleet = worker_factory(settings, count=1, sim=sim, FLEET_HTTP_TIMEOUT="1")
    wait_finished(ledger, "b-removed", 60, fleet)
    item = ledger.item("b-removed", 0)
    assert item.status == "failed" and "cannot tell" in (item.error or ""), item
    assert wait_quiet(sim)["creations"] == 1
