"""The model registry: the built-in data file plus an optional user file, validated at load,
and, for any other model, what its published schema says.

A user file (TOML, or JSON when its name ends in .json) has the built-in file's shape. It adds
models, or changes the keys it names of a known model (its `params` merge per parameter; any
other key replaces the built-in value), and may change [routing] and [mappings]. Every problem
found is reported at once, each naming the file, the model and the field.

Layers, lowest first: a model's published schema (shared.models.openapi), the built-in file, the
user file. A model entry that gives `kind`, `output` and `default_format` is complete and used as
written (the curated models); one that leaves any of them out (say only a price, a fallback
route, aliases or mappings) is an overlay, completed from the schema of the model it names
(`with_schemas`). Models named by no entry at all (any `owner/name`, `owner/name:VERSION`,
`deployments/owner/name`) are taken from their schema alone: no price, no fallback.
"""

from __future__ import annotations

import difflib
import json
import re
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

from shared.common import is_int, is_number
from shared.errors import ConfigError, Problem, UnknownModelError
from shared.models.openapi import ModelSchema, SchemaError, derive_entry
from shared.models.reference import is_reference, parse_ref
from shared.models.spec import KINDS, OUTPUTS, PARAM_TYPES, PRICE_UNITS, ModelSpec, ParamSpec

BUILTIN_MODELS_FILE = Path(__file__).with_name("builtin.toml")

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
_REQUIRED_MODEL_KEYS = ("kind", "output", "default_format")
# Inherited by a pinned version from its model's entry when the version has none of its own.
_PRICE_KEYS = ("price", "price_unit", "price_note")
_PARAM_KEYS = {"type", "values", "min", "max", "default", "description"}
# The prompt is passed by every model as "prompt"; reference inputs are declared apart.
_RESERVED_PARAMS = {"prompt"}


