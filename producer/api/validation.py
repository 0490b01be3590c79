"""Reading and checking a submission: batch ids, the source (a prompts.json path or loaded
data) and `validate`, which parses, checks and routes every item and writes nothing."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from producer.api.connections import registry_or_load, settings_or_load
from shared.errors import InputError, Problem
from shared.settings import Settings

if TYPE_CHECKING:
    from producer.prompts import ParsedRequests
    from shared.models import ModelRegistry


def new_batch_id() -> str:
    """The ledger's id format (b-YYYYMMDD-<6 hex>), so every tool names batches alike."""
    from shared.ledger import new_batch_id as ledger_batch_id

    return ledger_batch_id()


def check_batch_id(batch_id: str) -> str:
    from producer.prompts import batch_id_problem

    problem = batch_id_problem(batch_id)
    if problem is not None:
        raise InputError(problem)
    return batch_id


def load_source(source: Any) -> Any:
    """A path (str or PathLike) is read as prompts.json; anything else is already-loaded data
    (a list of prompt strings, a list of items, or an object with defaults and `items`)."""
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.is_file():
            raise InputError(Problem(f"{str(path)!r} is not a readable file", field="FILE"))
        from producer.prompts import load_prompts_file

        return load_prompts_file(path)
    if isinstance(source, (list, tuple)):
        return list(source)
    if isinstance(source, dict):
        return source
    raise InputError(
        Problem(f"expected a file path, a list or an object, not {type(source).__name__}", field="source")
    )


def validate(
    source: Any,
    *,
    settings: Settings | None = None,
    model: str | None = None,
    params: dict | None = None,
    batch_id: str | None = None,
    overwrite: bool = False,
    registry: ModelRegistry | None = None,
    fallback: bool = True,
) -> ParsedRequests:
    """Parse, validate and route every item; InputError with every problem. Writes nothing.
    The list's `notes` (producer.prompts.ParsedRequests) say what the user should still know;
    its `registry` is the one given, with the schemas of the models the items use.
    `fallback=False`: every item stays on its first model (no paid fallback)."""
    from producer.models import with_schemas_for
    from producer.prompts import parse_prompts
    from shared.storage import parse_location

    settings = settings_or_load(settings)
    batch_id = check_batch_id(batch_id) if batch_id is not None else new_batch_id()
    data = load_source(source)
    # Models outside the registry are described by their published schema (read once, cached).
    registry = with_schemas_for(data, registry_or_load(registry, settings), settings, model=model)
    # A folder is checked name by name here; on an object store, `submit` looks for existing
    # outputs once it has probed that the store can be written.
    requests = parse_prompts(
        data,
        batch_id=batch_id,
        output_root=parse_location(settings.output_dir).path,
        registry=registry,
        model=model,
        params=dict(params or {}),
        overwrite=overwrite,
        fallback=fallback,
    )
    requests.registry = registry
    return requests
