"""The model registry: built-in facts, user extension files, and load-time validation errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from replicate_sim.catalog import load_catalog
from shared.errors import ConfigError, InputError, ParamValueError, UnknownModelError
from shared.models import BUILTIN_MODELS_FILE, ModelRegistry, ParamSpec, load_registry

pytestmark = pytest.mark.unit

SEED_MODELS = [
    "black-forest-labs/flux-dev",
    "black-forest-labs/flux-kontext-max",
    "black-forest-labs/flux-1.1-pro-ultra",
    "qwen/qwen-image",
    "google/imagen-4-ultra",
    "google/nano-banana",
    "espressotechie/qwen-imgedit-4bit",
    "google/veo-3-fast",
    "kwaivgi/kling-v2.1-master",
]


@pytest.fixture(scope="module")
def registry() -> ModelRegistry:
    return load_registry()


def test_every_seed_model_is_known(registry):
    assert set(SEED_MODELS) == set(registry.names())
    assert registry.names() == sorted(registry.names())


@pytest.mark.parametrize(
    "name, ref_param, max_refs, is_list, output, price, unit",
    [
        ("black-forest-labs/flux-dev", None, 0, False, "list", 0.025, "image"),
        ("black-forest-labs/flux-kontext-max", "input_image", 1, False, "single", 0.08, "image"),
        ("black-forest-labs/flux-1.1-pro-ultra", "image_prompt", 1, False, "single", 0.06, "image"),
        ("qwen/qwen-image", None, 0, False, "list", 0.025, "image"),
        ("google/imagen-4-ultra", None, 0, False, "single", 0.06, "image"),
        ("google/nano-banana", "image_input", 3, True, "single", 0.039, "image"),
        ("espressotechie/qwen-imgedit-4bit", "image", 1, False, "list", 0.01, "image"),
        ("google/veo-3-fast", "image", 1, False, "single", 3.32, "call"),
        ("kwaivgi/kling-v2.1-master", "start_image", 1, False, "single", 0.28, "second"),
    ],
)
def test_seed_facts(registry, name, ref_param, max_refs, is_list, output, price, unit):
    spec = registry.get(name)
    assert (spec.reference_param, spec.max_references, spec.reference_is_list) == (
        ref_param,
        max_refs,
        is_list,
    )
    assert spec.output == output
    assert (spec.price, spec.price_unit) == (price, unit)


def test_param_facts(registry):
    flux = registry.get("black-forest-labs/flux-dev")
    assert (
        "9:21" in flux.params["aspect_ratio"].values
        and "match_input_image" not in flux.params["aspect_ratio"].values
    )
    assert (flux.params["num_outputs"].min, flux.params["num_outputs"].max) == (1, 4)
    assert flux.params["megapixels"].values == ("1", "0.25")
    assert registry.get("black-forest-labs/flux-kontext-max").formats == ("jpg", "png")
    assert registry.get("google/imagen-4-ultra").params["safety_filter_level"].values[-1] == "block_only_high"
    assert registry.get("kwaivgi/kling-v2.1-master").params["duration"].values == (5, 10)
    assert registry.get("google/veo-3-fast").kind == "video"
    imgedit = registry.get("espressotechie/qwen-imgedit-4bit")
    assert imgedit.reference_required and "estimate" in imgedit.price_note
    assert (imgedit.params["steps"].min, imgedit.params["steps"].max) == (1, 8)


def test_costs(registry):
    assert registry.get("black-forest-labs/flux-dev").cost({"num_outputs": 3}) == pytest.approx(0.075)
    assert registry.get("kwaivgi/kling-v2.1-master").cost({}) == pytest.approx(1.40)  # default 5 s
    assert registry.get("kwaivgi/kling-v2.1-master").cost({"duration": 10}) == pytest.approx(2.80)
    assert registry.get("google/veo-3-fast").cost({"duration": 8}) == pytest.approx(3.32)


def test_fallbacks_are_data_and_the_seed_triangle_is_there(registry):
    assert registry.get("black-forest-labs/flux-dev").fallback == ("qwen/qwen-image", "google/imagen-4-ultra")
    assert registry.get("qwen/qwen-image").fallback == ("black-forest-labs/flux-dev",)
    assert registry.get("black-forest-labs/flux-kontext-max").fallback[0] == "qwen/qwen-image"
    assert registry.get("google/nano-banana").fallback[0] == "google/imagen-4-ultra"
    assert registry.single_reference_model == "black-forest-labs/flux-kontext-max"
    assert registry.multi_reference_model == "google/nano-banana"


def test_aliases_and_case_are_forgiven(registry):
    assert registry.get("flux-dev").name == "black-forest-labs/flux-dev"
    assert registry.get("Google/Nano-Banana").name == "google/nano-banana"
    assert "nano-banana" in registry and "nope" not in registry


def test_unknown_model_lists_the_known_ones(registry):
    with pytest.raises(UnknownModelError) as info:
        registry.get("flux-devv")
    assert isinstance(info.value, InputError)
    text = str(info.value)
    assert "Did you mean 'black-forest-labs/flux-dev'" in text
    for name in SEED_MODELS:
        assert name in text
    assert "Any Replicate model works too: owner/name, owner/name:VERSION or deployments/owner/name" in text
    assert info.value.problems[0].field == "model"


def test_a_model_reference_outside_the_registry_is_taken_from_its_schema(registry):
    # Any reference is a model name; the registry only lacks its schema, and says so (with a hint
    # for a likely typo of a curated model).
    assert registry.schema_ref("black-forest-labs/flux-devv") == "black-forest-labs/flux-devv"
    assert registry.schema_ref("flux-dev") is None
    with pytest.raises(
        UnknownModelError, match="its schema was not read .*Did you mean 'black-forest-labs/flux-dev'"
    ):
        registry.get("black-forest-labs/flux-devv")


@pytest.mark.parametrize(
    "spec, value, expected",
    [
        (ParamSpec("n", "int", min=1, max=4), 2, 2),
        (ParamSpec("n", "int", min=1, max=4), "3", 3),  # from --param n=3
        (ParamSpec("n", "int", min=1, max=4), 2.0, 2),
        (ParamSpec("g", "float", min=0, max=10), 3, 3.0),
        (ParamSpec("b", "bool"), "yes", True),
        (ParamSpec("d", "enum", values=(5, 10)), "10", 10),
        (ParamSpec("m", "enum", values=("1", "0.25")), 0.25, "0.25"),
    ],
)
def test_param_values_accepted(spec, value, expected):
    result = spec.check(value)
    assert result == expected and type(result) is type(expected)


@pytest.mark.parametrize(
    "spec, value, kind",
    [
        (ParamSpec("n", "int", min=1, max=4), 5, "range"),
        (ParamSpec("n", "int", min=1, max=4), True, "type"),  # bool is not an int here
        (ParamSpec("n", "int", min=1, max=4), 2.5, "type"),
        (ParamSpec("g", "float", min=0, max=10), float("nan"), "type"),
        (ParamSpec("s", "string"), 3, "type"),
        (ParamSpec("b", "bool"), "maybe", "type"),
        (ParamSpec("e", "enum", values=("a", "b")), "c", "enum"),
        (ParamSpec("e", "enum", values=("a", "b")), ["a"], "type"),
    ],
)
def test_param_values_rejected(spec, value, kind):
    with pytest.raises(ParamValueError) as info:
        spec.check(value)
    assert info.value.kind == kind


# ---------------------------------------------------------------------------------- user files
NEW_MODEL_TOML = """
[routing]
max_route_length = 3

