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
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from shared.errors import ConfigError, Problem, UnknownModelError
from shared.models.openapi import ModelSchema, SchemaError, derive_entry
from shared.models.reference import is_reference, parse_ref
from shared.models.registry_build import (
    build_model,
    build_parts,
    kind_mismatch,
    layer_overlay,
    merge_layer,
    with_fallback,
)
from shared.models.registry_files import BUILTIN_MODELS_FILE, read_file, tomllib
from shared.models.registry_shape import check_shape, error_text, place
from shared.models.spec import ModelSpec

__all__ = ["BUILTIN_MODELS_FILE", "ModelRegistry", "load_registry", "tomllib"]

# Inherited by a pinned version from its model's entry when the version has none of its own.
_PRICE_KEYS = ("price", "price_unit", "price_note")


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
        data = layer_overlay(entry, overlay)
        if not any(k in overlay for k in _PRICE_KEYS):
            data.update(self._inherited_price(ref))
        errors: list[str] = []
        spec = build_model(ref, data, source, errors)
        fallback = []
        kind = spec.kind if spec is not None else None
        for name in spec.fallback if spec is not None else ():
            target = self.resolve(name)
            if target is None or target == ref:
                errors.append(f"{place(source, ref, 'fallback')}: unknown model {name!r}")
            elif target in self._specs and self._specs[target].kind != kind:
                errors.append(kind_mismatch(source, ref, name, self._specs[target].kind, kind))
            else:
                fallback.append(target)
        if errors or spec is None:
            raise ConfigError(error_text(errors))
        return with_fallback(spec, tuple(fallback), schema=schema)

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
            check_shape(data, source, errors)
            if len(errors) == before:  # merge only well-formed files, so later checks see sane data
                merge_layer(merged, data, source, origin)
        if errors:
            raise ConfigError(error_text(errors))
        parts = build_parts(merged, origin, errors)
        if errors or parts is None:
            raise ConfigError(error_text(errors))
        return cls(**parts, sources=tuple(Path(s) for _, s in layers if not s.startswith("<")))


def load_registry(extra: str | Path | None = None) -> ModelRegistry:
    """The built-in models, extended/overridden by the user file `extra` (TOML, or JSON by suffix)."""
    layers = [(read_file(BUILTIN_MODELS_FILE), str(BUILTIN_MODELS_FILE))]
    if extra is not None and str(extra) != "":
        layers.append((read_file(Path(extra)), str(extra)))
    return ModelRegistry.from_data(*layers)
