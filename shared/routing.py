"""Which model runs an item, what it falls back to, and the input each model gets.

Everything here is deterministic and pure (registry + request in, decisions out), so the plan the
user sees before enqueueing is exactly what the workers will do:

- `route_item` at submit: picks the first model (reference images decide: one image to a model that
  takes none -> the registry's single_reference_model, several -> multi_reference_model, too many ->
  an error; never dropped), adapts the params (value maps, renames, drops, each with a warning), and
  computes the fallback route: the model's fallbacks, then theirs (breadth first), no repeats,
  only models that can take the item's reference images, at most `max_route_length` models.
- `build_input` at run time: the Replicate input for any model of the route.
- `estimate_cost`, `describe_plan`: what the CLI prints before enqueueing.
"""

from __future__ import annotations

import difflib
from collections import Counter, deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from shared.common import format_usd
from shared.errors import InputError, ParamValueError, Problem
from shared.models.pricing import call_cost
from shared.models.spec import ModelSpec
from shared.request import ImageRequest

if TYPE_CHECKING:
    from shared.models import ModelRegistry

ROUTED_PREFIX = "routed to "  # warnings that record a model change at submit start with this


@dataclass
class RoutedItem:
    """The outcome of routing one item at submit."""

    model: str  # first model to run (canonical name)
    params: dict[str, Any]  # adapted to `model`
    route: tuple[str, ...]  # fallback models after `model`
    warnings: list[str] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)  # index/item_id left for the caller to fill


# ------------------------------------------------------------------------------- model choice
def choose_model(
    requested: str, n_refs: int, registry: ModelRegistry, *, ref_field: str = "image_input"
) -> tuple[str, list[str], list[Problem]]:
    """The first model for an item asking for `requested` with `n_refs` reference images.

    Returns (model, warnings, problems); on a problem the model is `requested` unchanged.
    """
    spec = registry.get(requested)
    if n_refs == 0:
        if spec.reference_required:
            return (
                spec.name,
                [],
                [
                    Problem(
                        f"{spec.name} needs a reference image (give one in 'image_input' or 'input_image')",
                        field=ref_field,
                    )
                ],
            )
        return spec.name, [], []
    if n_refs <= spec.max_references:
        return spec.name, [], []
    if spec.kind != "image" or spec.schema is not None:
        # No video model to reroute to, and a model named by reference runs as named (no
        # curated model stands in for it): never drop a reference image silently.
        limit = f"at most {spec.max_references}" if spec.max_references else "none"
        return (
            spec.name,
            [],
            [Problem(f"{n_refs} reference images given; {spec.name} takes {limit}", field=ref_field)],
        )
    target_name = registry.single_reference_model if n_refs == 1 else registry.multi_reference_model
    target = registry.get(target_name)
    if n_refs > target.max_references:
        most = max((s.max_references for s in registry if s.kind == "image"), default=0)
        return (
            spec.name,
            [],
            [
                Problem(
                    f"{n_refs} reference images given; no image model takes more than {most} "
                    f"({spec.name} takes {spec.max_references or 'none'}). Split the images over several items",
                    field=ref_field,
                )
            ],
        )
    if spec.max_references == 0:
        why = f"{spec.name} takes no reference image" + (f" ({n_refs} given)" if n_refs > 1 else "")
    else:
        why = f"{spec.name} takes at most {spec.max_references} reference image(s), {n_refs} given"
    return target.name, [f"{ROUTED_PREFIX}{target.name}: {why}"], []


def can_take(spec: ModelSpec, n_refs: int) -> bool:
    """Whether `spec` can run an item with `n_refs` reference images without losing any."""
    if n_refs > spec.max_references:
        return False
    return not (n_refs == 0 and spec.reference_required)


def route_for(model: str, n_refs: int, registry: ModelRegistry) -> tuple[str, ...]:
    """Fallback models after `model` for an item with `n_refs` reference images.

    Breadth first over the registry's fallback lists, so loops in the data (qwen-image ->
    flux-dev -> qwen-image) end at the first repeat; finite and without repeats by construction.
    """
    first = registry.get(model)
    seen = {first.name}
    route: list[str] = []
    queue = deque(first.fallback)
    while queue and len(route) + 1 < registry.max_route_length:
        name = queue.popleft()
        if name in seen:
            continue
        seen.add(name)
        spec = registry.get(name)
        queue.extend(spec.fallback)  # walk through a model we skip: its own fallbacks may suit
        if spec.kind == first.kind and can_take(spec, n_refs):
            route.append(spec.name)
    return tuple(route)


