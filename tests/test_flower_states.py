"""Flower tells the truth (issue 18.3): the states Celery's events give each attempt's task, read the
way Flower reads them (celery.events.State over the broker's event stream), from a real worker
and the stand-in. A batch whose first model always fails and whose first prediction is aborted:
the aborted attempt shows RETRY, the failed flux-dev attempt FAILURE naming its reason and the next
task, the final attempt SUCCESS with its model and files. A task's last state reaches Flower even
when its worker is stopped right after it ended."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
from celery import Celery
from celery.events.state import State

from tests.support.e2e import submit, wait_finished
from tests.support.wait import wait_until

pytestmark = pytest.mark.e2e

FLUX_DEV, QWEN = "black-forest-labs/flux-dev", "qwen/qwen-image"


@pytest.fixture
def events(settings) -> Iterator[State]:
    """Every task event of the fleet's broker, merged into a State as Flower merges them."""
    app = Celery(broker=settings.redis_url)
    state = app.events.State()
    stop = threading.Event()
    listening = threading.Event()

    def listen() -> None:
        with app.connection() as connection:
            receiver = app.events.Receiver(connection, handlers={"*": state.event})
            listening.set()
            while not stop.is_set():
                try:
                    receiver.capture(limit=None, timeout=0.5, wakeup=False)
                except TimeoutError:
                    continue

    thread = threading.Thread(target=listen, daemon=True)
    thread.start()
    assert listening.wait(10)
    yield state
    stop.set()
    thread.join(5)


def batch_tasks(state: State, batch_id: str) -> list:
    return sorted(
        (task for task in state.tasks.values() if batch_id in (task.args or "")),
        key=lambda task: (task.args, task.timestamp or 0),
    )


def test_attempt_states_as_flower_shows_them(settings, redis_client, sim_factory, worker_factory, events):
    sim = sim_factory(always_fail_models=[FLUX_DEV], abort_next=1, latency_scale=0.02)
    fleet = worker_factory(settings, count=1, sim=sim)
    ledger, _ = submit(settings, redis_client, "b-flower-states", ["a kite over dunes"])
    wait_finished(ledger, "b-flower-states", 90, fleet)
    item = ledger.items("b-flower-states")[0]
    assert [(a.model, a.status) for a in item.attempts] == [
        (FLUX_DEV, "retry"),
        (FLUX_DEV, "failed"),
        (QWEN, "succeeded"),
    ]

    def attempt_of(task) -> int:
        return int(task.args.split("attempt=")[1].split()[0])

    def ended(attempt: int, state: str, says: str = ""):
        found = [t for t in batch_tasks(events, "b-flower-states") if attempt_of(t) == attempt]
        return next((t for t in found if t.state == state and says in (t.exception or "")), None)

    # One task per attempt, plus, on a loaded machine, runs handed back for later (RETRY too).
    retry = wait_until(lambda: ended(1, "RETRY", "attempt 2 on"), 30, "attempt 1's RETRY", interval=0.2)
    fallback = wait_until(lambda: ended(2, "FAILURE"), 30, "attempt 2's FAILURE", interval=0.2)
    success = wait_until(lambda: ended(3, "SUCCESS"), 30, "attempt 3's SUCCESS", interval=0.2)
    tasks = batch_tasks(events, "b-flower-states")
    assert retry.state == "RETRY", (retry.state, retry.exception)
    assert "attempt 2 on black-forest-labs/flux-dev" in retry.exception and "aborted" in retry.exception
    assert fallback.state == "FAILURE", (fallback.state, fallback.result)
    assert "black-forest-labs/flux-dev failed" in fallback.exception
    assert "next: attempt 3 on qwen/qwen-image" in fallback.exception  # the next task of the chain
    assert success.state == "SUCCESS"
    assert QWEN in success.result and item.files[0]["key"] in success.result
    assert settings.replicate_api_token not in repr([t.as_dict() for t in tasks])
    # Failing tasks are acked like the others: nothing is redelivered, nothing created twice.
    assert sim.ledger()["creations"] == 3


def test_a_success_reaches_flower_when_the_worker_stops_right_after(
    settings, redis_client, sim_factory, worker_factory, events
):
    """A worker holds its task events up to EVENT_FLUSH_SECONDS before publishing them
    (workers.event_batching): a SIGTERM (`docker compose stop`) moments after a task ended must
    not drop its SUCCESS, which would leave Flower showing the task unfinished forever."""
    fleet = worker_factory(settings, count=1, sim=sim_factory(latency_scale=0.02))
    ledger, _ = submit(settings, redis_client, "b-stop-events", ["a lighthouse at dusk"])

    def succeeded() -> bool:
        item = ledger.item("b-stop-events", 0)
        return item is not None and item.status == "succeeded"

    # Polled often: the SIGTERM must come within the flush delay of the task's end.
    wait_until(succeeded, 60, "the item's success", interval=0.01, explain=fleet.logs)
    fleet.workers[0].stop()  # SIGTERM: a warm shutdown; returns once the worker has exited
    assert not fleet.workers[0].alive()
    wait_until(
        lambda: [t for t in batch_tasks(events, "b-stop-events") if t.state == "SUCCESS"],
        10,
        "the task's SUCCESS event",
        interval=0.2,
        explain=lambda: repr([(t.name, t.state) for t in batch_tasks(events, "b-stop-events")]),
    )
