"""Fetching a prediction's outputs: every shape the API and the client give, without the token.

Outputs come as a URI string, a list of them, client FileOutput objects (anything with `.url`),
or data: URIs. Files are fetched with plain `requests` (no Authorization header: the official
client's FileOutput would send the Replicate token to the file host), with connect/read timeouts
and a byte cap, and streamed straight into an atomic write.
"""
from __future__ import annotations

import base64
import binascii
import urllib.parse
from pathlib import Path
from typing import Any, Iterator

import requests

from shared.errors import LocalError, TransientError
from workers.storage import write_stream

CHUNK = 256 * 1024


def output_urls(output: Any) -> list[str]:
    """Flatten a prediction's `output` into URIs, in order."""
    if output is None:
        return []
    if isinstance(output, str):
        return [output]
    url = getattr(output, "url", None)
    if isinstance(url, str):
        return [url]
    if isinstance(output, dict):  # some models name their outputs
        return [u for value in output.values() for u in output_urls(value)]
    if isinstance(output, (list, tuple)):
        return [u for value in output for u in output_urls(value)]
    return []


class Downloader:
    """One per process (a requests.Session pools connections; it is used from many threads,
    which requests tolerates for plain GETs)."""

    def __init__(self, *, max_bytes: int, connect_timeout: float = 10.0, read_timeout: float = 60.0):
        self.max_bytes = max_bytes
        self.timeout = (connect_timeout, read_timeout)
        self.session = requests.Session()
        self.session.trust_env = False  # no .netrc credentials, no proxies picked up by surprise
        self.session.headers["User-Agent"] = "replicate-fleet"

    def save(self, url: str, path: Path) -> int:
        """Download `url` into `path` atomically. TransientError for network trouble and 5xx
        (worth fetching again), TransientError(status=404/410) when the file is gone (a new
        prediction is needed), LocalError for size/disk problems. Returns bytes written."""
        if url.startswith("data:"):
            return write_stream(path, [decode_data_uri(url)], max_bytes=self.max_bytes)
        scheme = urllib.parse.urlsplit(url).scheme
        if scheme not in ("http", "https"):
            raise LocalError(f"unsupported output URI scheme {scheme!r}")
        try:
            response = self.session.get(url, stream=True, timeout=self.timeout, allow_redirects=True)
        except requests.RequestException as exc:
            raise TransientError(f"download failed: {type(exc).__name__}") from exc
        with response:
            if response.status_code >= 400:
                raise TransientError(f"download failed: HTTP {response.status_code}", status=response.status_code)
            declared = response.headers.get("Content-Length")
            if declared and declared.isdigit() and int(declared) > self.max_bytes:
                raise LocalError(f"output is {declared} bytes, over the {self.max_bytes}-byte cap; not kept")
            return write_stream(path, self._chunks(response), max_bytes=self.max_bytes)

    @staticmethod
    def _chunks(response: requests.Response) -> Iterator[bytes]:
        try:
            yield from response.iter_content(CHUNK)
        except requests.RequestException as exc:
            raise TransientError(f"download interrupted: {type(exc).__name__}") from exc

    def close(self) -> None:
        self.session.close()


def decode_data_uri(uri: str) -> bytes:
    header, _, payload = uri.partition(",")
    try:
        if header.endswith(";base64"):
            return base64.b64decode(payload, validate=False)
        return urllib.parse.unquote_to_bytes(payload)
    except (binascii.Error, ValueError) as exc:
        raise LocalError(f"malformed data: URI output: {exc}") from exc


def extension_of(url: str) -> str | None:
    """The file extension an output URI suggests (for items without an explicit output name)."""
    if url.startswith("data:"):
        mime = url[5:].split(";", 1)[0].split(",", 1)[0]
        return {"image/png": "png", "image/jpeg": "jpg", "image/webp": "webp", "video/mp4": "mp4"}.get(mime)
    suffix = Path(urllib.parse.urlsplit(url).path).suffix.lstrip(".").lower()
    return suffix or None
