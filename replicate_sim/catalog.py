"""The stand-in's model catalog: which models exist, what inputs they accept, what they return.

This is Replicate's side of the truth, kept apart from the project's own registry on purpose: a
mismatch between the two is exactly what the stand-in should expose (as a 422), not hide.

A catalog file (`--catalog`, format of `replicate_sim/data/models.json`) lists models and,
optionally, deployments; `"extends": "builtin"` adds the built-in models before its own. A model gives its inputs either in the short form (`inputs`: JSON-schema
properties, turned into a Cog-like OpenAPI schema) or as published versions (`versions`, newest
first: each a version object as `GET /v1/models/{o}/{n}/versions/{id}` answers it, inline or as
`{"file": "relative/path.json"}`), whose `openapi_schema` is served unchanged and checked the way
Cog checks it. Each version is a `ModelInfo` of its own; the first one is the model's latest.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

VERSION_CREATED_AT = "2025-01-01T00:00:00.000000Z"
DEFAULT_COG_VERSION = "0.14.2"


@dataclass(frozen=True)
class InvalidField:
    """One problem with a prediction's input, reported the way Replicate's 422 body does."""

    type: str  # "required", "enum", "type", "range", "max_items", "additional"
    field: str  # e.g. "input.aspect_ratio"
    description: str

    def to_dict(self) -> dict[str, str]:
        return {"type": self.type, "field": self.field, "description": self.description}


@dataclass(frozen=True)
class ModelInfo:
    name: str  # "owner/name"
    description: str
    official: bool
    kind: str  # "image" | "video"
    output: str  # "single" | "list"
    default_format: str
    inputs: dict[str, dict[str, Any]]
    required: tuple[str, ...]
    latency_mean: float
    latency_sigma: float
    format_param: str | None = None
    count_param: str | None = None
    megapixels_param: str | None = None
    cog_version: str = DEFAULT_COG_VERSION
    version_id: str = field(default="")
    # The version's OpenAPI schema as published (served unchanged); None: built from `inputs`.
    published_schema: dict[str, Any] | None = field(default=None, repr=False)
    version_created_at: str = VERSION_CREATED_AT
    size_params: bool = False  # width/height inputs decide the output's aspect ratio

    @property
    def owner(self) -> str:
        return self.name.split("/", 1)[0]

    @property
    def short_name(self) -> str:
        return self.name.split("/", 1)[1]

    def output_format(self, values: dict[str, Any]) -> str:
        if self.format_param and isinstance(values.get(self.format_param), str):
            return values[self.format_param]
        return self.default_format

    def output_count(self, values: dict[str, Any]) -> int:
        if self.output == "single":
            return 1
        if self.count_param and isinstance(values.get(self.count_param), int):
            return values[self.count_param]
        return 1

    def aspect_ratio(self, values: dict[str, Any]) -> str | None:
        if (
            self.size_params
            and isinstance(values.get("width"), int)
            and isinstance(values.get("height"), int)
        ):
            return f"{values['width']}:{values['height']}"
        ratio = values.get("aspect_ratio")
        return ratio if isinstance(ratio, str) else None

    def megapixels(self, values: dict[str, Any]) -> float:
        if self.megapixels_param and values.get(self.megapixels_param) is not None:
            return float(values[self.megapixels_param])
        return 1.0

    def with_defaults(self, values: dict[str, Any]) -> dict[str, Any]:
        merged = {k: spec["default"] for k, spec in self.inputs.items() if "default" in spec}
        merged.update(values)
        return merged


@dataclass(frozen=True)
class DeploymentInfo:
    """A deployment: a name of its own that runs one version of a model."""

    owner: str
    name: str
    model: ModelInfo  # the version it runs (its current release)
    hardware: str = "gpu-l40s"
    min_instances: int = 0
    max_instances: int = 5
    release_number: int = 1

    @property
    def full_name(self) -> str:
        return f"{self.owner}/{self.name}"


class Catalog:
    """All models the stand-in serves, by name (latest version) and by version id, and deployments."""

    def __init__(self, models: list[ModelInfo], deployments: list[DeploymentInfo] | None = None):
        self._versions: dict[str, list[ModelInfo]] = {}
        for model in models:
            self._versions.setdefault(model.name, []).append(model)
        self._by_name = {name: versions[0] for name, versions in self._versions.items()}
        self._by_version = {m.version_id: m for m in models}
        self._deployments = {d.full_name: d for d in deployments or ()}

    def names(self) -> list[str]:
        return sorted(self._by_name)

    def get(self, name: str) -> ModelInfo | None:
        return self._by_name.get(name)

    def latest(self) -> list[ModelInfo]:
        """Every model's latest version, by name."""
        return [self._by_name[name] for name in self.names()]

    def versions(self, name: str) -> list[ModelInfo]:
        """Every version of a model, newest first (empty for an unknown model)."""
        return list(self._versions.get(name, ()))

    def by_version(self, version_id: str) -> ModelInfo | None:
        return self._by_version.get(version_id)

    def deployment(self, full_name: str) -> DeploymentInfo | None:
        return self._deployments.get(full_name)

    def deployments(self) -> list[DeploymentInfo]:
        return [self._deployments[n] for n in sorted(self._deployments)]

    def resolve_version_ref(self, ref: str) -> ModelInfo | None:
        """A `version` field of POST /v1/predictions: a 64-hex id, owner/name:id or owner/name."""
        if "/" in ref:
            name, _, version_id = ref.partition(":")
            if not version_id:
                return self.get(name)
            model = self.by_version(version_id)
            return model if model is not None and model.name == name else None
        return self.by_version(ref)


