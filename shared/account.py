"""The account behind a Replicate token: one cheap authenticated GET of /v1/account.

Used by `producer init` (before storing a token) and by every worker at start (workers.preflight).
No message ever contains the token.
"""

from __future__ import annotations

import re

import requests

from shared.common import redact_url
from shared.errors import ApiUnreachableError, InputError, Problem
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
