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

import requests
from dotenv import dotenv_values

from shared.common import redact_url
from shared.errors import ApiUnreachableError, ConfigError, InputError, Problem
from shared.settings import api_base_url

DEFAULT_BASE_URL = "https://api.replicate.com"


def check_token(token: str, base_url: str | None = None, *, timeout: float = 10.0) -> dict:
    """The account JSON (`username`, `type`, ...) for a valid token; InputError when rejected,
    ApiUnreachableError when no usable answer came. No message ever contains the token."""
    token = (token or "").strip()
    if not token:
        raise InputError(Problem("the token is empty", field="REPLICATE_API_TOKEN"))
    if any(c.isspace() for c in token):
        raise InputError(Problem("the token contains whitespace", field="REPLICATE_API_TOKEN"))
    url = api_base_url(base_url or DEFAULT_BASE_URL) + "/v1/account"
    shown = redact_url(url)
    try:
        response = requests.get(url, headers={"Authorization": f"Bearer {token}"}, timeout=timeout)
    except requests.RequestException as exc:
        # The exception text holds the URL only (the header is not part of it); scrubbed anyway.
        raise ApiUnreachableError(shown, _scrub(_reason(exc, timeout), token)) from None
    if response.status_code in (401, 403):
        raise InputError(
            Problem(f"{shown} rejected the token (HTTP {response.status_code})", field="REPLICATE_API_TOKEN")
        )
    if response.status_code != 200:
        raise ApiUnreachableError(
            shown,
            f"it answered HTTP {response.status_code} {response.reason or ''}".rstrip(),
            status=response.status_code,
        )
    try:
        data = response.json()
    except ValueError:
        data = None
    if not isinstance(data, dict):
        raise ApiUnreachableError(shown, "it did not answer an account as JSON (is this Replicate's API?)")
    return data


def _reason(exc: requests.RequestException, timeout: float) -> str:
    """What went wrong, in a few words: 'connection refused', 'Failed to resolve ...', ..."""
    if isinstance(exc, requests.Timeout):
        return f"no answer within {timeout:g} s ({type(exc).__name__})"
    inner = exc.args[0] if exc.args else None
    reason = getattr(inner, "reason", None) or inner or exc
    text = str(reason)
    # urllib3 prefixes its connection object: "<...HTTPConnection object at 0x..>: " or
    # "HTTPConnection(host='h', port=1): ".
    text = re.sub(r"^(<[^>]*>|\w*Connection\([^)]*\)):\s*", "", text)
    if isinstance(exc, requests.exceptions.SSLError):
        text = f"TLS error: {text}"
    return f"{text} ({type(exc).__name__})" if text else type(exc).__name__


def _scrub(text: str, token: str) -> str:
    return text.replace(token, "***") if token else text


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
