"""Where a batch's outputs live: a local folder or an object-store URL, and the path rules.

`OUTPUT_DIR` (and `--output-dir`) is a local path as before, or `s3://bucket/prefix` (AWS and
every S3-compatible store), `gs://bucket/prefix`, `az://container/prefix`. Inside it every output
has a *key*: a relative POSIX path (`b-20261204-ab12cd/0003_fox.png`) that never starts with `/`,
never holds `..`, `\\` or NUL, and so cannot leave the root on any store.
"""

from __future__ import annotations

import os
import posixpath
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from urllib.parse import urlsplit

from shared.errors import ConfigError, StorageError

REMOTE_SCHEMES = ("s3", "gs", "az")


@dataclass(frozen=True)
class Location:
    """A parsed output root. `path` is set for a local folder; `bucket` and `prefix` for a store."""

    scheme: str  # "file", "s3", "gs" or "az"
    path: Path | None = None
    bucket: str = ""
    prefix: str = ""  # no leading or trailing "/"

    @property
    def remote(self) -> bool:
        return self.scheme != "file"

    def url(self, key: str = "") -> str:
        """The full address of `key` under this root: an absolute local path, or `s3://b/p/key`."""
        if not self.remote:
            assert self.path is not None
            return str(self.path / key) if key else str(self.path)
        inner = "/".join(part for part in (self.prefix, key) if part)
        return f"{self.scheme}://{self.bucket}/{inner}" if inner else f"{self.scheme}://{self.bucket}"

    def key_of(self, address: str) -> str | None:
        """The key of an address this root wrote (`url(key)` or, locally, a path under it)."""
        if self.remote:
            base = self.url().rstrip("/") + "/"
            return address[len(base) :] if address.startswith(base) else None
        assert self.path is not None
        try:
            return PurePosixPath(Path(address).relative_to(self.path)).as_posix()
        except ValueError:
            return None

    def __str__(self) -> str:
        return self.url()


def parse_location(value: str | os.PathLike) -> Location:
    """A Location from OUTPUT_DIR's value; ConfigError for a URL this project cannot write to.
    Local paths are made absolute (the batch records where its files are, whoever reads it)."""
    text = os.fspath(value)
    scheme = urlsplit(text).scheme.lower() if "://" in text else ""
    if scheme in ("", "file"):
        local = text[len("file://") :] if scheme == "file" else text
        return Location("file", path=Path(local).expanduser().resolve())
    if scheme not in REMOTE_SCHEMES:
        raise ConfigError(
            f"OUTPUT_DIR {text!r}: unsupported scheme {scheme!r}; use a local path or "
            f"{', '.join(s + '://' for s in REMOTE_SCHEMES)}"
        )
    parts = urlsplit(text)
    if parts.query or parts.fragment or "@" in parts.netloc:
        raise ConfigError(
            f"OUTPUT_DIR {text!r}: give the bucket and prefix only; credentials and options "
            "come from the standard environment variables"
        )
    bucket, prefix = parts.netloc, parts.path.strip("/")
    if not bucket:
        raise ConfigError(f"OUTPUT_DIR {text!r} names no bucket")
    if prefix and (".." in prefix.split("/") or "//" in prefix):
        raise ConfigError(f"OUTPUT_DIR {text!r}: the prefix must not hold '..' or empty parts")
    return Location(scheme, bucket=bucket, prefix=prefix)


def is_remote(value: str | os.PathLike) -> bool:
    text = os.fspath(value)
    return "://" in text and urlsplit(text).scheme.lower() in REMOTE_SCHEMES


def check_key(key: str) -> str:
    """`key` if it is a relative path that stays inside the root; StorageError otherwise."""
    if not key or "\x00" in key or "\\" in key:
        raise StorageError(f"output path {key!r} is not a relative file path")
    if key.startswith("/") or PurePosixPath(key).is_absolute():
        raise StorageError(f"output path {key!r} must be relative to the output root, not absolute")
    parts = key.split("/")
    if ".." in parts or "" in parts or "." in parts:
        raise StorageError(f"output path {key!r} must not hold '..', '.' or empty parts")
    return posixpath.normpath(key)


def output_names(output: str, count: int) -> list[str]:
    """The files one item writes: `output`, then `stem_1.ext`, `stem_2.ext`... for further
    outputs. Reserved at submit (producer.prompts) and written by the workers (workers.outputs)."""
    stem, dot, ext = output.rpartition(".")
    if not dot or "/" in ext:
        stem, ext = output, ""
    names = [output]
    for i in range(1, max(count, 1)):
        names.append(f"{stem}_{i}.{ext}" if ext else f"{stem}_{i}")
    return names
