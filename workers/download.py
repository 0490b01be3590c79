"""Fetching a prediction's outputs: every shape the API and the client give, without the token.

Outputs come as a URI string, a list of them, client FileOutput objects (anything with `.url`),
or data: URIs. Files are fetched with plain `requests` (no Authorization header: the official
client's FileOutput would send the Replicate token to the file host), with connect/read timeouts
and a byte cap, and streamed straight into an atomic write.

Whoever controls an output URL (a model, a compromised CDN, a redirect) must not make a worker
fetch an internal service into OUTPUT_DIR: requests-hardened resolves each hop's host once,
refuses loopback, private, link-local (169.254.169.254, fd00:ec2::254), multicast and reserved
addresses, and connects to the very address it checked (a DNS answer that changes between check
and connect cannot slip through). Only when REPLICATE_BASE_URL itself is on such an address (the
stand-in) are those allowed, or when FLEET_ALLOW_PRIVATE_OUTPUT_URLS says so.
"""

from __future__ import annotations

import base64
import binascii
import enum
import ipaddress
import logging
import socket
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import requests
from requests_hardened import Config, HTTPSession
from requests_hardened.ip_filter import InvalidIPAddress

from shared.errors import LocalError, RefusedOutputURLError, TransientError
from shared.settings import Settings
from workers.storage import write_stream

log = logging.getLogger(__name__)

CHUNK = 256 * 1024
MAX_REDIRECTS = 10  # a CDN needs one or two


class AddressScope(enum.Enum):
    """The addresses an output download may connect to, at every redirect hop."""

    PUBLIC = "public"  # globally routable only: Replicate's file hosts
    LOOPBACK = "loopback"  # and this host's loopback (the stand-in on 127.0.0.1)
    ANY = "any"  # no check (FLEET_ALLOW_PRIVATE_OUTPUT_URLS=true, or Replicate on a private network)


def output_scope(settings: Settings) -> AddressScope:
    """FLEET_ALLOW_PRIVATE_OUTPUT_URLS when set; otherwise what REPLICATE_BASE_URL is on: outputs
    may come from where the API itself is (loopback, or a private network), never from elsewhere."""
    if settings.allow_private_output_urls is not None:
        return AddressScope.ANY if settings.allow_private_output_urls else AddressScope.PUBLIC
    host = urllib.parse.urlsplit(settings.replicate_base_url or "").hostname
    if not host:
        return AddressScope.PUBLIC  # Replicate itself
    try:
        addresses = {
            _address(str(info[4][0])) for info in socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
        }
    except (OSError, ValueError) as exc:
        log.warning(
            "cannot resolve REPLICATE_BASE_URL's host %r (%s): outputs only from public addresses", host, exc
        )
        return AddressScope.PUBLIC
    local = [a for a in addresses if not a.is_global]
    if not local:
        return AddressScope.PUBLIC
    return AddressScope.LOOPBACK if all(a.is_loopback for a in local) else AddressScope.ANY


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

    def __init__(
        self,
        *,
        max_bytes: int,
        scope: AddressScope = AddressScope.PUBLIC,
        connect_timeout: float = 10.0,
        read_timeout: float = 60.0,
    ):
        self.max_bytes = max_bytes
        self.scope = scope
        self.timeout = (connect_timeout, read_timeout)
        self.session = _session(scope)

    @classmethod
    def from_settings(cls, settings: Settings) -> Downloader:
        return cls(max_bytes=settings.max_download_bytes, scope=output_scope(settings))

    def save(self, url: str, path: Path) -> int:
        """Download `url` into `path` atomically. TransientError for network trouble and 5xx
        (worth fetching again), TransientError(status=404/410) when the file is gone (a new
        prediction is needed), LocalError for size/disk problems and RefusedOutputURLError for
        an address outside the scope. Returns bytes written."""
        if url.startswith("data:"):
            return write_stream(path, [decode_data_uri(url, self.max_bytes)], max_bytes=self.max_bytes)
        with self._open(url) as response:
            return write_stream(path, self._chunks(response), max_bytes=self.max_bytes)

    def fetch(self, url: str) -> bytes:
        """The bytes at `url`, whole, in memory (outputs are kept until written to the store),
        with the same errors as `save`, the byte cap included."""
        if url.startswith("data:"):
            data = decode_data_uri(url, self.max_bytes)
        else:
            buffer = bytearray()
            with self._open(url) as response:
                for chunk in self._chunks(response):
                    buffer += chunk
                    if len(buffer) > self.max_bytes:
                        raise LocalError(f"output larger than the {self.max_bytes}-byte cap; not kept")
            data = bytes(buffer)
        if len(data) > self.max_bytes:
            raise LocalError(f"output larger than the {self.max_bytes}-byte cap; not kept")
        if not data:
            raise LocalError("the output file is empty")
        return data

    def _open(self, url: str) -> requests.Response:
        """The streaming response for an http(s) output URL, every hop inside the scope."""
        scheme = urllib.parse.urlsplit(url).scheme
        if scheme not in ("http", "https"):
            raise LocalError(f"unsupported output URI scheme {scheme!r}")
        try:
            response = self.session.get(url, stream=True, timeout=self.timeout, allow_redirects=True)
        except InvalidIPAddress as exc:
            raise RefusedOutputURLError(_refusal(url, str(exc))) from None
        except (requests.exceptions.InvalidSchema, requests.exceptions.InvalidURL) as exc:
            raise LocalError(f"unusable output URL (or redirect): {exc}") from None
        except requests.RequestException as exc:
            raise TransientError(f"download failed: {type(exc).__name__}") from exc
        if response.status_code >= 400:
            response.close()
            raise TransientError(f"download failed: HTTP {response.status_code}", status=response.status_code)
        declared = response.headers.get("Content-Length")
        if declared and declared.isdigit() and int(declared) > self.max_bytes:
            response.close()
            raise LocalError(f"output is {declared} bytes, over the {self.max_bytes}-byte cap; not kept")
        return response

    @staticmethod
    def _chunks(response: requests.Response) -> Iterator[bytes]:
        try:
            yield from response.iter_content(CHUNK)
        except requests.RequestException as exc:
            raise TransientError(f"download interrupted: {type(exc).__name__}") from exc

    def close(self) -> None:
        self.session.close()


