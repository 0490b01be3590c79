"""`--param key=value` parsing: values read as JSON when they parse, as text otherwise.

So `num_outputs=2` is the integer 2, `go_fast=true` a boolean, `image_input=["a.png","b.png"]`
a list, and `aspect_ratio=16:9` or `prompt_strength=high` stay strings. Quote a value that
must stay text although it is valid JSON: `seed='"42"'`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Any

from shared.errors import Problem

_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def parse_value(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


def split_params(pairs: Iterable[str]) -> tuple[dict[str, Any], list[Problem]]:
    """The well-formed pairs, and a Problem for each malformed one (the caller reports them with
    the rest of what is wrong in the input)."""
    params: dict[str, Any] = {}
    problems: list[Problem] = []
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key = key.strip()
        if not sep:
            problems.append(Problem(f"--param {pair!r} must look like key=value", field="--param"))
        elif not _KEY.match(key):
            problems.append(Problem(f"--param {pair!r}: {key!r} is not a parameter name", field="--param"))
        elif key in params:
            problems.append(Problem(f"--param {key!r} given twice", field="--param"))
        else:
            params[key] = parse_value(value)
    return params, problems
