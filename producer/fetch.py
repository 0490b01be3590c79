"""`producer fetch BATCH --to DIR`: a batch's outputs, manifest and gallery, brought home.

Files keep their place under the output root (`DIR/<batch>/manifest.json`, `DIR/<batch>/0003_fox.png`,
`DIR/animals/fox.png` for an item that named its output), so the gallery's relative links work
in the fetched folder as they do in the bucket. Parallel, resumable (a file already there with
the recorded size and SHA-256 is not fetched again), and complete only when every output of every
succeeded item is there with the right checksum.
"""

from __future__ import annotations

import concurrent.futures
import json
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from shared.atomic_files import write_atomic
from shared.errors import StorageError, StorageUnavailableError
from shared.ledger import item_keys
from shared.storage import Store, check_key, sha256_of

FETCH_THREADS = 8
FETCH_TRIES = 3


@dataclass
class FetchReport:
    batch_id: str
    to: Path
    fetched: int = 0  # files copied now
    present: int = 0  # files already there with the right size and checksum
    bytes: int = 0
    missing: list[str] = field(default_factory=list)  # "key: reason", outputs of succeeded items not fetched

    @property
    def complete(self) -> bool:
        return not self.missing


def fetch_batch(
    manifest: dict[str, Any],
    store: Store,
    to: Path,
    *,
    threads: int = FETCH_THREADS,
    progress: TextIO | None = None,
) -> FetchReport:
    """Copy every output of the manifest's items (those the store has), then the manifest and
    the gallery, into `to`. Returns what happened; `.complete` only when every output of every
    succeeded item is there."""
    batch_id = str(manifest["batch"]["id"])
    report = FetchReport(batch_id, to)
    wanted: list[tuple[str, dict[str, Any] | None, bool]] = []  # (key, file record, needed)
    for item in manifest.get("items") or []:
        records = {str(f["key"]): f for f in item.get("files") or []}
        for key in item_keys(item, store.location):
            wanted.append((key, records.get(key), item.get("status") == "succeeded"))
    bar = _Progress(progress, len(wanted))
    lock = threading.Lock()

    def one(entry: tuple[str, dict[str, Any] | None, bool]) -> None:
        key, record, needed = entry
        try:
            fresh, size = _fetch_one(store, key, record, to)
        except (StorageError, StorageUnavailableError, OSError) as exc:
            with lock:
                if needed:
                    report.missing.append(f"{key}: {exc}")
            bar.step(0)
            return
        with lock:
            report.fetched += fresh
            report.present += not fresh
            report.bytes += size if fresh else 0
        bar.step(size if fresh else 0)

    with concurrent.futures.ThreadPoolExecutor(max(1, threads), thread_name_prefix="fetch") as pool:
        list(pool.map(one, wanted))
    bar.close()
    folder = to / batch_id
    write_atomic(
        folder / "manifest.json", [(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n").encode()]
    )
    try:
        write_atomic(folder / "index.html", [store.get(f"{batch_id}/index.html")])
    except (StorageError, StorageUnavailableError):
        from shared.gallery import render_gallery

        page = render_gallery(manifest, keys_of=lambda item: item_keys(item, store.location))
        write_atomic(folder / "index.html", [page.encode()])
    return report


def _fetch_one(store: Store, key: str, record: dict[str, Any] | None, to: Path) -> tuple[bool, int]:
    """(fetched now, size). Skips a local file with the recorded size and checksum; checks what
    it fetched against the record; a store that does not answer is asked again a few times."""
    target = to / check_key(key)
    want_size = record.get("bytes") if record else None
    want_sha = record.get("sha256") if record else None
    if target.is_file():
        data = target.read_bytes()
        if want_sha is not None and len(data) == want_size and sha256_of(data) == want_sha:
            return False, len(data)
        if want_sha is None and store.size(key) == len(data):
            return False, len(data)  # no checksum recorded (an older batch): the size decides
    for attempt in range(FETCH_TRIES):
        try:
            data = store.get(key)
            break
        except StorageUnavailableError:
            if attempt == FETCH_TRIES - 1:
                raise
            time.sleep(1.0 * (attempt + 1))
    if want_sha is not None and sha256_of(data) != want_sha:
        raise StorageError(f"checksum differs from the manifest's ({len(data)} bytes fetched)")
    write_atomic(target, [data])
    return True, len(data)


class _Progress:
    """A one-line bar on a terminal, a line every 10 s elsewhere; nothing without a stream."""

    def __init__(self, stream: TextIO | None, total: int):
        self.stream, self.total, self.done, self.bytes = stream, total, 0, 0
        self.tty = bool(stream is not None and getattr(stream, "isatty", lambda: False)())
        self.last = 0.0
        self.lock = threading.Lock()

    def step(self, size: int) -> None:
        with self.lock:
            self.done += 1
            self.bytes += size
            now = time.monotonic()
            if self.stream is None or (
                now - self.last < (0.1 if self.tty else 10.0) and self.done < self.total
            ):
                return
            self.last = now
            self._draw()

    def _draw(self) -> None:
        width = 30
        filled = int(width * self.done / self.total) if self.total else width
        line = (
            f"fetch [{'#' * filled}{'.' * (width - filled)}] {self.done}/{self.total} files, "
            f"{self.bytes / 1e6:.1f} MB"
        )
        assert self.stream is not None
        self.stream.write(("\r" + line) if self.tty else line + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.stream is not None and self.tty and self.total:
            self.stream.write("\n")
            self.stream.flush()