def _session(scope: AddressScope) -> requests.Session:
    session: requests.Session
    if scope is AddressScope.ANY:
        session = requests.Session()
    else:
        session = HTTPSession(
            Config(
                ip_filter_enable=True,
                ip_filter_allow_loopback_ips=scope is AddressScope.LOOPBACK,
                never_redirect=False,
                default_timeout=None,
            )
        )
    session.trust_env = False  # no .netrc credentials, no proxies picked up by surprise
    session.max_redirects = MAX_REDIRECTS
    session.headers["User-Agent"] = "replicate-fleet"
    return session


def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    address = ipaddress.ip_address(text.split("%", 1)[0])  # no IPv6 zone index
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _refusal(url: str, refused: str) -> str:
    try:
        address = _address(refused)
        kind = (
            "loopback"
            if address.is_loopback
            else "link-local (cloud metadata)"
            if address.is_link_local
            else "multicast"
            if address.is_multicast
            else "private or reserved"
        )
    except ValueError:
        kind = "non-public"
    host = urllib.parse.urlsplit(url).hostname
    return (
        f"output URL on {host!r} leads (itself or by a redirect) to {refused}, a {kind} address: refused "
        f"(FLEET_ALLOW_PRIVATE_OUTPUT_URLS=true allows it)"
    )


def decode_data_uri(uri: str, max_bytes: int) -> bytes:
    header, _, payload = uri.partition(",")
    encoded = header.endswith(";base64")
    # Refused on its length, before decoding it: base64 carries 3 bytes in 4 characters, and a
    # %-escaped byte takes up to 3. What still decodes to more is stopped by write_stream's cap.
    if len(payload) > (4 * -(-max_bytes // 3) if encoded else 3 * max_bytes):
        raise LocalError(
            f"data: URI output of {len(payload)} characters is over the {max_bytes}-byte cap; not kept"
        )
    try:
        if encoded:
            return base64.b64decode(payload, validate=False)
        return urllib.parse.unquote_to_bytes(payload)
    except (binascii.Error, ValueError) as exc:
        raise LocalError(f"malformed data: URI output: {exc}") from exc
