"""The model registry: what every Replicate model we can call accepts, returns and costs.

    registry = load_registry(extra=None)      # built-in data file + optional user file
    spec = registry.get("flux-dev")           # aliases and case are forgiven; UnknownModelError otherwise
"""
from shared.models.registry import BUILTIN_MODELS_FILE, ModelRegistry, load_registry
from shared.models.spec import ModelSpec, ParamSpec, ValueProblem

__all__ = [
    "BUILTIN_MODELS_FILE",
    "ModelRegistry",
    "ModelSpec",
    "ParamSpec",
    "ValueProblem",
    "load_registry",
]
