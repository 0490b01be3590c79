"""Where an item's files go: default names, a user's `output` made safe, and every file claimed.

- `output` is relative to the output root: no absolute paths, no `..`, no `\\`, and the resolved
  path (symlinks followed) must stay inside the root;
- two items may not write the same file, compared case-insensitively (the output root may live
  on, or be copied to, a case-insensitive file system) and without the media extension (a worker
  names each file after the bytes it received: `fox.png` holding a JPEG is written `fox.jpg`, so
  `fox.png` and `fox.jpg` of two items could land on one object); further outputs of one item
  (`name_1.ext`, `name_2.ext` for num_outputs > 1) count too;
- nor a file that exists already (unless overwrite) in any name a worker may give it: the name
  or its stem with another extension the bytes can give (shared.storage.sniff.written_names),
  so that a JPEG answer to `fox.png` is never refused (or, with overwrite, never replaces
  `fox.jpg` unannounced) after the prediction was paid for;
- the extension decides output_format when only it is given; with neither, the model's default
  format is used; with both, they must agree (.jpeg counts as jpg).
"""

from __future__ import annotations

import os
import re
import unicodedata
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from producer.prompts.fields import Report
from shared.errors import Problem
from shared.storage.location import output_names  # noqa: F401  (re-exported: the names an item writes)
from shared.storage.sniff import written_names

if TYPE_CHECKING:
    from shared.models import ModelSpec

MAX_OUTPUT_CHARS = 1024
MEDIA_EXTENSIONS = {
    "jpg",
    "jpeg",
    "png",
    "webp",
    "gif",
    "bmp",
    "tif",
    "tiff",
    "avif",
    "heic",
    "mp4",
    "mov",
    "webm",
    "mkv",
}
# A batch id becomes a Redis key part and a directory name under OUTPUT_DIR.
_BATCH_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def batch_id_problem(batch_id: object) -> Problem | None:
    """Why `batch_id` cannot name a batch, or None if it can."""
    if isinstance(batch_id, str) and _BATCH_ID.match(batch_id) and ".." not in batch_id:
        return None
    return Problem(
        f"batch id {batch_id!r} must be 1-64 letters, digits, '.', '_' or '-', starting with a "
        "letter or digit (no '..')",
        field="batch_id",
    )


