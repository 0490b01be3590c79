"""Before a batch is recorded: its output location can be written, and its names are free there.

The location is decided once, at submit, and recorded with the batch; every worker writes there.
So the producer checks it the way the workers will use it (shared.storage): it writes and deletes
a probe object, and on an object store it looks up which of the batch's output names exist
already (a local folder is checked name by name during validation, producer.prompts).
"""

from __future__ import annotations

import posixpath
from collections import defaultdict
from collections.abc import Sequence

from shared.errors import InputError, Problem, StorageError, StorageUnavailableError
from shared.request import ImageRequest
from shared.storage import Store, probe

LIST_FROM = 50  # names in one folder from which one listing is cheaper than a HEAD per name


def check_writable(store: Store) -> None:
    """InputError naming OUTPUT_DIR and the store's reason when a probe object cannot be written
    and deleted (nothing is recorded or enqueued then)."""
    try:
        probe(store)
    except (StorageError, StorageUnavailableError) as exc:
        raise InputError(
            Problem(
                f"the output location {store.url()} cannot be written: {exc}; nothing was enqueued",
                field="OUTPUT_DIR",
            )
        ) from None


def existing_outputs(store: Store, requests: Sequence[ImageRequest], registry, *, overwrite: bool) -> None:
    """InputError (item and field per name) for the outputs that exist in the store already,
    unless `overwrite`. Folders with many names are listed once; lone names get a HEAD each."""
    if overwrite:
        return
    from producer.prompts import output_names

    by_folder: dict[str, list[tuple[ImageRequest, str]]] = defaultdict(list)
    for request in requests:
        try:
            count = registry.get(request.model).output_count(request.params)
        except Exception:  # noqa: BLE001 - a model described only by its schema: one output
            count = 1
        for name in output_names(request.output, count):
            by_folder[posixpath.dirname(name)].append((request, name))
    problems: list[Problem] = []
    try:
        for folder, names in by_folder.items():
            if len(names) >= LIST_FROM:
                present = {key for key, _size in store.list(folder)}
                taken = [(r, n) for r, n in names if n in present]
            else:
                taken = [(r, n) for r, n in names if store.size(n) is not None]
            problems += [
                Problem(
                    f"{name!r} already exists in {store.url()}; pass overwrite (--overwrite) to "
                    "replace it, or choose another output",
                    index=r.index,
                    item_id=r.id,
                    field="output",
                )
                for r, name in taken
            ]
    except (StorageError, StorageUnavailableError) as exc:
        raise InputError(
            Problem(f"cannot look into the output location {store.url()}: {exc}", field="OUTPUT_DIR")
        ) from None
    if problems:
        raise InputError(problems)
