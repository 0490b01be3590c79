"""The stand-in through the OFFICIAL client (replicate 1.0.7): what it sends, the stand-in must answer."""

from __future__ import annotations

import hashlib
import io
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
import replicate
from PIL import Image
from replicate.exceptions import ReplicateError
from replicate.helpers import FileOutput

from tests.support.wait import wait_until

TOKEN = "r8_sim_test_token"


def client_for(sim) -> replicate.Client:
    return replicate.Client(api_token=TOKEN, base_url=sim.url)


def fetch(url: str) -> bytes:
    response = httpx.get(url, timeout=10)
    response.raise_for_status()
    return response.content


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_run_single_output_model_returns_one_url_of_a_real_image(sim):
    client = client_for(sim)
    output = client.run(
        "google/nano-banana", input={"prompt": "a red fox", "aspect_ratio": "16:9", "output_format": "png"}
    )
    # http: URLs stay plain strings in 1.0.7 (FileOutput only for https:/data:)
    assert isinstance(output, str) and output.startswith(sim.url + "/delivery/")
    data = fetch(output)
    image = Image.open(io.BytesIO(data))
    assert image.format == "PNG"
    assert abs(image.width / image.height - 16 / 9) < 0.1
    assert sim.ledger()["files_served"][output[len(sim.url) :]] == sha(data)


def test_run_list_output_model_returns_num_outputs_distinct_images(sim):
    output = client_for(sim).run(
        "black-forest-labs/flux-dev",
        input={"prompt": "a blue bird", "num_outputs": 3, "output_format": "jpg", "aspect_ratio": "9:16"},
    )
    assert isinstance(output, list) and len(output) == 3
    blobs = [fetch(url) for url in output]
    assert len({sha(b) for b in blobs}) == 3
    for blob in blobs:
        image = Image.open(io.BytesIO(blob))
        assert image.format == "JPEG" and image.height > image.width
    ledger = sim.ledger()
    assert sorted(ledger["files_served"].values()) == sorted(sha(b) for b in blobs)
    assert ledger["creations_by_model"] == {"black-forest-labs/flux-dev": 1}


def test_image_scale_sets_area_and_default_format_follows_the_model(sim_factory):
    sim = sim_factory(image_scale=0.04)  # ~40,000 px
    url = client_for(sim).run("qwen/qwen-image", input={"prompt": "x", "aspect_ratio": "1:1"})[0]
    assert url.endswith(".webp")
    image = Image.open(io.BytesIO(fetch(url)))
    assert image.format == "WEBP" and image.size == (200, 200)


def test_create_then_wait_walks_the_lifecycle(sim_factory):
    sim = sim_factory(latency_scale=0.05)
    client = client_for(sim)
    prediction = client.predictions.create(
        model="black-forest-labs/flux-kontext-max",
        input={"prompt": "edit me", "input_image": "https://example.com/a.png"},
    )
    assert prediction.status == "starting"
    assert len(prediction.id) == 26 and prediction.id.isalnum() and prediction.id == prediction.id.lower()
    assert prediction.urls["get"].endswith(f"/v1/predictions/{prediction.id}")
    assert prediction.model == "black-forest-labs/flux-kontext-max"
    prediction.wait()
    assert prediction.status == "succeeded"
    assert isinstance(prediction.output, str) and prediction.output.endswith(".png")
    assert prediction.started_at and prediction.completed_at and prediction.error is None
    assert (
        prediction.metrics["predict_time"] > 0
        and prediction.metrics["total_time"] >= prediction.metrics["predict_time"]
    )
    raw = httpx.get(prediction.urls["get"], headers={"Authorization": f"Bearer {TOKEN}"}).json()
    for key in (
        "id",
        "model",
        "version",
        "input",
        "output",
        "data_removed",
        "error",
        "status",
        "created_at",
        "started_at",
        "completed_at",
        "urls",
        "logs",
        "metrics",
    ):
        assert key in raw
    assert raw["data_removed"] is False
    ledger = sim.ledger()
    assert ledger["predictions_by_status"] == {"succeeded": 1}
    assert ledger["in_flight"] == 0 and ledger["peak_in_flight"] == 1


