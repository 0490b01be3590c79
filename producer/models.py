"""What the fleet knows about models: the curated registry, and any Replicate model's schema.

    rows = list_models(settings)                      # registry entries: curated and overlays
    info = describe_model("stability-ai/sdxl", settings)   # parameters, price, route (schema read
                                                      # once for the fleet, cached in Redis)
    with open_schema_store(settings) as store: ...    # the producer's way to read schemas

Reading a schema needs the token (REPLICATE_API_TOKEN) and Redis (the fleet-wide cache and the
account's read budget); curated models need neither.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from shared.errors import ConfigError, InputError, LocalError, Problem, SchemaError
from shared.keys import Keys
from shared.models.registry import ModelRegistry
from shared.models.schema_store import SchemaStore
from shared.models.spec import ModelSpec
from shared.settings import Settings

# How long a schema read may wait for a read token before it gives up.
READ_TOKEN_WAIT = 60.0


@contextlib.contextmanager
def open_schema_store(settings: Settings) -> Iterator[Any]:
    """A SchemaStore on the fleet's Redis, reading through the official client with read tokens."""
    from producer.api.connections import close_quietly, open_limiter
    from shared.models.schema_store import SchemaStore
    from shared.redis_conn import connect
    from workers.replicate_calls import ReplicateCalls

    try:
        calls = ReplicateCalls(settings)
    except LocalError:
        raise ConfigError(
            "reading a model's schema from Replicate needs REPLICATE_API_TOKEN (`producer init` stores it)"
        ) from None
    client = connect(settings)
    limiter = open_limiter(settings, client)
    try:
        yield SchemaStore(
            client,
            Keys(settings.key_prefix),
            read=calls.read_schema,
            ttl=settings.schema_ttl,
            take_read_token=lambda: limiter.take_read_token(timeout=READ_TOKEN_WAIT),
        )
    finally:
        close_quietly(limiter)
        calls.close()
        client.close()


def _registry(settings: Settings, registry: ModelRegistry | None = None) -> ModelRegistry:
    from producer.api.connections import registry_or_load as load

    return load(registry, settings)


def list_models(
    settings: Settings | None = None, *, registry: ModelRegistry | None = None
) -> list[dict[str, Any]]:
    """One row per registry entry: curated models (complete entries) and the entries that only
    add a price, a route or aliases to a Replicate model (their parameters come from its schema)."""
    from shared.models import load_registry

    settings = settings if settings is not None else Settings.load()
    registry = _registry(settings, registry)
    builtin = set(load_registry().names())
    rows = [
        {**_summary(spec), "source": "built-in" if spec.name in builtin else "FLEET_MODELS_FILE"}
        for spec in registry
    ]
    for name in registry.overlay_names():
        entry = registry.overlay(name)
        price = entry.get("price")
        rows.append(
            {
                "name": name,
                "kind": entry.get("kind"),
                "price": None if price is None else f"${price:g}/{entry.get('price_unit', 'call')}",
                "fallback": list(entry.get("fallback", ())),
                "aliases": list(entry.get("aliases", ())),
                "source": "FLEET_MODELS_FILE + its schema",
            }
        )
    return rows


def describe_model(
    name: str,
    settings: Settings | None = None,
    *,
    registry: ModelRegistry | None = None,
    store: SchemaStore | None = None,
) -> dict[str, Any]:
    """Everything about one model: parameters (from its schema unless curated), price, route."""
    settings = settings if settings is not None else Settings.load()
    registry = _registry(settings, registry)
    ref = registry.schema_ref(name)
    if ref is None:
        spec = registry.get(name)  # curated, or UnknownModelError with a did-you-mean
        return {**_details(spec), "source": "registry (curated)", "version": None}
    try:
        if store is None:
            with open_schema_store(settings) as opened:
                schema = opened.get(ref)
        else:
            schema = store.get(ref)
        spec = registry.spec_from_schema(ref, schema)
    except SchemaError as exc:
        raise InputError(Problem(f"{exc}{registry.suggestion(name)}", field="model")) from None
    return {
        **_details(spec),
        "source": f"published schema of {schema.model} (version {schema.version})",
        "version": schema.version,
        "required": list(schema.required),
    }


def _summary(spec: ModelSpec) -> dict[str, Any]:
    return {
        "name": spec.name,
        "kind": spec.kind,
        "price": None if spec.price is None else f"${spec.price:g}/{spec.price_unit}",
        "fallback": list(spec.fallback),
        "aliases": list(spec.aliases),
    }


def _details(spec: ModelSpec) -> dict[str, Any]:
    params = {
        name: {"type": p.type, "allowed": p.allowed(), "default": p.default, "description": p.description}
        for name, p in spec.params.items()
    }
    return {
        **_summary(spec),
        "output": spec.output,
        "default_format": spec.default_format,
        "price_text": spec.price_text(),
        "prompt_param": spec.prompt_param,
        "reference_param": spec.reference_param,
        "max_references": spec.max_references,
        "file_params": list(spec.file_params),
        "params": params,
    }


def models_named(data: Any, model: str | None, registry: ModelRegistry) -> set[str]:
    """Every model name a prompts source may use: items' and defaults' "model" (or "model_name"),
    `--model`, the registry's default, and every model their fallback routes may reach."""
    names = {registry.default_model}
    if model:
        names.add(model)
    containers = [data] if isinstance(data, dict) else []
    items = data.get("items") if isinstance(data, dict) else data
    containers += [i for i in items if isinstance(i, dict)] if isinstance(items, list) else []
    for container in containers:
        for key in ("model", "model_name"):
            if isinstance(container.get(key), str):
                names.add(container[key])
    seen: set[str] = set()
    queue = list(names)
    while queue:
        name = queue.pop()
        canonical = registry.resolve(name) or name
        if canonical in seen:
            continue
        seen.add(canonical)
        entry = registry.overlay(canonical) if canonical in registry.overlay_names() else None
        if entry is not None:
            queue += list(entry.get("fallback", ()))
        elif registry.schema_ref(canonical) is None and canonical in registry:
            queue += list(registry.get(canonical).fallback)
    return seen


def with_schemas_for(
    data: Any,
    registry: ModelRegistry,
    settings: Settings,
    *,
    model: str | None = None,
    store: SchemaStore | None = None,
) -> ModelRegistry:
    """`registry` extended with the published schema of every model `data` may use that the
    registry does not curate (read once for the fleet; nothing read when all are curated).
    A schema that cannot be had becomes the problem of the items naming that model."""
    from shared.models.openapi import SchemaError

    refs = sorted({ref for name in models_named(data, model, registry) if (ref := registry.schema_ref(name))})
    if not refs:
        return registry
    if store is None:
        with open_schema_store(settings) as opened:
            found = opened.get_many(refs)
    else:
        found = store.get_many(refs)
    for result in found.values():
        if isinstance(result, Exception) and not isinstance(result, SchemaError):
            raise result  # Redis, the token, Replicate unreachable: not a problem of the input
    return registry.with_schemas(
        {r: s for r, s in found.items() if not isinstance(s, Exception)},
        failures={r: str(e) for r, e in found.items() if isinstance(e, Exception)},
    )
