"""Reading prompts.json: size, encoding and JSON errors, and every duplicate key and NaN/Infinity
located by line, column, item and field (json.loads alone would silently keep the last value).

Comments are accepted (JSONC: `// ...` to the end of the line and `/* ... */`, never inside a
string), so the README's examples paste as they are; they are blanked out in place, keeping every
line and column, and the rest is parsed by the standard json module. Not JSON5 (single quotes,
unquoted keys, trailing commas): a trailing comma is an error that names its line and the item."""

from __future__ import annotations

import bisect
import json
import re
from pathlib import Path
from typing import Any

from producer.prompts.fields import DefaultsProblem, field_path, item_of
from shared.common import type_name
from shared.errors import InputError, Problem

MAX_FILE_BYTES = 20 * 1024 * 1024
# JSON tokens, for locating problems in text that json.loads accepted (strings, punctuation, and
# any other run of characters: numbers, true/false/null, NaN/Infinity).
_JSON_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"|[{}\[\]:,]|[^\s{}\[\]:,"]+')
_JSON_CONSTANTS = ("NaN", "Infinity", "-Infinity")
# A string (kept as it is), a line comment, a block comment, or a block comment never closed.
_JSONC = re.compile(r'"(?:[^"\\]|\\.)*"|//[^\n]*|/\*[\s\S]*?\*/|/\*[\s\S]*')


class PromptsList(list):
    """A prompts file's top-level list, remembering the folder it came from."""

    source_dir: Path | None = None


class PromptsDict(dict):
    """A prompts file's top-level object, remembering the folder it came from."""

    source_dir: Path | None = None


def load_prompts_file(path: str | Path, *, max_bytes: int = MAX_FILE_BYTES) -> PromptsList | PromptsDict:
    """Parse a prompts.json. Errors (InputError): missing file, too big, not UTF-8, bad JSON (with
    line and column), duplicate keys, NaN/Infinity. The result is a list or dict (subclass) whose
    `source_dir` is the file's folder, which parse_prompts uses for relative reference paths."""
    path = Path(path)
    where = str(path)
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise InputError(f"{where}: file not found") from None
    except OSError as exc:
        raise InputError(f"{where}: cannot read: {exc.strerror or exc}") from None
    if path.is_dir():
        raise InputError(f"{where}: is a folder, not a prompts file")
    if size > max_bytes:
        raise InputError(
            f"{where}: {size / 2**20:.1f} MB is above the {max_bytes / 2**20:g} MB limit "
            "for one prompts file; split the batch into several files"
        )
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise InputError(f"{where}: cannot read: {exc.strerror or exc}") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise InputError(
            f"{where}: line {line}: not UTF-8 text (byte {exc.start}); save the file as UTF-8"
        ) from None
    if not text.strip():
        raise InputError(
            f"{where}: the file is empty; expected a JSON list of prompts or an object with 'items'"
        )
    duplicates: list[str] = []
    constants: list[str] = []

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        obj: dict[str, Any] = {}
        for key, value in items:
            if key in obj:
                duplicates.append(key)
            obj[key] = value
        return obj

    def no_constants(name: str) -> Any:
        constants.append(name)  # reported with its position below, once the whole text parsed
        return None

    text = _blank_comments(text, where)
    try:
        data = json.loads(text, object_pairs_hook=pairs, parse_constant=no_constants)
    except json.JSONDecodeError as exc:
        raise InputError(
            _trailing_comma(text, exc, where)
            or f"{where}: invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}"
        ) from None
    except ValueError as exc:
        raise InputError(f"{where}: invalid JSON: {exc}") from None
    except RecursionError:
        raise InputError(f"{where}: JSON nested too deeply") from None
    if duplicates or constants:
        raise InputError(
            _locate_json_problems(text, where, data)
            or [Problem(f"{where}: duplicate keys or NaN/Infinity in the JSON, which JSON does not allow")]
        )
    if isinstance(data, list):
        result: PromptsList | PromptsDict = PromptsList(data)
    elif isinstance(data, dict):
        result = PromptsDict(data)
    elif isinstance(data, str):
        result = PromptsList([data])  # a lone prompt string: one image
    else:
        raise InputError(
            f"{where}: expected a list of prompts or an object with 'items', not {type_name(data)}"
        )
    result.source_dir = path.resolve().parent
    return result