def slugify(text: str, max_chars: int = 40) -> str:
    """A file-name-safe ASCII slug of a prompt ('item' when nothing ASCII is left)."""
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    slug = re.sub(r"[^a-z0-9]+", "-", ascii_text.lower()).strip("-")
    if len(slug) > max_chars:
        cut = slug[:max_chars]
        slug = cut.rsplit("-", 1)[0] if "-" in cut[max_chars // 2 :] else cut
    return slug.strip("-") or "item"


def default_output(batch_id: str, index: int, prompt: str, ext: str) -> str:
    return f"{batch_id}/{index:04d}_{slugify(prompt)}.{ext}"


class Outputs:
    """Chooses each item's output path and claims every file it writes, across one batch."""

    def __init__(self, *, batch_id: str, root: Path | None, overwrite: bool):
        self.batch_id = batch_id
        self.root = root  # None: outputs go to an object store (no local checks)
        self.root_resolved = root.resolve() if root is not None else None
        self.overwrite = overwrite
        self.claimed_files: dict[str, tuple[int, str]] = {}  # casefolded resolved path -> (index, id)
        self.resolved_dirs: dict[Path, Path] = {}
        self.listed_dirs: dict[Path, dict[str, str]] = {}
        # (index, name, existing file of its stem in another format) that overwrite may replace
        self.replaceable: list[tuple[int, str, str]] = []

    def for_item(
        self,
        index: int,
        item_id: str,
        given: Any,
        prompt: str,
        spec: ModelSpec,
        params: dict[str, Any],
        problem: Report,
    ) -> str | None:
        """The item's output path (its `given` one made safe, else the default name), with the
        format it promises pinned in `params`; None (with a problem) if it cannot be used."""
        fmt = params.get("output_format")
        fmt = str(fmt) if fmt is not None else None
        output: str | None
        if given is None:
            ext = fmt or spec.default_format
            output = default_output(self.batch_id, index, prompt, ext)
        else:
            output = clean_output(given, problem)
            if output is None:
                return None
            suffix = PurePosixPath(output).suffix.lower().lstrip(".")
            if suffix in MEDIA_EXTENSIONS:
                ext = "jpg" if suffix == "jpeg" else suffix
                if ext not in spec.formats:
                    problem(f"extension .{suffix}: {spec.name} makes {', '.join(spec.formats)}", "output")
                    return None
                if fmt is not None and fmt != ext:
                    problem(f"extension .{suffix} does not match output_format {fmt!r}", "output")
                    return None
            else:
                ext = fmt or spec.default_format
                output = f"{output}.{ext}"
        if "output_format" in spec.params and "output_format" not in params:
            # Pin the format the path promises, so fallback models keep it where they can.
            params["output_format"] = spec.params["output_format"].check(ext)
        if not self._claim(index, item_id, output, spec.output_count(params), problem):
            return None
        return output

    def _claim(self, index: int, item_id: str, output: str, count: int, problem: Report) -> bool:
        """Every file the item writes: inside the root, not existing (unless overwrite), not taken."""
        ok = True
        for name in output_names(output, count):
            if self.root is None:  # an object store: the caller checks what exists there
                ok = self._claim_key(index, item_id, name, name.casefold(), problem) and ok
                continue
            target = self.root / name
            parent = self._resolve_dir(target.parent)
            resolved = parent / target.name
            if os.path.islink(resolved):
                resolved = resolved.resolve()
            if resolved != self.root_resolved and self.root_resolved not in resolved.parents:
                problem(
                    f"{name!r} leads outside the output root {str(self.root)!r} through a symbolic link",
                    "output",
                )
                return False
            if os.path.lexists(resolved):
                if resolved.is_dir():
                    problem(f"{name!r} is an existing folder", "output")
                    ok = False
                elif not self.overwrite:
                    problem(
                        f"{name!r} already exists in {str(self.root)!r}; pass overwrite "
                        "(--overwrite) to replace it, or choose another output",
                        "output",
                    )
                    ok = False
            elif parent.exists() and not parent.is_dir():
                problem(f"{name!r}: {str(parent)!r} is a file, not a folder", "output")
                ok = False
            elif (other := self._other_format(name, parent)) is not None:
                if self.overwrite:  # agreed to, but the user named another file: a note says so
                    self.replaceable.append((index, name, other))
                else:
                    problem(other_format_exists(name, other, repr(str(self.root))), "output")
                    ok = False
            ok = self._claim_key(index, item_id, name, str(resolved).casefold(), problem) and ok
        return ok

    def _other_format(self, name: str, parent: Path) -> str | None:
        """The existing file of the name's stem in another format, if the folder holds one: the
        model may return that format, and the worker would then write (or be refused) it."""
        present = self._files_in(parent)
        for other in written_names(PurePosixPath(name).name)[1:]:
            existing = present.get(other.casefold())
            if existing is not None:
                return str(PurePosixPath(name).parent / existing) if "/" in name else existing
        return None

    def _files_in(self, folder: Path) -> dict[str, str]:
        # One listing per folder (casefolded name -> name), however many items write there.
        listed = self.listed_dirs.get(folder)
        if listed is None:
            try:
                listed = {entry.name.casefold(): entry.name for entry in os.scandir(folder)}
            except OSError:  # no such folder yet: nothing in it
                listed = {}
            self.listed_dirs[folder] = listed
        return listed

    def _claim_key(self, index: int, item_id: str, name: str, key: str, problem: Report) -> bool:
        stem, dot, ext = key.rpartition(".")
        if dot and "/" not in ext and ext in MEDIA_EXTENSIONS:
            key = stem  # the extension follows the bytes received: claim every media extension
        if key in self.claimed_files:
            other, other_id = self.claimed_files[key]
            label = f"item {other}" + (f" (id {other_id!r})" if other_id != str(other) else "")
            problem(
                f"{name!r} is also written by {label} (names are compared ignoring case and the media "
                "extension, which follows the format the model returns)",
                "output",
            )
            return False
        self.claimed_files[key] = (index, item_id)
        return True

    def _resolve_dir(self, directory: Path) -> Path:
        # Many items share a folder; resolving it once keeps 100k items fast.
        cached = self.resolved_dirs.get(directory)
        if cached is None:
            cached = self.resolved_dirs[directory] = directory.resolve()
        return cached


def other_format_exists(name: str, existing: str, where: str) -> str:
    """The problem of a name whose stem exists in another format, without overwrite."""
    return (
        f"{existing!r} already exists in {where}, and {name!r} would be written as {existing!r} if "
        "the model returns that format (files are named after the bytes received); pass overwrite "
        "(--overwrite) to allow replacing it, or choose another output"
    )


def replaceable_note(found: list[tuple[int, str, str]]) -> str:
    """What --overwrite allows beyond the names given: files of their stems in another format."""
    shown = ", ".join(
        f"{existing!r} (item {index}, asked as {name!r})" for index, name, existing in found[:3]
    )
    more = f" and {len(found) - 3} more" if len(found) > 3 else ""
    return (
        f"--overwrite: {len(found)} existing file(s) in another format than asked are replaced if the "
        f"model returns that format (files are named after the bytes received): {shown}{more}"
    )


def clean_output(given: Any, problem: Report) -> str | None:
    """A normalized relative POSIX path, or None (with a problem) if it is unsafe."""
    if not isinstance(given, str) or not given.strip():
        problem(f"output must be a relative file path, not {given!r}", "output")
        return None
    if len(given) > MAX_OUTPUT_CHARS or "\x00" in given:
        problem(f"output must be at most {MAX_OUTPUT_CHARS} characters without NUL", "output")
        return None
    if "\\" in given:
        problem(f"output {given!r}: use '/' to separate folders", "output")
        return None
    if given.startswith(("/", "~")) or re.match(r"^[A-Za-z]:", given):
        problem(f"output {given!r} must be relative to the output root, not absolute", "output")
        return None
    if given.endswith("/"):
        problem(f"output {given!r} names a folder; give a file name", "output")
        return None
    parts = [p for p in given.split("/") if p not in ("", ".")]
    if ".." in parts:
        problem(f"output {given!r} must not contain '..'", "output")
        return None
    if not parts:
        problem(f"output {given!r} names no file", "output")
        return None
    if any(len(p.encode()) > 255 for p in parts):
        problem(f"output {given!r} has a name longer than 255 bytes", "output")
        return None
    return "/".join(parts)
