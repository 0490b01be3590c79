"""The few small helpers several packages share (like dramatiq's `common.py`): one copy of each.

- `is_int`, `is_number`: JSON-typed checks (a bool is not a number; NaN and infinities are not
  numbers either: they are not JSON, and no model parameter or price takes them);
- `type_name`: what a JSON value is, in words for error messages ("an integer", "a list");
- `redact_url`: a URL (or a `;`-separated list, as Sentinel URLs are) without its passwords;
- `format_usd`: an amount of money with the precision it has ($0.025, not $0.03).
"""

from __future__ import annotations

import math
from typing import Any, TypeGuard
from urllib.parse import urlsplit, urlunsplit


def is_int(value: Any) -> TypeGuard[int]:
    """An integer, and not a bool (bool is an int in Python)."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> TypeGuard[int | float]:
    """An int or float that is finite: not a bool, not NaN, not an infinity."""
    return (is_int(value) or isinstance(value, float)) and math.isfinite(value)


def type_name(value: Any) -> str:
    """'null', 'a boolean', 'an integer', 'a number', 'a string', 'a list', 'an object', else the
    Python type's name. Subclasses are named by their JSON kind."""
    if value is None:
        return "null"
    for kind, name in (
        (bool, "a boolean"),
        (int, "an integer"),
        (float, "a number"),
        (str, "a string"),
        (list, "a list"),
        (dict, "an object"),
    ):
        if isinstance(value, kind):
            return name
    return type(value).__name__


def redact_url(url: str) -> str:
    """The URL with every password replaced by `***`, for messages and logs. Several URLs may be
    given separated by `;` (a Sentinel list)."""
    out = []
    for entry in url.split(";"):
        parts = urlsplit(entry)
        if parts.password:
            entry = urlunsplit(parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", ":***@")))
        out.append(entry)
    return ";".join(out)


def format_usd(amount: float, *, max_decimals: int = 4) -> str:
    """'$0.025', '$0.15', '$1,234.50', '$0.0011': at least two decimals, and as many more (up to
    `max_decimals`) as the amount has, so that a price of $0.025 per image is not shown as $0.03."""
    text = f"{amount:,.{max_decimals}f}"
    whole, _, decimals = text.partition(".")
    decimals = decimals.rstrip("0").ljust(2, "0")
    return f"${whole}.{decimals}"
