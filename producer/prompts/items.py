"""prompts.json items: the validation of every item before anything runs.

The forms and field names are in fields.py, reading the file in reading.py, output paths in
outputs.py, reference images in references.py.

Precedence of the model and params: item > caller (flags) > file defaults > registry default model.

Validation collects every problem (InputError with one Problem per fault, naming item index, id
and field) and writes nothing. A fault in what many items share (the file's defaults, `--model`,
`--param`) is reported once, not once per item (DefaultsProblem: "file defaults, field 'model'").
Reference image paths are relative to the prompts file's folder (`base_dir`; for data from
`load_prompts_file` that folder is remembered on the data), else to the current directory.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from producer.prompts.fields import (
    REFERENCE_FIELDS,
    DefaultsProblem,
    Report,
    field_path,
    item_of,
    normalize_fields,
    split_form,
)
from producer.prompts.outputs import Outputs, batch_id_problem, replaceable_note
from producer.prompts.references import References
from producer.prompts.text import text_problems, unencodable
from shared.common import type_name
from shared.errors import InputError, Problem, UnknownModelError
from shared.request import ImageRequest
from shared.routing import route_item

if TYPE_CHECKING:
    from shared.models import ModelRegistry

MAX_ITEMS = 100_000
MAX_PROMPT_CHARS = 10_000
MAX_ID_CHARS = 200


class ParsedRequests(list):
    """parse_prompts' result: the requests, plus `notes` worth telling the user once (e.g. that
    the registry's default model was used for items that name none)."""

    notes: list[str]
    default_model_items: int = 0
    max_cost: int | None = None  # the file's "max_cost" (micro-USD): the batch's spending limit
    registry: ModelRegistry | None = None  # producer.api.validate's: with the models' schemas

    def __init__(self, items=(), notes: list[str] | None = None):
        super().__init__(items)
        self.notes = list(notes or [])


def parse_prompts(
    data: Any,
    *,
    batch_id: str,
    output_root: Path | None,
    registry: ModelRegistry,
    model: str | None = None,
    params: dict | None = None,
    overwrite: bool = False,
    base_dir: Path | None = None,
    fallback: bool = True,
) -> ParsedRequests:
    """Every item of `data` (any of the three forms) as a routed, validated ImageRequest.

    Raises InputError listing every problem found. Nothing is written anywhere. The result is a
    list (ParsedRequests) whose `notes` say what the user should know without it being a problem.
    `output_root` None: the outputs go to an object store, whose existing objects the caller
    checks (the names are still checked against each other).
    `fallback` False (`--no-fallback`): no item gets a fallback route, whatever the file says;
    otherwise an item's `"fallback": false` (or the file defaults') keeps it to its first model.
    """
    problems: list[Problem] = []
    bad_id = batch_id_problem(batch_id)
    if bad_id is not None:
        problems.append(bad_id)
    text, bad_items = _text_problems(data, model, params)
    if bad_items is None:  # a problem in what every item shares: nothing further can be checked
        raise InputError(sorted(problems + text, key=_by_item))
    problems += text
    items, defaults = split_form(data, registry, problems)
    max_cost = _max_cost(defaults.pop("max_cost", None), problems)
    if len(items) > MAX_ITEMS:
        raise InputError(
            Problem(
                f"{len(items)} items is above the limit of {MAX_ITEMS} per batch; "
                "split the file into several batches",
                field="items",
            )
        )
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
        flag_fallback=fallback,
    )
    requests = ParsedRequests()
    requests.max_cost = max_cost
    for index, raw in enumerate(items):
        if index in bad_items:
            continue  # its text problems are reported; the text must not go further
        request = context.parse_item(index, raw, problems)
        if request is not None:
            requests.append(request)
    problems.sort(key=_by_item)
    if problems:
        raise InputError(problems)
    if context.outputs.replaceable:
        requests.notes.append(replaceable_note(context.outputs.replaceable))
    if context.default_model_items:
        requests.default_model_items = context.default_model_items
        requests.notes.append(
            f"no model given for {context.default_model_items} item(s); using "
            f'{registry.default_model} (name one with --model, or "model" in the file)'
        )
    return requests


def _max_cost(raw: Any, problems: list[Problem]) -> int | None:
    """The file's "max_cost" (USD, a number or a string like "0.50") in micro-USD."""
    from shared.budget import parse_usd

    if raw is None:
        return None
    if isinstance(raw, bool) or not isinstance(raw, (int, float, str)):
        problems.append(Problem(f"max_cost must be an amount in USD, not {raw!r}", field="max_cost"))
        return None
    try:
        return parse_usd(raw)
    except ValueError as exc:
        problems.append(Problem(f"max_cost: {exc}", field="max_cost"))
        return None


