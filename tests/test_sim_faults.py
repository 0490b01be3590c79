"""Limits and failures on demand: what a client must survive, and what the ledger records of it."""

from __future__ import annotations

import math
import time

import httpx
import pytest
import replicate
from replicate.exceptions import ModelError, ReplicateError

from replicate_sim.control import SimError
from tests.support.wait import wait_until

TOKEN = "r8_sim_test_token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def client_for(sim) -> replicate.Client:
    return replicate.Client(api_token=TOKEN, base_url=sim.url)


def create_raw(sim, prompt: str, model: str = "black-forest-labs/flux-dev") -> httpx.Response:
    return httpx.post(
        f"{sim.url}/v1/models/{model}/predictions", headers=AUTH, json={"input": {"prompt": prompt}}
    )


def test_sliding_window_is_exact_not_fixed_buckets(sim_factory):
    sim = sim_factory(create_limit=3, window=2.0)
    before_first = time.monotonic()
    assert create_raw(sim, "a0").status_code == 201
    after_first = time.monotonic()  # the sim admitted the first call between these two instants
    assert [create_raw(sim, f"a{i}").status_code for i in (1, 2)] == [201, 201]
    first_refusal = create_raw(sim, "a3")
    assert first_refusal.status_code == 429 and first_refusal.json()["retry_after"] in (1, 2)
    # Still inside 2 s of the first three: refused, however the clock's seconds tick over. Each
    # try starts within 1.2 s of the first creation, so it is answered well inside the window
    # even on a loaded machine; how many tries fit depends on the machine, so they are counted.
    refused = 1
    while time.monotonic() - before_first < 1.2:
        assert create_raw(sim, "wait").status_code == 429
        refused += 1
        time.sleep(0.2)
    assert refused >= 2, "no try inside the window: the first creations took over 1.2 s"
    time.sleep(max(0.0, after_first + 2.05 - time.monotonic()))
    assert create_raw(sim, "after").status_code == 201
    ledger = sim.ledger()
    assert ledger["max_creations_in_window"] == 3 and ledger["max_create_calls_in_window"] == 3
    assert ledger["creations"] == 4 and ledger["rejected_429"]["create"] == refused  # every refusal counted


def test_reads_have_their_own_budget_and_the_client_retries_gets(sim_factory):
    sim = sim_factory(read_limit=3, window=1)
    client = client_for(sim)
    prediction = client.predictions.create(model="google/imagen-4-ultra", input={"prompt": "r"})
    for _ in range(3):
        httpx.get(f"{sim.url}/v1/predictions/{prediction.id}", headers=AUTH)
    refused = httpx.get(f"{sim.url}/v1/predictions/{prediction.id}", headers=AUTH)
    assert refused.status_code == 429 and refused.headers["Retry-After"] == "1"
    # the official client retries a GET on 429, honouring Retry-After
    assert client.predictions.get(prediction.id).id == prediction.id
    ledger = sim.ledger()
    assert ledger["rejected_429"]["read"] >= 2 and ledger["reads"] == 4 and ledger["max_reads_in_window"] == 3
    assert ledger["creations"] == 1  # creations never count against reads


def test_downloads_and_control_calls_are_not_counted_as_reads(sim):
    output = client_for(sim).run("google/imagen-4-ultra", input={"prompt": "free"})
    for _ in range(3):
        httpx.get(output).raise_for_status()
        sim.health()
    assert sim.ledger()["reads"] == 0


def test_max_in_flight_cap_answers_429_and_counts_it_separately(sim_factory):
    sim = sim_factory(max_in_flight=2, latency_scale=1.0)
    assert [create_raw(sim, f"f{i}", "google/veo-3-fast").status_code for i in range(2)] == [201, 201]
    refused = create_raw(sim, "f2", "google/veo-3-fast")
    assert refused.status_code == 429 and refused.json()["retry_after"] >= 1
    ledger = sim.ledger()
    assert ledger["rejected_429"] == {"create": 0, "read": 0, "in_flight": 1, "storm": 0}
    assert ledger["in_flight"] == 2 and ledger["peak_in_flight"] == 2
    assert ledger["max_create_calls_in_window"] == 2  # a refused create uses no creation budget


