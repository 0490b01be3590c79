"""prompts.json: reading, the three usage modes, and validation of every item before anything runs.

Forms (design.md):
1. a list of strings; model and params come from the caller (`--model`, `--param`), else defaults;
2. a list of objects {prompt, model, params, image_input | input_image, output, id};
3. an object with shared defaults (model, params, image_input) and `items` (strings or objects),
   each item overriding the defaults (params merge key by key; a null param removes a default).
Also accepted: a single object with a `prompt` (one image), the seed tool's names `model_name`,
`kwargs`, `output_filepath`, any model's own reference input name (`start_image`, `image`,
`image_prompt`) at item level or inside params, and keys starting with `_` (ignored: comments).

Precedence of the model and params: item > caller (flags) > file defaults > registry default model.

Validation collects every problem (InputError with one Problem per fault, naming item index, id
and field) and writes nothing. A fault in what many items share (the file's defaults, `--model`,
`--param`) is reported once, not once per item (DefaultsProblem: "file defaults, field 'model'").
Decisions worth knowing:
- reference image paths are relative to the prompts file's folder (`base_dir`; for data from
  `load_prompts_file` that folder is remembered on the data), else to the current directory;
- `output` is relative to the output root: no absolute paths, no `..`, no `\\`, and the resolved
  path (symlinks followed) must stay inside the root;
- two items may not write the same file, compared case-insensitively (the output root may live
  on, or be copied to, a case-insensitive file system); further outputs of one item (`name_1.ext`,
  `name_2.ext` for num_outputs > 1) count too;
- the extension decides output_format when only it is given; with neither, the model's default
  format is used; with both, they must agree (.jpeg counts as jpg).
"""
from __future__ import annotations

import difflib
import json
import os
import re
import unicodedata
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, Mapping
from urllib.parse import urlsplit

from PIL import Image, UnidentifiedImageError

from shared.common import type_name
from shared.errors import InputError, Problem, UnknownModelError
from shared.request import ImageRequest
from shared.routing import route_item

if TYPE_CHECKING:
    from shared.models import ModelRegistry

MAX_FILE_BYTES = 20 * 1024 * 1024
MAX_ITEMS = 100_000
MAX_PROMPT_CHARS = 10_000
MAX_ID_CHARS = 200
MAX_OUTPUT_CHARS = 1024
MAX_REFERENCE_BYTES = 100 * 1024 * 1024  # Replicate's file upload limit

ITEM_FIELDS = ("prompt", "model", "params", "image_input", "input_image", "output", "id")
ALIASES = {"model_name": "model", "kwargs": "params", "output_filepath": "output",
           "reference_images": "image_input"}
DEFAULT_FIELDS = ("model", "params", "image_input", "input_image", "items")
REFERENCE_FIELDS = ("image_input", "input_image")
MEDIA_EXTENSIONS = {"jpg", "jpeg", "png", "webp", "gif", "bmp", "tif", "tiff", "avif", "heic",
                    "mp4", "mov", "webm", "mkv"}
# A batch id becomes a Redis key part and a directory name under OUTPUT_DIR.
_BATCH_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def batch_id_problem(batch_id: object) -> Problem | None:
    """Why `batch_id` cannot name a batch, or None if it can."""
    if isinstance(batch_id, str) and _BATCH_ID.match(batch_id) and ".." not in batch_id:
        return None
    return Problem(f"batch id {batch_id!r} must be 1-64 letters, digits, '.', '_' or '-', starting with a "
                   "letter or digit (no '..')", field="batch_id")
# JSON tokens, for locating problems in text that json.loads accepted (strings, punctuation, and
# any other run of characters: numbers, true/false/null, NaN/Infinity).
_JSON_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"|[{}\[\]:,]|[^\s{}\[\]:,"]+')
_JSON_CONSTANTS = ("NaN", "Infinity", "-Infinity")


@dataclass(frozen=True)
class DefaultsProblem(Problem):
    """A problem in the file's shared defaults (the top-level object around `items`): reported
    once for the file, not once per item that uses the defaults."""

    def __str__(self) -> str:
        return "file defaults, " + (super().__str__() if self.field else self.message)


