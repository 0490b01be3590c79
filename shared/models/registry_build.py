"""The registry's layers merged (later files over earlier ones) and built into specs: each
complete entry checked as a whole, aliases unique, fallbacks and routing resolved; an entry
that is not complete is kept as an overlay for its model's schema to complete."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from shared.models.reference import parse_ref
from shared.models.registry_shape import REQUIRED_MODEL_KEYS, place
from shared.models.spec import ModelSpec, ParamSpec


def merge_layer(
    merged: dict[str, Any], data: Mapping[str, Any], source: str, origin: dict[tuple[str, str], str]
) -> None:
    for key, value in data.get("routing", {}).items():
        merged["routing"][key] = value
        origin[("routing", key)] = source
    _merge_mappings(merged["mappings"], data.get("mappings", {}))
    for name, model in data.get("models", {}).items():
        target = merged["models"].setdefault(name, {})
        for key, value in model.items():
            if key == "params":
                target.setdefault("params", {}).update(value)
            elif key == "mappings":
                _merge_mappings(target.setdefault("mappings", {"values": {}, "renames": {}}), value)
            else:
                target[key] = value
        origin[("models", name)] = source


def _merge_mappings(target: dict[str, Any], mappings: Mapping[str, Any]) -> None:
    for param, table in mappings.get("values", {}).items():
        target.setdefault("values", {}).setdefault(param, {}).update(table)
    for param, names in mappings.get("renames", {}).items():
        target.setdefault("renames", {})[param] = names


# ---------------------------------------------------------------------------------------- build
def build_parts(
    merged: dict[str, Any], origin: dict[tuple[str, str], str], errors: list[str]
) -> dict[str, Any] | None:
    """ModelRegistry's arguments for the merged layers, or None with `errors` said."""
    specs: dict[str, ModelSpec] = {}
    overlays: dict[str, tuple[dict[str, Any], str]] = {}
    for name, model in merged["models"].items():
        if not all(key in model for key in REQUIRED_MODEL_KEYS):
            overlays[str(parse_ref(name))] = (model, origin[("models", name)])
            continue
        spec = build_model(name, model, origin[("models", name)], errors)
        if spec is not None:
            specs[name] = spec

    # aliases: unique, and never shadowing another model's name
    seen: dict[str, str] = {n.casefold(): n for n in [*specs, *overlays]}
    named = [(spec.name, spec.aliases) for spec in specs.values()]
    named += [(name, tuple(data.get("aliases", ()))) for name, (data, _) in overlays.items()]
    for name, aliases in named:
        for alias in aliases:
            owner = seen.get(alias.casefold())
            if owner is not None and owner != name:
                errors.append(
                    f"{place(origin[('models', name)], name, 'aliases')}: "
                    f"alias {alias!r} is already used by {owner!r}"
                )
            seen[alias.casefold()] = name

    def resolve(name: str) -> str | None:
        found = seen.get(name.casefold())
        return found

    fallbacks: list[tuple[str, str | None, tuple[str, ...]]]
    fallbacks = [(spec.name, spec.kind, spec.fallback) for spec in specs.values()]
    fallbacks += [
        (name, data.get("kind"), tuple(data.get("fallback", ()))) for name, (data, _) in overlays.items()
    ]
    for name, kind, targets in fallbacks:
        src = origin[("models", name)]
        for fb in targets:
            target = resolve(fb)
            if target is None:
                errors.append(
                    f"{place(src, name, 'fallback')}: unknown model {fb!r} (a model only the schema "
                    "knows needs an entry of its own to be a fallback, e.g. its price)"
                )
            elif target == name:
                errors.append(f"{place(src, name, 'fallback')}: a model cannot fall back to itself")
            elif target in specs and kind is not None and specs[target].kind != kind:
                errors.append(kind_mismatch(src, name, fb, specs[target].kind, kind))

    routing = merged["routing"]
    resolved_routing: dict[str, str] = {}
    for key in ("single_reference_model", "multi_reference_model", "default_model"):
        src = origin.get(("routing", key), "<registry>")
        value = routing.get(key)
        if value is None:
            errors.append(f"{src}: routing.{key} is missing")
            continue
        target = resolve(value)
        if target is None or target not in specs:
            why = "" if target is None else " (routing needs a complete entry: kind, output, default_format)"
            errors.append(f"{src}: routing.{key}: unknown model {value!r}{why}")
            continue
        resolved_routing[key] = target
        spec = specs[target]
        if key == "single_reference_model" and (spec.max_references < 1 or spec.kind != "image"):
            errors.append(
                f"{src}: routing.{key}: {target!r} must be an image model that takes a reference image"
            )
        if key == "multi_reference_model" and (spec.max_references < 2 or spec.kind != "image"):
            errors.append(
                f"{src}: routing.{key}: {target!r} must be an image model that takes several reference images"
            )
        if key == "default_model" and spec.reference_required:
            errors.append(
                f"{src}: routing.{key}: {target!r} needs a reference image; pick a text-to-image model"
            )
    if errors:
        return None

    # Every fallback resolved (an unknown one is an error above), so none is dropped here.
    resolved_specs = {
        name: with_fallback(spec, tuple(t for fb in spec.fallback if (t := resolve(fb)) is not None))
        for name, spec in specs.items()
    }
    value_maps, renames = freeze_mappings(merged["mappings"])
    return dict(
        specs=resolved_specs,
        single_reference_model=resolved_routing["single_reference_model"],
        multi_reference_model=resolved_routing["multi_reference_model"],
        default_model=resolved_routing["default_model"],
        max_route_length=routing.get("max_route_length", 4),
        value_maps=value_maps,
        renames=renames,
        overlays={
            name: (_with_resolved_fallback(data, resolve), src) for name, (data, src) in overlays.items()
        },
    )


