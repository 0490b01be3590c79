"""Reference images of an item: local files (relative to the prompts file's folder, checked to be
readable images by their content) or http(s) URLs. Also the files given to the file inputs
(`format: uri`) of a model described by its schema: local files (any kind) or URLs."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from PIL import Image, UnidentifiedImageError

from producer.prompts.fields import Report
from shared.common import type_name
from shared.models.spec import ModelSpec

MAX_REFERENCE_BYTES = 100 * 1024 * 1024  # Replicate's file upload limit


class References:
    """Resolves reference entries against `base_dir`, checking each distinct file once."""

    def __init__(self, base_dir: Path):
        self.base_dir = base_dir
        self.image_checks: dict[str, str | None] = {}  # resolved path -> problem text or None

    def resolve(self, source: tuple[str, Any] | None, problem: Report) -> tuple[str, list[str]]:
        """(field name, absolute paths or URLs); problems for each bad entry."""
        if source is None:
            return "image_input", []
        fld, value = source
        if isinstance(value, str):
            entries = [(fld, value)]
        elif isinstance(value, list):
            entries = [(f"{fld}[{i}]", v) for i, v in enumerate(value)]
        else:
            problem(f"reference images must be a path/URL or a list of them, not {type_name(value)}", fld)
            return fld, []
        refs: list[str] = []
        for where, entry in entries:
            ref = self._reference(entry, where, problem)
            if ref is not None:
                refs.append(ref)
        if len(refs) != len(entries):
            return fld, refs + [""] * (len(entries) - len(refs))  # keep the count for routing
        return fld, refs

    def _reference(self, entry: Any, where: str, problem: Report) -> str | None:
        if not isinstance(entry, str) or not entry.strip():
            problem(f"a reference image must be a file path or an http(s) URL, not {entry!r}", where)
            return None
        if "\x00" in entry:
            problem("a reference image path or URL must not contain a NUL character", where)
            return None
        scheme = urlsplit(entry).scheme.lower()
        if scheme in ("http", "https"):
            parts = urlsplit(entry)
            if not parts.netloc or any(c.isspace() for c in entry):
                problem(f"{entry!r} is not a valid URL", where)
                return None
            return entry
        if len(scheme) > 1 and "://" in entry:
            problem(f"{entry!r}: only local files and http(s) URLs can be used", where)
            return None
        path = Path(entry).expanduser()
        if not path.is_absolute():
            path = self.base_dir / path
        path = path.resolve()
        key = str(path)
        if key not in self.image_checks:
            self.image_checks[key] = check_image(path)
        message = self.image_checks[key]
        if message:
            problem(f"reference image {entry!r}: {message}", where)
            return None
        return key

    def input_files(self, spec: ModelSpec, params: dict[str, Any], problem: Report) -> list[str]:
        """Local files given to `spec`'s file inputs, made absolute (in `params` too) and checked
        to be readable files under the upload limit; URLs pass as they are. Returns the paths."""
        files: list[str] = []
        for name in spec.file_params:
            if name not in params:
                continue
            value = params[name]
            entries = value if isinstance(value, list) else [value]
            resolved = []
            for i, entry in enumerate(entries):
                where = f"params.{name}" + (f"[{i}]" if isinstance(value, list) else "")
                if not isinstance(entry, str) or urlsplit(entry).scheme.lower() in ("http", "https", "data"):
                    resolved.append(entry)
                    continue
                path = Path(entry).expanduser()
                path = (path if path.is_absolute() else self.base_dir / path).resolve()
                message = check_file(path)
                if message:
                    problem(f"file {entry!r}: {message}", where)
                resolved.append(str(path))
                files.append(str(path))
            params[name] = resolved if isinstance(value, list) else resolved[0]
        return files


def check_file(path: Path) -> str | None:
    """None if `path` is a readable file Replicate accepts as an upload, else why not."""
    try:
        if not path.is_file():
            return "file not found" if not path.exists() else "not a file"
        size = path.stat().st_size
        if size > MAX_REFERENCE_BYTES:
            return (
                f"{size / 2**20:.0f} MB is above Replicate's {MAX_REFERENCE_BYTES // 2**20} MB upload limit"
            )
        if not os.access(path, os.R_OK):
            return "not readable (permissions)"
    except OSError as exc:
        return f"cannot be read: {exc.strerror or exc}"
    return None


def check_image(path: Path) -> str | None:
    """None if `path` is a readable image file (by its content, not its name), else why not."""
    problem = check_file(path)
    if problem is not None:
        return problem
    try:
        Image.open(path).close()  # reads the header only: magic bytes and size
    except (UnidentifiedImageError, Image.DecompressionBombError) as exc:
        if isinstance(exc, Image.DecompressionBombError):
            return "image is too large (decompression bomb guard)"
        return "not an image file Pillow can read"
    except OSError as exc:
        return f"cannot be read: {exc.strerror or exc}"
    return None
