"""`producer init`: check a Replicate token against GET /v1/account, then store it in `.env`.

The token only ever travels in the Authorization header and into the file (mode 600, written
through a temporary file and a rename so a crash never leaves a half-written `.env`). Messages
name the account, never the token.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

from dotenv import dotenv_values

from shared.account import check_token
from shared.errors import ConfigError

__all__ = ["check_token", "stored_token", "write_env"]

_LINE = re.compile(r"^\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*=")


def stored_token(path: str | os.PathLike) -> str | None:
    """The REPLICATE_API_TOKEN the dotenv file at `path` holds already, if any."""
    path = Path(path)
    if not path.is_file():
        return None
    return dotenv_values(path).get("REPLICATE_API_TOKEN") or None


def write_env(path: str | os.PathLike, values: dict[str, str]) -> Path:
    """Set `values` in the dotenv file at `path` (other lines kept), mode 600."""
    path = Path(path)
    lines = path.read_text().splitlines() if path.is_file() else []
    remaining = dict(values)
    out: list[str] = []
    for line in lines:
        match = _LINE.match(line)
        if match and match.group(1) in values:
            name = match.group(1)
            if name in remaining:
                out.append(f"{name}={_quote(remaining.pop(name))}")
            continue  # a duplicate of a key we set: drop it
        out.append(line)
    out += [f"{name}={_quote(value)}" for name, value in remaining.items()]
    fd, tmp = tempfile.mkstemp(prefix=".env.", dir=path.parent)  # created with mode 600
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write("\n".join(out) + "\n")
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _quote(value: str) -> str:
    if "\n" in value:
        raise ConfigError("values in .env cannot contain newlines")
    if re.fullmatch(r"[A-Za-z0-9_./:@+-]*", value):
        return value
    return "'" + value.replace("'", "\\'") + "'"
