"""What an item may cost, and the one refusal that money needs: an unpriced model under a limit.

A model's price comes from the registry (built-in file, FLEET_MODELS_FILE); a model known only by
its published schema has none ("price unknown") until a registry entry or `--price-per-call USD`
(carried by each request as `price_per_call`) gives it one.

For spending limits (a batch's `--max-cost`, the fleet's `REPLICATE_DAILY_BUDGET`): call
`refuse_unpriced(requests, registry, limit=...)` at submit, before anything is recorded, whenever
a limit is in force. It raises UnpricedModelError (an InputError: exit 2, nothing enqueued) naming
every model of any item's route that has no price and no `--price-per-call`, with the items and
how to give a price; it returns quietly when every model that may run is priced.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from decimal import ROUND_CEILING, Decimal
from typing import TYPE_CHECKING, Any

from shared.errors import Problem, UnpricedModelError
from shared.request import ImageRequest

if TYPE_CHECKING:
    from shared.models import ModelRegistry, ModelSpec


def call_cost(request: ImageRequest, model: str, params: dict, registry: ModelRegistry) -> float | None:
    """USD for one call of `model` for `request` with `params`; None when nobody gave a price."""
    cost = registry.get(model).cost(params)
    return cost if cost is not None else request.price_per_call


def call_cost_micro(
    spec: ModelSpec, params: Mapping[str, Any], price_per_call: float | None = None
) -> int | None:
    """What a spending limit reserves for one call: micro-USD, exact (integers and decimals,
    never float products: $0.28/s x 10 s is 2 800 000, not 2 800 001), rounded up. The same rule
    as ModelSpec.cost; a model without a price costs `price_per_call` (None: unknown)."""
    from shared.budget.money import price_micro

    if spec.price is None:
        return None if price_per_call is None else price_micro(price_per_call)
    unit = price_micro(spec.price)
    if spec.price_unit == "call":
        return unit
    if spec.price_unit == "second":
        seconds = Decimal(str(spec.billed_seconds(params)))
        return int((unit * seconds).to_integral_value(rounding=ROUND_CEILING))
    return unit * spec.output_count(params)


def unpriced(requests: Iterable[ImageRequest], registry: ModelRegistry) -> dict[str, list[int]]:
    """Model -> indexes of the items whose route may run it although its price is unknown."""
    found: dict[str, list[int]] = {}
    for request in requests:
        if request.price_per_call is not None:
            continue
        for model in request.models:
            if not registry.get(model).priced:
                found.setdefault(model, []).append(request.index)
    return found


def refuse_unpriced(requests: Sequence[ImageRequest], registry: ModelRegistry, *, limit: str) -> None:
    """Raise UnpricedModelError when a spending limit (`limit`, e.g. "--max-cost $20" or
    "REPLICATE_DAILY_BUDGET $500") is in force and some item may run a model without a price.
    The limit cannot be kept for a model whose cost is unknown, so nothing is enqueued."""
    problems = []
    for model, indexes in sorted(unpriced(requests, registry).items()):
        shown = ", ".join(map(str, indexes[:10])) + (
            f" and {len(indexes) - 10} more" if len(indexes) > 10 else ""
        )
        problems.append(
            Problem(
                f"{model} has no known price and a spending limit ({limit}) is in force, so its cost cannot be "
                f"kept under it (item(s) {shown}). Give it a price in FLEET_MODELS_FILE "
                f'([models."{model}"] price = USD, price_unit = "image" | "call" | "second"), or pass '
                "--price-per-call USD",
                field="model",
            )
        )
    if problems:
        raise UnpricedModelError(problems)
