"""Routing at submit (model choice, param mapping, routes) and input building at run time."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.errors import InputError
from shared.models import ModelRegistry, load_registry
from shared.request import ImageRequest
from shared.routing import (
    adapt_params,
    build_input,
    choose_model,
    describe_plan,
    estimate_cost,
    max_cost,
    route_for,
    route_item,
)

pytestmark = pytest.mark.unit

FLUX = "black-forest-labs/flux-dev"
KONTEXT = "black-forest-labs/flux-kontext-max"
ULTRA = "black-forest-labs/flux-1.1-pro-ultra"
QWEN = "qwen/qwen-image"
IMAGEN = "google/imagen-4-ultra"
NANO = "google/nano-banana"
IMGEDIT = "espressotechie/qwen-imgedit-4bit"
VEO = "google/veo-3-fast"
KLING = "kwaivgi/kling-v2.1-master"


@pytest.fixture(scope="module")
def registry() -> ModelRegistry:
    return load_registry()


# ------------------------------------------------------------------------------- model choice
@pytest.mark.parametrize(
    "requested, n_refs, expected, rerouted",
    [
        (FLUX, 0, FLUX, False),
        (FLUX, 1, KONTEXT, True),  # a reference to a model that takes none -> kontext-max
        (QWEN, 1, KONTEXT, True),
        (FLUX, 2, NANO, True),  # several references -> nano-banana
        (KONTEXT, 2, NANO, True),
        (KONTEXT, 1, KONTEXT, False),
        (NANO, 3, NANO, False),
        (NANO, 0, NANO, False),
        (ULTRA, 1, ULTRA, False),
        (IMGEDIT, 1, IMGEDIT, False),
        (KLING, 1, KLING, False),
        (VEO, 0, VEO, False),
    ],
)
def test_choose_model(registry, requested, n_refs, expected, rerouted):
    model, warnings, problems = choose_model(requested, n_refs, registry)
    assert problems == []
    assert model == expected
    assert bool(warnings) == rerouted
    if rerouted:
        assert warnings[0].startswith(f"routed to {expected}: {requested}")


@pytest.mark.parametrize(
    "requested, n_refs, message",
    [
        (FLUX, 4, "4 reference images given; no image model takes more than 3"),
        (NANO, 4, "no image model takes more than 3"),
        (IMGEDIT, 0, "needs a reference image"),
        (KLING, 2, "2 reference images given; kwaivgi/kling-v2.1-master takes at most 1"),
    ],
)
def test_choose_model_never_drops_references(registry, requested, n_refs, message):
    model, warnings, problems = choose_model(requested, n_refs, registry)
    assert model == registry.get(requested).name and warnings == []
    assert len(problems) == 1 and message in problems[0].message
    assert problems[0].field == "image_input"


# ------------------------------------------------------------------------------- routes
@pytest.mark.parametrize(
    "model, n_refs, expected",
    [
        (FLUX, 0, (QWEN, IMAGEN)),  # the seed's chain
        (QWEN, 0, (FLUX, IMAGEN)),  # the triangle qwen -> flux-dev -> (qwen) ends at the repeat
        (KONTEXT, 0, (QWEN, NANO, FLUX)),
        (KONTEXT, 1, (NANO, ULTRA)),  # qwen-image takes no reference: skipped, never given the item
        (NANO, 0, (IMAGEN, ULTRA, KONTEXT)),
        (NANO, 1, (ULTRA, KONTEXT)),
        (NANO, 2, ()),  # nobody else takes two references
        (IMGEDIT, 1, (KONTEXT, NANO, ULTRA)),
        (IMAGEN, 0, ()),
        (VEO, 0, ()),
    ],
)
def test_route_for(registry, model, n_refs, expected):
    assert route_for(model, n_refs, registry) == expected


def test_routes_are_finite_without_repeats_and_keep_references(registry):
    for spec in registry:
        for n_refs in range(0, 4):
            route = route_for(spec.name, n_refs, registry)
            models = (spec.name, *route)
            assert len(set(models)) == len(models)
            assert len(models) <= registry.max_route_length
            for name in route:
                fb = registry.get(name)
                assert fb.kind == spec.kind
                assert n_refs <= fb.max_references
                assert not (n_refs == 0 and fb.reference_required)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 5), st.lists(st.integers(0, 5), max_size=6)), min_size=1, max_size=6),
    st.integers(1, 8),
)
def test_route_of_any_fallback_graph_is_finite(graph, max_len):
    """Loops of any shape in user data never make a route loop or repeat."""
    models = {}
    for node, edges in graph:
        models[f"acme/m{node}"] = {
            "kind": "image",
            "output": "single",
            "default_format": "png",
            "price": 0.01,
            "price_unit": "image",
            "fallback": [f"acme/m{e}" for e in edges if e != node and any(n == e for n, _ in graph)],
        }
    base = load_registry()
    data = {"models": models, "routing": {"max_route_length": max_len}}
    registry = ModelRegistry.from_data((_builtin_data(), "<builtin>"), (data, "<user>"))
    for name in models:
        route = route_for(name, 0, registry)
        assert name not in route and len(set(route)) == len(route) and len(route) < max_len
    assert base.max_route_length == 4


def _builtin_data():
    from shared.models import BUILTIN_MODELS_FILE
    from shared.models.registry import tomllib  # tomli before Python 3.11

    return tomllib.loads(BUILTIN_MODELS_FILE.read_text())


# ------------------------------------------------------------------------------- params
def test_mapping_at_submit_warns(registry):
    params, warnings, problems = adapt_params({"aspect_ratio": "21:9"}, IMAGEN, registry, strict=True)
    assert problems == [] and params == {"aspect_ratio": "16:9"}
    assert warnings == ["aspect_ratio '21:9' -> '16:9': google/imagen-4-ultra does not offer '21:9'"]


def test_param_of_another_model_is_dropped_with_a_warning(registry):
    params, warnings, problems = adapt_params(
        {"guidance": 3.5, "num_outputs": 2}, KONTEXT, registry, strict=True
    )
    assert params == {} and problems == []
    assert any("guidance=3.5 dropped" in w for w in warnings)
    assert any("num_outputs=2 dropped" in w for w in warnings)


def test_unknown_param_is_an_error_with_a_suggestion(registry):
    _, _, problems = adapt_params({"aspect_ration": "1:1"}, FLUX, registry, strict=True)
    assert len(problems) == 1
    assert problems[0].field == "params.aspect_ration"
    assert "Did you mean 'aspect_ratio'" in problems[0].message


@pytest.mark.parametrize(
    "model, params, fragment",
    [
        (FLUX, {"num_outputs": 9}, "above the maximum"),
        (FLUX, {"guidance": "strong"}, "must be a number"),
        (FLUX, {"aspect_ratio": "7:3"}, "'7:3' is not allowed"),
        (KONTEXT, {"safety_tolerance": 7}, "above the maximum"),
        (IMAGEN, {"safety_filter_level": "none"}, "is not allowed"),
        (KLING, {"duration": 7}, "must be one of 5, 10"),
    ],
)
def test_invalid_values_for_the_model_are_errors(registry, model, params, fragment):
    _, _, problems = adapt_params(params, model, registry, strict=True)
    assert len(problems) == 1 and fragment in problems[0].message
    assert problems[0].field == f"params.{next(iter(params))}"


def test_rename_from_data(registry):
    params, warnings, problems = adapt_params({"num_inference_steps": 4}, IMGEDIT, registry, strict=True)
    assert params == {"steps": 4} and problems == []
    assert "num_inference_steps renamed to steps" in warnings[0]


def test_params_written_for_the_requested_model_are_adapted_after_rerouting(registry):
    # flux-dev takes num_inference_steps 1..50; routed to kontext (no such param): dropped, not an error
    routed = route_item(FLUX, {"num_inference_steps": 40, "aspect_ratio": "21:9"}, 1, registry)
    assert routed.model == KONTEXT and routed.problems == []
    assert routed.params == {"aspect_ratio": "21:9"}
    # a value only the routed model knows is fine too
    routed = route_item(FLUX, {"aspect_ratio": "match_input_image"}, 1, registry)
    assert routed.problems == [] and routed.params == {"aspect_ratio": "match_input_image"}
    # a value wrong for both is still an error
    routed = route_item(FLUX, {"num_outputs": 99}, 1, registry)
    assert [p.field for p in routed.problems] == ["params.num_outputs"]
    assert f"(model {FLUX})" in routed.problems[0].message


def test_lenient_adaptation_clamps_maps_and_drops(registry):
    params, warnings, problems = adapt_params(
        {"steps": 30, "output_format": "webp", "aspect_ratio": "21:9", "unheard_of": 1},
        IMAGEN,
        registry,
        strict=False,
    )
    assert problems == []
    assert params == {"output_format": "jpg", "aspect_ratio": "16:9"}
    assert len(warnings) == 4
    params, warnings, _ = adapt_params({"num_inference_steps": 30}, IMGEDIT, registry, strict=False)
    assert params == {"steps": 8} and "renamed to steps" in warnings[0]


# ------------------------------------------------------------------------------- build_input
def _request(**kw) -> ImageRequest:
    base = dict(
        index=0,
        id="0",
        prompt="a cat",
        requested_model=FLUX,
        model=FLUX,
        params={"aspect_ratio": "21:9", "num_outputs": 2, "output_format": "webp"},
        output="b/0000_a-cat.webp",
        route=(QWEN, IMAGEN),
    )
    base.update(kw)
    return ImageRequest(**base)


def test_build_input_for_every_model_of_the_route(registry):
    request = _request()
    first, warnings = build_input(request, FLUX, registry)
    assert first == {"prompt": "a cat", "aspect_ratio": "21:9", "num_outputs": 2, "output_format": "webp"}
    assert warnings == []
    second, warnings = build_input(request, QWEN, registry)
    assert second == {"prompt": "a cat", "aspect_ratio": "16:9", "output_format": "webp"}
    assert len(warnings) == 2
    third, warnings = build_input(request, IMAGEN, registry)
    assert third["output_format"] == "jpg"
    assert any("cannot make webp" in w for w in warnings)


def test_build_input_places_references_under_the_models_input(registry):
    refs = ("/data/a.png", "https://example.com/b.jpg")
    request = _request(model=NANO, params={"output_format": "png"}, output="x.png", reference_images=refs)
    data, _ = build_input(request, NANO, registry)
    assert data["image_input"] == list(refs)
    one = _request(model=KONTEXT, params={}, output="x.png", reference_images=refs[:1])
    assert build_input(one, KONTEXT, registry)[0]["input_image"] == "/data/a.png"
    assert build_input(one, ULTRA, registry)[0]["image_prompt"] == "/data/a.png"
    assert build_input(one, KLING, registry)[0]["start_image"] == "/data/a.png"
    assert build_input(one, KONTEXT, registry)[0]["output_format"] == "png"  # the path's format is kept


def test_build_input_refuses_a_model_that_would_lose_references(registry):
    request = _request(reference_images=("/data/a.png",), model=KONTEXT)
    with pytest.raises(InputError, match="cannot take 1 reference image"):
        build_input(request, QWEN, registry)


# ------------------------------------------------------------------------------- cost and plan
def test_estimate_cost(registry):
    requests = [
        _request(index=0),  # flux-dev x2 images = 0.05
        _request(index=1, model=KLING, params={"duration": 10}, output="v.mp4", route=()),  # 2.80
        _request(index=2, model=NANO, params={}, output="n.jpg", route=(IMAGEN,)),  # 0.039
    ]
    assert estimate_cost(requests, registry) == pytest.approx(0.05 + 2.80 + 0.039)
    # worst case: flux-dev 0.05 + qwen 0.025 + imagen 0.06; kling 2.80; nano 0.039 + imagen 0.06
    assert max_cost(requests, registry) == pytest.approx(0.135 + 2.80 + 0.099)


def test_describe_plan(registry):
    routed = route_item(FLUX, {"num_outputs": 2}, 1, registry)
    changed = _request(
        index=1,
        id="hero",
        model=routed.model,
        params=routed.params,
        route=routed.route,
        warnings=tuple(routed.warnings),
        output="h.png",
        reference_images=("/a.png",),
    )
    requests = [_request(index=0), changed] + [_request(index=i) for i in range(2, 6)]
    lines = describe_plan(requests, registry)
    text = "\n".join(lines)
    assert lines[0] == "Plan: 6 item(s) on 2 model(s)"
    assert "Routing changes (1):" in text
    assert f"item 1 (id 'hero'): {FLUX} -> {KONTEXT}: {FLUX} takes no reference image" in text
    assert "num_outputs=2 dropped" in text
    assert f"{FLUX} -> {QWEN} -> {IMAGEN}  [5 item(s): 0, 2-5]" in text
    assert "Estimated cost: $0.33" in text
    assert "(estimate" not in text
    # without a registry: no cost, still the plan
    assert not any("cost" in line.lower() for line in describe_plan(requests))


def test_describe_plan_cuts_long_sections(registry):
    requests = [_request(index=i, warnings=(f"w{i}",)) for i in range(200)]
    lines = describe_plan(requests, registry, max_lines=10)
    assert "  ... and 190 more" in lines
    assert len(lines) < 30
    json.dumps(lines)  # plain strings


def test_plan_costs_keep_their_precision(registry):
    """One flux-dev image costs $0.025: the plan says so, not $0.03 (issue 18.8)."""
    text = "\n".join(describe_plan([_request(index=0, params={})], registry))
    assert "$0.025  ($0.025/image)" in text and "Estimated cost: $0.025 if every first model" in text
    assert "$0.03" not in text
