"""Never paying twice when the first creation's fate is unknown: a POST that may still be in
flight, an attempt that cannot be settled, a claim Redis forgot, an answer the client cannot read.
Real Redis, the stand-in over HTTP, real worker processes where the behaviour is theirs."""
from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from shared.keys import Keys
from shared.models import load_registry
from shared.routing import build_input
from tests.conftest import wait_for
from tests.test_e2e import submit, wait_finished
from workers.attempts import AttemptStore
from workers.claims import ClaimKeeper
from workers.replicate_calls import ReplicateCalls, is_ambiguous

MODEL = "black-forest-labs/flux-dev"


@pytest.mark.e2e
def test_a_post_still_in_flight_is_waited_out_and_adopted_not_paid_twice(settings, redis_client, sim_factory,
                                                                         worker_factory):
    """A worker died mid-POST (intent written, no answer): its POST reaches Replicate 3 s later.
    The next execution must not conclude "nothing was created" before that POST could land."""
    sim = sim_factory(latency_scale=0.02, image_scale=0.01)
    settings = settings.with_(http_timeout=1.0)  # a POST is over within 1 + 1 + 1 + 5 s
    ledger, [request] = submit(settings, redis_client, "b-inflight", ["a heron in the reeds"])
    AttemptStore(redis_client, Keys(settings.key_prefix)).write_intent("b-inflight", 0, 1, MODEL)
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
def test_an_attempt_that_cannot_be_settled_fails_the_item_instead_of_paying_again(settings, redis_client,
                                                                                  sim_factory, worker_factory):
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
    redis_client.delete(key)  # a restart from a slightly older append-only file
    wait_for(lambda: redis_client.get(key) == claim.token, 3, "the keeper to re-assert the claim")
    assert keeper.try_claim(key) is None and claim.still_ours() and not claim.lost
    redis_client.set(key, "someone else")
    wait_for(lambda: claim.lost, 3, "the keeper to notice another owner")
    assert not claim.still_ours()
    claim.release()
    assert redis_client.get(key) == "someone else"  # never releases another execution's claim


def test_a_create_answer_the_client_cannot_read_is_treated_as_maybe_created(settings):
    """replicate 1.0.7 rejects some statuses (`aborted`) while parsing: the POST went through."""

    class Replicate(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            body = json.dumps({"id": "p1", "model": MODEL, "version": "hidden", "input": {}, "status": "aborted",
                               "output": None, "error": None, "created_at": "2026-11-26T00:00:00Z", "urls": {}}).encode()
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
        calls = ReplicateCalls(settings.with_(replicate_base_url=f"http://127.0.0.1:{server.server_address[1]}"))
        with pytest.raises(Exception) as info:
            calls.create(MODEL, {"prompt": "x"})
        assert is_ambiguous(info.value), info.value
    finally:
        server.shutdown()
        server.server_close()
