"""Before a batch is recorded: its output location can be written, and its names are free there.

The location is decided once, at submit, and recorded with the batch; every worker writes there.
So the producer checks it the way the workers will use it (shared.storage): it writes and deletes
a probe object, and on an object store it looks up which of the batch's output names exist
already, in any format a worker may write them in (a local folder is checked name by name during
validation, producer.prompts).
"""

from __future__ import annotations

import posixpath
from collections import defaultdict
from collections.abc import Callable, Sequence

from shared.errors import InputError, Problem, StorageError, StorageUnavailableError
from shared.request import ImageRequest
from shared.storage import Store, probe
from shared.storage.sniff import written_names

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


def existing_outputs(
    store: Store, requests: Sequence[ImageRequest], registry, *, overwrite: bool
) -> list[str]:
    """InputError (item and field per name) for the outputs that exist in the store already,
    unless `overwrite`. A name counts as taken when any object its worker may write is there:
    the name, or its stem in another format (shared.storage.sniff.written_names). Folders with
    many such keys are listed once; the others get a HEAD per key. With `overwrite`: the notes
    that say which objects of another format than asked may be replaced."""
    from producer.prompts import output_names
    from producer.prompts.outputs import other_format_exists, replaceable_note

    by_folder: dict[str, list[tuple[ImageRequest, str]]] = defaultdict(list)
    for request in requests:
        try:
            count = registry.get(request.model).output_count(request.params)
        except Exception:  # noqa: BLE001 - a model described only by its schema: one output
            count = 1
        for name in output_names(request.output, count):
            by_folder[posixpath.dirname(name)].append((request, name))
    problems: list[Problem] = []
    replaceable: list[tuple[int, str, str]] = []
    try:
        for folder, names in by_folder.items():
            keys = {name: written_names(name) for _r, name in names}
            if sum(map(len, keys.values())) >= LIST_FROM:
                present = {key for key, _size in store.list(folder)}
                exists: Callable[[str], bool] = present.__contains__
            else:
                exists = _head(store)
            for request, name in names:
                found = next((key for key in keys[name] if exists(key)), None)
                if found is None or (overwrite and found == name):
                    continue
                if overwrite:
                    replaceable.append((request.index, name, found))
                    continue
                problems.append(
                    Problem(
                        f"{name!r} already exists in {store.url()}; pass overwrite (--overwrite) to "
                        "allow replacing it, or choose another output"
                        if found == name
                        else other_format_exists(name, found, store.url()),
                        index=request.index,
                        item_id=request.id,
                        field="output",
                    )
                )
    except (StorageError, StorageUnavailableError) as exc:
        raise InputError(
            Problem(f"cannot look into the output location {store.url()}: {exc}", field="OUTPUT_DIR")
        ) from None
    if problems:
        raise InputError(problems)
    return [replaceable_note(replaceable)] if replaceable else []


def _head(store: Store) -> Callable[[str], bool]:
    return lambda key: store.size(key) is not None