def _with_resolved_fallback(data: dict[str, Any], resolve) -> dict[str, Any]:
    if "fallback" not in data:
        return data
    return {**data, "fallback": [resolve(fb) or fb for fb in data["fallback"]]}


def layer_overlay(derived: Mapping[str, Any], overlay: Mapping[str, Any]) -> dict[str, Any]:
    """`overlay` (a registry entry) over `derived` (a schema's entry): keys replace, params merge
    per parameter; a reference input the overlay names is taken out of the parameters."""
    data = {**derived, **{k: v for k, v in overlay.items() if k != "params"}}
    data["params"] = {**derived.get("params", {}), **overlay.get("params", {})}
    for moved in ("reference_param", "prompt_param"):
        if overlay.get(moved):
            data["params"].pop(overlay[moved], None)
    return data


def with_fallback(spec: ModelSpec, fallback: tuple[str, ...], **changes: Any) -> ModelSpec:
    """`spec` with its resolved fallback route (each model once, in order), and any `changes`."""
    return replace(spec, fallback=tuple(dict.fromkeys(fallback)), **changes)


def kind_mismatch(source: str, name: str, fallback: str, fallback_kind: str, kind: str | None) -> str:
    """The problem of a fallback that makes another kind of output than its model."""
    return f"{place(source, name, 'fallback')}: {fallback!r} makes {fallback_kind}s, this model makes {kind}s"


def freeze_mappings(
    mappings: Mapping[str, Any],
) -> tuple[dict[str, dict[str, tuple[Any, ...]]], dict[str, tuple[str, ...]]]:
    """A [mappings] table (global or a model's) as (value maps, renames), its lists as tuples."""
    values = mappings.get("values", {})
    value_maps = {param: {str(v): tuple(c) for v, c in table.items()} for param, table in values.items()}
    return value_maps, {k: tuple(v) for k, v in mappings.get("renames", {}).items()}


def build_model(name: str, model: dict[str, Any], source: str, errors: list[str]) -> ModelSpec | None:
    def bad(field: str | None, message: str) -> None:
        errors.append(f"{place(source, name, field)}: {message}")

    missing = [key for key in REQUIRED_MODEL_KEYS if key not in model]
    for key in missing:
        bad(key, "is required for a new model")
    if missing:
        return None
    params = {
        pname: ParamSpec(
            name=pname,
            type=p["type"],
            values=tuple(p.get("values", ())),
            min=p.get("min"),
            max=p.get("max"),
            default=p.get("default"),
            description=p.get("description", ""),
        )
        for pname, p in model.get("params", {}).items()
    }
    ref = model.get("reference_param") or None
    max_refs = model.get("max_references", 1 if ref else 0)
    is_list = model.get("reference_is_list", max_refs > 1)
    required = model.get("reference_required", False)
    before = len(errors)
    if ref is None and max_refs:
        bad("max_references", "is set but the model has no reference_param")
    if ref is not None and max_refs < 1:
        bad("max_references", f"must be at least 1 when reference_param is {ref!r}")
    if max_refs > 1 and not is_list:
        bad("reference_is_list", "must be true when max_references is above 1")
    if required and ref is None:
        bad("reference_required", "needs a reference_param")
    if ref is not None and ref in params:
        bad("params", f"{ref!r} is the reference input; declare it with reference_param only")
    fmt = model["default_format"]
    out_fmt = params.get("output_format")
    if out_fmt is not None and out_fmt.type == "enum" and fmt not in [str(v) for v in out_fmt.values]:
        bad("default_format", f"{fmt!r} is not among output_format's values")
    if model.get("price") is not None and model.get("price_unit", "call") == "second":
        duration = params.get("duration")
        if duration is None or duration.default is None:
            bad("price_unit", "a price per second needs a 'duration' parameter with a default")
    if model["kind"] == "video" and model["output"] != "single":
        bad("output", "video models return a single file")
    if len(errors) > before:
        return None
    value_maps, renames = freeze_mappings(model.get("mappings", {}))
    return ModelSpec(
        name=name,
        kind=model["kind"],
        output=model["output"],
        default_format=fmt,
        price=float(model["price"]) if model.get("price") is not None else None,
        price_unit=model.get("price_unit", "call"),
        params=params,
        reference_param=ref,
        max_references=max_refs,
        reference_is_list=is_list,
        reference_required=required,
        fallback=tuple(model.get("fallback", ())),
        aliases=tuple(model.get("aliases", ())),
        description=model.get("description", ""),
        price_note=model.get("price_note", ""),
        value_maps=value_maps,
        renames=renames,
        prompt_param=model.get("prompt_param", "prompt") or None,
        file_params=tuple(model.get("file_params", ())),
    )