def test_storm_of_429s_on_creates_then_normal(sim):
    sim.configure(storm_next=2, storm_retry_after=3)
    client = client_for(sim)
    for _ in range(2):
        with pytest.raises(ReplicateError) as info:
            client.predictions.create(model="google/nano-banana", input={"prompt": "storm"})
        assert info.value.status == 429
    assert (
        client.predictions.create(model="google/nano-banana", input={"prompt": "calm"}).status == "starting"
    )
    assert sim.ledger()["rejected_429"]["storm"] == 2


def test_timed_storm_refuses_every_create_until_it_ends_with_the_seconds_left(sim):
    storm = 2.5
    before = time.monotonic()
    sim.configure(storm_for=storm)
    began = time.monotonic()  # the storm began between `before` and `began`

    def create_seeing_seconds_left(prompt: str) -> tuple[httpx.Response, range]:
        """The answer, and the retry_after values it may carry: the seconds left, rounded up, at
        some instant between this call's start and its answer (a loaded machine widens the range)."""
        sent = time.monotonic()
        answer = create_raw(sim, prompt)
        answered = time.monotonic()
        return answer, range(
            max(1, math.ceil(storm - (answered - before))), math.ceil(storm - (sent - began)) + 1
        )

    first, possible = create_seeing_seconds_left("t0")
    assert first.status_code == 429 and first.json()["retry_after"] in possible  # 3 on a quiet machine
    assert first.headers["Retry-After"] == str(first.json()["retry_after"])
    time.sleep(1.0)
    second, possible = create_seeing_seconds_left("t1")
    assert second.status_code == 429 and second.json()["retry_after"] in possible  # 2: counting down
    assert second.json()["retry_after"] < first.json()["retry_after"]
    time.sleep(max(0.0, before + storm + 0.05 - time.monotonic()))  # over, whenever it began
    assert create_raw(sim, "t2").status_code == 201
    assert sim.ledger()["rejected_429"]["storm"] == 2
    assert sim.config()["storm_for"] == 0  # an action, not a state: setting it again starts another


def test_5xx_burst_hits_the_next_k_api_calls(sim):
    sim.configure(error_burst=3, error_burst_statuses=[500, 502, 503])
    statuses = [create_raw(sim, f"b{i}").status_code for i in range(4)]
    assert statuses == [500, 502, 503, 201]
    ledger = sim.ledger()
    assert ledger["errors_5xx"] == 3 and ledger["creations"] == 1
    assert ledger["errors_5xx_by_status"] == {"500": 1, "502": 1, "503": 1}


def test_ghost_create_bills_a_prediction_whose_answer_is_lost(sim):
    sim.configure(ghost_create_next=1)
    assert create_raw(sim, "ghost").status_code == 502
    assert create_raw(sim, "ghost").status_code == 201  # the client retries blindly: a duplicate
    ledger = sim.ledger()
    assert ledger["creations"] == 2 and ledger["ghost_creates"] == 1 and ledger["duplicate_inputs"] == 1


def test_late_create_answers_504_now_and_creates_the_prediction_later(sim):
    sim.configure(late_create_next=1, late_create_after=1.5)
    assert create_raw(sim, "late").status_code == 504
    # Answered before the prediction exists, not after waiting for it:
    assert sim.ledger()["creations"] == 0
    wait_until(lambda: sim.ledger(detail=False)["creations"], 10, "the late creation")
    ledger = sim.ledger()
    assert (
        ledger["creations"] == 1
        and ledger["late_creates"] == 1
        and ledger["errors_5xx_by_status"] == {"504": 1}
    )
    listed = httpx.get(f"{sim.url}/v1/predictions", headers=AUTH).json()["results"]
    assert [p["input"]["prompt"] for p in listed] == ["late"]
    assert create_raw(sim, "late 2").status_code == 201  # only the next K