class ModelRegistry:
    """Every model known to this run, by canonical name, plus routing and mapping rules."""

    def __init__(
        self,
        specs: Mapping[str, ModelSpec],
        *,
        single_reference_model: str,
        multi_reference_model: str,
        default_model: str,
        max_route_length: int = 4,
        value_maps: Mapping[str, Mapping[str, tuple[Any, ...]]] | None = None,
        renames: Mapping[str, tuple[str, ...]] | None = None,
        sources: tuple[Path, ...] = (),
        overlays: Mapping[str, tuple[Mapping[str, Any], str]] | None = None,
    ):
        self._specs = dict(specs)
        # Incomplete entries (name -> (merged data, source file)), completed from a schema.
        self._overlays = dict(overlays or {})
        # Why a reference's schema could not be had (ref -> message), for the items naming it.
        self.schema_failures: dict[str, str] = {}
        self.single_reference_model = single_reference_model
        self.multi_reference_model = multi_reference_model
        self.default_model = default_model
        self.max_route_length = max_route_length
        self.value_maps = dict(value_maps or {})
        self.renames = dict(renames or {})
        self.sources = sources
        self._aliases: dict[str, str] = {}
        for name, (data, _) in self._overlays.items():
            for alias in data.get("aliases", ()):
                self._aliases[alias] = name
        for spec in self._specs.values():
            for alias in spec.aliases:
                self._aliases[alias] = spec.name
        self._folded = {name.casefold(): name for name in [*self._specs, *self._overlays, *self._aliases]}
        self._param_names = {p for spec in self._specs.values() for p in spec.params}
        self._reference_params = {
            spec.reference_param for spec in self._specs.values() if spec.reference_param
        }

    # -- lookup ---------------------------------------------------------------------------
    def names(self) -> list[str]:
        return sorted(self._specs)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.resolve(name) is not None

    def __iter__(self) -> Iterator[ModelSpec]:
        return iter(self._specs[name] for name in self.names())

    def __len__(self) -> int:
        return len(self._specs)

    def resolve(self, name: str) -> str | None:
        """Canonical name for a name or alias (case-insensitive) of a registry entry, or None."""
        if name in self._specs or name in self._overlays:
            return name
        if name in self._aliases:
            return self._aliases[name]
        found = self._folded.get(name.strip().casefold())
        return self._aliases.get(found, found) if found else None

    def get(self, name: str) -> ModelSpec:
        canonical = self.resolve(name) if isinstance(name, str) else None
        if canonical is None or canonical not in self._specs:
            raise UnknownModelError(Problem(self.unknown_model_message(name), field="model"))
        return self._specs[canonical]

    def schema_ref(self, name: object) -> str | None:
        """The reference whose published schema completes `name` (an overlay entry, or any model
        reference the registry has no entry for), or None: curated, or not a model name at all."""
        if not isinstance(name, str):
            return None
        canonical = self.resolve(name)
        if canonical is not None:
            return None if canonical in self._specs else canonical
        return str(parse_ref(name)) if is_reference(name) else None

    def suggestion(self, name: object) -> str:
        """' Did you mean 'x'?' for a name close to a registry entry, else ''."""
        candidates = [*self._specs, *self._overlays, *self._aliases]
        close = difflib.get_close_matches(str(name), candidates, n=1, cutoff=0.6)
        return f" Did you mean {self.resolve(close[0])!r}?" if close else ""

    def unknown_model_message(self, name: object) -> str:
        hint = self.suggestion(name)
        failure = self.schema_failures.get(self.schema_ref(name) or "")
        if failure is not None:
            return f"{failure}{hint}"
        if is_reference(name):
            return (
                f"model {name!r} is not in the registry and its schema was not read (it is read from "
                f"Replicate at submit, which needs REPLICATE_API_TOKEN and Redis).{hint}"
            )
        return (
            f"unknown model {name!r}.{hint} Known models: {', '.join(self.names())}. Any Replicate "
            "model works too: owner/name, owner/name:VERSION or deployments/owner/name (FLEET_MODELS_FILE "
            "can give it a price, a route, aliases)"
        )

    # -- models known by their schema ---------------------------------------------------------------
    def overlay_names(self) -> list[str]:
        """Registry entries completed from a schema (a price, a route ... for a Replicate model)."""
        return sorted(self._overlays)

    def overlay(self, name: str) -> Mapping[str, Any]:
        return dict(self._overlays.get(name, ({}, ""))[0])

    def spec_from_schema(self, ref: str, schema: ModelSchema) -> ModelSpec:
        """The spec of `ref`: its schema (shared.models.openapi.derive_entry), under its registry
        entry if it has one (a pinned version without one takes its model's price). Raises
        SchemaError (output not files) or ConfigError (an entry that does not fit the schema)."""
        entry = derive_entry(schema)
        overlay, source = self._overlays.get(ref, ({}, f"<schema of {ref}>"))
        data = _layer(entry, overlay)
        if not any(k in overlay for k in _PRICE_KEYS):
            data.update(self._inherited_price(ref))
        errors: list[str] = []
        spec = _build_model(ref, data, source, errors)
        fallback = []
        kind = spec.kind if spec is not None else None
        for name in spec.fallback if spec is not None else ():
            target = self.resolve(name)
            if target is None or target == ref:
                errors.append(f"{_where(source, ref, 'fallback')}: unknown model {name!r}")
            elif target in self._specs and self._specs[target].kind != kind:
                errors.append(
                    f"{_where(source, ref, 'fallback')}: {name!r} makes {self._specs[target].kind}s, "
                    f"this model makes {kind}s"
                )
            else:
                fallback.append(target)
        if errors or spec is None:
            raise ConfigError(_error_text(errors))
        from dataclasses import replace

        return replace(spec, schema=schema, fallback=tuple(dict.fromkeys(fallback)))

    def with_schemas(
        self, schemas: Mapping[str, ModelSchema], failures: Mapping[str, str] | None = None
    ) -> ModelRegistry:
        """A registry that also knows the models of `schemas` (ref -> schema), and says why the
        models of `failures` (ref -> reason) are unknown; this one is unchanged."""
        specs = dict(self._specs)
        failed = dict(failures or {})
        for ref, schema in schemas.items():
            if ref not in specs:
                try:
                    specs[ref] = self.spec_from_schema(ref, schema)
                except SchemaError as exc:  # e.g. a model that returns text
                    failed[ref] = str(exc)
        registry = ModelRegistry(
            specs,
            single_reference_model=self.single_reference_model,
            multi_reference_model=self.multi_reference_model,
            default_model=self.default_model,
            max_route_length=self.max_route_length,
            value_maps=self.value_maps,
            renames=self.renames,
            sources=self.sources,
            overlays={n: o for n, o in self._overlays.items() if n not in specs},
        )
        registry.schema_failures = {**self.schema_failures, **failed}
        return registry

    def _inherited_price(self, ref: str) -> dict[str, Any]:
        parsed = parse_ref(ref)
        if parsed.kind != "version":
            return {}
        base = self.resolve(parsed.model)
        if base in self._specs:
            spec = self._specs[base]
            if spec.price is None:
                return {}
            return {"price": spec.price, "price_unit": spec.price_unit, "price_note": spec.price_note}
        if base in self._overlays:
            return {k: v for k, v in self._overlays[base][0].items() if k in _PRICE_KEYS}
        return {}

    # -- parameters -------------------------------------------------------------------------
    def all_param_names(self) -> set[str]:
        """Every parameter name some model accepts (to tell a typo from another model's param)."""
        return set(self._param_names)

    def reference_param_names(self) -> set[str]:
        """Every input name some model takes reference images under (input_image, image_input...)."""
        return set(self._reference_params)

    def value_candidates(self, model: str, param: str, value: Any) -> tuple[Any, ...]:
        """Replacement values for `value` of `param` on `model`: the model's own map, then the global one."""
        spec = self.get(model)
        key = str(value)
        own = spec.value_maps.get(param, {}).get(key, ())
        shared = self.value_maps.get(param, {}).get(key, ())
        return tuple(dict.fromkeys([*own, *shared]))

    def rename_candidates(self, model: str, param: str) -> tuple[str, ...]:
        spec = self.get(model)
        return tuple(dict.fromkeys([*spec.renames.get(param, ()), *self.renames.get(param, ())]))

    # -- construction -------------------------------------------------------------------------
    @classmethod
    def from_data(cls, *layers: tuple[Mapping[str, Any], str]) -> ModelRegistry:
        """Build from (data, source name) layers, later layers over earlier ones; validates all."""
        errors: list[str] = []
        merged: dict[str, Any] = {"routing": {}, "mappings": {"values": {}, "renames": {}}, "models": {}}
        origin: dict[tuple[str, str], str] = {}  # (section, key) -> source that last set it
        for data, source in layers:
            before = len(errors)
            _check_shape(data, source, errors)
            if len(errors) == before:  # merge only well-formed files, so later checks see sane data
                _merge(merged, data, source, origin)
        if errors:
            raise ConfigError(_error_text(errors))
        registry = _build(merged, origin, errors)
        if errors or registry is None:
            raise ConfigError(_error_text(errors))
        registry.sources = tuple(Path(s) for _, s in layers if not s.startswith("<"))
        return registry


