"""Reference images travel with the batch: read once at submit, uploaded once, carried as a URL.
So do local files given to the file inputs (`format: uri`) of a model described by its schema
(`ImageRequest.input_files`, also found in the item's params).

A worker on another host cannot open a path on the producer's disk. So at submit the producer
reads each distinct local reference file once, keyed by the SHA-256 of its content (the same file
given to 500 items, or two copies of it under other names, is read and sent once), and uploads it
to Replicate's files API (`POST /v1/files`, what the official client does with a file input).
The items then carry only the returned URL: the task messages, the ledger and every worker see a
URL any host can pass to Replicate, and no worker ever opens the producer's paths.

Why the files API: Replicate fetches the input itself, so the file must be where Replicate can
read it. Its own files API always is; an object-store URL would have to be public or presigned
(and exist even when OUTPUT_DIR is a local folder); a `data:` URI would put the bytes of every
reference into every item's record in Redis and every retry's request.

Duplicate-batch fingerprints use `sha256:<hex>` in place of the reference, never the path or the
upload URL (which differs at each upload): the same images under another name are the same batch.
"""

from __future__ import annotations

import hashlib
import io
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from shared.errors import ConfigError, InputError, Problem, TransientError
from shared.request import ImageRequest
from shared.settings import Settings

UPLOAD_TRIES = 4
HASH_PREFIX = "sha256:"


def is_local(reference: str) -> bool:
    return not reference.startswith(("http://", "https://", "data:"))


@dataclass(frozen=True)
class LocalReference:
    sha256: str
    path: str  # the first path seen with this content (its name goes with the upload)
    data: bytes


class References:
    """The distinct local reference files of a batch, read once each."""

    def __init__(self, requests: Sequence[ImageRequest]):
        self.by_path: dict[str, str] = {}  # path -> sha256
        self.files: dict[str, LocalReference] = {}  # sha256 -> content
        problems: list[Problem] = []
        for request in requests:
            named = [(f"reference_images[{i}]", ref) for i, ref in enumerate(request.reference_images)]
            named += [(f"input_files[{i}]", path) for i, path in enumerate(request.input_files)]
            for where, ref in named:
                if not is_local(ref) or ref in self.by_path:
                    continue
                try:
                    data = Path(ref).read_bytes()
                except OSError as exc:
                    problems.append(
                        Problem(
                            f"cannot read file {ref!r}: {exc.strerror or exc}",
                            index=request.index,
                            item_id=request.id,
                            field=where,
                        )
                    )
                    continue
                digest = hashlib.sha256(data).hexdigest()
                self.by_path[ref] = digest
                self.files.setdefault(digest, LocalReference(digest, ref, data))
        if problems:
            raise InputError(problems)
        self.urls: dict[str, str] = {}  # sha256 -> uploaded URL

    def __len__(self) -> int:
        return len(self.files)

    def for_fingerprint(self, requests: Sequence[ImageRequest]) -> list[ImageRequest]:
        """The requests with each local reference named by its content hash."""
        return [self._swap(r, lambda ref: HASH_PREFIX + self.by_path[ref]) for r in requests]

    def upload(self, settings: Settings, *, take_read_token: Callable[[], object] | None = None) -> int:
        """Upload every distinct file not uploaded yet (one read token each); returns how many.
        ConfigError without a token; TransientError if the files API keeps failing."""
        missing = [f for f in self.files.values() if f.sha256 not in self.urls]
        if not missing:
            return 0
        if not settings.replicate_api_token:
            raise ConfigError(
                "local reference images are uploaded at submit, which needs REPLICATE_API_TOKEN "
                "(producer init stores it), or give them as http(s) URLs"
            )
        from workers.replicate_calls import ReplicateCalls

        calls = ReplicateCalls(settings)
        try:
            for ref in missing:
                self.urls[ref.sha256] = _upload(calls, ref, take_read_token)
        finally:
            calls.close()
        return len(missing)

    def with_urls(self, requests: Sequence[ImageRequest]) -> list[ImageRequest]:
        """The requests with each local reference replaced by its uploaded URL."""
        return [self._swap(r, lambda ref: self.urls[self.by_path[ref]]) for r in requests]

    @staticmethod
    def _swap(request: ImageRequest, new: Callable[[str], str]) -> ImageRequest:
        if not any(is_local(ref) for ref in (*request.reference_images, *request.input_files)):
            return request
        refs = tuple(new(ref) if is_local(ref) else ref for ref in request.reference_images)
        if not request.input_files:
            return replace(request, reference_images=refs)
        files = {path: new(path) for path in request.input_files if is_local(path)}

        def swap(value):  # a file input's value in params: one path or a list of them
            if isinstance(value, list):
                return [swap(v) for v in value]
            return files.get(value, value) if isinstance(value, str) else value

        return replace(
            request,
            reference_images=refs,
            input_files=tuple(files.get(p, p) for p in request.input_files),
            params={k: swap(v) for k, v in request.params.items()},
        )


def _upload(calls, ref: LocalReference, take_read_token: Callable[[], object] | None) -> str:
    from workers.replicate_calls import classify

    for attempt in range(UPLOAD_TRIES):
        if take_read_token is not None:
            take_read_token()
        try:
            created = calls.client.files.create(io.BytesIO(ref.data), filename=Path(ref.path).name)
            url = (created.urls or {}).get("get")
            if url:
                return url
            error: Exception = TransientError("the files API answered without a URL")
        except Exception as exc:  # noqa: BLE001 - classified below
            error = classify(exc, during="upload")
            if not isinstance(error, TransientError):
                raise error from None
        if attempt == UPLOAD_TRIES - 1:
            raise TransientError(f"could not upload reference image {ref.path!r}: {error}") from None
        time.sleep(min(0.5 * 2**attempt, 5.0))
    raise AssertionError("unreachable")
