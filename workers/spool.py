"""Downloaded outputs kept on this host until they are written to the store.

A store that does not answer makes the attempt run again later; the bytes it had downloaded stay
here (keyed by prediction and output position), so the next run on this host writes them without
fetching them again, and a run on another host fetches them again while the output URL is valid
(an hour). Never a new prediction for a write.

Files older than a day are removed (`prune`, by the recovery sweeper thread of each worker when
it starts and every hour after, never by an attempt), except those of a prediction whose attempt is
still its unfinished item's current one: its write may still be retried, and after an hour the
kept bytes are the only copy left (the output URL has expired). Bytes of an item that ended
(written, failed, canceled) or moved on to another attempt are awaited by no attempt.
"""

from __future__ import annotations

import os
import re
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from shared.atomic_files import write_atomic

MAX_AGE = 24 * 3600.0
_SAFE = re.compile(r"[^A-Za-z0-9_.-]")


class Spool:
    def __init__(self, folder: Path | None = None):
        self.folder = folder or Path(tempfile.gettempdir()) / f"replicate-fleet-spool-{os.getuid()}"

    def _path(self, prediction_id: str, position: int) -> Path:
        return self.folder / f"{_SAFE.sub('_', prediction_id)}-{position}"

    def get(self, prediction_id: str, position: int) -> bytes | None:
        try:
            return self._path(prediction_id, position).read_bytes()
        except OSError:
            return None

    def keep(self, prediction_id: str, position: int, data: bytes) -> None:
        try:
            self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
            write_atomic(self._path(prediction_id, position), [data])
        except OSError:
            pass  # only a shortcut: without it, the next run downloads again

    def drop(self, prediction_id: str, position: int) -> None:
        try:
            self._path(prediction_id, position).unlink(missing_ok=True)
        except OSError:
            pass

    def prune(self, awaited: Callable[[str], bool], now: float | None = None) -> list[Path]:
        """Remove the files older than MAX_AGE unless `awaited(prediction_id)` says an attempt
        may still write them; the removed paths. An error of `awaited` (Redis away: cannot
        tell) ends the pruning there, keeping the rest for the next time."""
        now = time.time() if now is None else now
        removed: list[Path] = []
        try:
            paths = list(self.folder.iterdir())
        except OSError:  # no spool on this host (yet)
            return removed
        for path in paths:
            try:
                if now - path.stat().st_mtime <= MAX_AGE:
                    continue
            except OSError:  # removed meanwhile (written by its attempt)
                continue
            prediction_id = path.name.rpartition("-")[0]
            if prediction_id and awaited(prediction_id):
                continue
            try:
                path.unlink(missing_ok=True)
            except OSError:
                continue
            removed.append(path)
        return removed