def test_create_by_version_id_and_by_owner_name_version(sim):
    client = client_for(sim)
    model = client.models.get("black-forest-labs/flux-1.1-pro-ultra")
    version_id = model.latest_version.id
    assert len(version_id) == 64
    prediction = client.predictions.create(version=version_id, input={"prompt": "by version"})
    assert prediction.version == version_id and prediction.model == "black-forest-labs/flux-1.1-pro-ultra"
    # run() with owner/name:version posts to /v1/predictions and fetches the version too
    output = client.run(f"black-forest-labs/flux-1.1-pro-ultra:{version_id}", input={"prompt": "pinned"})
    assert isinstance(output, str) and output.endswith(".jpg")
    with pytest.raises(ReplicateError) as info:
        client.predictions.create(version="0" * 64, input={"prompt": "x"})
    assert info.value.status == 422


def test_models_get_publishes_each_models_input_schema(sim):
    client = client_for(sim)
    model = client.models.get("black-forest-labs/flux-dev")
    schema = model.latest_version.openapi_schema["components"]["schemas"]
    inputs = schema["Input"]
    assert inputs["required"] == ["prompt"]
    props = inputs["properties"]
    assert props["num_outputs"]["minimum"] == 1 and props["num_outputs"]["maximum"] == 4
    assert props["guidance"]["type"] == "number" and props["guidance"]["maximum"] == 10
    assert props["aspect_ratio"]["allOf"] == [{"$ref": "#/components/schemas/aspect_ratio"}]
    assert "21:9" in schema["aspect_ratio"]["enum"]
    assert schema["Output"]["type"] == "array"
    assert model.latest_version.cog_version and model.latest_version.created_at

    edit = client.models.get("espressotechie/qwen-imgedit-4bit").latest_version.openapi_schema
    assert edit["components"]["schemas"]["Input"]["required"] == ["prompt", "image"]
    banana = client.models.get("google/nano-banana").latest_version.openapi_schema["components"]["schemas"]
    assert banana["Input"]["properties"]["image_input"]["maxItems"] == 3
    assert banana["Output"] == {"type": "string", "format": "uri", "title": "Output"}


def test_invalid_input_is_a_422_naming_the_field_and_unknown_model_a_404(sim):
    client = client_for(sim)
    with pytest.raises(ReplicateError) as info:
        client.predictions.create(
            model="black-forest-labs/flux-dev", input={"prompt": "x", "num_outputs": 5, "aspect_ratio": "7:3"}
        )
    assert info.value.status == 422
    assert "input.num_outputs" in info.value.detail and "input.aspect_ratio" in info.value.detail
    with pytest.raises(ReplicateError) as info:
        client.predictions.create(model="google/imagen-4-ultra", input={"aspect_ratio": "1:1"})
    assert info.value.status == 422 and "prompt is required" in info.value.detail
    with pytest.raises(ReplicateError) as info:
        client.predictions.create(model="espressotechie/qwen-imgedit-4bit", input={"prompt": "x"})
    assert "image is required" in info.value.detail
    with pytest.raises(ReplicateError) as info:
        client.predictions.create(model="acme/no-such-model", input={"prompt": "x"})
    assert info.value.status == 404
    with pytest.raises(ReplicateError) as info:
        client.models.get("acme/no-such-model")
    assert info.value.status == 404
    ledger = sim.ledger()
    assert ledger["creations"] == 0 and ledger["client_errors"] == {"422": 3, "404": 2}


def test_files_create_and_local_file_inputs_are_uploaded(sim, tmp_path):
    client = client_for(sim)
    picture = tmp_path / "ref.png"
    Image.new("RGB", (20, 10), (1, 2, 3)).save(picture)
    uploaded = client.files.create(picture)
    assert uploaded.name == "ref.png" and uploaded.content_type == "image/png"
    assert uploaded.size == picture.stat().st_size
    assert uploaded.checksums["sha256"] == sha(picture.read_bytes())
    assert client.files.get(uploaded.id).id == uploaded.id
    assert fetch(uploaded.urls["download"]) == picture.read_bytes()
    # the client uploads a file object given as input and passes its URL on
    with picture.open("rb") as handle:
        prediction = client.predictions.create(
            model="google/nano-banana", input={"prompt": "fuse", "image_input": [handle]}
        )
    assert prediction.input["image_input"][0].startswith(sim.url + "/v1/files/")
    assert sim.ledger()["files_uploaded"] == 2


