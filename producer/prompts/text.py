"""Text that can travel: every string of an item (keys too, at any depth) must be encodable as
UTF-8, since it goes to Replicate's API, Redis and the manifest as UTF-8.

JSON can spell what UTF-8 cannot: a lone UTF-16 surrogate ("\\ud83e", which JavaScript produces
when it cuts a string in the middle of an emoji) decodes to a Python str that no UTF-8 encoder
takes, and so does an undecodable byte of a command-line argument. Found at submit, such text is
a problem naming the item and field; found later, it would fail every attempt at the POST.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

__all__ = ["text_problems", "unencodable"]


def unencodable(text: str) -> str | None:
    """Why `text` cannot be encoded as UTF-8 (naming the character, escaped), or None."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        character = ascii(text[exc.start])[1:-1]
        return (
            f"holds text that cannot be encoded as UTF-8: {character} at character {exc.start + 1} "
            "(a lone UTF-16 surrogate: a string cut in the middle of an emoji, or bytes that were not "
            "UTF-8); fix or remove it"
        )
    return None


def text_problems(value: Any) -> Iterator[tuple[list[Any], str, bool]]:
    """(path, message, is a field name) for every string in `value` that cannot be encoded as
    UTF-8: a value by its path of keys and list indexes, a field name by the path of the object
    holding it. Walks without recursion, so no nesting depth makes it fail."""
    stack: list[tuple[Any, list[Any]]] = [(value, [])]
    while stack:
        node, path = stack.pop()
        if isinstance(node, str):
            why = unencodable(node)
            if why is not None:
                yield path, why, False
        elif isinstance(node, dict):
            for key, child in node.items():
                why = unencodable(key) if isinstance(key, str) else None
                if why is not None:
                    yield path, f"a field name {why}", True
                else:
                    stack.append((child, path + [key]))
        elif isinstance(node, (list, tuple)):
            stack.extend((child, path + [index]) for index, child in enumerate(node))