def version_id_for(name: str) -> str:
    # Stable across runs and processes, so a client may pin owner/name:<id> in its config.
    return hashlib.sha256(f"replicate-sim/{name}/v1".encode()).hexdigest()


def load_catalog(path: str | Path | None = None) -> Catalog:
    if path is None:
        text = resources.files("replicate_sim.data").joinpath("models.json").read_text("utf-8")
        base = None
    else:
        text = Path(path).read_text("utf-8")
        base = Path(path).resolve().parent
    data = json.loads(text)
    models: list[ModelInfo] = []
    if data.get("extends") == "builtin":  # the built-in models, then this file's
        builtin = load_catalog()
        models += [v for name in builtin.names() for v in builtin.versions(name)]
    elif data.get("extends") is not None:
        raise ValueError(f"'extends' can only be \"builtin\", not {data['extends']!r}")
    for raw in data["models"]:
        if "versions" in raw:
            models += [_model_from_version(raw, _read_version(v, base)) for v in raw["versions"]]
        else:
            models.append(_model_from_inputs(raw))
    latest = {m.name: m for m in reversed(models)}  # the first version listed wins
    by_version = {m.version_id: m for m in models}
    deployments = []
    for raw in data.get("deployments", []):
        target = by_version.get(raw["version"]) if raw.get("version") else latest.get(raw["model"])
        if target is None or target.name != raw["model"]:
            raise ValueError(
                f"deployment {raw['owner']}/{raw['name']}: no version "
                f"{raw.get('version') or '(latest)'} of model {raw['model']!r} in the catalog"
            )
        deployments.append(
            DeploymentInfo(
                owner=raw["owner"],
                name=raw["name"],
                model=target,
                hardware=raw.get("hardware", "gpu-l40s"),
                min_instances=int(raw.get("min_instances", 0)),
                max_instances=int(raw.get("max_instances", 5)),
                release_number=int(raw.get("release_number", 1)),
            )
        )
    return Catalog(models, deployments)


def _common(raw: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": raw["name"],
        "description": raw.get("description", ""),
        "official": bool(raw.get("official", True)),
        "kind": raw.get("kind", "image"),
        "latency_mean": float(raw.get("latency", {}).get("mean", 5.0)),
        "latency_sigma": float(raw.get("latency", {}).get("sigma", 0.3)),
        "megapixels_param": raw.get("megapixels_param"),
    }


def _model_from_inputs(raw: dict[str, Any]) -> ModelInfo:
    return ModelInfo(
        **_common(raw),
        output=raw.get("output", "single"),
        default_format=raw.get("default_format", "png"),
        inputs=raw["inputs"],
        required=tuple(raw.get("required", ["prompt"])),
        format_param=raw.get("format_param"),
        count_param=raw.get("count_param"),
        cog_version=raw.get("cog_version", DEFAULT_COG_VERSION),
        version_id=version_id_for(raw["name"]),
    )


