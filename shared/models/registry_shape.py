"""The shape of one registry file on its own (a file may be partial: an override): known keys,
types and ranges, each problem named by file, model and field."""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping
from typing import Any

from shared.common import is_int, is_number
from shared.models.reference import is_reference
from shared.models.spec import KINDS, OUTPUTS, PARAM_TYPES, PRICE_UNITS, ParamSpec

_PARAM_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_FORMAT = re.compile(r"^[a-z0-9]{2,5}$")

_TOP_KEYS = {"routing", "mappings", "models"}
_ROUTING_KEYS = {"single_reference_model", "multi_reference_model", "default_model", "max_route_length"}
_MAPPING_KEYS = {"values", "renames"}
_MODEL_KEYS = {
    "kind",
    "aliases",
    "description",
    "reference_param",
    "max_references",
    "reference_is_list",
    "reference_required",
    "output",
    "default_format",
    "price",
    "price_unit",
    "price_note",
    "fallback",
    "params",
    "mappings",
    "prompt_param",
    "file_params",
}
# What makes an entry complete (used as written); without them it is an overlay on the schema.
REQUIRED_MODEL_KEYS = ("kind", "output", "default_format")
_PARAM_KEYS = {"type", "values", "min", "max", "default", "description"}
# The prompt is passed by every model as "prompt"; reference inputs are declared apart.
_RESERVED_PARAMS = {"prompt"}


def error_text(errors: list[str]) -> str:
    return "invalid model registry:\n" + "\n".join(f"  {e}" for e in errors)


def _unknown_key(key: str, known: set[str]) -> str:
    close = difflib.get_close_matches(key, sorted(known), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"unknown key {key!r}{hint}; known keys: {', '.join(sorted(known))}"


def place(source: str, model: str | None, field: str | None) -> str:
    parts = [source]
    if model is not None:
        parts.append(f"model {model!r}")
    if field is not None:
        parts.append(f"field {field!r}")
    return ": ".join(parts)


def _is_str_list(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) and v for v in value)


def check_shape(data: Mapping[str, Any], source: str, errors: list[str]) -> None:
    """Types and known keys of one file on its own (a file may be partial: an override)."""
    for key in data:
        if key not in _TOP_KEYS:
            errors.append(f"{source}: {_unknown_key(key, _TOP_KEYS)}")
    routing = data.get("routing", {})
    if not isinstance(routing, dict):
        errors.append(f"{source}: 'routing' must be a table")
    else:
        for key, value in routing.items():
            if key not in _ROUTING_KEYS:
                errors.append(f"{source}: routing: {_unknown_key(key, _ROUTING_KEYS)}")
            elif key == "max_route_length":
                if not is_int(value) or value < 1:
                    errors.append(f"{source}: routing.max_route_length must be an integer >= 1")
            elif not isinstance(value, str) or not value:
                errors.append(f"{source}: routing.{key} must be a model name")
    _check_mappings(data.get("mappings", {}), source, None, errors)
    models = data.get("models", {})
    if not isinstance(models, dict):
        errors.append(f"{source}: 'models' must be a table of models")
        return
    for name, model in models.items():
        _check_model_shape(name, model, source, errors)


def _check_mappings(mappings: Any, source: str, model: str | None, errors: list[str]) -> None:
    def where(field: str) -> str:
        return place(source, model, field)

    if not isinstance(mappings, dict):
        errors.append(f"{where('mappings')}: must be a table")
        return
    for key in mappings:
        if key not in _MAPPING_KEYS:
            errors.append(f"{where('mappings')}: {_unknown_key(key, _MAPPING_KEYS)}")
    values = mappings.get("values", {})
    if not isinstance(values, dict):
        errors.append(f"{where('mappings.values')}: must be a table of parameter -> value map")
    else:
        for param, table in values.items():
            if not isinstance(table, dict):
                errors.append(
                    f"{where(f'mappings.values.{param}')}: must be a table of value -> [candidates]"
                )
                continue
            for value, candidates in table.items():
                if not isinstance(candidates, list) or not all(
                    isinstance(c, str) or is_int(c) for c in candidates
                ):
                    errors.append(f"{where(f'mappings.values.{param}.{value}')}: must be a list of values")
    renames = mappings.get("renames", {})
    if not isinstance(renames, dict):
        errors.append(f"{where('mappings.renames')}: must be a table of parameter -> [names]")
    else:
        for param, names in renames.items():
            if not isinstance(names, list) or not all(
                isinstance(n, str) and _PARAM_NAME.match(n) for n in names
            ):
                errors.append(f"{where(f'mappings.renames.{param}')}: must be a list of parameter names")


