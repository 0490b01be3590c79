"""The model registry: what every Replicate model we can call accepts, returns and costs.

registry = load_registry(extra=None)      # built-in data file + optional user file
spec = registry.get("flux-dev")           # aliases and case are forgiven; UnknownModelError otherwise
ref = registry.schema_ref("stability-ai/sdxl")   # not curated: its published schema describes it
registry = registry.with_schemas({ref: schema})  # schema (shared.models.schema_store) -> spec

The registry in modules: registry (ModelRegistry: lookup, schema completion, load_registry),
registry_files (the built-in file, reading a user file), registry_shape (one file's keys and
types), registry_build (layers merged, specs built, routing resolved), spec (one model), pricing,
reference (how a model is named), openapi and schema_store (published schemas), validation.
"""

from shared.models.openapi import ModelSchema, SchemaError
from shared.models.reference import ModelRef, parse_ref
from shared.models.registry import BUILTIN_MODELS_FILE, ModelRegistry, load_registry
from shared.models.spec import ModelSpec, ParamSpec

__all__ = [
    "BUILTIN_MODELS_FILE",
    "ModelRef",
    "ModelRegistry",
    "ModelSchema",
    "ModelSpec",
    "ParamSpec",
    "SchemaError",
    "load_registry",
    "parse_ref",
]
