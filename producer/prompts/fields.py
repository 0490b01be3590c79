"""The fields of prompts.json: the three usage modes, canonical field names (aliases folded) and
unknown fields named with a did-you-mean.

Forms (design.md):
1. a list of strings; model and params come from the caller (`--model`, `--param`), else defaults;
2. a list of objects {prompt, model, params, image_input | input_image, output, id, fallback};
3. an object with shared defaults (model, params, image_input, fallback, max_cost: the batch's
   spending limit in USD) and `items` (strings or objects),
   each item overriding the defaults (params merge key by key; a null param removes a default).
Also accepted: a single object with a `prompt` (one image), the seed tool's names `model_name`,
`kwargs`, `output_filepath`, any model's own reference input name (`start_image`, `image`,
`image_prompt`) at item level or inside params, and keys starting with `_` (ignored: comments).
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from shared.common import type_name
from shared.errors import Problem

if TYPE_CHECKING:
    from shared.models import ModelRegistry

ITEM_FIELDS = ("prompt", "model", "params", "image_input", "input_image", "output", "id", "fallback")
ALIASES = {
    "model_name": "model",
    "kwargs": "params",
    "output_filepath": "output",
    "reference_images": "image_input",
}
DEFAULT_FIELDS = ("model", "params", "image_input", "input_image", "fallback", "max_cost", "items")
REFERENCE_FIELDS = ("image_input", "input_image")

# How a check reports one problem of the item at hand: report(message, field).
Report = Callable[[str, str | None], None]


@dataclass(frozen=True)
class DefaultsProblem(Problem):
    """A problem in the file's shared defaults (the top-level object around `items`): reported
    once for the file, not once per item that uses the defaults."""

    def __str__(self) -> str:
        return "file defaults, " + (super().__str__() if self.field else self.message)


def split_form(
    data: Any, registry: ModelRegistry, problems: list[Problem]
) -> tuple[list[Any], dict[str, Any]]:
    """(items, normalized file defaults) for any of the accepted forms."""
    if isinstance(data, str):
        return [data], {}
    if isinstance(data, list):
        return list(data), {}
    if not isinstance(data, dict):
        problems.append(
            Problem(f"expected a list of prompts or an object with 'items', not {type_name(data)}")
        )
        return [], {}
    if "items" not in data:
        if "prompt" in data:
            return [data], {}  # a single image as one object
        # Name what is there first: {"model": ..., "itemz": [...]} is a typo, not a missing list.
        check_top_level_keys(data, registry, problems)
        problems.append(Problem("an object needs 'items' (a list of prompts) or a 'prompt'", field="items"))
        return [], {}
    items = data["items"]
    if not isinstance(items, list):
        problems.append(Problem(f"'items' must be a list, not {type_name(items)}", field="items"))
        items = []
    raw_defaults = {k: v for k, v in data.items() if k != "items"}
    defaults = normalize_fields(raw_defaults, None, None, registry, problems, for_defaults=True)
    return items, defaults


def check_top_level_keys(data: Mapping[str, Any], registry: ModelRegistry, problems: list[Problem]) -> None:
    """Unknown keys of a top-level object without `items`, each named with a did-you-mean."""
    known = set(DEFAULT_FIELDS) | set(ITEM_FIELDS) | set(ALIASES) | registry.reference_param_names()
    for key in data:
        if not isinstance(key, str) or key.startswith("_") or key in known:
            continue
        close = difflib.get_close_matches(key, sorted(known), n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        problems.append(
            Problem(
                f"unknown field {key!r} at the top level.{hint} The top-level object holds 'items' and the "
                f"shared defaults ({', '.join(k for k in DEFAULT_FIELDS if k != 'items')}), or one item "
                "with a 'prompt'",
                field=key,
            )
        )


def normalize_fields(
    raw: Mapping[str, Any],
    index: int | None,
    item_id: str | None,
    registry: ModelRegistry,
    problems: list[Problem],
    *,
    for_defaults: bool = False,
) -> dict[str, Any]:
    """Canonical field names (aliases folded), unknown fields reported with a hint."""

    def problem(message: str, fld: str) -> None:
        if for_defaults:
            problems.append(DefaultsProblem(message, field=fld))
        else:
            problems.append(Problem(message, index=index, item_id=item_id, field=fld))

    known = set(DEFAULT_FIELDS if for_defaults else ITEM_FIELDS) - {"items"}
    reference_names = registry.reference_param_names() | set(REFERENCE_FIELDS)
    out: dict[str, Any] = {}
    refs: list[tuple[str, Any]] = []
    for key, value in raw.items():
        if not isinstance(key, str) or key.startswith("_"):
            continue  # "_comment" and friends: JSON has no comments
        name = ALIASES.get(key, key)
        if name in reference_names or name in REFERENCE_FIELDS:
            refs.append((key, value))
            continue
        if name not in known:
            where = "file defaults" if for_defaults else "item"
            if for_defaults and name in ITEM_FIELDS:
                problem(f"{key!r} belongs in each item, not in the shared defaults", key)
            elif name in registry.all_param_names():
                problem(
                    f'unknown field {key!r}; model parameters go under "params" '
                    f'(e.g. "params": {{{json.dumps(key)}: ...}})',
                    key,
                )
            else:
                choices = sorted(known | set(ALIASES) | set(REFERENCE_FIELDS))
                close = difflib.get_close_matches(key, choices, n=1)
                hint = f" Did you mean {close[0]!r}?" if close else ""
                problem(
                    f"unknown field {key!r} in the {where}.{hint} Known fields: {', '.join(sorted(known | set(REFERENCE_FIELDS)))}",
                    key,
                )
            continue
        if name in out:
            problem(f"{key!r} and another name for {name!r} are both given; keep one", key)
            continue
        out[name] = value
    if len(refs) > 1:
        problem(
            "reference images are given under several names ("
            + ", ".join(repr(k) for k, _ in refs)
            + "); use one",
            refs[1][0],
        )
    elif refs:
        out["references"] = refs[0]
    return out


def item_of(at: list[Any], data: Any) -> tuple[int | None, list[Any], bool]:
    """Where a JSON path (keys and list indexes from the top of a prompts document) points: (item
    index or None, the path inside that item, whether it is in the shared defaults)."""
    if isinstance(data, list):
        if at and isinstance(at[0], int):
            return at[0], at[1:], False
        return None, at, False
    if isinstance(data, dict):
        if "items" in data:
            if len(at) >= 2 and at[0] == "items" and isinstance(at[1], int):
                return at[1], at[2:], False
            return None, at, True
        return (0, at, False) if "prompt" in data else (None, at, False)
    return None, at, False


def field_path(parts: list[Any]) -> str:
    """A path inside an item as a field name: `params.x[0].y`."""
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out