def _check_model_shape(name: str, model: Any, source: str, errors: list[str]) -> None:
    def bad(field: str | None, message: str) -> None:
        errors.append(f"{place(source, name, field)}: {message}")

    if not is_reference(name):
        bad(
            None,
            "a model name is owner/name, as Replicate spells it (e.g. black-forest-labs/flux-dev), "
            "or owner/name:VERSION, or deployments/owner/name",
        )
    if not isinstance(model, dict):
        bad(None, "must be a table of fields")
        return
    for key in model:
        if key not in _MODEL_KEYS:
            bad(key, _unknown_key(key, _MODEL_KEYS))
    checks: dict[str, tuple[Any, str]] = {
        "kind": (lambda v: v in KINDS, f"must be one of {', '.join(KINDS)}"),
        "output": (lambda v: v in OUTPUTS, f"must be one of {', '.join(OUTPUTS)}"),
        "price_unit": (lambda v: v in PRICE_UNITS, f"must be one of {', '.join(PRICE_UNITS)}"),
        "price": (lambda v: is_number(v) and v >= 0, "must be a number >= 0 (USD)"),
        "default_format": (
            lambda v: isinstance(v, str) and bool(_FORMAT.match(v)),
            "must be a file extension without the dot, e.g. 'png'",
        ),
        "max_references": (lambda v: is_int(v) and 0 <= v <= 100, "must be an integer from 0 to 100"),
        "reference_is_list": (lambda v: isinstance(v, bool), "must be true or false"),
        "reference_required": (lambda v: isinstance(v, bool), "must be true or false"),
        "reference_param": (
            lambda v: v is None or (isinstance(v, str) and bool(_PARAM_NAME.match(v))),
            "must be a parameter name (or absent/null for none)",
        ),
        "aliases": (_is_str_list, "must be a list of names"),
        "fallback": (_is_str_list, "must be a list of model names"),
        "description": (lambda v: isinstance(v, str), "must be a string"),
        "price_note": (lambda v: isinstance(v, str), "must be a string"),
        "prompt_param": (
            lambda v: v is None or v == "" or (isinstance(v, str) and bool(_PARAM_NAME.match(v))),
            "must be the input that takes the prompt ('' for none)",
        ),
        "file_params": (
            lambda v: isinstance(v, list) and all(isinstance(n, str) and _PARAM_NAME.match(n) for n in v),
            "must be a list of parameter names",
        ),
    }
    for key, (ok, message) in checks.items():
        if key in model and not ok(model[key]):
            bad(key, f"{message}, not {model[key]!r}")
    if "mappings" in model:
        _check_mappings(model["mappings"], source, name, errors)
    params = model.get("params", {})
    if not isinstance(params, dict):
        bad("params", "must be a table of parameter -> spec")
        return
    for pname, pspec in params.items():
        _check_param_shape(pname, pspec, lambda f, m: bad(f, m))


def _check_param_shape(pname: str, pspec: Any, bad) -> None:
    field = f"params.{pname}"
    if not _PARAM_NAME.match(pname) or pname in _RESERVED_PARAMS:
        bad(
            field,
            "not a usable parameter name"
            + (" (the prompt is always passed)" if pname in _RESERVED_PARAMS else ""),
        )
    if not isinstance(pspec, dict):
        bad(field, 'must be a table like { type = "int", min = 1, max = 4 }')
        return
    for key in pspec:
        if key not in _PARAM_KEYS:
            bad(f"{field}.{key}", _unknown_key(key, _PARAM_KEYS))
    ptype = pspec.get("type")
    if ptype not in PARAM_TYPES:
        bad(f"{field}.type", f"must be one of {', '.join(PARAM_TYPES)}, not {ptype!r}")
        return
    values = pspec.get("values")
    if ptype == "enum":
        if (
            not isinstance(values, list)
            or not values
            or not all((isinstance(v, str) or is_int(v)) for v in values)
        ):
            bad(f"{field}.values", "an enum needs a non-empty list of string or integer values")
            return
        if len({str(v) for v in values}) != len(values):
            bad(f"{field}.values", "values repeat")
    elif values is not None:
        bad(f"{field}.values", f"only enum parameters have values (type is {ptype!r})")
    for bound in ("min", "max"):
        if bound in pspec:
            if ptype not in ("int", "float"):
                bad(f"{field}.{bound}", f"only int and float parameters have {bound}")
            elif not is_number(pspec[bound]):
                bad(f"{field}.{bound}", "must be a number")
    lo, hi = pspec.get("min"), pspec.get("max")
    if is_number(lo) and is_number(hi) and lo > hi:
        bad(field, f"min {lo} is above max {hi}")
    if "default" in pspec:
        spec = ParamSpec(
            pname, ptype, tuple(values or ()), lo if is_number(lo) else None, hi if is_number(hi) else None
        )
        try:
            if spec.check(pspec["default"]) != pspec["default"] or (
                isinstance(pspec["default"], str) and ptype in ("int", "float", "bool")
            ):
                raise ValueError
        except Exception:
            bad(f"{field}.default", f"{pspec['default']!r} is not {spec.allowed()}")
