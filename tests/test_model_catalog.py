"""Models by reference, checked against their own published schema (pure logic, no services).

The schemas are real ones Replicate published (tests/data/replicate_catalog/versions): SDXL (two
versions, width/height, enum scheduler behind allOf/$ref, a list of images), an interior-design
ControlNet (one image out), a face-fusion model (two required file inputs) and Deforum (video).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from shared.errors import ConfigError, UnpricedModelError
from shared.models import load_registry
from shared.models.openapi import ModelSchema, SchemaError
from shared.models.pricing import refuse_unpriced, unpriced
from shared.models.reference import ModelRef, parse_ref
from shared.models.validation import check_input
from shared.request import ImageRequest
from shared.routing import describe_plan, estimate_cost

pytestmark = pytest.mark.unit

VERSIONS = Path(__file__).parent / "data" / "replicate_catalog" / "versions"
SDXL_LATEST = "39ed52f2a78e934b3ba6e2a89f5b1c712de7dfea535525255b1aa35c5565e08b"
SDXL_OLD = "a00d0b7dcbb9c3fbb34ba87d2d5b46c56969c84a628bf778a7fdaec30b1b99c5"
FILES = {
    "stability-ai/sdxl": "stability-ai-sdxl-39ed52f2",
    f"stability-ai/sdxl:{SDXL_OLD}": "stability-ai-sdxl-a00d0b7d",
    "catio-apps/controlnet-interior-design": "catio-apps-controlnet-interior-design-32d731f4",
    "lucataco/modelscope-facefusion": "lucataco-modelscope-facefusion-52edbb2b",
    "deforum/deforum_stable_diffusion": "deforum-deforum_stable_diffusion-e22e7749",
}


def schema(ref: str) -> ModelSchema:
    version = json.loads((VERSIONS / f"{FILES[ref]}.json").read_text())
    return ModelSchema.from_openapi(ref, parse_ref(ref).model, version["id"], version["openapi_schema"])


@pytest.fixture(scope="module")
def registry():
    return load_registry()


# ------------------------------------------------------------------------------- references
@pytest.mark.parametrize(
    "text, ref, kind",
    [
        ("stability-ai/sdxl", ModelRef("stability-ai", "sdxl"), "model"),
        (f"stability-ai/sdxl:{SDXL_OLD}", ModelRef("stability-ai", "sdxl", version=SDXL_OLD), "version"),
        ("deployments/acme/sdxl-prod", ModelRef("acme", "sdxl-prod", deployment=True), "deployment"),
    ],
)
def test_references_parse_and_print_back(text, ref, kind):
    assert parse_ref(text) == ref and ref.kind == kind and str(ref) == text


@pytest.mark.parametrize(
    "text, message",
    [
        ("sdxl", "not a model reference"),
        ("stability-ai/sdxl:v2", "64 lowercase hexadecimal"),
        ("deployments/acme", "write deployments/owner/name"),
        (42, "not int"),
    ],
)
def test_bad_references_say_what_a_reference_looks_like(text, message):
    with pytest.raises(ValueError, match=message):
        parse_ref(text)


# ------------------------------------------------------------------------------- what a schema implies
def test_sdxl_schema_gives_its_parameters_reference_input_and_list_output(registry):
    spec = registry.spec_from_schema("stability-ai/sdxl", schema("stability-ai/sdxl"))
    assert (spec.kind, spec.output, spec.default_format) == ("image", "list", "png")
    assert spec.params["scheduler"].type == "enum" and "K_EULER" in spec.params["scheduler"].values
    assert spec.params["scheduler"].default == "K_EULER"  # the enum sits behind allOf/$ref
    assert (spec.params["num_outputs"].min, spec.params["num_outputs"].max) == (1, 4)
    assert spec.params["width"].type == "int" and spec.params["width"].default == 1024
    assert spec.reference_param == "image" and spec.file_params == ("mask",)
    assert spec.price is None and spec.price_text() == "price unknown" and spec.fallback == ()
    assert spec.output_count({"num_outputs": 3}) == 3 and spec.cost({}) is None


def test_single_uri_video_and_promptless_models(registry):
    interior = registry.spec_from_schema(
        "catio-apps/controlnet-interior-design", schema("catio-apps/controlnet-interior-design")
    )
    assert interior.output == "single" and interior.reference_param == "image"
    deforum = registry.spec_from_schema(
        "deforum/deforum_stable_diffusion", schema("deforum/deforum_stable_diffusion")
    )
    assert (deforum.kind, deforum.output, deforum.default_format) == ("video", "single", "mp4")
    assert deforum.prompt_param is None  # it takes animation_prompts, not prompt
    fusion = registry.spec_from_schema(
        "lucataco/modelscope-facefusion", schema("lucataco/modelscope-facefusion")
    )
    assert fusion.file_params == ("template_image", "user_image") and fusion.prompt_param is None


def test_a_model_that_returns_text_is_refused_with_the_reason(registry):
    llm = ModelSchema.from_openapi(
        "meta/llama",
        "meta/llama",
        "v",
        {
            "components": {
                "schemas": {
                    "Input": {"type": "object", "properties": {"prompt": {"type": "string"}}},
                    "Output": {"type": "array", "items": {"type": "string"}, "x-cog-array-type": "iterator"},
                }
            }
        },
    )
    with pytest.raises(SchemaError, match="meta/llama returns text, not files"):
        registry.spec_from_schema("meta/llama", llm)
    with pytest.raises(SchemaError, match="publishes no input schema"):
        ModelSchema.from_openapi("a/b", "a/b", "v", {"components": {"schemas": {}}})


# ------------------------------------------------------------------------------- validation (jsonschema)
def test_bad_inputs_are_named_with_what_is_allowed_and_a_did_you_mean(registry):
    spec = registry.spec_from_schema("stability-ai/sdxl", schema("stability-ai/sdxl"))
    values, problems = check_input(
        spec,
        {
            "prompt": "x",
            "scheduler": "K_EULR",
            "widht": 512,
            "num_outputs": 9,
            "guidance_scale": "high",
            "width": 768.0,
        },
    )
    text = {p.field: p.message for p in problems}
    assert set(text) == {"params.scheduler", "params.widht", "params.num_outputs", "params.guidance_scale"}
    assert "'K_EULR' is not allowed: must be one of 'DDIM'" in text["params.scheduler"]
    assert "Did you mean 'K_EULER'?" in text["params.scheduler"]
    assert "unknown parameter 'widht' for stability-ai/sdxl. Did you mean 'width'?" in text["params.widht"]
    assert "9 is above the maximum: must be an integer from 1 to 4" in text["params.num_outputs"]
    assert "must be a number from 1 to 50, not a string 'high'" in text["params.guidance_scale"]
    assert values["width"] == 768 and isinstance(values["width"], int)  # 768.0 sent as an integer


def test_required_inputs_and_each_version_its_own_schema(registry):
    fusion = registry.spec_from_schema(
        "lucataco/modelscope-facefusion", schema("lucataco/modelscope-facefusion")
    )
    _, problems = check_input(fusion, {"user_image": "https://example.com/me.png"}, field_of=lambda n: n)
    assert [(p.field, p.message) for p in problems] == [
        (
            "template_image",
            "'template_image' is required (Input body image) (model lucataco/modelscope-facefusion)",
        )
    ]
    latest = registry.spec_from_schema("stability-ai/sdxl", schema("stability-ai/sdxl"))
    old_ref = f"stability-ai/sdxl:{SDXL_OLD}"
    old = registry.spec_from_schema(old_ref, schema(old_ref))
    assert check_input(latest, {"disable_safety_checker": True})[1] == []
    (problem,) = check_input(old, {"disable_safety_checker": True})[1]
    assert f"unknown parameter 'disable_safety_checker' for {old_ref}" in problem.message


# ------------------------------------------------------------------------------- registry layering
def test_a_user_file_adds_only_a_price_a_route_and_an_alias(tmp_path):
    path = tmp_path / "models.toml"
    path.write_text(
        '[models."stability-ai/sdxl"]\nprice = 0.004\nprice_unit = "image"\naliases = ["sdxl"]\n'
        'fallback = ["black-forest-labs/flux-dev"]\n'
        '[models."deforum/deforum_stable_diffusion"]\nprompt_param = "animation_prompts"\n'
    )
    registry = load_registry(extra=path)
    assert registry.overlay_names() == ["deforum/deforum_stable_diffusion", "stability-ai/sdxl"]
    assert registry.schema_ref("sdxl") == "stability-ai/sdxl" and registry.schema_ref("flux-dev") is None
    old_ref = f"stability-ai/sdxl:{SDXL_OLD}"
    known = registry.with_schemas(
        {
            "stability-ai/sdxl": schema("stability-ai/sdxl"),
            old_ref: schema(old_ref),
            "deforum/deforum_stable_diffusion": schema("deforum/deforum_stable_diffusion"),
        }
    )
    sdxl = known.get("sdxl")
    assert sdxl.price_text() == "$0.004/image" and sdxl.fallback == ("black-forest-labs/flux-dev",)
    assert sdxl.cost({"num_outputs": 2}) == pytest.approx(0.008)
    assert "scheduler" in sdxl.params  # everything else from the schema
    assert (
        known.get(old_ref).price == 0.004 and known.get(old_ref).fallback == ()
    )  # price inherited, no route
    deforum = known.get("deforum/deforum_stable_diffusion")
    assert deforum.prompt_param == "animation_prompts" and "animation_prompts" not in deforum.params
    assert registry.get("flux-dev").price == 0.025 and registry.schema_ref("stability-ai/sdxl")  # unchanged


def test_an_overlay_that_does_not_fit_its_schema_names_the_file(tmp_path):
    path = tmp_path / "models.json"
    path.write_text(
        json.dumps(
            {
                "models": {
                    "stability-ai/sdxl": {"params": {"output_format": {"type": "enum", "values": ["jpg"]}}}
                }
            }
        )
    )
    with pytest.raises(ConfigError, match=f"{path}: model 'stability-ai/sdxl': field 'default_format'"):
        load_registry(extra=path).spec_from_schema("stability-ai/sdxl", schema("stability-ai/sdxl"))


# ------------------------------------------------------------------------------- price unknown
def request(index: int, model: str, price_per_call: float | None = None, route=()) -> ImageRequest:
    return ImageRequest(
        index=index,
        id=str(index),
        prompt="p",
        requested_model=model,
        model=model,
        route=tuple(route),
        price_per_call=price_per_call,
    )


def test_unknown_prices_show_in_the_plan_and_count_nothing(registry):
    known = registry.with_schemas({"stability-ai/sdxl": schema("stability-ai/sdxl")})
    batch = [
        request(0, "black-forest-labs/flux-dev"),
        request(1, "stability-ai/sdxl"),
        request(2, "stability-ai/sdxl"),
    ]
    assert estimate_cost(batch, known) == pytest.approx(0.025)
    plan = "\n".join(describe_plan(batch, known))
    assert "stability-ai/sdxl" in plan and "price unknown" in plan
    assert "price unknown for 2 item(s), not counted above" in plan
    priced = [request(1, "stability-ai/sdxl", price_per_call=0.01)]
    assert estimate_cost(priced, known) == pytest.approx(0.01)
    assert "--price-per-call $0.01" in "\n".join(describe_plan(priced, known))


def test_refuse_unpriced_names_each_unpriced_model_its_items_and_the_limit(registry):
    """The function issue 17 (spending limits) calls at submit while a limit is in force."""
    known = registry.with_schemas(
        {
            "stability-ai/sdxl": schema("stability-ai/sdxl"),
            "deforum/deforum_stable_diffusion": schema("deforum/deforum_stable_diffusion"),
        }
    )
    batch = [
        request(0, "black-forest-labs/flux-dev"),
        request(1, "stability-ai/sdxl"),
        request(2, "black-forest-labs/flux-dev", route=["deforum/deforum_stable_diffusion"]),
        request(3, "stability-ai/sdxl", price_per_call=0.02),
    ]
    assert unpriced(batch, known) == {"stability-ai/sdxl": [1], "deforum/deforum_stable_diffusion": [2]}
    with pytest.raises(UnpricedModelError) as info:
        refuse_unpriced(batch, known, limit="--max-cost $5")
    messages = [str(p) for p in info.value.problems]
    assert len(messages) == 2 and all(p.field == "model" for p in info.value.problems)
    assert messages[1].startswith(
        "field 'model': stability-ai/sdxl has no known price and a spending limit (--max-cost $5) is in force"
    )
    assert "(item(s) 1)" in messages[1] and "--price-per-call USD" in messages[1]
    refuse_unpriced([batch[0], batch[3]], known, limit="--max-cost $5")  # all priced: no refusal


# ------------------------------------------------------------------------------- routing a schema model
def test_route_item_checks_the_whole_input_against_the_schema(registry):
    from shared.routing import route_item

    known = registry.with_schemas({"stability-ai/sdxl": schema("stability-ai/sdxl")})
    routed = route_item("stability-ai/sdxl", {"width": 1536.0, "scheduler": "DDIM"}, 1, known)
    assert routed.problems == [] and routed.model == "stability-ai/sdxl" and routed.route == ()
    assert routed.params == {"width": 1536, "scheduler": "DDIM"}  # references stay out of params
    bad = route_item(
        "stability-ai/sdxl", {"scheduler": "ddim", "steps": 20}, 2, known, ref_field="image_input"
    )
    fields = {p.field: p.message for p in bad.problems}
    assert "Did you mean 'DDIM'?" in fields["params.scheduler"]
    assert "unknown parameter 'steps'" in fields["params.steps"]
    assert (
        fields["image_input"] == "2 reference images given; stability-ai/sdxl takes at most 1"
    )  # never rerouted


def test_a_promptless_model_gets_no_prompt_unless_a_registry_entry_names_its_input(registry, tmp_path):
    from shared.routing import build_input, route_item

    ref = "deforum/deforum_stable_diffusion"
    known = registry.with_schemas({ref: schema(ref)})
    routed = route_item(ref, {"fps": 12}, 0, known)
    assert routed.problems == [] and "takes no prompt" in routed.warnings[0]
    item = ImageRequest(index=0, id="0", prompt="a fox", requested_model=ref, model=ref, params={"fps": 12})
    assert build_input(item, ref, known)[0] == {"fps": 12}
    path = tmp_path / "m.toml"
    path.write_text(f'[models."{ref}"]\nprompt_param = "animation_prompts"\n')
    named = load_registry(extra=path).with_schemas({ref: schema(ref)})
    assert build_input(item, ref, named)[0] == {"animation_prompts": "a fox", "fps": 12}


def test_a_schema_that_cannot_be_had_is_what_items_naming_it_are_told(registry):
    llm = ModelSchema.from_openapi(
        "meta/llama",
        "meta/llama",
        "v",
        {
            "components": {
                "schemas": {"Input": {"type": "object", "properties": {}}, "Output": {"type": "string"}}
            }
        },
    )
    known = registry.with_schemas(
        {"meta/llama": llm}, failures={"acme/gone": "acme/gone: not found on Replicate"}
    )
    assert "meta/llama returns text, not files" in known.unknown_model_message("meta/llama")
    assert known.unknown_model_message("acme/gone") == "acme/gone: not found on Replicate"
