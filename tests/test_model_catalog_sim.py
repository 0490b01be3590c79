"""Models by reference against the stand-in over HTTP, through the official client (replicate
1.0.7), with the real Redis: the stand-in's catalog, versions and deployments; creating through
each endpoint; reading schemas once for the fleet; `producer models`.

The stand-in serves tests/data/replicate_catalog/catalog.json: the built-in models plus real
published schemas (SDXL in two versions, an interior-design ControlNet, a face fusion model, Deforum
video) and a deployment acme/sdxl-prod of the latest SDXL.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest
import replicate
from click.testing import CliRunner
from replicate.exceptions import ReplicateError

from producer.api.connections import open_limiter
from producer.cli import cli
from shared.keys import Keys
from shared.models.openapi import SchemaError
from shared.models.reference import parse_ref
from shared.models.schema_store import SchemaStore
from workers.replicate_calls import ReplicateCalls, created_for

CATALOG = Path(__file__).parent / "data" / "replicate_catalog" / "catalog.json"
SDXL_LATEST = "39ed52f2a78e934b3ba6e2a89f5b1c712de7dfea535525255b1aa35c5565e08b"
SDXL_OLD = "a00d0b7dcbb9c3fbb34ba87d2d5b46c56969c84a628bf778a7fdaec30b1b99c5"
TOKEN = "r8_sim_test_token"


@pytest.fixture(scope="module")
def catalog_sim():
    from replicate_sim.control import start_sim

    sim = start_sim(catalog=CATALOG, latency_scale=0.01, image_scale=0.01)
    yield sim
    sim.stop()


@pytest.fixture
def sim(catalog_sim):
    catalog_sim.reset()
    return catalog_sim


def client_for(sim) -> replicate.Client:
    return replicate.Client(api_token=TOKEN, base_url=sim.url)


# ------------------------------------------------------------------------------- the stand-in's catalog
def test_official_client_reads_models_versions_and_deployments(sim):
    client = client_for(sim)
    sdxl = client.models.get("stability-ai/sdxl")
    assert sdxl.latest_version.id == SDXL_LATEST
    assert (
        "disable_safety_checker"
        in sdxl.latest_version.openapi_schema["components"]["schemas"]["Input"]["properties"]
    )
    assert [v.id for v in sdxl.versions.list()] == [SDXL_LATEST, SDXL_OLD]  # newest first
    old = sdxl.versions.get(SDXL_OLD)
    assert "disable_safety_checker" not in old.openapi_schema["components"]["schemas"]["Input"]["properties"]
    deployment = client.deployments.get("acme/sdxl-prod")
    release = deployment.current_release
    assert (release.model, release.version, release.configuration.hardware) == (
        "stability-ai/sdxl",
        SDXL_LATEST,
        "gpu-a40-large",
    )
    assert [d.name for d in client.deployments.list()] == ["sdxl-prod"]
    with pytest.raises(ReplicateError) as info:
        client.deployments.get("acme/nothing")
    assert info.value.status == 404


def test_official_client_creates_through_each_endpoint_and_the_ledger_names_it(sim):
    client = client_for(sim)
    by_model = client.models.predictions.create(
        model="stability-ai/sdxl", input={"prompt": "a", "width": 512}
    )
    by_version = client.predictions.create(version=SDXL_OLD, input={"prompt": "b", "scheduler": "DDIM"})
    by_deployment = client.deployments.predictions.create(deployment="acme/sdxl-prod", input={"prompt": "c"})
    assert (by_model.model, by_model.version) == ("stability-ai/sdxl", SDXL_LATEST)
    assert (by_version.model, by_version.version) == ("stability-ai/sdxl", SDXL_OLD)
    assert (by_deployment.model, by_deployment.version) == ("stability-ai/sdxl", SDXL_LATEST)
    listed = {p["id"]: p for p in client._request("GET", "/v1/predictions").json()["results"]}
    assert listed[by_deployment.id]["deployment"] == "acme/sdxl-prod"
    assert "deployment" not in listed[by_model.id]
    ledger = sim.ledger()
    assert ledger["creations_by_route"] == {
        "models.predictions.create": 1,
        "predictions.create": 1,
        "deployments.predictions.create": 1,
    }
    # each version is checked against its own schema, enums resolved from allOf/$ref
    with pytest.raises(ReplicateError) as info:
        client.predictions.create(version=SDXL_OLD, input={"prompt": "d", "scheduler": "nope"})
    assert info.value.status == 422 and "scheduler must be one of" in info.value.detail
    with pytest.raises(ReplicateError) as info:
        client.models.predictions.create(
            model="lucataco/modelscope-facefusion", input={"user_image": "https://x/y.png"}
        )
    assert info.value.status == 422 and "template_image is required" in info.value.detail


def test_outputs_follow_each_schema(sim):
    client = client_for(sim)
    images = client.run(
        f"stability-ai/sdxl:{SDXL_LATEST}",
        input={"prompt": "wide", "width": 1536, "height": 768, "num_outputs": 2},
    )
    assert isinstance(images, list) and len(images) == 2 and all(str(u).endswith(".png") for u in images)
    one = client.run("catio-apps/controlnet-interior-design", input={"image": "https://example.com/room.jpg"})
    assert isinstance(one, str) and one.endswith("/output.png")
    video = client.run("deforum/deforum_stable_diffusion", input={"animation_prompts": "0: a fox", "fps": 10})
    assert isinstance(video, str) and video.endswith("/output.mp4")


# ------------------------------------------------------------------------------- the fleet's Replicate calls
def test_replicate_calls_create_through_the_endpoint_each_reference_names(sim, settings):
    calls = ReplicateCalls(settings.with_(replicate_base_url=sim.url))
    refs = ["stability-ai/sdxl", f"stability-ai/sdxl:{SDXL_OLD}", "deployments/acme/sdxl-prod"]
    try:
        created = {ref: calls.create(ref, {"prompt": "same input"}) for ref in refs}
        views = {v.id: v for v in calls.list_page()[0]}
    finally:
        calls.close()
    assert sim.ledger()["creations_by_route"] == {
        "models.predictions.create": 1,
        "predictions.create": 1,
        "deployments.predictions.create": 1,
    }
    # reconciliation tells them apart although model and input are the same: a pinned version
    # and a deployment recognise only their own; by model, any version of the model counts
    # (Replicate's listing does not say which endpoint created a prediction)
    matches = {
        ref: [other for other in refs if created_for(other, views[view.id])] for ref, view in created.items()
    }
    assert matches == {refs[0]: [refs[0]], refs[1]: [refs[0], refs[1]], refs[2]: [refs[2]]}


def test_read_schema_for_each_kind_of_reference(sim, settings):
    calls = ReplicateCalls(settings.with_(replicate_base_url=sim.url))
    reads: list[str] = []
    try:
        latest = calls.read_schema(parse_ref("stability-ai/sdxl"), lambda: reads.append("model"))
        old = calls.read_schema(parse_ref(f"stability-ai/sdxl:{SDXL_OLD}"), lambda: reads.append("version"))
        deployed = calls.read_schema(
            parse_ref("deployments/acme/sdxl-prod"), lambda: reads.append("deployment")
        )
        with pytest.raises(SchemaError, match="stability-ai/sdxll: not found on Replicate"):
            calls.read_schema(parse_ref("stability-ai/sdxll"))
    finally:
        calls.close()
    assert (latest.version, old.version, deployed.version) == (SDXL_LATEST, SDXL_OLD, SDXL_LATEST)
    assert deployed.model == "stability-ai/sdxl" and deployed.ref == "deployments/acme/sdxl-prod"
    assert reads == ["model", "version", "deployment", "deployment"]  # a read token before every GET
    assert (
        "disable_safety_checker" not in old.properties() and "disable_safety_checker" in latest.properties()
    )


def test_a_schema_is_read_once_for_the_fleet_and_spends_read_tokens(sim, settings, redis_client):
    """32 threads in 4 stores (as on 4 hosts) ask for the same schemas at once: one GET each."""
    settings = settings.with_(replicate_base_url=sim.url, schema_ttl=120)
    calls = ReplicateCalls(settings)
    limiter = open_limiter(settings, redis_client)
    stores = [
        SchemaStore(
            redis_client,
            Keys(settings.key_prefix),
            read=calls.read_schema,
            ttl=settings.schema_ttl,
            take_read_token=lambda: limiter.take_read_token(timeout=10),
        )
        for _ in range(4)
    ]
    results: list[str] = []
    barrier = threading.Barrier(32)

    def ask(store: SchemaStore, ref: str) -> None:
        barrier.wait()
        results.append(store.get(ref).version)

    threads = [
        threading.Thread(
            target=ask, args=(stores[i % 4], "deployments/acme/sdxl-prod" if i % 2 else "stability-ai/sdxl")
        )
        for i in range(32)
    ]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert results == [SDXL_LATEST] * 32
        reads = sim.ledger()["reads_by_route"]
        assert (reads.get("models.get"), reads.get("deployments.get"), reads.get("models.versions.get")) == (
            1,
            1,
            1,
        )
        assert sum(s.reads for s in stores) == 2
        assert limiter.status().reads_in_window == 3  # one token per GET
        ttl = redis_client.ttl(Keys(settings.key_prefix).model_schema("stability-ai/sdxl"))
        assert 0 < ttl <= 120
    finally:
        calls.close()
        limiter.close()


# ------------------------------------------------------------------------------- producer models
def test_producer_models_show_describes_any_model_from_its_schema(sim, settings, tmp_path):
    env = {**settings.with_(replicate_base_url=sim.url).as_env(), "REPLICATE_API_TOKEN": TOKEN}
    runner = CliRunner()
    result = runner.invoke(
        cli, ["--env-file", str(tmp_path / "none.env"), "models", "show", "stability-ai/sdxl"], env=env
    )
    assert result.exit_code == 0, result.output
    out = result.output
    assert f"published schema of stability-ai/sdxl (version {SDXL_LATEST})" in out
    assert "price unknown" in out and "no fallback" in out
    assert (
        "scheduler" in out and "one of 'DDIM', 'DPMSolverMultistep'" in out and "(default 'K_EULER')" in out
    )
    assert "num_outputs" in out and "an integer from 1 to 4" in out and "references 'image'" in out
    again = runner.invoke(
        cli,
        ["--env-file", str(tmp_path / "none.env"), "models", "show", "stability-ai/sdxl", "--json"],
        env=env,
    )
    assert again.exit_code == 0 and '"version": "' + SDXL_LATEST in again.output
    assert sim.ledger()["reads_by_route"]["models.get"] == 1  # the second came from Redis
    missing = runner.invoke(
        cli, ["--env-file", str(tmp_path / "none.env"), "models", "show", "stability-ai/sdxll"], env=env
    )
    assert missing.exit_code == 2
    assert "stability-ai/sdxll: not found on Replicate" in missing.output
    listing = runner.invoke(cli, ["--env-file", str(tmp_path / "none.env"), "models"], env=env)
    assert (
        listing.exit_code == 0
        and "black-forest-labs/flux-dev" in listing.output
        and "[built-in]" in listing.output
    )


# ------------------------------------------------------------------------------- producer submit
def cli_env(settings, sim) -> dict[str, str]:
    return {**settings.with_(replicate_base_url=sim.url).as_env(), "REPLICATE_API_TOKEN": TOKEN}


def test_bad_inputs_for_a_schema_model_exit_2_naming_item_field_and_allowed_values(
    sim, settings, tmp_path, redis_client
):
    prompts = tmp_path / "prompts.json"
    prompts.write_text(
        json.dumps(
            [
                {"prompt": "fine", "model": "stability-ai/sdxl", "params": {"scheduler": "DDIM"}},
                {
                    "prompt": "bad enum",
                    "model": "stability-ai/sdxl",
                    "params": {"scheduler": "ddim", "num_outputs": 7},
                },
                {
                    "prompt": "typo",
                    "model": f"stability-ai/sdxl:{SDXL_OLD}",
                    "params": {"disable_safety_checker": True},
                },
                {
                    "prompt": "faces",
                    "model": "lucataco/modelscope-facefusion",
                    "params": {"user_image": "face.png"},
                },
                {"prompt": "nowhere", "model": "acme/nothing"},
            ]
        )
    )
    result = CliRunner().invoke(
        cli, ["--env-file", str(tmp_path / "none.env"), "submit", str(prompts)], env=cli_env(settings, sim)
    )
    assert result.exit_code == 2, result.output
    err = result.stderr
    assert (
        "error: item 1, field 'params.scheduler': 'ddim' is not allowed: must be one of 'DDIM', "
        "'DPMSolverMultistep'"
    ) in err and "Did you mean 'DDIM'?" in err
    assert "item 1, field 'params.num_outputs': 7 is above the maximum: must be an integer from 1 to 4" in err
    assert (
        f"item 2, field 'params.disable_safety_checker': unknown parameter 'disable_safety_checker' for "
        f"stability-ai/sdxl:{SDXL_OLD}" in err
    )
    assert "item 3, field 'params.template_image': 'template_image' is required" in err
    assert "item 3, field 'params.user_image': file 'face.png': file not found" in err
    assert "item 4, field 'model': acme/nothing: not found on Replicate" in err
    assert "item 0" not in err
    assert not redis_client.keys(f"{settings.key_prefix}:batch*")  # nothing recorded or enqueued
    assert sim.ledger()["creations"] == 0


def test_dry_run_plan_shows_price_unknown_and_a_price_per_call(sim, settings, tmp_path):
    prompts = tmp_path / "prompts.json"
    prompts.write_text(
        json.dumps(
            {
                "items": [
                    {"prompt": "a", "model": "flux-dev"},
                    {"prompt": "b", "model": "deployments/acme/sdxl-prod"},
                ]
            }
        )
    )
    base = ["--env-file", str(tmp_path / "none.env"), "submit", str(prompts), "--dry-run"]
    plain = CliRunner().invoke(cli, base, env=cli_env(settings, sim))
    assert plain.exit_code == 0, plain.output
    assert "deployments/acme/sdxl-prod" in plain.output and "price unknown" in plain.output
    assert "price unknown for 1 item(s), not counted above" in plain.output
    priced = CliRunner().invoke(
        cli, [*base, "--price-per-call", "0.05", "--json"], env=cli_env(settings, sim)
    )
    assert priced.exit_code == 0, priced.output
    plan = json.loads(priced.stdout.splitlines()[-1])
    assert plan["estimated_cost_usd"] == pytest.approx(0.075) and plan["price_unknown_items"] == 0
    assert [r["price"] for r in plan["plan"]] == ["$0.025/image", "$0.05/call (--price-per-call)"]