# ------------------------------------------------------------------------------- parameters
def adapt_params(
    params: Mapping[str, Any],
    model: str,
    registry: ModelRegistry,
    *,
    strict: bool,
    written_for: str | None = None,
) -> tuple[dict[str, Any], list[str], list[Problem]]:
    """Params made fit for `model`: (params, warnings, problems).

    strict (submit, the user's own input): a parameter no model knows, a value out of range or of
    the wrong type is a problem; a value the model lacks is mapped if the registry has a mapping.
    Params the user wrote for another model (`written_for`, before routing) that suit that model
    are adapted leniently. Not strict (fallbacks at run time): never a problem; values are mapped,
    clamped or dropped, each with a warning.
    """
    target = registry.get(model)
    source = registry.get(written_for) if written_for else None
    out: dict[str, Any] = {}
    warnings: list[str] = []
    problems: list[Problem] = []
    for name, value in params.items():
        lenient = not strict
        if strict and source is not None and source.name != target.name and name in source.params:
            if name in target.params and _fits(target, name, value):
                lenient = False  # e.g. match_input_image: only the routed model knows it; fine
            else:
                try:
                    source.params[name].check(value)
                    lenient = True  # right for the model the user named: adapt it, with a warning
                except ParamValueError as exc:
                    problems.append(Problem(f"{exc} (model {source.name})", field=f"params.{name}"))
                    continue
        new_name, new_value, warning, problem = _adapt_one(name, value, target, registry, strict=not lenient)
        if warning:
            warnings.append(warning)
        if problem:
            problems.append(problem)
        elif new_name is not None:
            out[new_name] = new_value
    return out, warnings, problems


def _fits(spec: ModelSpec, name: str, value: Any) -> bool:
    try:
        spec.params[name].check(value)
        return True
    except ParamValueError:
        return False


