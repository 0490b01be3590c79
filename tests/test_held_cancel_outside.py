"""A canceled batch's held sync create never cancels a prediction another program of the same
account created with the same model and input (workers.held_cancel): it cannot tell the two apart
by listing, so it waits for its create's answer, which carries the id, and cancels that one.
A real worker, the stand-in over HTTP, the official client as the other program."""

from __future__ import annotations

import json
import threading

import httpx
import pytest
import replicate

from shared.ledger import Ledger
from shared.models import load_registry
from shared.routing import build_input
from tests.support.attempt_path import mark_running, record_batch, worker_context
from tests.support.e2e import MODEL, submit, wait_finished
from tests.support.wait import wait_until
from workers.attempts import AttemptRef
from workers.creator import POST_SEND_SLACK
from workers.held_cancel import LIST_SETTLE, HeldCreateCanceler
from workers.held_creates import HeldCreate


def _listed(sim) -> dict[str, dict]:
    response = httpx.get(
        f"{sim.url}/v1/predictions", headers={"Authorization": "Bearer r8_sim_test"}, timeout=10
    )
    response.raise_for_status()
    return {p["id"]: p for p in response.json()["results"]}


def _sent_input(ledger: Ledger, batch_id: str) -> dict:
    [attempt] = ledger.item(batch_id, 0).attempts
    assert attempt.input, attempt
    return json.loads(attempt.input)


@pytest.mark.e2e
def test_a_held_cancel_never_cancels_another_programs_prediction_with_the_same_input(
    settings, redis_client, sim_factory, worker_factory
):
    """The batch's create is held (a 30 s prediction, a 10 s wait); another program creates a
    prediction with the same model and input; the batch is canceled. Two predictions match and
    the fleet has one create that can have made them: the fleet's is canceled only once its
    create answers (by id), the other program's runs to its end."""
    sim = sim_factory(latency_scale=1.0, image_scale=0.01, latency_overrides={MODEL: 30.0})
    settings = settings.with_(wait_mode="sync", sync_wait_max=10)
    fleet = worker_factory(settings, count=1, sim=sim, concurrency=2)
    ledger, _ = submit(settings, redis_client, "b-outside", ["a coot among reeds"])
    wait_until(lambda: sim.ledger(detail=False)["in_flight"] == 1, 30, "the held create", explain=fleet.logs)
    outside = replicate.Client(api_token="r8_other_program", base_url=sim.url).models.predictions.create(
        model=MODEL, input=_sent_input(ledger, "b-outside")
    )
    ledger.cancel("b-outside")
    wait_finished(ledger, "b-outside", 40, fleet)

    listed = _listed(sim)
    assert len(listed) == 2 and sim.ledger(detail=False)["creations"] == 2, listed
    ours = ledger.item("b-outside", 0).attempts[-1].prediction_id
    assert ours in listed and ours != outside.id
    assert ledger.item("b-outside", 0).status == "canceled"
    assert listed[ours]["status"] == "canceled", listed[ours]  # by id, once its create answered
    assert listed[outside.id]["status"] in ("starting", "processing", "succeeded"), listed[outside.id]
    assert "cannot be told from one another program created" in fleet.logs(tail=200_000)


@pytest.mark.e2e
def test_another_programs_prediction_is_not_canceled_in_the_place_of_one_still_on_its_way(
    settings, redis_client, sim_factory
):
    """The fleet's POST has just left (its `posting_at` is now) and its prediction is not listed
    yet; another program's, same model and input, is. One create, one listed prediction: the
    count alone would cancel the other program's. While the POST is younger than LIST_SETTLE the
    count is not trusted: looked for again until the create answers (2 s here), nothing canceled."""
    assert LIST_SETTLE >= POST_SEND_SLACK + 1.0
    sim = sim_factory(latency_scale=1.0, image_scale=0.01, latency_overrides={MODEL: 20.0})
    ledger, [request] = record_batch(settings, redis_client, "b-young", ["a teal at dusk"])
    mark_running(ledger, "b-young", 0)
    input_, _ = build_input(request, MODEL, load_registry())
    outside = replicate.Client(api_token="r8_other_program", base_url=sim.url).models.predictions.create(
        model=MODEL, input=input_
    )
    ledger.cancel("b-young")
    with worker_context(settings, sim) as ctx:
        held = HeldCreate(
            AttemptRef("b-young", 0, 1), MODEL, input_, ctx.creations.redis_now(), lambda _: None
        )
        answered = threading.Timer(2.0, held.ended.set)  # the create answers 2 s later
        answered.start()
        try:
            HeldCreateCanceler(ctx).cancel(held)  # returns once the create answered
        finally:
            answered.cancel()
    assert held.ended.is_set()
    assert _listed(sim)[outside.id]["status"] in ("starting", "processing"), _listed(sim)[outside.id]