def _read_version(entry: dict[str, Any], base: Path | None) -> dict[str, Any]:
    if "file" in entry:
        if base is None:
            raise ValueError("a version given as a file needs a catalog file to be relative to")
        return json.loads((base / entry["file"]).read_text("utf-8"))
    return entry


def _model_from_version(raw: dict[str, Any], version: dict[str, Any]) -> ModelInfo:
    """One published version: its inputs are the schema's Input properties, enums resolved."""
    schema = version["openapi_schema"]
    components = schema.get("components", {}).get("schemas", {})
    input_schema = components.get("Input", {})
    inputs = {name: _flatten(prop, components) for name, prop in input_schema.get("properties", {}).items()}
    output = "list" if components.get("Output", {}).get("type") == "array" else "single"
    kind = raw.get("kind", "image")
    fmt = inputs.get("output_format", {})
    default_format = raw.get("default_format") or fmt.get("default") or ("mp4" if kind == "video" else "png")
    count_param = raw.get("count_param") or (
        "num_outputs" if output == "list" and "num_outputs" in inputs else None
    )
    return ModelInfo(
        **_common(raw),
        output=output,
        default_format=default_format,
        inputs=inputs,
        required=tuple(input_schema.get("required", ())),
        format_param="output_format" if "output_format" in inputs else None,
        count_param=count_param,
        cog_version=version.get("cog_version") or DEFAULT_COG_VERSION,
        version_id=version["id"],
        published_schema=schema,
        version_created_at=version.get("created_at") or VERSION_CREATED_AT,
        size_params="width" in inputs and "height" in inputs,
    )


def _flatten(prop: dict[str, Any], components: dict[str, Any]) -> dict[str, Any]:
    """A property with the enum component it references (`allOf: [{$ref}]`, as Cog writes it)
    merged in, so the plain validator below can check it."""
    refs = [r for r in prop.get("allOf", []) if isinstance(r, dict) and "$ref" in r]
    if "$ref" in prop:
        refs.append(prop)
    flat = {k: v for k, v in prop.items() if k not in ("allOf", "$ref")}
    for ref in refs:
        target = components.get(str(ref["$ref"]).rsplit("/", 1)[-1], {})
        for key, value in target.items():
            flat.setdefault(key, value)
    return flat


# --- input validation ---------------------------------------------------------------------------


def _type_ok(expected: str, value: Any) -> bool:
    if expected == "string":
        return isinstance(value, str)
    if expected == "boolean":
        return isinstance(value, bool)
    if expected == "integer":
        # JSON-schema validation, like Replicate's API gateway: 3.0 is not an integer, True is not.
        return isinstance(value, int) and not isinstance(value, bool)
    if expected == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if expected == "array":
        return isinstance(value, list)
    return True


_JSON_TYPE_NAMES = {
    str: "string",
    bool: "boolean",
    int: "integer",
    float: "number",
    list: "array",
    dict: "object",
    type(None): "null",
}


def _given(value: Any) -> str:
    return _JSON_TYPE_NAMES.get(type(value), type(value).__name__)


def _is_uri(value: str) -> bool:
    return value.startswith(("http://", "https://", "data:"))


def _check_value(name: str, spec: dict[str, Any], value: Any) -> list[InvalidField]:
    path = f"input.{name}"
    expected = spec.get("type")
    if expected and not _type_ok(expected, value):
        return [
            InvalidField("invalid_type", path, f"Invalid type. Expected: {expected}, given: {_given(value)}")
        ]
    if "enum" in spec and value not in spec["enum"]:
        choices = ", ".join(json.dumps(c) for c in spec["enum"])
        return [InvalidField("enum", path, f"{name} must be one of the following: {choices}")]
    problems = []
    if "minimum" in spec and value < spec["minimum"]:
        problems.append(
            InvalidField("number_gte", path, f"Must be greater than or equal to {spec['minimum']}")
        )
    if "maximum" in spec and value > spec["maximum"]:
        problems.append(InvalidField("number_lte", path, f"Must be less than or equal to {spec['maximum']}"))
    if spec.get("format") == "uri" and isinstance(value, str) and not _is_uri(value):
        problems.append(InvalidField("format", path, "Does not match format 'uri'"))
    if expected == "array":
        if "maxItems" in spec and len(value) > spec["maxItems"]:
            problems.append(
                InvalidField("array_max_items", path, f"Array must have at most {spec['maxItems']} items")
            )
        item_spec = spec.get("items") or {}
        for i, item in enumerate(value):
            for p in _check_value(f"{name}.{i}", item_spec, item):
                problems.append(p)
    return problems


