"""The batch handle (`Batch`: reading a batch's state, results and files, and acting on it) and
the ways to get one for a batch in Redis, or to read a batch from its store alone."""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from producer.api.canceling import cancel_batch
from producer.api.connections import (
    limiter_status_or_none,
    open_budget,
    open_ledger,
    registry_or_load,
    settings_or_load,
)
from producer.api.retrying import retry_batch
from producer.api.validation import check_batch_id
from producer.api.waiting import wait_for
from producer.progress import Snapshot, format_counts, format_duration, snapshot_from_info
from shared.errors import FleetError, InputError, Problem
from shared.request import ImageRequest
from shared.settings import Settings

if TYPE_CHECKING:
    from shared.models import ModelRegistry


def describe_batch(info: Any, now: float | None = None) -> str:
    """'created 3m12s ago, running: 40/100 done' — a batch's age and state in a few words."""
    now = time.time() if now is None else now
    snap = snapshot_from_info(info, now=now)
    age = format_duration(max(now - float(info.created_at), 0.0))
    if snap.finished:
        state = (
            f"finished, all {snap.total} succeeded"
            if snap.all_succeeded
            else f"finished{' (canceled)' if snap.canceled else ''}: {format_counts(snap.counts)}"
        )
    elif snap.canceled:
        state = f"being canceled: {snap.done}/{snap.total} done"
    else:
        state = f"running: {snap.done}/{snap.total} done"
    return f"created {age} ago, {state}"


class Batch:
    """A submitted batch (or, with dry_run, the plan of one). Cheap to create; every method reads
    the current state from Redis."""

    def __init__(
        self,
        batch_id: str,
        settings: Settings | None = None,
        *,
        requests: Sequence[ImageRequest] | None = None,
        created: bool = True,
        dry_run: bool = False,
        registry: ModelRegistry | None = None,
    ):
        self.id = batch_id
        self.settings = settings_or_load(settings)
        self.requests = list(requests) if requests is not None else None
        # What validation wants the user to know (e.g. the default model was used).
        self.notes: list[str] = list(getattr(requests, "notes", None) or [])
        # False when the batch id existed already (nothing was enqueued) or for a dry run.
        self.created = created
        self.dry_run = dry_run
        self.registry = registry
        # Another batch still in Redis with the same content (submitted with again=True or an
        # explicit new batch id): its BatchInfo, for a note. None otherwise.
        self.duplicate_of: Any = None
        self._ledger_obj = None
        # The spending limits in force at submit (micro-USD; None: none), for the plan.
        self.max_cost: int | None = None
        self.daily_limit: int | None = None

    def __repr__(self) -> str:
        return f"Batch({self.id!r}{', dry_run' if self.dry_run else ''})"

    @property
    def ledger(self):
        if self.dry_run:
            raise FleetError(f"batch {self.id} is a dry run: nothing was recorded")
        if self._ledger_obj is None:
            self._ledger_obj = open_ledger(self.settings)
        return self._ledger_obj

    # --- reading -------------------------------------------------------------------------------
    def info(self):
        info = self.ledger.batch(self.id)
        if info is None:
            raise InputError(
                Problem(
                    f"no batch {self.id!r} in Redis (prefix {self.settings.key_prefix!r}); "
                    "`producer list` shows the recent ones",
                    field="BATCH",
                )
            )
        return info

    def status(self, *, with_slots: bool = True) -> Snapshot:
        """Counts by state, rate, elapsed, ETA (one ledger read) and the account's slots."""
        return snapshot_from_info(
            self.info(), limiter_status=limiter_status_or_none(self.settings) if with_slots else None
        )

    def spend(self):
        """The batch's limit, spend, reservations and held items (shared.budget.BatchSpend)."""
        self.info()
        return open_budget(self.settings, self.ledger.redis).batch(self.id)

    def held_items(self) -> dict[int, str]:
        """Index -> why each held item waits ("batch limit 0.50 USD reached")."""
        self.info()
        return {
            item.index: item.held_reason or "held by a spending limit"
            for item in self.ledger.items(self.id)
            if item.status == "held"
        }

    def results(self) -> list[dict[str, Any]]:
        """The manifest records, one per item, in submission order."""
        self.info()
        return [item.to_result() for item in self.ledger.items(self.id)]

    def write_manifest(self) -> Path | str:
        """Writes the manifest and the gallery beside it; returns the manifest's local Path, or
        its store URL."""
        return self.ledger.write_manifest(self.id, cost_of=self._cost_of)

    def model_registry(self) -> ModelRegistry:
        """The registry the batch was validated with, else the one the workers load."""
        return self.registry if self.registry is not None else registry_or_load(None, self.settings)

    def _cost_of(self, request: ImageRequest, model: str) -> float | None:
        from shared.routing import adapt_params

        registry = self.model_registry()
        params, _, _ = adapt_params(request.params, model, registry, strict=False)
        return registry.get(model).cost(params)

    @property
    def output_root(self) -> Path | str:
        """Where the batch's files are, as recorded at submit: a local Path or a store URL."""
        from shared.storage import is_remote

        root = getattr(self.info(), "output_root", None) or self.settings.output_dir
        return str(root) if is_remote(root) else Path(root)

    def output_paths(self, record: dict[str, Any]) -> list[Path | str]:
        """An item's outputs: local Paths, or store URLs (`producer fetch` brings those home)."""
        from shared.storage import is_remote

        root = self.output_root
        if isinstance(root, str):
            return [str(p) for p in record.get("outputs") or []]
        return [
            p if is_remote(p) else (Path(p) if Path(p).is_absolute() else root / p)
            for p in record.get("outputs") or []
        ]

    def fetch(self, to: str | os.PathLike = ".", *, progress: Any = None):
        """Copy the batch's outputs, manifest and gallery from its output location into `to`
        (`to/<batch>/...`, as laid out in the store). Resumable; returns a FetchReport whose
        `.complete` says whether every output of every succeeded item is there."""
        from producer.fetch import fetch_batch
        from shared.storage import open_store

        self.info()
        manifest = self.ledger.manifest(self.id, cost_of=self._cost_of)
        store = open_store(self.output_root, environ=self.settings.store_environ())
        return fetch_batch(manifest, store, Path(to), progress=progress)

    # --- acting --------------------------------------------------------------------------------
    # Acting on the batch, each in a module of its own (the functions take the batch first).
    cancel = cancel_batch
    retry = retry_batch
    wait = wait_for