def test_late_create_scheduled_before_a_reset_does_not_land_after_it(sim):
    sim.configure(late_create_next=1, late_create_after=0.4)
    assert create_raw(sim, "late").status_code == 504
    due = sim.ledger(detail=False)["uptime"] + 0.4  # on the stand-in's own clock: scheduled before now
    sim.reset()
    # Until the stand-in's clock is well past the moment it was due, however slow this process is.
    wait_until(
        lambda: sim.ledger(detail=False)["uptime"] > due + 0.3, 10, "the late creation's moment to pass"
    )
    assert sim.ledger()["creations"] == 0


def test_stalled_create_holds_the_connection_then_creates_or_not(sim):
    sim.configure(stall_create_next=1, stall_create_seconds=30.0)
    with pytest.raises(httpx.ReadTimeout):  # no answer at all: only the client's timeout ends it
        httpx.post(
            f"{sim.url}/v1/models/black-forest-labs/flux-dev/predictions",
            headers=AUTH,
            json={"input": {"prompt": "stalled"}},
            timeout=httpx.Timeout(5.0, read=0.5),
        )
    assert create_raw(sim, "next one").status_code == 201  # the stall took only the next create
    ledger = sim.ledger()
    assert ledger["stalled_creates"] == 1 and ledger["creations"] == 1

    sim.configure(stall_create_next=1, stall_create_seconds=0.5, stall_create_creates=True)
    began = time.monotonic()
    assert create_raw(sim, "slow but made").status_code == 201
    assert time.monotonic() - began >= 0.5
    sim.configure(stall_create_next=1, stall_create_seconds=0.3, stall_create_creates=False)
    assert create_raw(sim, "dropped").status_code == 504
    ledger = sim.ledger()
    assert ledger["stalled_creates"] == 3 and ledger["creations"] == 2


def test_failures_nsfw_always_fail_and_fail_rate(sim_factory):
    sim = sim_factory(always_fail_models=["qwen/qwen-image"], seed=7)
    client = client_for(sim)
    with pytest.raises(ModelError) as info:
        client.run("google/imagen-4-ultra", input={"prompt": "a NSFW-TRIGGER scene"})
    assert "flagged as sensitive" in str(info.value)
    assert info.value.prediction.status == "failed"
    with pytest.raises(ModelError):
        client.run("qwen/qwen-image", input={"prompt": "fine prompt"})
    assert client.run("google/imagen-4-ultra", input={"prompt": "fine"}).endswith(".jpg")
    sim.configure(fail_rate=1.0)
    with pytest.raises(ModelError):
        client.run("google/imagen-4-ultra", input={"prompt": "unlucky"})
    sim.configure(fail_rate=0.0, model_fail_rates={"google/imagen-4-ultra": 1.0})
    with pytest.raises(ModelError):
        client.run("google/imagen-4-ultra", input={"prompt": "unlucky model"})
    assert client.run("google/nano-banana", input={"prompt": "other model"}).endswith(".jpg")
    assert sim.ledger()["predictions_by_status"] == {"failed": 4, "succeeded": 2}


def test_aborted_only_on_demand(sim):
    sim.configure(abort_next=1)
    aborted = create_raw(sim, "abort me").json()
    normal = create_raw(sim, "keep me").json()

    def fetch_states() -> list[dict]:
        return [
            httpx.get(f"{sim.url}/v1/predictions/{p['id']}", headers=AUTH).json() for p in (aborted, normal)
        ]

    states = wait_until(
        lambda: (lambda s: s if (s[0]["status"], s[1]["status"]) == ("aborted", "succeeded") else None)(
            fetch_states()
        ),
        5,
        "one aborted, one succeeded",
    )
    assert states[0]["status"] == "aborted" and states[0]["started_at"] is None and states[0]["completed_at"]
    assert states[1]["status"] == "succeeded"
    # replicate 1.0.7's pydantic model does not know `aborted`
    with pytest.raises(Exception, match="status"):
        client_for(sim).predictions.get(aborted["id"])
    assert sim.ledger()["predictions_by_status"] == {"aborted": 1, "succeeded": 1}


