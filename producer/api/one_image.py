"""`generate`: one image (or video), blocking, for scripts and notebooks."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from producer.api.connections import settings_or_load
from producer.api.submission import submit
from shared.errors import FleetError, ReplicateCallError
from shared.settings import Settings

if TYPE_CHECKING:
    from shared.models import ModelRegistry


def generate(
    prompt: str,
    model: str,
    *,
    settings: Settings | None = None,
    output: str | os.PathLike | None = None,
    timeout: float | None = None,
    progress: Any = None,
    again: bool = False,
    registry: ModelRegistry | None = None,
    price_per_call: float | None = None,
    fallback: bool = True,
    **params: Any,
) -> list[Path | str]:
    """One image (or video), blocking: submit a batch of one, wait, return the output paths
    (store URLs where OUTPUT_DIR is an object store).

    `image_input=[...]` / `input_image=...` are reference images; other keyword arguments are the
    model's parameters. settings: Settings.load() if None. Raises ReplicateCallError when the
    item did not succeed (with the last attempt's error), NoWorkerError when no worker runs,
    InputError for bad input, DuplicateBatchError when the very same request is a batch in Redis
    already (`again=True` makes it once more, paying again).
    """
    settings = settings_or_load(settings)
    item: dict[str, Any] = {"prompt": prompt, "model": model}
    for ref in ("image_input", "input_image"):
        if ref in params:
            item[ref] = params.pop(ref)
    if params:
        item["params"] = params
    if output is not None:
        item["output"] = os.fspath(output)
    batch = submit(
        [item],
        settings=settings,
        registry=registry,
        again=again,
        price_per_call=price_per_call,
        fallback=fallback,
    )
    snap = batch.wait(progress=progress, timeout=timeout)
    if not snap.finished and snap.done < snap.total:
        raise FleetError(
            f"batch {batch.id} did not finish within {timeout} s; it keeps running (producer wait {batch.id})"
        )
    record = batch.results()[0]
    if record.get("status") != "succeeded":
        raise ReplicateCallError(
            f"{model}: image {record.get('status')}: {record.get('error') or 'no output'}"
        )
    return batch.output_paths(record)