def load_registry(extra: str | Path | None = None) -> ModelRegistry:
    """The built-in models, extended/overridden by the user file `extra` (TOML, or JSON by suffix)."""
    layers = [(_read_file(BUILTIN_MODELS_FILE), str(BUILTIN_MODELS_FILE))]
    if extra is not None and str(extra) != "":
        layers.append((_read_file(Path(extra)), str(extra)))
    return ModelRegistry.from_data(*layers)


# ---------------------------------------------------------------------------------------- files
def _read_file(path: Path) -> dict[str, Any]:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(
            f"model registry file {str(path)!r} cannot be read: {exc.strerror or exc}"
        ) from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(
                f"{path}: invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}"
            ) from None
    else:
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: invalid TOML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be an object/table with a 'models' section")
    return data


def _error_text(errors: list[str]) -> str:
    return "invalid model registry:\n" + "\n".join(f"  {e}" for e in errors)


def _unknown_key(key: str, known: set[str]) -> str:
    close = difflib.get_close_matches(key, sorted(known), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"unknown key {key!r}{hint}; known keys: {', '.join(sorted(known))}"


def _where(source: str, model: str | None, field: str | None) -> str:
    parts = [source]
    if model is not None:
        parts.append(f"model {model!r}")
    if field is not None:
        parts.append(f"field {field!r}")
    return ": ".join(parts)


def _is_str_list(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) and v for v in value)