def validate_input(model: ModelInfo, values: Any, *, strict: bool = False) -> list[InvalidField]:
    """Every problem with `values` for `model` (empty list = valid).

    Unknown keys are ignored like Replicate does, unless `strict` (useful to prove that a client
    cleans parameters a model does not take).
    """
    if not isinstance(values, dict):
        return [
            InvalidField("invalid_type", "input", f"Invalid type. Expected: object, given: {_given(values)}")
        ]
    problems: list[InvalidField] = []
    for name in model.required:
        if values.get(name) is None:
            problems.append(InvalidField("required", "input", f"{name} is required"))
    for name, value in values.items():
        spec = model.inputs.get(name)
        if spec is None:
            if strict:
                problems.append(
                    InvalidField(
                        "additional_property_not_allowed",
                        f"input.{name}",
                        f"Additional property {name} is not allowed",
                    )
                )
            continue
        if value is None:
            continue  # null means "use the default", as Cog treats it (a missing required one is reported above)
        problems.extend(_check_value(name, spec, value))
    return problems


# --- OpenAPI schema as Cog publishes it -----------------------------------------------------------


def openapi_schema(model: ModelInfo) -> dict[str, Any]:
    if model.published_schema is not None:
        return model.published_schema
    properties: dict[str, Any] = {}
    components: dict[str, Any] = {}
    for order, (name, spec) in enumerate(model.inputs.items()):
        prop = {k: v for k, v in spec.items() if k not in ("enum", "type")}
        if "enum" in spec:
            # Cog publishes enums as a referenced component, not inline.
            components[name] = {
                "enum": spec["enum"],
                "type": spec.get("type", "string"),
                "title": name,
                "description": "An enumeration.",
            }
            prop["allOf"] = [{"$ref": f"#/components/schemas/{name}"}]
        else:
            prop["type"] = spec.get("type", "string")
        prop["title"] = name.replace("_", " ").title()
        prop["x-order"] = order
        properties[name] = prop
    if model.output == "list":
        output = {"type": "array", "items": {"type": "string", "format": "uri"}, "title": "Output"}
    else:
        output = {"type": "string", "format": "uri", "title": "Output"}
    schemas = {
        "Input": {
            "type": "object",
            "title": "Input",
            "required": list(model.required),
            "properties": properties,
        },
        "Output": output,
        "Status": {
            "enum": ["starting", "processing", "succeeded", "canceled", "failed"],
            "type": "string",
            "title": "Status",
            "description": "An enumeration.",
        },
        **components,
    }
    return {
        "openapi": "3.0.2",
        "info": {"title": "Cog", "version": "0.1.0"},
        "paths": {},
        "components": {"schemas": schemas},
    }


def version_json(model: ModelInfo) -> dict[str, Any]:
    return {
        "id": model.version_id,
        "created_at": model.version_created_at,
        "cog_version": model.cog_version,
        "openapi_schema": openapi_schema(model),
    }


def model_json(model: ModelInfo, run_count: int = 0) -> dict[str, Any]:
    return {
        "url": f"https://replicate.com/{model.name}",
        "owner": model.owner,
        "name": model.short_name,
        "description": model.description,
        "visibility": "public",
        "github_url": None,
        "paper_url": None,
        "license_url": None,
        "run_count": run_count,
        "cover_image_url": None,
        "default_example": None,
        "is_official": model.official,
        "latest_version": version_json(model),
    }


def deployment_json(deployment: DeploymentInfo) -> dict[str, Any]:
    return {
        "owner": deployment.owner,
        "name": deployment.name,
        "current_release": {
            "number": deployment.release_number,
            "model": deployment.model.name,
            "version": deployment.model.version_id,
            "created_at": VERSION_CREATED_AT,
            "created_by": {
                "type": "organization",
                "username": deployment.owner,
                "name": deployment.owner,
                "github_url": None,
            },
            "configuration": {
                "hardware": deployment.hardware,
                "min_instances": deployment.min_instances,
                "max_instances": deployment.max_instances,
            },
        },
    }
