"""An item's input checked against its model's published schema, with the `jsonschema` library.

The schema is the version's own `components.schemas.Input` (types, enums behind `allOf` / `$ref`,
minimum / maximum, required inputs), validated as JSON Schema 2020-12 with the components as
`$ref` targets. Unknown inputs are refused too (Replicate would ignore them silently, which
hides typos). Every problem comes back as today's: the field, the value, what is allowed, and a
did-you-mean for names and enum values.

Not checked here: `format: uri`. Such an input takes a URL or a local file, which the producer
checks and the worker uploads (like reference images).
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Mapping
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError

from shared.errors import Problem
from shared.models.spec import ModelSpec

_TYPE_NAMES = {
    bool: "a boolean",
    int: "an integer",
    float: "a number",
    str: "a string",
    list: "a list",
    dict: "an object",
    type(None): "null",
}
_RANGE_KEYWORDS = {
    "minimum": "below the minimum",
    "exclusiveMinimum": "below the minimum",
    "maximum": "above the maximum",
    "exclusiveMaximum": "above the maximum",
}


def build_validator(spec_schema: Any) -> Draft202012Validator:
    """A validator of the Input object of `spec_schema` (a shared.models.openapi.ModelSchema)."""
    root = dict(spec_schema.input)
    root["additionalProperties"] = False
    root["components"] = {"schemas": dict(spec_schema.components)}  # `#/components/schemas/x` targets
    return Draft202012Validator(root)


def check_input(
    spec: ModelSpec, values: Mapping[str, Any], field_of: Callable[[str], str] | None = None
) -> tuple[dict[str, Any], list[Problem]]:
    """(`values` normalized, problems) for the Replicate input `values` of a schema-derived spec.

    Normalized: a whole float for an integer input becomes an int (`5.0` -> `5`). `field_of` names
    an input's field in the user's terms (default `params.<name>`). One problem per input."""
    schema = spec.schema
    field_of = field_of or (lambda name: f"params.{name}")
    props = schema.properties()
    values = {k: _normalized(props.get(k, {}), v) for k, v in values.items()}
    problems: dict[str, Problem] = {}
    for error in sorted(
        schema.input_validator.iter_errors(values), key=lambda e: list(map(str, e.absolute_path))
    ):
        for name, message in _explain(error, spec, props, values):
            suffix = "" if spec.name in message else f" (model {spec.name})"
            problems.setdefault(name, Problem(message + suffix, field=field_of(name)))
    return values, list(problems.values())


def _normalized(prop: Mapping[str, Any], value: Any) -> Any:
    if prop.get("type") == "integer" and isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _explain(
    error: ValidationError, spec: ModelSpec, props: Mapping[str, Any], values: Mapping[str, Any]
) -> list[tuple[str, str]]:
    """(input name, message) pairs for one jsonschema error."""
    path = list(error.absolute_path)
    if not path:
        if error.validator == "additionalProperties":
            return [(name, _unknown(name, spec, props)) for name in values if name not in props]
        if error.validator == "required":
            return [
                (name, f"{name!r} is required{_described(props.get(name))}")
                for name in _schema_value(error)
                if name not in values
            ]
        return [("input", error.message)]
    name = str(path[0])
    where = name + "".join(f"[{p}]" for p in path[1:])
    value = error.instance
    allowed = _allowed(spec, name, error)
    if error.validator == "enum":
        choices = {str(v).casefold(): v for v in _schema_value(error)}
        close = difflib.get_close_matches(str(value).casefold(), list(choices), n=1, cutoff=0.6)
        hint = f" Did you mean {choices[close[0]]!r}?" if close and choices[close[0]] != value else ""
        return [(name, f"{value!r} is not allowed: must be {allowed}.{hint}")]
    if error.validator == "type":
        inner = f"{where} " if len(path) > 1 else ""
        return [
            (
                name,
                f"{inner}must be {allowed}, not {_TYPE_NAMES.get(type(value), type(value).__name__)} "
                f"{value!r}",
            )
        ]
    if error.validator in _RANGE_KEYWORDS:
        return [(name, f"{value!r} is {_RANGE_KEYWORDS[error.validator]}: must be {allowed}")]
    return [(name, f"{where}: {error.message}")]


def _schema_value(error: ValidationError) -> Any:
    """The failed keyword's value in the schema (the `enum` list, the `type` ...). Always set on
    the errors a validator yields; jsonschema types it `Any | Unset` for errors made by hand."""
    return error.validator_value


def _allowed(spec: ModelSpec, name: str, error: ValidationError) -> str:
    """What the input takes, in words: the derived parameter's own text when it has one."""
    param = spec.params.get(name)
    if param is not None and param.type != "json" and len(error.absolute_path) == 1:
        return param.allowed()
    if error.validator == "enum":
        return "one of " + ", ".join(repr(v) for v in _schema_value(error))
    if error.validator == "type":
        value = _schema_value(error)
        kinds = value if isinstance(value, list) else [value]
        return " or ".join(
            {
                "integer": "an integer",
                "number": "a number",
                "string": "a string",
                "boolean": "true or false",
                "array": "a list",
                "object": "an object",
                "null": "null",
            }.get(k, str(k))
            for k in kinds
        )
    return f"{error.validator} {_schema_value(error)!r}"


def _unknown(name: str, spec: ModelSpec, props: Mapping[str, Any]) -> str:
    close = difflib.get_close_matches(name, sorted(props), n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    return (
        f"unknown parameter {name!r} for {spec.name}.{hint} It accepts: {', '.join(sorted(props)) or 'none'}"
    )


def _described(prop: Mapping[str, Any] | None) -> str:
    text = (prop or {}).get("description")
    return f" ({text.strip()[:120]})" if isinstance(text, str) and text.strip() else ""