class ParsedRequests(list):
    """parse_prompts' result: the requests, plus `notes` worth telling the user once (e.g. that
    the registry's default model was used for items that name none)."""

    notes: list[str]
    default_model_items: int = 0

    def __init__(self, items=(), notes: list[str] | None = None):
        super().__init__(items)
        self.notes = list(notes or [])


# ------------------------------------------------------------------------------- reading
class PromptsList(list):
    """A prompts file's top-level list, remembering the folder it came from."""

    source_dir: Path | None = None


class PromptsDict(dict):
    """A prompts file's top-level object, remembering the folder it came from."""

    source_dir: Path | None = None


def load_prompts_file(path: str | Path, *, max_bytes: int = MAX_FILE_BYTES) -> PromptsList | PromptsDict:
    """Parse a prompts.json. Errors (InputError): missing file, too big, not UTF-8, bad JSON (with
    line and column), duplicate keys, NaN/Infinity. The result is a list or dict (subclass) whose
    `source_dir` is the file's folder, which parse_prompts uses for relative reference paths."""
    path = Path(path)
    where = str(path)
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise InputError(f"{where}: file not found") from None
    except OSError as exc:
        raise InputError(f"{where}: cannot read: {exc.strerror or exc}") from None
    if path.is_dir():
        raise InputError(f"{where}: is a folder, not a prompts file")
    if size > max_bytes:
        raise InputError(f"{where}: {size / 2**20:.1f} MB is above the {max_bytes / 2**20:g} MB limit "
                         "for one prompts file; split the batch into several files")
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise InputError(f"{where}: cannot read: {exc.strerror or exc}") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise InputError(f"{where}: line {line}: not UTF-8 text (byte {exc.start}); save the file as UTF-8") from None
    if not text.strip():
        raise InputError(f"{where}: the file is empty; expected a JSON list of prompts or an object with 'items'")
    duplicates: list[str] = []
    constants: list[str] = []

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        obj: dict[str, Any] = {}
        for key, value in items:
            if key in obj:
                duplicates.append(key)
            obj[key] = value
        return obj

    def no_constants(name: str) -> Any:
        constants.append(name)  # reported with its position below, once the whole text parsed
        return None

    try:
        data = json.loads(text, object_pairs_hook=pairs, parse_constant=no_constants)
    except json.JSONDecodeError as exc:
        raise InputError(f"{where}: invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}") from None
    except ValueError as exc:
        raise InputError(f"{where}: invalid JSON: {exc}") from None
    except RecursionError:
        raise InputError(f"{where}: JSON nested too deeply") from None
    if duplicates or constants:
        raise InputError(_locate_json_problems(text, where, data)
                         or [Problem(f"{where}: duplicate keys or NaN/Infinity in the JSON, which JSON does not allow")])
    if isinstance(data, list):
        result: PromptsList | PromptsDict = PromptsList(data)
    elif isinstance(data, dict):
        result = PromptsDict(data)
    elif isinstance(data, str):
        result = PromptsList([data])  # a lone prompt string: one image
    else:
        raise InputError(f"{where}: expected a list of prompts or an object with 'items', "
                         f"not {type_name(data)}")
    result.source_dir = path.resolve().parent
    return result


def _locate_json_problems(text: str, where: str, data: Any) -> list[Problem]:
    """Every duplicate key and NaN/Infinity in `text` (which json.loads accepted), with its line,
    column, item index and field. Only run when one was seen, so its cost does not matter."""
    problems: list[Problem] = []
    # One frame per open container: ["obj", keys seen, current key, expecting a key] or
    # ["arr", current element index].
    stack: list[list[Any]] = []

    def path() -> list[Any]:
        return [frame[2] if frame[0] == "obj" else frame[1] for frame in stack]

    def report(offset: int, at: list[Any], message: str) -> None:
        line = text.count("\n", 0, offset) + 1
        column = offset - (text.rfind("\n", 0, offset) + 1) + 1
        message = f"{where}: line {line}, column {column}: {message}"
        index, rest, shared = _item_of(at, data)
        fld = _field_path(rest) or None
        if shared:
            problems.append(DefaultsProblem(message, field=fld))
        else:
            problems.append(Problem(message, index=index, field=fld))

    for match in _JSON_TOKEN.finditer(text):
        token = match.group()
        top = stack[-1] if stack else None
        if token == "{":
            stack.append(["obj", set(), None, True])
        elif token == "[":
            stack.append(["arr", 0])
        elif token in ("}", "]"):
            if stack:
                stack.pop()
        elif token == ":":
            if top is not None and top[0] == "obj":
                top[3] = False
        elif token == ",":
            if top is not None and top[0] == "obj":
                top[3] = True
            elif top is not None:
                top[1] += 1
        elif token[0] == '"' and top is not None and top[0] == "obj" and top[3]:
            try:
                key = json.loads(token)
            except ValueError:
                key = token
            top[2] = key
            if key in top[1]:
                report(match.start(), path(),
                       f"duplicate key {key!r} in one object (JSON keeps only the last value); remove one")
            top[1].add(key)
        elif token in _JSON_CONSTANTS:
            report(match.start(), path(), f"{token} is not valid JSON; use a number or null")
    return problems