def _adapt_one(
    name: str,
    value: Any,
    target: ModelSpec,
    registry: ModelRegistry,
    *,
    strict: bool,
    renamed_from: str | None = None,
):
    """(name or None if dropped, value, warning, problem) for one parameter on `target`."""
    fld = f"params.{renamed_from or name}"
    spec = target.params.get(name)
    if spec is None:
        for candidate in registry.rename_candidates(target.name, name):
            if candidate in target.params and candidate not in (renamed_from,):
                new_name, new_value, warning, problem = _adapt_one(
                    candidate, value, target, registry, strict=strict, renamed_from=name
                )
                if problem is None and new_name is not None:
                    note = f"{name} renamed to {candidate} for {target.name}"
                    return new_name, new_value, (f"{note}; {warning}" if warning else note), None
        if name in registry.all_param_names() or not strict:
            return None, None, f"{name}={value!r} dropped: {target.name} does not accept it", None
        close = difflib.get_close_matches(name, sorted(target.params), n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        accepted = ", ".join(sorted(target.params)) or "none"
        return (
            None,
            None,
            None,
            Problem(f"unknown parameter {name!r} for {target.name}.{hint} It accepts: {accepted}", field=fld),
        )
    try:
        return name, spec.check(value), None, None
    except ParamValueError as exc:
        if exc.kind == "enum":
            for candidate in registry.value_candidates(target.name, name, value):
                if _fits(target, name, candidate):
                    mapped = spec.check(candidate)
                    return (
                        name,
                        mapped,
                        f"{name} {value!r} -> {mapped!r}: {target.name} does not offer {value!r}",
                        None,
                    )
        if not strict:
            if exc.kind == "range":
                return (
                    name,
                    exc.clamped,
                    f"{name} {value!r} -> {exc.clamped!r}: {target.name} allows {spec.allowed()}",
                    None,
                )
            return None, None, f"{name}={value!r} dropped: {target.name} takes {spec.allowed()}", None
        return None, None, None, Problem(f"{exc} (model {target.name})", field=fld)


# ------------------------------------------------------------------------------- at submit
def route_item(
    requested: str,
    params: Mapping[str, Any],
    n_refs: int,
    registry: ModelRegistry,
    *,
    ref_field: str = "image_input",
    prompt: str = "prompt",
) -> RoutedItem:
    """Routing of one item at submit: first model, adapted params, fallback route, warnings.
    A model described by its published schema has its whole input checked against that schema
    (shared.models.validation) instead of the curated parameter rules."""
    model, warnings, problems = choose_model(requested, n_refs, registry, ref_field=ref_field)
    requested_name = registry.get(requested).name
    if registry.get(model).schema is not None:
        adapted, param_warnings, param_problems = _check_against_schema(
            registry.get(model), params, n_refs, prompt, ref_field
        )
    else:
        adapted, param_warnings, param_problems = adapt_params(
            params,
            model,
            registry,
            strict=True,
            written_for=requested_name if requested_name != model else None,
        )
    return RoutedItem(
        model=model,
        params=adapted,
        route=route_for(model, n_refs, registry) if not problems else (),
        warnings=warnings + param_warnings,
        problems=problems + param_problems,
    )


def _check_against_schema(
    spec: ModelSpec, params: Mapping[str, Any], n_refs: int, prompt: str, ref_field: str
) -> tuple[dict[str, Any], list[str], list[Problem]]:
    """(params normalized, warnings, problems) for a schema-described model: the input it would
    get (reference images as placeholder URLs, checked for real elsewhere) against its schema."""
    from shared.models.validation import check_input

    values = dict(params)
    warnings = []
    if spec.prompt_param:
        values[spec.prompt_param] = prompt
    else:
        warnings.append(
            f"{spec.name} takes no prompt; the prompt only names the output file "
            "(give the model's text input in params, or prompt_param in FLEET_MODELS_FILE)"
        )
    if n_refs and spec.reference_param:
        placeholder = "https://reference.invalid/image.png"
        values[spec.reference_param] = [placeholder] * n_refs if spec.reference_is_list else placeholder

    def field_of(name: str) -> str:
        if name == spec.prompt_param:
            return "prompt"
        return ref_field if name == spec.reference_param else f"params.{name}"

    checked, problems = check_input(spec, values, field_of)
    return {k: v for k, v in checked.items() if k in params}, warnings, problems


# ------------------------------------------------------------------------------- at run time
def build_input(
    request: ImageRequest, model: str, registry: ModelRegistry
) -> tuple[dict[str, Any], list[str]]:
    """The Replicate input for `model` (the item's first model or one of its fallbacks).

    Prompt, the item's params adapted to the model (mapped, clamped or dropped with warnings), and
    the reference images under the model's reference input, as the paths/URLs given (the worker
    turns local paths into uploads). Raises InputError if the model cannot take the item's
    reference images: routes never contain such a model, so that is a programming error upstream.
    """
    spec = registry.get(model)
    refs = list(request.reference_images)
    if not can_take(spec, len(refs)):
        raise InputError(
            Problem(
                f"{spec.name} cannot take {len(refs)} reference image(s); it is not a valid route for this item",
                index=request.index,
                item_id=request.id,
                field="model",
            )
        )
    params, warnings, _ = adapt_params(request.params, spec.name, registry, strict=False)
    # Keep the file format the output path promises, when this model can make it.
    wanted = _output_format(request.output)
    if "output_format" in spec.params and wanted in spec.formats:
        if params.get("output_format") != wanted:
            params["output_format"] = spec.params["output_format"].check(wanted)
    elif wanted and wanted not in spec.formats:
        made = params.get("output_format", spec.default_format)
        warnings.append(f"{spec.name} cannot make {wanted}; it makes {made} (written to {request.output})")
    data: dict[str, Any] = {spec.prompt_param: request.prompt} if spec.prompt_param else {}
    data.update(params)
    if refs and spec.reference_param:
        data[spec.reference_param] = refs if spec.reference_is_list else refs[0]
    return data, warnings


def _output_format(output: str) -> str | None:
    if "." not in output.rsplit("/", 1)[-1]:
        return None
    ext = output.rsplit(".", 1)[-1].lower()
    return "jpg" if ext == "jpeg" else ext


# ------------------------------------------------------------------------------- cost and plan
def item_cost(request: ImageRequest, registry: ModelRegistry, model: str | None = None) -> float | None:
    """USD for the item's call of `model` (its first model); None when the price is unknown."""
    return call_cost(request, model or request.model, request.params, registry)


def estimate_cost(requests: Iterable[ImageRequest], registry: ModelRegistry) -> float:
    """USD if the first model of every route succeeds (items whose price is unknown count 0:
    `unpriced_items` says how many)."""
    return sum(item_cost(r, registry) or 0.0 for r in requests)


def unpriced_items(requests: Iterable[ImageRequest], registry: ModelRegistry) -> int:
    """Items whose first model has no known price (and no --price-per-call)."""
    return sum(1 for r in requests if item_cost(r, registry) is None)


def max_cost(requests: Iterable[ImageRequest], registry: ModelRegistry) -> float:
    """USD if every model of every route is tried (each one's own price; unknown prices count 0)."""
    total = 0.0
    for request in requests:
        for model in request.models:
            params, _, _ = adapt_params(request.params, model, registry, strict=False)
            total += call_cost(request, model, params, registry) or 0.0
    return total


def describe_plan(
    requests: Sequence[ImageRequest],
    registry: ModelRegistry | None = None,
    *,
    max_lines: int = 50,
    routes: bool = True,
) -> list[str]:
    """Text lines to print before enqueueing: count by model, routing changes, warnings, routes
    (unless `routes` is False), cost.

    Without a registry the cost lines are left out. Long sections are cut at `max_lines`.
    """
    lines: list[str] = []
    by_model = Counter(r.model for r in requests)
    lines.append(f"Plan: {len(requests)} item(s) on {len(by_model)} model(s)")
    width = max((len(m) for m in by_model), default=0)
    for model, count in sorted(by_model.items(), key=lambda kv: (-kv[1], kv[0])):
        line = f"  {model:<{width}}  {count:>6} item(s)"
        if registry is not None:
            line += "  " + _model_cost_text(model, [r for r in requests if r.model == model], registry)
        lines.append(line)

    changes = [(r, w) for r in requests for w in r.warnings if w.startswith(ROUTED_PREFIX)]
    if changes:
        lines.append(f"Routing changes ({len(changes)}):")
        lines += _capped(
            [f"  {_label(r)}: {r.requested_model} -> {w[len(ROUTED_PREFIX) :]}" for r, w in changes],
            max_lines,
        )
    others = [(r, w) for r in requests for w in r.warnings if not w.startswith(ROUTED_PREFIX)]
    if others:
        lines.append(f"Warnings ({len(others)}):")
        lines += _capped([f"  {_label(r)}: {w}" for r, w in others], max_lines)

    if routes:
        by_route: dict[tuple[str, ...], list[int]] = {}
        for r in requests:
            by_route.setdefault(r.models, []).append(r.index)
        lines.append("Routes (tried in order when a model fails for good):")
        lines += _capped(
            [
                f"  {' -> '.join(route)}  [{len(idx)} item(s): {_ranges(idx)}]"
                for route, idx in by_route.items()
            ],
            max_lines,
        )
    if registry is not None:
        lines += _cost_lines(requests, registry)
        unknown = unpriced_items(requests, registry)
        if unknown:
            lines.append(
                f"  price unknown for {unknown} item(s), not counted above: give their model a price "
                "in FLEET_MODELS_FILE, or pass --price-per-call USD"
            )
    return lines


def _cost_lines(requests: Sequence[ImageRequest], registry: ModelRegistry) -> list[str]:
    """What the batch costs if every first model succeeds, and what its fallbacks may add."""
    first, worst = estimate_cost(requests, registry), max_cost(requests, registry)
    falling_back = sum(1 for r in requests if r.route)
    if not falling_back:
        return [
            f"Estimated cost: {format_usd(first)}; no fallbacks (each item is paid for on its first model only)"
        ]
    return [
        f"Estimated cost: {format_usd(first)} if every first model succeeds; fallbacks may add up to "
        f"{format_usd(worst - first)} (at most {format_usd(worst)} if every fallback runs)",
        f"  {falling_back} item(s) may fall back to other models when theirs fails for good; --no-fallback "
        '(or "fallback": false in the file) keeps them on their first model',
    ]


def _model_cost_text(model: str, requests: list[ImageRequest], registry: ModelRegistry) -> str:
    spec = registry.get(model)
    costs = [item_cost(r, registry) for r in requests]
    if spec.priced:
        return f"{format_usd(sum(c or 0.0 for c in costs))}  ({spec.price_text()})"
    known = [c for c in costs if c is not None]
    if len(known) == len(costs):
        return f"{format_usd(sum(known))}  (--price-per-call ${requests[0].price_per_call:g}; registry: price unknown)"
    return "price unknown"


def _label(request: ImageRequest) -> str:
    if request.id != str(request.index):
        return f"item {request.index} (id {request.id!r})"
    return f"item {request.index}"


def _capped(lines: list[str], limit: int) -> list[str]:
    if len(lines) <= limit:
        return lines
    return lines[:limit] + [f"  ... and {len(lines) - limit} more"]


def _ranges(indexes: list[int], limit: int = 12) -> str:
    """'0-7, 9, 12-14' for a sorted list of indexes, cut after `limit` pieces."""
    runs: list[list[int]] = []  # [first, last] of each run of consecutive indexes
    for i in sorted(indexes):
        if runs and i == runs[-1][1] + 1:
            runs[-1][1] = i
        else:
            runs.append([i, i])
    pieces = [f"{first}-{last}" if last != first else f"{first}" for first, last in runs]
    if len(pieces) > limit:
        return ", ".join(pieces[:limit]) + ", ..."
    return ", ".join(pieces)