def test_cancel_a_running_prediction(sim_factory):
    sim = sim_factory(latency_scale=1.0)  # several seconds: still running when canceled
    client = client_for(sim)
    prediction = client.predictions.create(model="google/veo-3-fast", input={"prompt": "waves"})
    assert sim.ledger()["in_flight"] == 1
    prediction.cancel()
    assert prediction.status == "canceled" and prediction.output is None and prediction.completed_at
    assert client.predictions.get(prediction.id).status == "canceled"
    ledger = sim.ledger()
    assert ledger["in_flight"] == 0 and ledger["predictions_by_status"] == {"canceled": 1}


def test_create_over_the_limit_raises_429_and_the_ledger_counts_it(sim_factory):
    sim = sim_factory(create_limit=2, window=60)
    client = client_for(sim)
    for i in range(2):
        client.predictions.create(model="black-forest-labs/flux-dev", input={"prompt": f"p{i}"})
    with pytest.raises(ReplicateError) as info:
        client.predictions.create(model="black-forest-labs/flux-dev", input={"prompt": "p2"})
    assert info.value.status == 429
    assert "Request was throttled" in info.value.detail
    raw = httpx.post(
        f"{sim.url}/v1/models/black-forest-labs/flux-dev/predictions",
        headers={"Authorization": f"Bearer {TOKEN}"},
        json={"input": {"prompt": "p3"}},
    )
    assert raw.status_code == 429
    body = raw.json()
    assert raw.headers["content-type"].startswith("application/problem+json")
    assert body["status"] == 429 and 55 <= body["retry_after"] <= 60
    assert raw.headers["Retry-After"] == str(body["retry_after"])
    assert f"~{body['retry_after']}s" in body["detail"]
    ledger = sim.ledger()
    assert ledger["creations"] == 2 and ledger["rejected_429"]["create"] == 2
    assert ledger["max_creations_in_window"] == 2
    # reads have their own budget: still fine
    assert client.predictions.list().results


def test_prefer_wait_returns_the_finished_prediction_and_echoes_preference(sim):
    client = client_for(sim)
    # replicate 1.0.7 quirk: predictions.create(model=..., wait=N) DROPS `wait` (it pops it before
    # delegating); models.predictions.create keeps it.
    prediction = client.models.predictions.create(
        model="black-forest-labs/flux-dev", input={"prompt": "quick"}, wait=10
    )
    assert prediction.status == "succeeded" and len(prediction.output) == 1
    raw = httpx.post(
        f"{sim.url}/v1/models/google/imagen-4-ultra/predictions",
        timeout=20,
        headers={"Authorization": f"Bearer {TOKEN}", "Prefer": "wait"},
        json={"input": {"prompt": "w"}},
    )
    assert raw.status_code == 201 and raw.headers["Preference-Applied"] == "wait=60"
    assert raw.json()["status"] == "succeeded"
    bad = httpx.post(
        f"{sim.url}/v1/models/google/imagen-4-ultra/predictions",
        headers={"Authorization": f"Bearer {TOKEN}", "Prefer": "wait=61"},
        json={"input": {"prompt": "w"}},
    )
    assert bad.status_code == 400


def test_prefer_wait_times_out_with_a_running_prediction(sim_factory):
    sim = sim_factory(latency_scale=1.0)
    raw = httpx.post(
        f"{sim.url}/v1/models/google/veo-3-fast/predictions",
        timeout=10,
        headers={"Authorization": f"Bearer {TOKEN}", "Prefer": "wait=1"},
        json={"input": {"prompt": "w"}},
    )
    assert raw.status_code == 201 and raw.headers["Preference-Applied"] == "wait=1"
    assert raw.json()["status"] in ("starting", "processing")
    sim.configure(wait_overrun=1.0)  # answered a second after the wait ran out
    began = time.monotonic()
    late = httpx.post(
        f"{sim.url}/v1/models/google/veo-3-fast/predictions",
        timeout=10,
        headers={"Authorization": f"Bearer {TOKEN}", "Prefer": "wait=1"},
        json={"input": {"prompt": "late answer"}},
    )
    assert late.status_code == 201 and time.monotonic() - began >= 2.0