[models."acme/sketch"]
kind = "image"
aliases = ["sketch"]
output = "single"
default_format = "png"
price = 0.002
price_unit = "image"
fallback = ["flux-dev"]
[models."acme/sketch".params]
style = { type = "enum", values = ["pencil", "ink"], default = "ink" }

[models."black-forest-labs/flux-dev"]
price = 0.03
fallback = ["acme/sketch"]
[models."black-forest-labs/flux-dev".params]
lora_scale = { type = "float", min = 0, max = 2 }
"""


def test_user_toml_file_adds_and_overrides(tmp_path):
    path = tmp_path / "models.toml"
    path.write_text(NEW_MODEL_TOML)
    registry = load_registry(extra=path)
    sketch = registry.get("sketch")
    assert sketch.name == "acme/sketch" and sketch.fallback == ("black-forest-labs/flux-dev",)
    flux = registry.get("black-forest-labs/flux-dev")
    assert flux.price == 0.03 and flux.fallback == ("acme/sketch",)
    # params merge per name: the built-in ones are still there
    assert "lora_scale" in flux.params and "num_outputs" in flux.params
    assert registry.max_route_length == 3
    assert Path(path) in registry.sources


def test_user_json_file_can_remove_references(tmp_path):
    path = tmp_path / "models.json"
    path.write_text(
        json.dumps(
            {
                "models": {
                    "acme/video": {
                        "kind": "video",
                        "output": "single",
                        "default_format": "mp4",
                        "price": 0.1,
                        "price_unit": "second",
                        "reference_param": None,
                        "params": {"duration": {"type": "enum", "values": [4], "default": 4}},
                    }
                }
            }
        )
    )
    registry = load_registry(extra=str(path))
    assert registry.get("acme/video").cost({}) == pytest.approx(0.4)
    assert registry.get("acme/video").reference_param is None


BASE = {"kind": "image", "output": "single", "default_format": "png", "price": 0.01, "price_unit": "image"}


@pytest.mark.parametrize(
    "models, expected",
    [
        ({"acme/x": {**BASE, "kinnd": "image"}}, "field 'kinnd': unknown key 'kinnd' (did you mean 'kind'?)"),
        ({"acme/x": {**BASE, "kind": "audio"}}, "model 'acme/x': field 'kind': must be one of image, video"),
        ({"acme/x": {**BASE, "price": -1}}, "field 'price': must be a number >= 0"),
        ({"acme/y": {"price": -1}}, "model 'acme/y': field 'price': must be a number >= 0"),  # an overlay
        ({"acme/y:v1": {"price": 1}}, "a model name is owner/name"),
        ({"no-owner": BASE}, "model 'no-owner': a model name is owner/name"),
        (
            {"acme/x": {**BASE, "fallback": ["acme/nothing"]}},
            "field 'fallback': unknown model 'acme/nothing'",
        ),
        ({"acme/x": {**BASE, "fallback": ["acme/x"]}}, "cannot fall back to itself"),
        ({"acme/x": {**BASE, "fallback": ["google/veo-3-fast"]}}, "makes videos, this model makes images"),
        (
            {"acme/x": {**BASE, "max_references": 2}},
            "field 'max_references': is set but the model has no reference_param",
        ),
        (
            {"acme/x": {**BASE, "reference_param": "img", "max_references": 2, "reference_is_list": False}},
            "field 'reference_is_list': must be true when max_references is above 1",
        ),
        ({"acme/x": {**BASE, "params": {"n": {"type": "integer"}}}}, "field 'params.n.type': must be one of"),
        ({"acme/x": {**BASE, "params": {"n": {"type": "int", "min": 5, "max": 1}}}}, "min 5 is above max 1"),
        ({"acme/x": {**BASE, "params": {"e": {"type": "enum", "values": []}}}}, "field 'params.e.values'"),
        (
            {"acme/x": {**BASE, "params": {"e": {"type": "enum", "values": ["a"], "default": "b"}}}},
            "field 'params.e.default': 'b' is not one of 'a'",
        ),
        ({"acme/x": {**BASE, "params": {"prompt": {"type": "string"}}}}, "the prompt is always passed"),
        (
            {"acme/x": {**BASE, "params": {"output_format": {"type": "enum", "values": ["jpg"]}}}},
            "field 'default_format': 'png' is not among output_format's values",
        ),
        ({"acme/x": {**BASE, "price_unit": "second"}}, "a price per second needs a 'duration' parameter"),
        (
            {"acme/x": {**BASE, "aliases": ["flux-dev"]}},
            "alias 'flux-dev' is already used by 'black-forest-labs/flux-dev'",
        ),
    ],
)
def test_registry_validation_errors_name_file_model_and_field(tmp_path, models, expected):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"models": models}))
    with pytest.raises(ConfigError) as info:
        load_registry(extra=path)
    text = str(info.value)
    assert str(path) in text
    assert expected in text


def test_registry_reports_every_problem_at_once(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text(
        json.dumps(
            {
                "models": {
                    "acme/a": {**BASE, "kind": "audio"},
                    "acme/b": {**BASE, "price": "cheap"},
                },
                "routing": {"default_model": "acme/none"},
                "colour": 1,
            }
        )
    )
    with pytest.raises(ConfigError) as info:
        load_registry(extra=path)
    text = str(info.value)
    for fragment in ("'acme/a'", "'acme/b'", "unknown key 'colour'"):
        assert fragment in text


@pytest.mark.parametrize(
    "routing, expected",
    [
        ({"default_model": "acme/none"}, "routing.default_model: unknown model 'acme/none'"),
        ({"single_reference_model": "flux-dev"}, "must be an image model that takes a reference image"),
        ({"multi_reference_model": "flux-kontext-max"}, "takes several reference images"),
        ({"default_model": "qwen-imgedit"}, "needs a reference image"),
        ({"max_route_length": 0}, "max_route_length must be an integer >= 1"),
    ],
)
def test_routing_section_is_validated(tmp_path, routing, expected):
    path = tmp_path / "r.json"
    path.write_text(json.dumps({"routing": routing}))
    with pytest.raises(ConfigError, match=expected.replace("(", r"\(").replace(")", r"\)")):
        load_registry(extra=path)


def test_unreadable_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="cannot be read"):
        load_registry(extra=tmp_path / "missing.toml")
    bad_toml = tmp_path / "bad.toml"
    bad_toml.write_text("[models\nkind = 1\n")
    with pytest.raises(ConfigError, match="invalid TOML"):
        load_registry(extra=bad_toml)
    bad_json = tmp_path / "bad.json"
    bad_json.write_text('{"models": {,}}')
    with pytest.raises(ConfigError, match="line 1, column 13"):
        load_registry(extra=bad_json)


def test_builtin_file_is_package_data():
    assert BUILTIN_MODELS_FILE.name == "builtin.toml" and BUILTIN_MODELS_FILE.is_file()


def test_registry_agrees_with_the_stand_in(registry):
    """The stand-in keeps its own copy of Replicate's schemas; every input we would send must be
    one it accepts (same names, enum values, ranges, reference inputs), or the fleet would get 422s."""
    catalog = load_catalog()
    json_type = {"string": "string", "int": "integer", "float": "number", "bool": "boolean"}
    for spec in registry:
        model = catalog.get(spec.name)
        assert model is not None, f"the stand-in lacks {spec.name}"
        assert (model.kind, model.output, model.default_format) == (
            spec.kind,
            spec.output,
            spec.default_format,
        )
        for name, param in spec.params.items():
            schema = model.inputs.get(name)
            assert schema is not None, f"{spec.name}: stand-in lacks input {name!r}"
            if param.type == "enum":
                assert list(param.values) == schema["enum"], (spec.name, name)
            else:
                assert schema.get("type") == json_type[param.type], (spec.name, name)
                assert (schema.get("minimum"), schema.get("maximum")) == (param.min, param.max), (
                    spec.name,
                    name,
                )
        if spec.reference_param:
            schema = model.inputs[spec.reference_param]
            assert (schema.get("type") == "array") == spec.reference_is_list, spec.name
            if spec.reference_is_list:
                assert schema.get("maxItems") == spec.max_references
            assert (spec.reference_param in model.required) == spec.reference_required