def _item_of(at: list[Any], data: Any) -> tuple[int | None, list[Any], bool]:
    """(item index or None, the path inside that item, whether it is in the shared defaults)."""
    if isinstance(data, list):
        if at and isinstance(at[0], int):
            return at[0], at[1:], False
        return None, at, False
    if isinstance(data, dict):
        if "items" in data:
            if len(at) >= 2 and at[0] == "items" and isinstance(at[1], int):
                return at[1], at[2:], False
            return None, at, True
        return (0, at, False) if "prompt" in data else (None, at, False)
    return None, at, False


def _field_path(parts: list[Any]) -> str:
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


# ------------------------------------------------------------------------------- output names
def slugify(text: str, max_chars: int = 40) -> str:
    """A file-name-safe ASCII slug of a prompt ('item' when nothing ASCII is left)."""
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    slug = re.sub(r"[^a-z0-9]+", "-", ascii_text.lower()).strip("-")
    if len(slug) > max_chars:
        cut = slug[:max_chars]
        slug = cut.rsplit("-", 1)[0] if "-" in cut[max_chars // 2:] else cut
    return slug.strip("-") or "item"


def default_output(batch_id: str, index: int, prompt: str, ext: str) -> str:
    return f"{batch_id}/{index:04d}_{slugify(prompt)}.{ext}"


def output_names(output: str, count: int) -> list[str]:
    """The files one item writes: `output`, then `stem_1.ext`, `stem_2.ext`... for further outputs."""
    stem, dot, ext = output.rpartition(".")
    if not dot or "/" in ext:
        stem, ext = output, ""
    names = [output]
    for i in range(1, max(count, 1)):
        names.append(f"{stem}_{i}.{ext}" if ext else f"{stem}_{i}")
    return names


# ------------------------------------------------------------------------------- parsing
def parse_prompts(
    data: Any,
    *,
    batch_id: str,
    output_root: Path | None,
    registry: "ModelRegistry",
    model: str | None = None,
    params: dict | None = None,
    overwrite: bool = False,
    base_dir: Path | None = None,
) -> ParsedRequests:
    """Every item of `data` (any of the three forms) as a routed, validated ImageRequest.

    Raises InputError listing every problem found. Nothing is written anywhere. The result is a
    list (ParsedRequests) whose `notes` say what the user should know without it being a problem.
    `output_root` None: the outputs go to an object store, whose existing objects the caller
    checks (the names are still checked against each other).
    """
    problems: list[Problem] = []
    bad_id = batch_id_problem(batch_id)
    if bad_id is not None:
        problems.append(bad_id)
    items, defaults = _split_form(data, registry, problems)
    if len(items) > MAX_ITEMS:
        raise InputError(Problem(f"{len(items)} items is above the limit of {MAX_ITEMS} per batch; "
                                 "split the file into several batches", field="items"))
    if not items and not problems:
        problems.append(Problem("no items: the file holds no prompts", field="items"))
    if base_dir is None:
        base_dir = getattr(data, "source_dir", None) or Path.cwd()
    context = _Context(
        batch_id=batch_id,
        root=Path(output_root) if output_root is not None else None,
        registry=registry,
        flag_model=model,
        flag_params=dict(params or {}),
        defaults=defaults,
        overwrite=overwrite,
        base_dir=Path(base_dir),
    )
    requests = ParsedRequests()
    for index, raw in enumerate(items):
        request = context.parse_item(index, raw, problems)
        if request is not None:
            requests.append(request)
    problems.sort(key=lambda p: (-1 if p.index is None else p.index))
    if problems:
        raise InputError(problems)
    if context.default_model_items:
        requests.default_model_items = context.default_model_items
        requests.notes.append(f"no model given for {context.default_model_items} item(s); using "
                              f"{registry.default_model} (name one with --model, or \"model\" in the file)")
    return requests


def _split_form(data: Any, registry: "ModelRegistry", problems: list[Problem]) -> tuple[list[Any], dict[str, Any]]:
    """(items, normalized file defaults) for any of the accepted forms."""
    if isinstance(data, str):
        return [data], {}
    if isinstance(data, list):
        return list(data), {}
    if not isinstance(data, dict):
        problems.append(Problem(f"expected a list of prompts or an object with 'items', not {type_name(data)}"))
        return [], {}
    if "items" not in data:
        if "prompt" in data:
            return [data], {}  # a single image as one object
        # Name what is there first: {"model": ..., "itemz": [...]} is a typo, not a missing list.
        _check_top_level_keys(data, registry, problems)
        problems.append(Problem("an object needs 'items' (a list of prompts) or a 'prompt'", field="items"))
        return [], {}
    items = data["items"]
    if not isinstance(items, list):
        problems.append(Problem(f"'items' must be a list, not {type_name(items)}", field="items"))
        items = []
    raw_defaults = {k: v for k, v in data.items() if k != "items"}
    defaults = _normalize_fields(raw_defaults, None, None, registry, problems, for_defaults=True)
    return items, defaults


def _check_top_level_keys(data: Mapping[str, Any], registry: "ModelRegistry", problems: list[Problem]) -> None:
    """Unknown keys of a top-level object without `items`, each named with a did-you-mean."""
    known = set(DEFAULT_FIELDS) | set(ITEM_FIELDS) | set(ALIASES) | registry.reference_param_names()
    for key in data:
        if not isinstance(key, str) or key.startswith("_") or key in known:
            continue
        close = difflib.get_close_matches(key, sorted(known), n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        problems.append(Problem(
            f"unknown field {key!r} at the top level.{hint} The top-level object holds 'items' and the "
            f"shared defaults ({', '.join(k for k in DEFAULT_FIELDS if k != 'items')}), or one item "
            "with a 'prompt'", field=key))


def _normalize_fields(raw: Mapping[str, Any], index: int | None, item_id: str | None,
                      registry: "ModelRegistry", problems: list[Problem], *, for_defaults: bool = False) -> dict[str, Any]:
    """Canonical field names (aliases folded), unknown fields reported with a hint."""
    def problem(message: str, fld: str) -> None:
        if for_defaults:
            problems.append(DefaultsProblem(message, field=fld))
        else:
            problems.append(Problem(message, index=index, item_id=item_id, field=fld))

    known = set(DEFAULT_FIELDS if for_defaults else ITEM_FIELDS) - {"items"}
    reference_names = registry.reference_param_names() | set(REFERENCE_FIELDS)
    out: dict[str, Any] = {}
    refs: list[tuple[str, Any]] = []
    for key, value in raw.items():
        if not isinstance(key, str) or key.startswith("_"):
            continue  # "_comment" and friends: JSON has no comments
        name = ALIASES.get(key, key)
        if name in reference_names or name in REFERENCE_FIELDS:
            refs.append((key, value))
            continue
        if name not in known:
            where = "file defaults" if for_defaults else "item"
            if for_defaults and name in ITEM_FIELDS:
                problem(f"{key!r} belongs in each item, not in the shared defaults", key)
            elif name in registry.all_param_names():
                problem(f"unknown field {key!r}; model parameters go under \"params\" "
                        f"(e.g. \"params\": {{{json.dumps(key)}: ...}})", key)
            else:
                choices = sorted(known | set(ALIASES) | set(REFERENCE_FIELDS))
                close = difflib.get_close_matches(key, choices, n=1)
                hint = f" Did you mean {close[0]!r}?" if close else ""
                problem(f"unknown field {key!r} in the {where}.{hint} Known fields: {', '.join(sorted(known | set(REFERENCE_FIELDS)))}", key)
            continue
        if name in out:
            problem(f"{key!r} and another name for {name!r} are both given; keep one", key)
            continue
        out[name] = value
    if len(refs) > 1:
        problem("reference images are given under several names ("
                + ", ".join(repr(k) for k, _ in refs) + "); use one", refs[1][0])
    elif refs:
        out["references"] = refs[0]
    return out


class _Context:
    """What every item needs to be parsed, and what is shared between items (caches, claims)."""

    def __init__(self, *, batch_id: str, root: Path | None, registry: "ModelRegistry", flag_model: str | None,
                 flag_params: dict[str, Any], defaults: dict[str, Any], overwrite: bool, base_dir: Path):
        self.batch_id = batch_id
        self.root = root  # None: outputs go to an object store (no local checks)
        self.root_resolved = root.resolve() if root is not None else None
        self.registry = registry
        self.flag_model = flag_model
        self.flag_params = flag_params
        self.defaults = defaults
        self.overwrite = overwrite
        self.base_dir = base_dir
        self.image_checks: dict[str, str | None] = {}  # resolved path -> problem text or None
        self.claimed_files: dict[str, tuple[int, str]] = {}  # casefolded resolved path -> (index, id)
        self.ids: dict[str, int] = {}
        self.resolved_dirs: dict[Path, Path] = {}
        # Faults of what items share (defaults, flags) are reported once; `shared_hits` counts every
        # item that ran into one, so such an item is still known to be invalid.
        self.shared_seen: set[tuple[type, str | None, str]] = set()
        self.shared_hits = 0
        self.default_model_items = 0  # items that got the registry's default model

    def shared_problem(self, problems: list[Problem], message: str, fld: str | None, *,
                       defaults: bool) -> None:
        """A problem of the file defaults (defaults=True) or of the command line: once per batch."""
        self.shared_hits += 1
        cls = DefaultsProblem if defaults else Problem
        key = (cls, fld, message)
        if key not in self.shared_seen:
            self.shared_seen.add(key)
            problems.append(cls(message, field=fld))

    # -- one item -------------------------------------------------------------------------------
    def parse_item(self, index: int, raw: Any, problems: list[Problem]) -> ImageRequest | None:
        start, shared_start = len(problems), self.shared_hits
        if isinstance(raw, str):
            raw = {"prompt": raw}
        if not isinstance(raw, dict):
            problems.append(Problem(f"an item must be a prompt string or an object, not {type_name(raw)}",
                                    index=index))
            return None
        item_id = self._item_id(index, raw, problems)
        shown_id = item_id if raw.get("id") is not None else None  # name the id only if the user gave one
        fields = _normalize_fields(raw, index, shown_id, self.registry, problems)

        def problem(message: str, fld: str | None) -> None:
            problems.append(Problem(message, index=index, item_id=shown_id, field=fld))

        def from_origin(origin: str):
            """Where a problem goes, by where the faulty value came from."""
            if origin == "defaults":
                return lambda message, fld: self.shared_problem(problems, message, fld, defaults=True)
            if origin == "flags":
                return lambda message, fld: self.shared_problem(problems, message, _flag_field(fld), defaults=False)
            return problem

        def failed() -> bool:
            return len(problems) > start or self.shared_hits > shared_start

        prompt = self._prompt(fields, problem)
        model_name, model_field = self._model(fields, problem, problems)
        merged_params, origins, ref_from_params = self._params(fields, problem, problems)
        ref_source = fields.get("references")
        ref_origin = "item"
        if ref_source is None and self.defaults.get("references") is not None:
            ref_source, ref_origin = self.defaults.get("references"), "defaults"
        if ref_from_params is not None:
            if fields.get("references") is not None:
                problem("reference images are given both at item level and inside params; use one",
                        f"params.{ref_from_params[0]}")
            else:
                ref_source, ref_origin = ref_from_params, origins.get(ref_from_params[0], "item")
        ref_field, refs = self._references(ref_source, from_origin(ref_origin))

        if model_name is None:
            return None
        try:
            routed = route_item(model_name, merged_params, len(refs), self.registry, ref_field=ref_field)
        except UnknownModelError:
            problem(self.registry.unknown_model_message(model_name), model_field)
            return None
        for p in routed.problems:
            name = p.field[len("params."):] if p.field and p.field.startswith("params.") else None
            origin = origins.get(name, "item") if name is not None else "item"
            if origin == "item":
                problems.append(replace(p, index=index, item_id=shown_id))
            else:
                from_origin(origin)(p.message, p.field)
        if failed():
            # The output path depends on the model and format; wait until those are right.
            return None
        spec = self.registry.get(routed.model)
        params = dict(routed.params)
        output = self._output(index, item_id, fields.get("output"), prompt, spec, params, problem)
        if output is None or failed():
            return None
        return ImageRequest(
            index=index,
            id=item_id,
            prompt=prompt,
            requested_model=self.registry.get(model_name).name,
            model=routed.model,
            params=params,
            reference_images=tuple(refs),
            output=output,
            route=routed.route,
            warnings=tuple(routed.warnings),
        )

    def _item_id(self, index: int, raw: Mapping[str, Any], problems: list[Problem]) -> str:
        value = raw.get("id")
        if value is None:
            item_id = str(index)
        elif isinstance(value, bool) or not isinstance(value, (str, int)):
            problems.append(Problem(f"id must be a string or an integer, not {type_name(value)}",
                                    index=index, field="id"))
            return str(index)
        else:
            item_id = str(value)
            if not item_id.strip():
                problems.append(Problem("id is empty", index=index, field="id"))
            elif len(item_id) > MAX_ID_CHARS or any(ord(c) < 32 for c in item_id):
                problems.append(Problem(f"id must be at most {MAX_ID_CHARS} printable characters",
                                        index=index, field="id"))
                return str(index)
        if item_id in self.ids:
            other = self.ids[item_id]
            problems.append(Problem(f"id {item_id!r} is also the id of item {other}; ids must be unique",
                                    index=index, item_id=item_id, field="id"))
        else:
            self.ids[item_id] = index
        return item_id

    @staticmethod
    def _prompt(fields: Mapping[str, Any], problem) -> str:
        if "prompt" not in fields:
            problem("prompt is missing", "prompt")
            return ""
        prompt = fields["prompt"]
        if not isinstance(prompt, str):
            problem(f"prompt must be a string, not {type_name(prompt)}", "prompt")
            return ""
        if not prompt.strip():
            problem("prompt is empty", "prompt")
        elif len(prompt) > MAX_PROMPT_CHARS:
            problem(f"prompt has {len(prompt)} characters; the limit is {MAX_PROMPT_CHARS}", "prompt")
        elif "\x00" in prompt:
            problem("prompt contains a NUL character", "prompt")
        return prompt

    def _model(self, fields: Mapping[str, Any], problem, problems: list[Problem]) -> tuple[str | None, str]:
        """The item's model: item > --model > file defaults > the registry's default. A bad
        --model or default model is reported once for the batch, not for every item using it."""
        for value, fld, origin in ((fields.get("model"), "model", "item"), (self.flag_model, "--model", "flags"),
                                   (self.defaults.get("model"), "model", "defaults")):
            if value is None:
                continue
            message = None
            if not isinstance(value, str) or not value.strip():
                message = f"model must be a model name like 'black-forest-labs/flux-dev', not {value!r}"
            elif value not in self.registry:
                message = self.registry.unknown_model_message(value)
            if message is not None:
                if origin == "item":
                    problem(message, fld)
                else:
                    self.shared_problem(problems, message, fld, defaults=origin == "defaults")
                return None, fld
            return value, fld
        self.default_model_items += 1
        return self.registry.default_model, "model"

    def _params(self, fields: Mapping[str, Any], problem,
                problems: list[Problem]) -> tuple[dict[str, Any], dict[str, str], tuple[str, Any] | None]:
        """Defaults < flags < item params; a null removes a key. Reference inputs are taken out.
        Returns (params, where each came from: "defaults" | "flags" | "item", reference entry)."""
        merged: dict[str, Any] = {}
        origins: dict[str, str] = {}
        for value, origin in ((self.defaults.get("params"), "defaults"), (self.flag_params, "flags"),
                              (fields.get("params"), "item")):
            if value is None:
                continue
            if not isinstance(value, dict):
                message = f"params must be an object like {{\"aspect_ratio\": \"16:9\"}}, not {type_name(value)}"
                if origin == "defaults":
                    self.shared_problem(problems, message, "params", defaults=True)
                else:
                    problem(message, "params")
                continue
            for key, v in value.items():
                if v is None:
                    merged.pop(key, None)
                    origins.pop(key, None)
                else:
                    merged[key] = v
                    origins[key] = origin
        reference_names = self.registry.reference_param_names() | set(REFERENCE_FIELDS)
        found = [(k, merged.pop(k)) for k in list(merged) if k in reference_names]
        if len(found) > 1:
            problem("reference images are given under several names in params; use one", f"params.{found[1][0]}")
        return merged, origins, (found[0] if found else None)

    def _references(self, source: tuple[str, Any] | None, problem) -> tuple[str, list[str]]:
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

    def _reference(self, entry: Any, where: str, problem) -> str | None:
        if not isinstance(entry, str) or not entry.strip():
            problem(f"a reference image must be a file path or an http(s) URL, not {entry!r}", where)
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
            self.image_checks[key] = _check_image(path)
        message = self.image_checks[key]
        if message:
            problem(f"reference image {entry!r}: {message}", where)
            return None
        return key

    # -- output -------------------------------------------------------------------------------------
    def _output(self, index: int, item_id: str, given: Any, prompt: str, spec, params: dict[str, Any], problem) -> str | None:
        fmt = params.get("output_format")
        fmt = str(fmt) if fmt is not None else None
        if given is None:
            ext = fmt or spec.default_format
            output = default_output(self.batch_id, index, prompt, ext)
        else:
            output = _clean_output(given, problem)
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

    def _claim(self, index: int, item_id: str, output: str, count: int, problem) -> bool:
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
                problem(f"{name!r} leads outside the output root {str(self.root)!r} through a symbolic link",
                        "output")
                return False
            if os.path.lexists(resolved):
                if resolved.is_dir():
                    problem(f"{name!r} is an existing folder", "output")
                    ok = False
                elif not self.overwrite:
                    problem(f"{name!r} already exists in {str(self.root)!r}; pass overwrite "
                            "(--overwrite) to replace it, or choose another output", "output")
                    ok = False
            elif parent.exists() and not parent.is_dir():
                problem(f"{name!r}: {str(parent)!r} is a file, not a folder", "output")
                ok = False
            ok = self._claim_key(index, item_id, name, str(resolved).casefold(), problem) and ok
        return ok

    def _claim_key(self, index: int, item_id: str, name: str, key: str, problem) -> bool:
        if key in self.claimed_files:
            other, other_id = self.claimed_files[key]
            label = f"item {other}" + (f" (id {other_id!r})" if other_id != str(other) else "")
            problem(f"{name!r} is also written by {label} (names are compared ignoring case)", "output")
            return False
        self.claimed_files[key] = (index, item_id)
        return True

    def _resolve_dir(self, directory: Path) -> Path:
        # Many items share a folder; resolving it once keeps 100k items fast.
        cached = self.resolved_dirs.get(directory)
        if cached is None:
            cached = self.resolved_dirs[directory] = directory.resolve()
        return cached


def _flag_field(fld: str | None) -> str:
    """How a problem with a `--param` value names its field: `--param num_outputs`."""
    if not fld:
        return "--param"
    return "--param " + (fld[len("params."):] if fld.startswith("params.") else fld)


def _clean_output(given: Any, problem) -> str | None:
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


def _check_image(path: Path) -> str | None:
    """None if `path` is a readable image file (by its content, not its name), else why not."""
    try:
        if not path.exists():
            return "file not found"
        if not path.is_file():
            return "not a file"
        size = path.stat().st_size
        if size > MAX_REFERENCE_BYTES:
            return f"{size / 2**20:.0f} MB is above Replicate's {MAX_REFERENCE_BYTES // 2**20} MB upload limit"
        if not os.access(path, os.R_OK):
            return "not readable (permissions)"
        Image.open(path).close()  # reads the header only: magic bytes and size
    except (UnidentifiedImageError, Image.DecompressionBombError) as exc:
        if isinstance(exc, Image.DecompressionBombError):
            return "image is too large (decompression bomb guard)"
        return "not an image file Pillow can read"
    except OSError as exc:
        return f"cannot be read: {exc.strerror or exc}"
    return None