class _Receiver(BaseHTTPRequestHandler):
    received: list = []

    def do_POST(self):  # noqa: N802 - http.server's name
        body = self.rfile.read(int(self.headers["Content-Length"])).decode()
        self.received.append((dict(self.headers), body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


def test_webhooks_are_signed_and_verify_with_the_official_validator(sim):
    client = client_for(sim)
    _Receiver.received = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_port}/hook"
        done = client.predictions.create(
            model="black-forest-labs/flux-dev",
            input={"prompt": "hooked"},
            webhook=url,
            webhook_events_filter=["completed"],
        )
        everything = client.predictions.create(
            model="google/nano-banana", input={"prompt": "all events"}, webhook=url
        )
        done.wait()
        everything.wait()
        wait_until(lambda: len(_Receiver.received) >= 5, 10, "five deliveries")
    finally:
        server.shutdown()
    secret = client.webhooks.default.secret()
    assert secret.key.startswith("whsec_")
    by_prediction: dict[str, list[str]] = {}
    for headers, body in _Receiver.received:
        assert replicate.webhooks.validate(headers=headers, body=body, secret=secret, tolerance=60) is None
        payload = json.loads(body)
        by_prediction.setdefault(payload["id"], []).append(payload["status"])
    assert by_prediction[done.id] == ["succeeded"]  # filter: completed only
    assert by_prediction[everything.id][0] == "starting"  # start, logs, output, completed
    assert by_prediction[everything.id][-1] == "succeeded" and len(by_prediction[everything.id]) == 4
    tampered = dict(_Receiver.received[0][0])
    with pytest.raises(replicate.webhook.InvalidSignatureError):
        replicate.webhooks.validate(headers=tampered, body=_Receiver.received[0][1] + " ", secret=secret)
    # the sim counts a delivery once the receiver has answered
    wait_until(lambda: sim.ledger()["webhooks"]["sent"] >= 5, 5, "the stand-in to count five deliveries")
    assert sim.ledger()["webhooks"] == {
        "sent": 5,
        "failed": 0,
        "by_event": {"start": 1, "logs": 1, "output": 1, "completed": 2},
    }


def test_data_uri_outputs_become_file_outputs_with_the_ledgers_bytes(sim_factory):
    sim = sim_factory(data_uri_outputs=True)
    outputs = client_for(sim).run("black-forest-labs/flux-dev", input={"prompt": "inline", "num_outputs": 2})
    assert all(isinstance(o, FileOutput) and o.url.startswith("data:image/webp;base64,") for o in outputs)
    shas = {sha(o.read()) for o in outputs}
    assert shas == set(sim.ledger()["files_served"].values()) and len(shas) == 2


def test_video_models_return_one_small_mp4(sim_factory):
    sim = sim_factory(latency_scale=0.001)
    client = client_for(sim)
    veo = client.run("google/veo-3-fast", input={"prompt": "sea", "aspect_ratio": "9:16"})
    kling = client.run("kwaivgi/kling-v2.1-master", input={"prompt": "sea", "duration": 10})
    blobs = [fetch(veo), fetch(kling)]
    assert veo.endswith(".mp4") and kling.endswith(".mp4")
    for blob in blobs:
        assert blob[4:8] == b"ftyp" and b"moov" in blob and b"mdat" in blob
    assert blobs[0] != blobs[1]


def test_predictions_list_pages_newest_first(sim_factory):
    sim = sim_factory(latency_scale=0)
    client = client_for(sim)
    ids = [
        client.predictions.create(model="google/imagen-4-ultra", input={"prompt": f"n{i}"}).id
        for i in range(105)
    ]
    first = client.predictions.list()
    assert [p.id for p in first.results] == ids[::-1][:100]
    second = client.predictions.list(first.next)
    assert [p.id for p in second.results] == ids[::-1][100:] and second.next is None


def test_token_option_rejects_other_tokens(sim_factory):
    sim = sim_factory(token="r8_right")
    with pytest.raises(ReplicateError) as info:
        replicate.Client(api_token="r8_wrong", base_url=sim.url).accounts.current()
    assert info.value.status == 401
    assert (
        replicate.Client(api_token="r8_right", base_url=sim.url).accounts.current().username
        == "replicate-sim"
    )
    assert httpx.get(f"{sim.url}/v1/account").status_code == 401
    assert sim.ledger()["unauthorized"] == 2
