"""One image (or video) the user asked for, after parsing, validation and routing.

This is what the ledger stores per item and what a worker reads back; task arguments carry only
(batch id, index, attempt, model), never the request itself.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class ImageRequest:
    index: int  # position in prompts.json, 0-based; results come back in this order
    id: str  # the user's id, or str(index)
    prompt: str
    requested_model: str  # what the user asked for
    model: str  # the first model of the route (after routing at submit)
    params: dict[str, Any] = field(default_factory=dict)  # input for `model`, reference images excluded
    reference_images: tuple[str, ...] = ()  # local paths (absolute) or http(s) URLs
    output: str = ""  # relative to OUTPUT_DIR, with extension; further outputs get _1, _2 ... suffixes
    route: tuple[str, ...] = ()  # fallback models after `model`, in order, no repeats
    warnings: tuple[str, ...] = ()  # what routing changed or dropped, shown at submit
    # USD per call for a model of the route whose price the registry does not know (--price-per-call).
    price_per_call: float | None = None
    # Local files (absolute paths) given to inputs that take a file (`format: uri`) other than the
    # reference images: the worker uploads them and sends their URLs, like reference images.
    input_files: tuple[str, ...] = ()
    price: str = ""  # the first model's price in words at submit ("$0.025/image", "price unknown")

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["reference_images"] = list(self.reference_images)
        data["route"] = list(self.route)
        data["warnings"] = list(self.warnings)
        data["input_files"] = list(self.input_files)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ImageRequest:
        data = dict(data)
        for name in ("reference_images", "route", "warnings", "input_files"):
            data[name] = tuple(data.get(name) or ())
        return cls(**data)

    @property
    def models(self) -> tuple[str, ...]:
        """Every model this item may try, first to last."""
        return (self.model, *self.route)