class _Context:
    """What every item needs to be parsed, and what is shared between items (caches, claims)."""

    def __init__(
        self,
        *,
        batch_id: str,
        root: Path | None,
        registry: ModelRegistry,
        flag_model: str | None,
        flag_params: dict[str, Any],
        defaults: dict[str, Any],
        overwrite: bool,
        base_dir: Path,
        flag_fallback: bool = True,
    ):
        self.registry = registry
        self.flag_model = flag_model
        self.flag_fallback = flag_fallback
        self.flag_params = flag_params
        self.defaults = defaults
        self.outputs = Outputs(batch_id=batch_id, root=root, overwrite=overwrite)
        self.references = References(base_dir)
        self.ids: dict[str, int] = {}
        # Faults of what items share (defaults, flags) are reported once; `shared_hits` counts every
        # item that ran into one, so such an item is still known to be invalid.
        self.shared_seen: set[tuple[type, str | None, str]] = set()
        self.shared_hits = 0
        self.default_model_items = 0  # items that got the registry's default model

    def shared_problem(
        self, problems: list[Problem], message: str, fld: str | None, *, defaults: bool
    ) -> None:
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
            problems.append(
                Problem(f"an item must be a prompt string or an object, not {type_name(raw)}", index=index)
            )
            return None
        item_id = self._item_id(index, raw, problems)
        shown_id = item_id if raw.get("id") is not None else None  # name the id only if the user gave one
        fields = normalize_fields(raw, index, shown_id, self.registry, problems)

        def problem(message: str, fld: str | None) -> None:
            problems.append(Problem(message, index=index, item_id=shown_id, field=fld))

        def from_origin(origin: str) -> Report:
            """Where a problem goes, by where the faulty value came from."""
            if origin == "defaults":
                return lambda message, fld: self.shared_problem(problems, message, fld, defaults=True)
            if origin == "flags":
                return lambda message, fld: self.shared_problem(
                    problems, message, _flag_field(fld), defaults=False
                )
            return problem

        def failed() -> bool:
            return len(problems) > start or self.shared_hits > shared_start

        prompt = self._prompt(fields, problem)
        fallback = self._fallback(fields, problem, problems)
        model_name, model_field = self._model(fields, problem, problems)
        merged_params, origins, ref_from_params = self._params(fields, problem, problems)
        ref_source = fields.get("references")
        ref_origin = "item"
        if ref_source is None and self.defaults.get("references") is not None:
            ref_source, ref_origin = self.defaults.get("references"), "defaults"
        if ref_from_params is not None:
            if fields.get("references") is not None:
                problem(
                    "reference images are given both at item level and inside params; use one",
                    f"params.{ref_from_params[0]}",
                )
            else:
                ref_source, ref_origin = ref_from_params, origins.get(ref_from_params[0], "item")
        ref_field, refs = self.references.resolve(ref_source, from_origin(ref_origin))

        if model_name is None:
            return None
        try:
            routed = route_item(
                model_name, merged_params, len(refs), self.registry, ref_field=ref_field, prompt=prompt
            )
        except UnknownModelError:
            problem(self.registry.unknown_model_message(model_name), model_field)
            return None
        for p in routed.problems:
            name = p.field[len("params.") :] if p.field and p.field.startswith("params.") else None
            origin = origins.get(name, "item") if name is not None else "item"
            if origin == "item":
                problems.append(replace(p, index=index, item_id=shown_id))
            else:
                from_origin(origin)(p.message, p.field)
        spec = self.registry.get(routed.model)
        params = dict(routed.params)
        input_files = self.references.input_files(spec, params, problem)
        if failed():
            # The output path depends on the model and format; wait until those are right.
            return None
        output = self.outputs.for_item(index, item_id, fields.get("output"), prompt, spec, params, problem)
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
            route=routed.route if fallback else (),
            warnings=tuple(routed.warnings),
            input_files=tuple(input_files),
        )

    def _item_id(self, index: int, raw: Mapping[str, Any], problems: list[Problem]) -> str:
        value = raw.get("id")
        if value is None:
            item_id = str(index)
        elif isinstance(value, bool) or not isinstance(value, (str, int)):
            problems.append(
                Problem(f"id must be a string or an integer, not {type_name(value)}", index=index, field="id")
            )
            return str(index)
        else:
            item_id = str(value)
            if not item_id.strip():
                problems.append(Problem("id is empty", index=index, field="id"))
            elif len(item_id) > MAX_ID_CHARS or any(ord(c) < 32 for c in item_id):
                problems.append(
                    Problem(
                        f"id must be at most {MAX_ID_CHARS} printable characters", index=index, field="id"
                    )
                )
                return str(index)
        if item_id in self.ids:
            other = self.ids[item_id]
            problems.append(
                Problem(
                    f"id {item_id!r} is also the id of item {other}; ids must be unique",
                    index=index,
                    item_id=item_id,
                    field="id",
                )
            )
        else:
            self.ids[item_id] = index
        return item_id

    @staticmethod
    def _prompt(fields: Mapping[str, Any], problem: Report) -> str:
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

    def _fallback(self, fields: Mapping[str, Any], problem: Report, problems: list[Problem]) -> bool:
        """Whether the item may fall back to other (paid) models: not with --no-fallback; else
        the item's "fallback", else the file defaults', else yes."""
        if not self.flag_fallback:
            return False
        for value, origin in ((fields.get("fallback"), "item"), (self.defaults.get("fallback"), "defaults")):
            if value is None:
                continue
            if not isinstance(value, bool):
                message = f"fallback must be true or false, not {value!r}"
                if origin == "item":
                    problem(message, "fallback")
                else:
                    self.shared_problem(problems, message, "fallback", defaults=True)
                return False
            return value
        return True

    def _model(
        self, fields: Mapping[str, Any], problem: Report, problems: list[Problem]
    ) -> tuple[str | None, str]:
        """The item's model: item > --model > file defaults > the registry's default. A bad
        --model or default model is reported once for the batch, not for every item using it."""
        for value, fld, origin in (
            (fields.get("model"), "model", "item"),
            (self.flag_model, "--model", "flags"),
            (self.defaults.get("model"), "model", "defaults"),
        ):
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

    def _params(
        self, fields: Mapping[str, Any], problem: Report, problems: list[Problem]
    ) -> tuple[dict[str, Any], dict[str, str], tuple[str, Any] | None]:
        """Defaults < flags < item params; a null removes a key. Reference inputs are taken out.
        Returns (params, where each came from: "defaults" | "flags" | "item", reference entry)."""
        merged: dict[str, Any] = {}
        origins: dict[str, str] = {}
        for value, origin in (
            (self.defaults.get("params"), "defaults"),
            (self.flag_params, "flags"),
            (fields.get("params"), "item"),
        ):
            if value is None:
                continue
            if not isinstance(value, dict):
                message = f'params must be an object like {{"aspect_ratio": "16:9"}}, not {type_name(value)}'
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
            problem(
                "reference images are given under several names in params; use one", f"params.{found[1][0]}"
            )
        return merged, origins, (found[0] if found else None)