def test_duplicate_inputs_are_counted_per_model_and_input(sim):
    for model, prompt in [
        ("google/nano-banana", "same"),
        ("google/nano-banana", "same"),
        ("google/imagen-4-ultra", "same"),
        ("google/nano-banana", "other"),
    ]:
        assert create_raw(sim, prompt, model).status_code == 201
    ledger = sim.ledger()
    assert ledger["duplicate_inputs"] == 1 and len(ledger["duplicates"]) == 1


def test_config_rejects_unknown_options_and_reset_forgets_everything(sim):
    with pytest.raises(SimError, match="unknown option"):
        sim.configure(no_such_knob=1)
    with pytest.raises(SimError, match="window"):
        sim.configure(window=0)
    assert sim.config()["window"] == 60.0
    create_raw(sim, "before reset")
    sim.reset(create_limit=1)
    ledger = sim.ledger()
    assert ledger["creations"] == 0 and ledger["limits"]["create_limit"] == 1
    assert [create_raw(sim, f"r{i}").status_code for i in range(2)] == [201, 429]


def test_seeded_sims_make_the_same_ids(sim_factory):
    ids = []
    for _ in range(2):
        sim = sim_factory(seed=1234)
        ids.append([create_raw(sim, f"s{i}").json()["id"] for i in range(3)])
    assert ids[0] == ids[1] and len(set(ids[0])) == 3


def test_events_timeline_has_creations_and_completions(sim):
    client_for(sim).run("google/imagen-4-ultra", input={"prompt": "timeline"})
    page = sim.events()
    kinds = [e["kind"] for e in page["events"]]
    assert kinds == ["create", "complete"] and page["next"] == 2
    assert page["events"][0]["t"] <= page["events"][1]["t"]
    assert sim.events(since=2)["events"] == []


def test_dropped_create_bills_the_prediction_and_resets_a_held_connection(sim):
    """A sync create (`Prefer: wait`) whose connection is cut while it is held: the prediction
    exists and runs on, the client gets no answer (a transport error, not an HTTP status)."""
    sim.configure(drop_create_next=1, drop_create_after=0.5)
    began = time.monotonic()
    with pytest.raises(httpx.TransportError):
        httpx.post(
            f"{sim.url}/v1/models/google/veo-3-fast/predictions",
            headers={**AUTH, "Prefer": "wait=30"},
            json={"input": {"prompt": "cut"}},
            timeout=20,
        )
    assert 0.5 <= time.monotonic() - began < 5.0  # cut after drop_create_after, not at the wait's end
    ledger = sim.ledger()
    assert ledger["creations"] == 1 and ledger["dropped_creates"] == 1
    assert ledger["client_errors"] == {}
    listed = httpx.get(f"{sim.url}/v1/predictions", headers=AUTH).json()["results"]
    assert [p["input"]["prompt"] for p in listed] == ["cut"]
    # Only the next K, and a drop never outlasts the wait the client asked for:
    sim.configure(drop_create_next=1, drop_create_after=30.0)
    began = time.monotonic()
    with pytest.raises(httpx.TransportError):
        httpx.post(
            f"{sim.url}/v1/models/google/veo-3-fast/predictions",
            headers={**AUTH, "Prefer": "wait=1"},
            json={"input": {"prompt": "cut at the wait's end"}},
            timeout=20,
        )
    assert time.monotonic() - began < 10.0
    assert create_raw(sim, "next one").status_code == 201
    assert sim.ledger()["dropped_creates"] == 2