# ---------------------------------------------------------------------------------------- shape
def _check_shape(data: Mapping[str, Any], source: str, errors: list[str]) -> None:
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
        return _where(source, model, field)

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
        errors.append(f"{_where(source, name, field)}: {message}")

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


# ---------------------------------------------------------------------------------------- merge
def _merge(
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
def _build(
    merged: dict[str, Any], origin: dict[tuple[str, str], str], errors: list[str]
) -> ModelRegistry | None:
    specs: dict[str, ModelSpec] = {}
    overlays: dict[str, tuple[dict[str, Any], str]] = {}
    for name, model in merged["models"].items():
        if not all(key in model for key in _REQUIRED_MODEL_KEYS):
            overlays[str(parse_ref(name))] = (model, origin[("models", name)])
            continue
        spec = _build_model(name, model, origin[("models", name)], errors)
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
                    f"{_where(origin[('models', name)], name, 'aliases')}: "
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
                    f"{_where(src, name, 'fallback')}: unknown model {fb!r} (a model only the schema "
                    "knows needs an entry of its own to be a fallback, e.g. its price)"
                )
            elif target == name:
                errors.append(f"{_where(src, name, 'fallback')}: a model cannot fall back to itself")
            elif target in specs and kind is not None and specs[target].kind != kind:
                errors.append(
                    f"{_where(src, name, 'fallback')}: {fb!r} makes {specs[target].kind}s, "
                    f"this model makes {kind}s"
                )

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
        name: _with_fallback(spec, tuple(t for fb in spec.fallback if (t := resolve(fb)) is not None))
        for name, spec in specs.items()
    }
    return ModelRegistry(
        resolved_specs,
        single_reference_model=resolved_routing["single_reference_model"],
        multi_reference_model=resolved_routing["multi_reference_model"],
        default_model=resolved_routing["default_model"],
        max_route_length=routing.get("max_route_length", 4),
        value_maps=_freeze_value_maps(merged["mappings"].get("values", {})),
        renames={k: tuple(v) for k, v in merged["mappings"].get("renames", {}).items()},
        overlays={
            name: (_with_resolved_fallback(data, resolve), src) for name, (data, src) in overlays.items()
        },
    )


def _with_resolved_fallback(data: dict[str, Any], resolve) -> dict[str, Any]:
    if "fallback" not in data:
        return data
    return {**data, "fallback": [resolve(fb) or fb for fb in data["fallback"]]}


def _layer(derived: Mapping[str, Any], overlay: Mapping[str, Any]) -> dict[str, Any]:
    """`overlay` (a registry entry) over `derived` (a schema's entry): keys replace, params merge
    per parameter; a reference input the overlay names is taken out of the parameters."""
    data = {**derived, **{k: v for k, v in overlay.items() if k != "params"}}
    data["params"] = {**derived.get("params", {}), **overlay.get("params", {})}
    for moved in ("reference_param", "prompt_param"):
        if overlay.get(moved):
            data["params"].pop(overlay[moved], None)
    return data


def _with_fallback(spec: ModelSpec, fallback: tuple[str, ...]) -> ModelSpec:
    from dataclasses import replace

    return replace(spec, fallback=tuple(dict.fromkeys(fallback)))


def _freeze_value_maps(
    values: Mapping[str, Mapping[str, list[Any]]],
) -> dict[str, dict[str, tuple[Any, ...]]]:
    return {param: {str(v): tuple(c) for v, c in table.items()} for param, table in values.items()}


def _build_model(name: str, model: dict[str, Any], source: str, errors: list[str]) -> ModelSpec | None:
    def bad(field: str | None, message: str) -> None:
        errors.append(f"{_where(source, name, field)}: {message}")

    missing = [key for key in _REQUIRED_MODEL_KEYS if key not in model]
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
    mappings = model.get("mappings", {})
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
        value_maps=_freeze_value_maps(mappings.get("values", {})),
        renames={k: tuple(v) for k, v in mappings.get("renames", {}).items()},
        prompt_param=model.get("prompt_param", "prompt") or None,
        file_params=tuple(model.get("file_params", ())),
    )
