"""Any model on Replicate, end to end: real celery workers, the stand-in serving real published
schemas (tests/data/replicate_catalog), the real Redis.

One fleet for the module's test: a batch mixing a curated model, schema-only models (one with two
local file inputs, a video model), a pinned version and a deployment completes, each created
through its own endpoint; then 500 items on a schema-only model read its schema once.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

import producer

pytestmark = pytest.mark.e2e

CATALOG = Path(__file__).parent / "data" / "replicate_catalog" / "catalog.json"
SDXL_OLD = "a00d0b7dcbb9c3fbb34ba87d2d5b46c56969c84a628bf778a7fdaec30b1b99c5"
TOKEN = "r8_sim_test_token"


def test_mixed_references_complete_through_their_endpoints_and_a_big_batch_reads_one_schema(
    settings, redis_client, sim_factory, worker_factory, tmp_path
):
    sim = sim_factory(catalog=CATALOG)
    settings = settings.with_(replicate_base_url=sim.url, replicate_api_token=TOKEN)
    worker_factory(settings, count=2, sim=sim)
    for shade, name in enumerate(("body.png", "face.png")):
        Image.new("RGB", (32, 32), (200, 100, 50 + shade)).save(tmp_path / name)
    items = [
        {"id": "curated", "prompt": "a fox", "model": "flux-dev"},
        {
            "id": "schema",
            "prompt": "a lighthouse",
            "model": "stability-ai/sdxl",
            "params": {"width": 768, "height": 512, "scheduler": "DDIM", "num_outputs": 2},
        },
        {
            "id": "pinned",
            "prompt": "an owl",
            "model": f"stability-ai/sdxl:{SDXL_OLD}",
            "params": {"refine": "no_refiner"},
        },
        {"id": "deployed", "prompt": "a whale", "model": "deployments/acme/sdxl-prod"},
        {
            "id": "files",
            "prompt": "fused",
            "model": "lucataco/modelscope-facefusion",
            "params": {"template_image": str(tmp_path / "body.png"), "user_image": "face.png"},
        },
        {
            "id": "video",
            "prompt": "a fox running",
            "model": "deforum/deforum_stable_diffusion",
            "params": {"animation_prompts": "0: a fox running", "fps": 10},
        },
    ]
    source = tmp_path / "prompts.json"
    source.write_text(json.dumps(items))
    batch = producer.submit(str(source), settings=settings)
    snap = batch.wait(timeout=120, poll_interval=0.2)
    records = {r["id"]: r for r in batch.results()}
    assert snap.all_succeeded, records
    ledger = sim.ledger()
    assert ledger["creations_by_route"] == {
        "models.predictions.create": 4,
        "predictions.create": 1,
        "deployments.predictions.create": 1,
    }
    assert ledger["files_uploaded"] == 2 and ledger["duplicate_inputs"] == 0  # both files, uploaded at submit
    assert [p.suffix for p in batch.output_paths(records["schema"])] == [".png", ".png"]
    assert batch.output_paths(records["video"])[0].suffix == ".mp4"
    assert records["curated"]["price"] == "$0.025/image" and records["schema"]["price"] == "price unknown"
    manifest = json.loads(batch.write_manifest().read_text())
    assert {i["id"]: i["price"] for i in manifest["items"]}["deployed"] == "price unknown"
    reads_before = ledger["reads_by_route"]
    assert (reads_before.get("models.get"), reads_before.get("deployments.get")) == (
        3,
        1,
    )  # sdxl, fusion, deforum

    # a model nobody read yet: the producer reads its schema once, 500 items on 2 workers reuse it
    big = producer.submit(
        [f"room {i}" for i in range(500)],
        settings=settings,
        model="catio-apps/controlnet-interior-design",
        params={"seed": 7},
    )
    assert big.wait(timeout=240, poll_interval=0.5).all_succeeded
    after = sim.ledger()
    assert after["reads_by_route"]["models.get"] == reads_before["models.get"] + 1
    assert after["creations_by_model"]["catio-apps/controlnet-interior-design"] == 500


def test_a_lost_answer_is_reconciled_for_a_version_and_a_deployment(
    settings, redis_client, sim_factory, worker_factory
):
    """The create's answer is lost (502 after the prediction was made): the worker finds its
    prediction in the listing by version / by deployment name and input, and creates nothing more."""
    sim = sim_factory(catalog=CATALOG, ghost_create_next=2)
    settings = settings.with_(replicate_base_url=sim.url, replicate_api_token=TOKEN)
    worker_factory(settings, count=1, sim=sim)
    batch = producer.submit(
        [
            {"prompt": "an owl", "model": f"stability-ai/sdxl:{SDXL_OLD}"},
            {"prompt": "an owl", "model": "deployments/acme/sdxl-prod"},
        ],
        settings=settings,
    )
    assert batch.wait(timeout=120, poll_interval=0.2).all_succeeded, batch.results()
    ledger = sim.ledger()
    assert ledger["ghost_creates"] == 2 and ledger["creations"] == 2
    assert ledger["creations_by_route"] == {"predictions.create": 1, "deployments.predictions.create": 1}
    ids = {r["attempts"][-1]["prediction_id"] for r in batch.results()}
    assert len(ids) == 2  # each item adopted its own prediction, not the other's (same input, same model)