def _blank_comments(text: str, where: str) -> str:
    """`text` with every comment replaced by spaces (newlines kept, so lines and columns stay)."""
    if "/" not in text:
        return text

    def blank(match: re.Match[str]) -> str:
        found = match.group()
        if found[0] == '"':
            return found
        if found.startswith("/*") and not found.endswith("*/") or found == "/*/":
            line = text.count("\n", 0, match.start()) + 1
            raise InputError(f"{where}: line {line}: a /* comment is never closed with */")
        return re.sub(r"[^\n]", " ", found)

    return _JSONC.sub(blank, text)


def _trailing_comma(text: str, exc: json.JSONDecodeError, where: str) -> Problem | None:
    """The problem for a comma right before a closing bracket, at the comma, naming the item."""
    if exc.pos >= len(text) or text[exc.pos] not in "]}":
        return None
    comma = len(text[: exc.pos].rstrip()) - 1
    if comma < 0 or text[comma] != ",":
        return None
    line = text.count("\n", 0, comma) + 1
    column = comma - (text.rfind("\n", 0, comma) + 1) + 1
    at = _path_before(text, comma)
    if at and isinstance(at[0], int):
        index, rest = at[0], at[1:]
    elif len(at) >= 2 and at[0] == "items" and isinstance(at[1], int):
        index, rest = at[1], at[2:]
    else:
        index, rest = None, at
    return Problem(
        f"{where}: line {line}, column {column}: a trailing comma before {text[exc.pos]!r} "
        "(JSON allows none after the last element); remove it",
        index=index,
        field=field_path(rest) or None,
    )


def _path_before(text: str, end: int) -> list[Any]:
    """The JSON path (keys and list indexes) of the value that ends at `end` in `text`."""
    stack: list[list[Any]] = []  # ["obj", current key, expecting a key] or ["arr", index]
    for match in _JSON_TOKEN.finditer(text, 0, end):
        token = match.group()
        top = stack[-1] if stack else None
        if token == "{":
            stack.append(["obj", None, True])
        elif token == "[":
            stack.append(["arr", 0])
        elif token in ("}", "]"):
            if stack:
                stack.pop()
        elif token == ":" and top is not None and top[0] == "obj":
            top[2] = False
        elif token == "," and top is not None:
            if top[0] == "obj":
                top[2] = True
            else:
                top[1] += 1
        elif token[0] == '"' and top is not None and top[0] == "obj" and top[2]:
            try:
                top[1] = json.loads(token)
            except ValueError:
                top[1] = token
    return [frame[1] for frame in stack]


def _locate_json_problems(text: str, where: str, data: Any) -> list[Problem]:
    """Every duplicate key and NaN/Infinity in `text` (which json.loads accepted), with its line,
    column, item index and field. Linear in the text and the problems: one pass finds where every
    line starts, and each problem's line is a bisection in it (a 20 MB file may hold ~1M)."""
    problems: list[Problem] = []
    line_starts = [0] + [newline.end() for newline in re.finditer("\n", text)]
    # One frame per open container: ["obj", keys seen, current key, expecting a key] or
    # ["arr", current element index].
    stack: list[list[Any]] = []

    def path() -> list[Any]:
        return [frame[2] if frame[0] == "obj" else frame[1] for frame in stack]

    def report(offset: int, at: list[Any], message: str) -> None:
        line = bisect.bisect_right(line_starts, offset)  # 1-based: line_starts[line - 1] <= offset
        column = offset - line_starts[line - 1] + 1
        message = f"{where}: line {line}, column {column}: {message}"
        index, rest, shared = item_of(at, data)
        fld = field_path(rest) or None
        if shared:
            problems.append(DefaultsProblem(message, field=fld))
        else:
            problems.append(Problem(message, index=index, field=fld))

    for match in _JSON_TOKEN.finditer(text):
        token = match.group()
        top = stack[-1] if stack else None
        if token == "{":
            stack.append(["obj", set(), None, True])
        elif token == "[":
            stack.append(["arr", 0])
        elif token in ("}", "]"):
            if stack:
                stack.pop()
        elif token == ":":
            if top is not None and top[0] == "obj":
                top[3] = False
        elif token == ",":
            if top is not None and top[0] == "obj":
                top[3] = True
            elif top is not None:
                top[1] += 1
        elif token[0] == '"' and top is not None and top[0] == "obj" and top[3]:
            try:
                key = json.loads(token)
            except ValueError:
                key = token
            top[2] = key
            if key in top[1]:
                report(
                    match.start(),
                    path(),
                    f"duplicate key {key!r} in one object (JSON keeps only the last value); remove one",
                )
            top[1].add(key)
        elif token in _JSON_CONSTANTS:
            report(match.start(), path(), f"{token} is not valid JSON; use a number or null")
    return problems