def open_batch(batch_id: str, settings: Settings | None = None) -> Batch:
    """A handle on an existing batch; InputError if Redis has no such batch."""
    batch = Batch(check_batch_id(batch_id), settings_or_load(settings))
    batch.info()
    return batch


def latest_batch(settings: Settings | None = None) -> Batch:
    """A handle on the most recently created batch; InputError when Redis holds none."""
    settings = settings_or_load(settings)
    newest = open_ledger(settings).list_batches(limit=1)
    if not newest:
        raise InputError(
            Problem(
                f"no batch in Redis yet (prefix {settings.key_prefix!r}): `producer submit FILE` makes one",
                field="BATCH",
            )
        )
    return Batch(newest[0].id, settings)


def fetch_from_store(
    batch_id: str,
    location: str | os.PathLike,
    to: str | os.PathLike = ".",
    *,
    progress: Any = None,
    settings: Settings | None = None,
):
    """`Batch.fetch` for a batch Redis no longer holds: its manifest is read from the store at
    `location` (`<location>/<batch>/manifest.json`), opened with the settings' store variables."""
    import json

    from producer.fetch import fetch_batch
    from shared.errors import StorageError
    from shared.storage import open_store

    store = open_store(location, environ=settings_or_load(settings).store_environ())
    try:
        manifest = json.loads(store.get(f"{check_batch_id(batch_id)}/manifest.json"))
    except StorageError as exc:
        raise InputError(
            Problem(f"no manifest of batch {batch_id} in {store.url()}: {exc}", field="BATCH")
        ) from None
    return fetch_batch(manifest, store, Path(to), progress=progress)
