"""A model version's published OpenAPI schema (`ModelSchema`), and the registry entry it implies.

Replicate publishes, for every model version, the OpenAPI schema Cog generated from the model's
`predict()` signature: `components.schemas.Input` (one property per input, enums as `allOf`
references to a component of their own, ranges, defaults, `required`) and `Output` (one URI, a
list of URIs, text ...). `derive_entry` turns that into a model table of the registry's own file
format, so a user file can be layered over it like over a built-in model.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from shared.errors import ParamValueError, SchemaError
from shared.models.spec import ParamSpec

# Inputs that take the item's reference images when a schema has one of them (first match wins).
REFERENCE_NAMES = (
    "image_input",
    "input_image",
    "input_images",
    "image",
    "start_image",
    "first_frame_image",
    "init_image",
    "image_prompt",
)
_VIDEO_FORMATS = {"mp4", "webm", "mov", "gif"}
_VIDEO_WORDS = ("fps", "num_frames", "max_frames", "frames", "video_length", "duration")
_INT_TYPES = {"integer": "int", "number": "float", "boolean": "bool", "string": "string"}


@dataclass(frozen=True)
class ModelSchema:
    """What one model version publishes about its input and output.

    ref: the reference it was read for (owner/name, owner/name:VERSION, deployments/owner/name);
    model: the model that runs (a deployment's current model); version: its version id, if known.
    """

    ref: str
    model: str
    version: str | None
    components: Mapping[str, Any] = field(repr=False)  # openapi_schema.components.schemas

    @classmethod
    def from_openapi(cls, ref: str, model: str, version: str | None, openapi: Any) -> ModelSchema:
        schemas = (openapi or {}).get("components", {}).get("schemas") if isinstance(openapi, dict) else None
        if not isinstance(schemas, dict) or not isinstance(schemas.get("Input"), dict):
            raise SchemaError(
                f"{ref}: the model publishes no input schema (openapi_schema.components."
                "schemas.Input); add it to FLEET_MODELS_FILE with its parameters instead"
            )
        return cls(ref=ref, model=model, version=version, components=schemas)

    def to_dict(self) -> dict[str, Any]:
        return {
            "ref": self.ref,
            "model": self.model,
            "version": self.version,
            "components": dict(self.components),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ModelSchema:
        return cls(
            ref=data["ref"], model=data["model"], version=data.get("version"), components=data["components"]
        )

    @cached_property
    def input_validator(self) -> Any:
        """A jsonschema validator of the Input object, built once per schema (validation.py)."""
        from shared.models.validation import build_validator

        return build_validator(self)

    @property
    def input(self) -> Mapping[str, Any]:
        return self.components["Input"]

    @property
    def output(self) -> Mapping[str, Any]:
        return self.components.get("Output") or {}

    @property
    def required(self) -> tuple[str, ...]:
        return tuple(self.input.get("required") or ())

    def properties(self) -> dict[str, dict[str, Any]]:
        """Each input, its referenced enum component merged in, in the model's own order (x-order)."""
        props = self.input.get("properties") or {}
        ordered = sorted(props.items(), key=lambda kv: (kv[1].get("x-order", 1 << 30), kv[0]))
        return {name: self.resolve(prop) for name, prop in ordered if isinstance(prop, dict)}

    def resolve(self, prop: Mapping[str, Any]) -> dict[str, Any]:
        """`prop` with what its `$ref` / `allOf: [{$ref}]` points at merged under its own keys."""
        refs = [r["$ref"] for r in prop.get("allOf", []) if isinstance(r, dict) and "$ref" in r]
        if "$ref" in prop:
            refs.append(prop["$ref"])
        flat = {k: v for k, v in prop.items() if k not in ("allOf", "$ref")}
        for ref in refs:
            target = self.components.get(str(ref).rsplit("/", 1)[-1])
            if isinstance(target, dict):
                for key, value in target.items():
                    flat.setdefault(key, value)
        return flat

    def output_shape(self) -> str:
        """ "single" (one file URI) or "list" (a list or iterator of file URIs); SchemaError for
        outputs that are not files (text, objects), which this fleet cannot store."""
        out = self.resolve(self.output)
        if _is_uri(out):
            return "single"
        if out.get("type") == "array" and _is_uri(self.resolve(out.get("items") or {})):
            return "list"
        what = (
            "text" if out.get("type") in ("string", "array") else (out.get("type") or "an undescribed value")
        )
        raise SchemaError(
            f"{self.ref} returns {what}, not files (its Output schema: {dict(self.output)}); "
            "the fleet stores images and videos"
        )


def _is_uri(schema: Mapping[str, Any]) -> bool:
    return schema.get("type") == "string" and schema.get("format") == "uri"


def _accepts_uri(prop: Mapping[str, Any], schema: ModelSchema) -> tuple[bool, bool]:
    """(takes files, as a list)."""
    if _is_uri(prop):
        return True, False
    if prop.get("type") == "array" and _is_uri(schema.resolve(prop.get("items") or {})):
        return True, True
    return False, False


def derive_entry(schema: ModelSchema) -> dict[str, Any]:
    """A registry model table (the built-in file's format) for a model known only by its schema:
    its parameters, reference input, prompt input, output shape and file format. No price and no
    fallback: those only come from the registry files."""
    props = schema.properties()
    output = schema.output_shape()
    entry: dict[str, Any] = {"output": output, "description": f"from the published schema of {schema.ref}"}
    entry["prompt_param"] = "prompt" if "prompt" in props else None
    reference = next((n for n in REFERENCE_NAMES if n in props and _accepts_uri(props[n], schema)[0]), None)
    if reference is not None:
        is_list = _accepts_uri(props[reference], schema)[1]
        entry.update(
            reference_param=reference,
            reference_is_list=is_list,
            max_references=int(props[reference].get("maxItems", 10)) if is_list else 1,
            reference_required=reference in schema.required,
        )
    entry["file_params"] = [n for n, p in props.items() if _accepts_uri(p, schema)[0] and n != reference]
    params: dict[str, dict[str, Any]] = {}
    for name, prop in props.items():
        if name in (entry["prompt_param"], reference):
            continue
        params[name] = _param_entry(prop)
    entry["params"] = params
    formats = params.get("output_format", {}).get("values") or []
    default = params.get("output_format", {}).get("default") or (formats[0] if formats else None)
    # A guess a user file can correct (kind, default_format): videos come one file per call.
    video = output == "single" and (
        any(str(f) in _VIDEO_FORMATS for f in formats) or any(w in props for w in _VIDEO_WORDS)
    )
    entry["kind"] = "video" if video else "image"
    entry["default_format"] = str(default) if default else ("mp4" if video else "png")
    return entry


def _param_entry(prop: Mapping[str, Any]) -> dict[str, Any]:
    """One input as a registry parameter: string/int/float/bool/enum when it is one of those,
    "json" otherwise (the schema itself still checks it)."""
    out: dict[str, Any] = {}
    if isinstance(prop.get("description"), str):
        out["description"] = prop["description"][:300]
    enum = prop.get("enum")
    if (
        isinstance(enum, list)
        and enum
        and all(isinstance(v, str) or (isinstance(v, int) and not isinstance(v, bool)) for v in enum)
        and len({str(v) for v in enum}) == len(enum)
    ):
        out.update(type="enum", values=list(enum))
    else:
        out["type"] = _INT_TYPES.get(str(prop.get("type")), "json") if not enum else "json"
    if out["type"] in ("int", "float"):
        for bound, key in (("min", "minimum"), ("max", "maximum")):
            value = prop.get(key)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                out[bound] = value
    if prop.get("default") is not None and _fits(out, prop["default"]):
        out["default"] = prop["default"]  # a default the schema itself breaks is left out
    return out


def _fits(entry: Mapping[str, Any], value: Any) -> bool:
    spec = ParamSpec("x", entry["type"], tuple(entry.get("values", ())), entry.get("min"), entry.get("max"))
    try:
        return spec.check(value) == value and not (
            isinstance(value, str) and spec.type in ("int", "float", "bool")
        )
    except ParamValueError:
        return False