def _by_item(problem: Problem) -> int:
    return -1 if problem.index is None else problem.index


def _text_problems(
    data: Any,
    flag_model: Any,
    flag_params: Mapping[str, Any] | None,
) -> tuple[list[Problem], set[int] | None]:
    """Every string that cannot be encoded as UTF-8 (producer.prompts.text), as problems; and the
    items holding one, or None when one is in what items share (flags, file defaults)."""
    problems: list[Problem] = []
    shared = False
    why_model = unencodable(flag_model) if isinstance(flag_model, str) else None
    if why_model is not None:
        problems.append(Problem(why_model, field="--model"))
        shared = True
    for at, why, _ in text_problems(dict(flag_params or {})):
        problems.append(Problem(why, field=_flag_field(field_path(at) or None)))
        shared = True
    bad_items: set[int] = set()
    for at, why, in_key in text_problems(data):
        index, rest, in_defaults = item_of(at, data)
        fld = field_path(rest) or None
        if index is not None and not rest and not in_key:
            fld = "prompt"  # the item is a prompt string
        if in_defaults:
            problems.append(DefaultsProblem(why, field=fld))
            shared = True
        elif index is None:
            problems.append(Problem(why, field=fld))
            shared = True
        else:
            problems.append(Problem(why, index=index, field=fld))
            bad_items.add(index)
    return problems, (None if shared else bad_items)


def _flag_field(fld: str | None) -> str:
    """How a problem with a `--param` value names its field: `--param num_outputs`."""
    if not fld:
        return "--param"
    return "--param " + (fld[len("params.") :] if fld.startswith("params.") else fld)
