"""What one model accepts, returns and costs (`ModelSpec`), and one of its parameters (`ParamSpec`).

Pure data plus the checks that need nothing but the data: whether a value suits a parameter,
how many files an item makes, what a call costs. Files are read in registry_files, checked in
registry_shape and built into specs in registry_build; registry.py holds the result.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from shared.common import is_int, is_number, type_name
from shared.errors import ParamValueError

# "json": any JSON value (arrays, objects, unions a published schema has); only the schema checks it.
PARAM_TYPES = ("string", "int", "float", "bool", "enum", "json")
KINDS = ("image", "video")
OUTPUTS = ("single", "list")
PRICE_UNITS = ("image", "call", "second")

_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}


@dataclass(frozen=True)
class ParamSpec:
    name: str
    type: str  # one of PARAM_TYPES
    values: tuple[Any, ...] = ()  # enum: the allowed values (str or int)
    min: float | None = None
    max: float | None = None
    default: Any = None
    description: str = ""

    def allowed(self) -> str:
        """Human text for what this parameter takes, for error messages."""
        if self.type == "enum":
            return "one of " + ", ".join(repr(v) for v in self.values)
        if self.type in ("int", "float"):
            noun = "an integer" if self.type == "int" else "a number"
            if self.min is not None and self.max is not None:
                return f"{noun} from {_num(self.min)} to {_num(self.max)}"
            if self.min is not None:
                return f"{noun} >= {_num(self.min)}"
            if self.max is not None:
                return f"{noun} <= {_num(self.max)}"
            return noun
        return {
            "string": "a string",
            "bool": "true or false",
            "json": "a JSON value (see the model's schema)",
        }[self.type]

    def check(self, value: Any) -> Any:
        """Return `value` converted to this parameter's type, or raise ParamValueError.

        Strings are converted when they spell a value exactly ("4" for an int, "true" for a bool),
        because `--param k=v` flags arrive as strings; anything else must have the right JSON type.
        """
        if self.type == "json":
            return value
        if self.type == "string":
            if not isinstance(value, str):
                raise ParamValueError(f"must be a string, not {type_name(value)}", "type")
            return value
        if self.type == "bool":
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
                return value.strip().lower() in _TRUE
            raise ParamValueError(f"must be true or false, not {value!r}", "type")
        if self.type == "enum":
            return self._check_enum(value)
        number = self._to_number(value)
        if self.min is not None and number < self.min:
            raise ParamValueError(
                f"{number!r} is below the minimum: must be {self.allowed()}",
                "range",
                clamped=self._typed(self.min),
            )
        if self.max is not None and number > self.max:
            raise ParamValueError(
                f"{number!r} is above the maximum: must be {self.allowed()}",
                "range",
                clamped=self._typed(self.max),
            )
        return number

    def _typed(self, bound: float) -> int | float:
        return int(bound) if self.type == "int" else float(bound)

    def _to_number(self, value: Any) -> int | float:
        if isinstance(value, str):
            text = value.strip()
            try:
                value = int(text) if self.type == "int" else float(text)
            except ValueError:
                raise ParamValueError(f"must be {self.allowed()}, not {value!r}", "type") from None
        if self.type == "int":
            if isinstance(value, float) and value.is_integer():
                value = int(value)
            if not is_int(value):
                raise ParamValueError(f"must be an integer, not {value!r}", "type")
            return value
        if not is_number(value):
            raise ParamValueError(f"must be a number, not {value!r}", "type")
        return float(value)

    def _check_enum(self, value: Any) -> Any:
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise ParamValueError(f"must be {self.allowed()}, not {type_name(value)}", "type")
        if value in self.values and type(value) in {type(v) for v in self.values if v == value}:
            return value
        # "5" from a flag for an int enum, 5 for a string enum like megapixels "1"
        for allowed in self.values:
            if str(allowed) == str(value).strip():
                return allowed
            if is_number(value) and isinstance(allowed, str):
                try:
                    if float(allowed) == float(value):
                        return allowed
                except ValueError:
                    pass
        raise ParamValueError(f"{value!r} is not allowed: must be {self.allowed()}", "enum")


@dataclass(frozen=True)
class ModelSpec:
    name: str  # owner/name as Replicate spells it
    kind: str  # "image" | "video"
    output: str  # "single" | "list"
    default_format: str  # file extension without the dot
    price: float | None  # USD per price_unit; None: price unknown
    price_unit: str  # "image" | "call" | "second"
    params: Mapping[str, ParamSpec] = field(default_factory=dict)
    reference_param: str | None = None
    max_references: int = 0
    reference_is_list: bool = False
    reference_required: bool = False
    fallback: tuple[str, ...] = ()
    aliases: tuple[str, ...] = ()
    description: str = ""
    price_note: str = ""
    value_maps: Mapping[str, Mapping[Any, tuple[Any, ...]]] = field(default_factory=dict)
    renames: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    # The input that takes the item's prompt; None: the model has none (the prompt only names files).
    prompt_param: str | None = "prompt"
    # Inputs that take a file (`format: uri`): a local path given there is uploaded like a reference.
    file_params: tuple[str, ...] = ()
    # The model version's published schema (shared.models.openapi.ModelSchema) when the spec was
    # derived from it: inputs are then validated against it. None for curated entries.
    schema: Any = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        # Frozen all the way down: specs are shared by every item of a batch.
        object.__setattr__(self, "params", MappingProxyType(dict(self.params)))
        object.__setattr__(self, "value_maps", MappingProxyType(dict(self.value_maps)))
        object.__setattr__(self, "renames", MappingProxyType(dict(self.renames)))

    @property
    def formats(self) -> tuple[str, ...]:
        """File formats this model can produce (what its output_format allows, else its default)."""
        spec = self.params.get("output_format")
        if spec is not None and spec.type == "enum":
            return tuple(str(v) for v in spec.values)
        return (self.default_format,)

    def output_count(self, params: Mapping[str, Any]) -> int:
        """How many files one call makes with these params (num_outputs for list models, else 1)."""
        if self.output != "list" or "num_outputs" not in self.params:
            return 1
        value = params.get("num_outputs", self.params["num_outputs"].default)
        return value if is_int(value) and value > 0 else 1

    @property
    def priced(self) -> bool:
        return self.price is not None

    def cost(self, params: Mapping[str, Any]) -> float | None:
        """Estimated USD for one call with these params; None when the price is unknown."""
        if self.price is None:
            return None
        if self.price_unit == "call":
            return self.price
        if self.price_unit == "second":
            return self.price * float(self.billed_seconds(params))
        return self.price * self.output_count(params)

    def billed_seconds(self, params: Mapping[str, Any]) -> Any:
        """What a price per second bills for one call: its `duration`, else the model's default,
        else 0 (as given: pricing.call_cost_micro counts it exactly, as a decimal)."""
        duration = params.get("duration")
        if duration is None and "duration" in self.params:
            duration = self.params["duration"].default
        return duration or 0

    def price_text(self) -> str:
        if self.price is None:
            return "price unknown"
        text = f"${self.price:g}/{self.price_unit}"
        return f"{text} ({self.price_note})" if self.price_note else text


def _num(value: float) -> str:
    return f"{value:g}"
