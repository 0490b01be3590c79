"""The batch ledger: every batch and item's state in Redis, the result store of the fleet.

Celery results are ignored; this ledger is what `producer status/results` read and what workers
write. Every state change is one Lua script (shared/lua/ledger_*.lua) that updates the per-status
counters in the same step, so a batch's progress is one HGETALL, and terminal states are final: a late or
duplicate execution can never turn `succeeded` into `failed`.

Layout under the key prefix (shared.keys.Keys):
- `batches` (zset batch id -> created_at) for listing;
- `batch:<id>` (hash) batch fields + `n:<status>` counters;
- `batch:<id>:item:<i>` (hash) status, current attempt/model, request JSON, outcome,
  `enqueued_at` (when a message for it was last sent; absent: never enqueued), and one
  `att:<n>` JSON record per attempt (model, prediction_id, status, error, seconds);
- `batch:<id>:live` (zset index -> last sign of life) of the non-terminal items, kept by the same
  scripts, so the recovery sweep (workers.recovery) reads only the items that look abandoned;
- `fingerprint:<sha256>` (string -> batch id): the latest batch with that content (see
  `batch_fingerprint`), so submitting the same file twice is noticed instead of paid twice. It is
  trusted only while that batch exists, and removed with it by `prune_finished`.
Items also keep `sent_tasks`: the ids of the last task messages sent for them (for revoking at
cancel).
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import redis

from shared import lua_scripts
from shared.errors import BatchBeingRecordedError, DuplicateFingerprintError, StillCancelingError
from shared.keys import Keys
from shared.redis_conn import text_map, texts
from shared.request import ImageRequest
from shared.storage.location import Location

# `held`: the item's next attempt does not fit a spending limit (shared.budget); it waits, parked,
# without a message or a slot, until the limit is raised or the UTC day turns.
STATUSES = ("pending", "running", "held", "succeeded", "failed", "canceled", "substituted")
TERMINAL = frozenset({"succeeded", "failed", "canceled", "substituted"})

# One script per state change in shared/lua/, each sent after the prelude ledger_common.lua.
_SCRIPTS = (
    "ledger_create",
    "ledger_stage",
    "ledger_transition",
    "ledger_cancel",
    "ledger_reset",
    "ledger_enqueued",
)
CREATE_CHUNK = 500  # items per staging call: a few ms of Redis each (20 000 in one call: ~330 ms)
PERSIST_CHUNK = 2000  # PERSIST commands per pipeline round trip
STAGING_TTL_MS = 30_000  # a producer's hold on a batch id while it stages (renewed per chunk)
STAGED_TTL = 3600  # staged items of a batch never recorded (its producer died) expire
OPTIONS_FRESH = 60.0  # seconds a process keeps a batch's options (they never change after submit)
_EXISTS, _CREATED, _DUPLICATE, _BUSY = 0, 1, 2, 3  # ledger_create.lua's (and ledger_stage.lua's) answers


@dataclass(frozen=True)
class CancelResult:
    canceled: int  # items canceled now (they were pending)
    task_ids: list[str]  # task messages sent for those items (to revoke; they may still be queued)
    finished: bool  # the cancel finished the batch (nothing was running)
    stopping: int = 0  # items running (waiting for a slot, at Replicate, saving): their workers stop them
    already_finished: bool = False  # the batch had ended: nothing canceled, the batch not flagged


def batch_fingerprint(
    batch_id: str, requests: Sequence[ImageRequest], options: dict[str, Any] | None = None
) -> str:
    """sha256 of what a batch will do: every validated, routed request (prompt, models, params,
    reference images, output, id, in order) and the options that change outcomes
    (`substitute_on_failure`). Independent of the batch id (default outputs start with it: that
    part is left out) and of where the outputs go or --overwrite: the same images cost the same."""
    digest = hashlib.sha256()
    digest.update(
        json.dumps(
            {"substitute_on_failure": bool((options or {}).get("substitute_on_failure"))}, sort_keys=True
        ).encode()
    )
    for request in requests:
        digest.update(
            b"\n" + json.dumps(comparable_request(batch_id, request), sort_keys=True, default=str).encode()
        )
    return digest.hexdigest()


def comparable_request(batch_id: str, request: ImageRequest) -> dict[str, Any]:
    """A request as a dict without what does not change the work: the routing warnings, and the
    batch's id at the start of its output path (default outputs are `<batch>/0003_slug.png`)."""
    data = request.to_dict()
    data.pop("warnings", None)
    output = str(data.get("output") or "")
    if output.startswith(f"{batch_id}/"):
        data["output"] = "<batch>/" + output[len(batch_id) + 1 :]
    return data


def new_batch_id(now: float | None = None) -> str:
    """Short, sortable by day, readable: b-20261122-ab12cd."""
    day = time.strftime("%Y%m%d", time.gmtime(now if now is not None else time.time()))
    return f"b-{day}-{secrets.token_hex(3)}"


@dataclass
class AttemptRecord:
    attempt: int
    model: str | None = None
    prediction_id: str | None = None
    status: str | None = None  # running, succeeded, failed, canceled, retry (transient, retried)
    error: str | None = None
    seconds: float | None = None
    started_at: float | None = None  # Unix time (Redis clock)
    kind: str | None = None  # error class: transient, permanent, local, canceled
    # The prediction's input as this attempt sent it (reference files as their uploaded URLs),
    # kept as JSON text so that Redis's cjson cannot change it (an empty list, a float's digits).
    input: str | None = None

    @classmethod
    def from_json(cls, raw: str) -> AttemptRecord:
        data = json.loads(raw)
        known = {k: data.get(k) for k in cls.__dataclass_fields__ if k in data}
        known["attempt"] = int(data.get("attempt") or 0)
        return cls(**known)

    def to_result(self) -> dict[str, Any]:
        return {
            "attempt": self.attempt,
            "model": self.model,
            "prediction_id": self.prediction_id,
            "status": self.status,
            "error": self.error,
            "started_at": iso_time(self.started_at),
            "seconds": self.seconds,
            "input": _json_or_none(self.input),
        }


@dataclass
class ItemRecord:
    index: int
    request: ImageRequest
    status: str
    attempt: int  # the current (latest) attempt number
    current_model: str  # the model the current attempt uses
    model: str | None = None  # the model that produced the output
    outputs: list[str] = field(default_factory=list)
    # per output: {"key" (relative to the output root), "format", "content_type", "bytes", "sha256"}
    files: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None
    attempts: list[AttemptRecord] = field(default_factory=list)
    base_attempt: int = 1  # first attempt since the last reset (transient retries count from here)
    finished_at: float | None = None
    held_reason: str | None = None  # status `held`: the spending limit its next attempt waits for

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL

    def to_result(self) -> dict[str, Any]:
        """The manifest / `producer results --json` record."""
        return {
            "index": self.index,
            "id": self.request.id,
            "prompt": self.request.prompt,
            "requested_model": self.request.requested_model,
            "model": self.model,
            "price": self.request.price or None,  # of the first model, at submit; "price unknown" included
            "status": self.status,
            "outputs": list(self.outputs),
            "files": [dict(f) for f in self.files],
            "attempts": [a.to_result() for a in self.attempts],
            "error": self.error,
            "finished_at": iso_time(self.finished_at),
            **({"held_reason": self.held_reason} if self.status == "held" else {}),
        }


@dataclass
class BatchInfo:
    id: str
    created_at: float
    total: int
    output_root: str
    options: dict[str, Any]
    canceled: bool
    counts: dict[str, int]
    finished: bool
    started_at: float | None = None
    finished_at: float | None = None

    @property
    def done(self) -> int:
        return sum(self.counts.get(s, 0) for s in TERMINAL)

    @property
    def priority(self) -> str:
        """high, normal or low (recorded in the options at submit; normal for older batches)."""
        return str(self.options.get("priority") or "normal")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Ledger:
    """Thread-safe (redis-py clients are); one per process is plenty."""

    def __init__(
        self, redis_client: redis.Redis, keys: Keys, *, store_environ: Mapping[str, str] | None = None
    ):
        self.redis = redis_client
        self.keys = keys
        self.store_environ = store_environ  # for write_manifest (Settings.store_environ())
        self._scripts = lua_scripts.register(redis_client, "shared.lua", _SCRIPTS, prelude="ledger_common")
        self._options: dict[str, tuple[float, dict[str, Any]]] = {}  # batch id -> (read at, options)

    # --- batches --------------------------------------------------------------------------------
    def create_batch(
        self,
        batch_id: str,
        requests: list[ImageRequest],
        *,
        output_root: str,
        options: dict | None = None,
        fingerprint: str | None = None,
        unique_fingerprint: bool = False,
    ) -> bool:
        """Record a batch and its items, all or nothing. False (nothing changed) if the id exists;
        BatchBeingRecordedError while another producer records the same id.

        In effect atomic without blocking Redis: the items are staged in chunks of CREATE_CHUNK
        (ledger_stage.lua: invisible, expiring, the id held by this call's token), then one short
        call records the batch (ledger_create.lua). A batch exists, listed and runnable, with all
        its items or not at all: a producer that dies between chunks leaves only staged items,
        which nothing reads and which expire; one that dies after the record leaves items that
        still expire until persisted, which the recovery sweep finishes (`staged_batches`).

        `fingerprint` (batch_fingerprint) is recorded with the batch; with `unique_fingerprint`,
        DuplicateFingerprintError is raised (nothing changed) when another batch still in Redis has
        the same one — checked in the same atomic step, so two identical submissions racing each
        other cannot both be recorded."""
        if sorted(r.index for r in requests) != list(range(len(requests))):
            raise ValueError("request indexes must be 0..N-1")
        if unique_fingerprint and fingerprint:
            known = self.find_fingerprint(fingerprint)  # early: no staging for a duplicate
            if known is not None:
                raise DuplicateFingerprintError(known.id)
        token = secrets.token_hex(16)
        # The items first, in chunks that each block Redis for a few ms (one call for 20 000
        # items blocked it for a third of a second); staged items are invisible and expire.
        # Then the batch in one short call: from then on it exists with all its items.
        for start in range(0, len(requests), CREATE_CHUNK):
            staged = self._stage(batch_id, requests[start : start + CREATE_CHUNK], token, first=start == 0)
            if staged == _EXISTS:
                return False
            if staged == _BUSY:
                raise BatchBeingRecordedError(batch_id)
        fp_key = self._fingerprint_key(fingerprint) if fingerprint else self.keys.batch(batch_id)
        keys = [
            self.keys.batches,
            self.keys.batch(batch_id),
            self.keys.batch_live(batch_id),
            fp_key,
            self.keys.batch_key(batch_id, "staging"),
            self._staged_batches,
        ]
        args = [
            batch_id,
            str(output_root),
            json.dumps(options or {}),
            fingerprint or "",
            "unique" if unique_fingerprint else "",
            self.keys.batch(""),
            token,
            len(requests),
        ]
        outcome, other_batch = self._scripts["ledger_create"](keys=keys, args=args)
        if int(outcome) == _DUPLICATE:
            self._unstage(batch_id, len(requests))  # staged under our token: nobody else's
            raise DuplicateFingerprintError(_text(other_batch))
        if int(outcome) == _BUSY:
            raise BatchBeingRecordedError(batch_id)  # our staging expired (stalled) and was taken
        if int(outcome) != _CREATED:
            return False
        self.persist_staged(batch_id)
        return True

    def _stage(self, batch_id: str, chunk: list[ImageRequest], token: str, *, first: bool) -> int:
        """ledger_stage.lua: 1 staged, _EXISTS, _BUSY."""
        keys = [
            self.keys.batch(batch_id),
            self.keys.batch_key(batch_id, "staging"),
            self.keys.batch_live(batch_id),
        ]
        keys += [self.keys.item(batch_id, r.index) for r in chunk]
        args: list[Any] = [token, STAGING_TTL_MS, "1" if first else "", STAGED_TTL]
        args += [
            json.dumps({"i": r.index, "request": json.dumps(r.to_dict()), "model": r.model}) for r in chunk
        ]
        return int(self._scripts["ledger_stage"](keys=keys, args=args))

    def _unstage(self, batch_id: str, total: int) -> None:
        """Delete what this caller staged for a batch it did not record (they would expire)."""
        keys = [self.keys.item(batch_id, i) for i in range(total)]
        keys += [self.keys.batch_live(batch_id), self.keys.batch_key(batch_id, "staging")]
        for start in range(0, len(keys), PERSIST_CHUNK):
            self.redis.delete(*keys[start : start + PERSIST_CHUNK])

    def persist_staged(self, batch_id: str) -> None:
        """A recorded batch's items stop expiring (staged items do), in chunks of commands that
        each take microseconds. Called by create_batch; the recovery sweep calls it for a batch
        whose producer died in between (`staged_batches`)."""
        total = int(self.redis.hget(self.keys.batch(batch_id), "total") or 0)
        for start in range(0, total, PERSIST_CHUNK):
            pipe = self.redis.pipeline(transaction=False)
            for index in range(start, min(start + PERSIST_CHUNK, total)):
                pipe.persist(self.keys.item(batch_id, index))
            pipe.execute()
        self.redis.srem(self._staged_batches, batch_id)

    def staged_batches(self) -> list[str]:
        """Recorded batches whose items may still expire (their producer died before persisting)."""
        return sorted(_text(member) for member in self.redis.smembers(self._staged_batches))

    @property
    def _staged_batches(self) -> str:
        return f"{self.keys.batches}:staged"

    def _fingerprint_key(self, fingerprint: str) -> str:
        return f"{self.keys.prefix}:fingerprint:{fingerprint}"

    def fingerprint_of(self, batch_id: str) -> str | None:
        """The content fingerprint recorded with a batch (None for batches recorded before
        fingerprints existed, or without one)."""
        value = self.redis.hget(self.keys.batch(batch_id), "fingerprint")
        return _text(value) if value is not None else None

    def find_fingerprint(self, fingerprint: str) -> BatchInfo | None:
        """The latest batch still in Redis whose content has this fingerprint, if any."""
        batch_id = self.redis.get(self._fingerprint_key(fingerprint))
        if not batch_id:
            return None
        info = self.batch(_text(batch_id))
        if info is None or self.fingerprint_of(info.id) != fingerprint:
            return None  # that batch is gone (pruned, deleted): no duplicate any more
        return info

    def batch(self, batch_id: str) -> BatchInfo | None:
        raw = text_map(self.redis.hgetall(self.keys.batch(batch_id)))
        return _batch_info(raw) if raw else None

    def list_batches(self, limit: int = 20) -> list[BatchInfo]:
        """Newest first."""
        ids = texts(self.redis.zrevrange(self.keys.batches, 0, max(limit, 1) - 1))
        pipe = self.redis.pipeline(transaction=False)
        for batch_id in ids:
            pipe.hgetall(self.keys.batch(batch_id))
        return [_batch_info(raw) for raw in pipe.execute() if raw]

    def is_canceled(self, batch_id: str) -> bool:
        return self.redis.hget(self.keys.batch(batch_id), "canceled") == "1"

    def options(self, batch_id: str) -> dict[str, Any]:
        """The batch's options as recorded at submit. They never change afterwards, so a process
        reads them once per batch and keeps them OPTIONS_FRESH seconds (a run read them up to
        three times per image: issue 16.4); the cancel flag is never kept (`is_canceled`)."""
        now = time.monotonic()
        kept = self._options.get(batch_id)
        if kept is not None and now - kept[0] < OPTIONS_FRESH:
            return dict(kept[1])
        raw = self.redis.hget(self.keys.batch(batch_id), "options")
        options = json.loads(raw) if raw else {}
        if raw:  # a batch not (yet) recorded is asked again next time
            if len(self._options) >= 1000:
                self._options.clear()
            self._options[batch_id] = (now, options)
        return dict(options)

    # --- items ----------------------------------------------------------------------------------
    def request(self, batch_id: str, index: int) -> ImageRequest:
        raw = self.redis.hget(self.keys.item(batch_id, index), "request")
        if raw is None:
            raise KeyError(f"no item {index} in batch {batch_id}")
        return ImageRequest.from_dict(json.loads(raw))

    def item(self, batch_id: str, index: int) -> ItemRecord | None:
        raw = text_map(self.redis.hgetall(self.keys.item(batch_id, index)))
        return _item_record(index, raw) if raw else None

    def items(self, batch_id: str) -> list[ItemRecord]:
        """Every item in submission order (one pipelined round trip)."""
        total = int(self.redis.hget(self.keys.batch(batch_id), "total") or 0)
        pipe = self.redis.pipeline(transaction=False)
        for index in range(total):
            pipe.hgetall(self.keys.item(batch_id, index))
        return [_item_record(i, raw) for i, raw in enumerate(pipe.execute()) if raw]

    def item_states(self, batch_id: str, indexes: Iterable[int]) -> dict[int, tuple[str, int, str]]:
        """(status, current attempt, current model) per item, one round trip."""
        indexes = list(indexes)
        pipe = self.redis.pipeline(transaction=False)
        for index in indexes:
            pipe.hmget(self.keys.item(batch_id, index), "status", "attempt", "current_model")
        out = {}
        for index, (status, attempt, model) in zip(indexes, pipe.execute()):
            if status is not None:
                out[index] = (status, int(attempt or 0), model or "")
        return out

    # --- transitions ----------------------------------------------------------------------------
    def transition(
        self,
        batch_id: str,
        index: int,
        status: str,
        *,
        allowed_from: Iterable[str] = (),
        expect_attempt: int | None = None,
        fields: dict[str, Any] | None = None,
        attempt: int | None = None,
        attempt_update: dict[str, Any] | None = None,
        release_claim: tuple[str, str] | None = None,
    ) -> Transition:
        """Move an item to `status` unless it is terminal (terminal states are final), not in
        `allowed_from` (when given), or its current attempt is not `expect_attempt` (when given).
        `fields` are set on the item (None deletes); `attempt_update` is merged into the record of
        `attempt` (a `final: True` key fills `seconds`). `release_claim`: (key, token) of a claim
        (workers.claims) released in the same round trip if it still holds the token, whatever
        the transition's answer (a run's end)."""
        if status not in STATUSES:
            raise ValueError(f"unknown status {status!r}")
        encoded = {
            k: (None if v is None else (v if isinstance(v, str) else json.dumps(v)))
            for k, v in (fields or {}).items()
        }
        keys = [self.keys.batch(batch_id), self.keys.item(batch_id, index), self.keys.batch_live(batch_id)]
        args = [
            status,
            ",".join(allowed_from),
            "" if expect_attempt is None else str(expect_attempt),
            json.dumps(encoded),
            "" if attempt is None else str(attempt),
            json.dumps(attempt_update or {}),
        ]
        if release_claim is not None:
            keys.append(release_claim[0])
            args.append(release_claim[1])
        reply = self._scripts["ledger_transition"](keys=keys, args=args)
        return Transition.from_reply(reply)

    def update_attempt(self, batch_id: str, index: int, attempt: int, update: dict[str, Any]) -> bool:
        """Merge into an attempt record without changing the item's status (only while the item is
        not terminal and `attempt` is still its current attempt)."""
        return self.transition(
            batch_id,
            index,
            "running",
            allowed_from=("running",),
            expect_attempt=attempt,
            attempt=attempt,
            attempt_update=update,
        ).changed

    def cancel(self, batch_id: str) -> CancelResult:
        """Flag the batch canceled and mark its pending items canceled; workers cancel the
        running ones (and their predictions) when they next look. Returns how many were canceled
        now, how many running ones their workers stop, and the task ids sent for the canceled ones
        (their messages may still wait in the queue: `producer cancel` revokes them). A finished
        batch is not touched (`already_finished`). KeyError if there is no such batch."""
        total = int(self.redis.hget(self.keys.batch(batch_id), "total") or 0)
        keys = [self.keys.batch(batch_id), self.keys.batch_live(batch_id)]
        keys += [self.keys.item(batch_id, i) for i in range(total)]
        count, finished, stopping, *task_ids = self._scripts["ledger_cancel"](keys=keys, args=[])
        if int(count) == -1:
            raise KeyError(f"no batch {batch_id}")
        if int(count) == -2:
            return CancelResult(canceled=0, task_ids=[], finished=False, already_finished=True)
        if int(finished):  # nothing was running: no worker will write the manifest
            try:
                self.write_manifest(batch_id)
            except OSError:
                pass
        return CancelResult(
            canceled=int(count),
            task_ids=[_text(t) for t in task_ids],
            finished=bool(int(finished)),
            stopping=int(stopping),
        )

    def reset_failed(
        self, batch_id: str, *, include_canceled: bool = False, models: Mapping[int, str] | None = None
    ) -> list[int]:
        """Failed items (and canceled ones with `include_canceled`) back to pending (fresh
        attempt number, first model of the route, or `models[index]`), for `producer retry`.
        Returns their indexes; the caller enqueues them.

        On a canceled batch the cancel is lifted when anything is reset, so the workers run the
        reset items instead of canceling them again; StillCancelingError is raised (nothing changed)
        while items of that batch are still running (being canceled)."""
        items = self.items(batch_id)
        keys = [self.keys.batch(batch_id), self.keys.batch_live(batch_id)]
        keys += [self.keys.item(batch_id, it.index) for it in items]
        models = models or {}
        args = ["1" if include_canceled else "0"] + [models.get(it.index, it.request.model) for it in items]
        outcome, *rest = self._scripts["ledger_reset"](keys=keys, args=args)
        if int(outcome) < 0:
            (still_open,) = rest
            raise StillCancelingError(batch_id, int(still_open))
        return [items[int(position) - 1].index for position in rest]

    # --- liveness (for the recovery sweep) --------------------------------------------------------
    def mark_enqueued(
        self,
        batch_id: str,
        indexes: Iterable[int],
        countdown: float = 0.0,
        task_ids: Sequence[str] | None = None,
    ) -> int:
        """Record that a message was just sent for each item (due after `countdown` seconds),
        with its task id when given (`task_ids[i]` for `indexes[i]`). Terminal items are
        skipped. Returns how many were recorded."""
        indexes = list(indexes)
        ids = [str(t or "") for t in task_ids] if task_ids is not None else []
        if ids and len(ids) != len(indexes):
            raise ValueError("task_ids must match indexes one to one")
        recorded = 0
        for start in range(0, len(indexes), 500):
            chunk = indexes[start : start + 500]
            keys = [self.keys.batch_live(batch_id)] + [self.keys.item(batch_id, i) for i in chunk]
            args = [repr(float(max(countdown, 0.0)))] + ids[start : start + 500]
            recorded += int(self._scripts["ledger_enqueued"](keys=keys, args=args))
        return recorded

    def never_enqueued(self, batch_id: str) -> list[int]:
        """Pending items no message was ever recorded for (a producer that died between
        create_batch and enqueue_items)."""
        total = int(self.redis.hget(self.keys.batch(batch_id), "total") or 0)
        pipe = self.redis.pipeline(transaction=False)
        for index in range(total):
            pipe.hmget(self.keys.item(batch_id, index), "status", "enqueued_at")
        return [
            i
            for i, (status, enqueued_at) in enumerate(pipe.execute())
            if status == "pending" and not enqueued_at
        ]

    def batches_to_look_after(self, chunk: int = 500) -> tuple[list[str], list[str]]:
        """(unfinished batches, finished batches whose manifest is not written yet), oldest
        first: what the recovery sweep looks after. One pipelined HMGET per batch."""
        unfinished: list[str] = []
        no_manifest: list[str] = []
        start = 0
        while True:
            ids = texts(self.redis.zrange(self.keys.batches, start, start + chunk - 1))
            if not ids:
                return unfinished, no_manifest
            pipe = self.redis.pipeline(transaction=False)
            for batch_id in ids:
                pipe.hmget(self.keys.batch(batch_id), "finished_at", "total", "manifest_at")
            for batch_id, (finished_at, total, manifest_at) in zip(ids, pipe.execute()):
                if total is None:
                    continue
                if not finished_at:
                    unfinished.append(batch_id)
                elif not manifest_at:
                    no_manifest.append(batch_id)
            start += chunk

    def prune_finished(self, before: float, *, scan: int = 1000) -> list[str]:
        """Forget batches that finished before `before` (Unix time): the batch, its items, live
        set and upload records. Unfinished batches stay, whatever their age; a batch that changes
        while it is being looked at (a `producer retry`) is left alone. Looks at no more than
        `scan` of the oldest batches per call. Returns the ids removed."""
        removed = []
        for batch_id in texts(self.redis.zrangebyscore(self.keys.batches, "-inf", before, start=0, num=scan)):
            batch_key = self.keys.batch(batch_id)
            with self.redis.pipeline(transaction=True) as pipe:
                try:
                    pipe.watch(batch_key)
                    finished_at, total, fingerprint = pipe.hmget(
                        batch_key, "finished_at", "total", "fingerprint"
                    )
                    if total is not None and (not finished_at or float(finished_at) >= before):
                        continue
                    fp_key = self._fingerprint_key(_text(fingerprint)) if fingerprint else None
                    if fp_key is not None:
                        pipe.watch(fp_key)
                        if pipe.get(fp_key) != batch_id:
                            fp_key = None  # a newer batch with the same content owns it now
                    n = int(total or 0)
                    keys = [batch_key, self.keys.batch_live(batch_id)]
                    keys += [
                        k
                        for i in range(n)
                        for k in (
                            self.keys.item(batch_id, i),
                            self.keys.uploads(batch_id, i),
                            self.keys.written(batch_id, i),
                        )
                    ]
                    if fp_key is not None:
                        keys.append(fp_key)
                    pipe.multi()
                    for start in range(0, len(keys), 1000):
                        pipe.delete(*keys[start : start + 1000])
                    pipe.zrem(self.keys.batches, batch_id)
                    pipe.execute()
                except redis.WatchError:
                    continue
            removed.append(batch_id)
        return removed

    def quiet_items(self, batch_id: str, before: float, limit: int = 1000) -> list[int]:
        """Non-terminal items whose last sign of life is older than `before` (Unix time)."""
        raw = self.redis.zrangebyscore(self.keys.batch_live(batch_id), "-inf", before, start=0, num=limit)
        return [int(i) for i in texts(raw)]

    def touch(self, batch_id: str, indexes: Iterable[int], when: float) -> None:
        """A sign of life seen from outside (a live claim, a queued message) for these items."""
        mapping = {str(i): when for i in indexes}
        if mapping:
            self.redis.zadd(self.keys.batch_live(batch_id), mapping, xx=True, gt=True)

    def forget_live(self, batch_id: str, indexes: Iterable[int]) -> None:
        """Drop items from the live set (terminal ones found there)."""
        members = [str(i) for i in indexes]
        if members:
            self.redis.zrem(self.keys.batch_live(batch_id), *members)

    # --- manifest -------------------------------------------------------------------------------
    def manifest(
        self, batch_id: str, *, cost_of: Callable[[ImageRequest, str], float | None] | None = None
    ) -> dict[str, Any]:
        info = self.batch(batch_id)
        if info is None:
            raise KeyError(f"no batch {batch_id}")
        records = []
        for item in self.items(batch_id):
            record = item.to_result()
            if cost_of is not None and item.status == "succeeded" and item.model:
                try:
                    record["cost_usd"] = cost_of(item.request, item.model)
                except Exception:  # noqa: BLE001 - an estimate for the reader, never a reason to fail
                    pass
            records.append(record)
        batch = info.to_dict()
        for name in ("created_at", "started_at", "finished_at"):
            batch[name] = iso_time(batch[name])
        return {"batch": batch, "items": records}

    def write_manifest(
        self,
        batch_id: str,
        output_root: str | os.PathLike | None = None,
        *,
        cost_of: Callable[[ImageRequest, str], float | None] | None = None,
    ) -> Path | str:
        """Write `<output_root>/<batch_id>/manifest.json` and the gallery `index.html` beside it,
        each whole (shared.storage); returns the manifest's address (a local Path, or a store
        URL). output_root defaults to the one recorded with the batch. `cost_of(request, model)`
        estimates what a succeeded item cost (`cost_usd` in the manifest and the gallery).
        OSError (StorageError, StorageUnavailableError) when the store refuses or does not answer."""
        from shared.gallery import render_gallery
        from shared.storage import open_store

        data = self.manifest(batch_id, cost_of=cost_of)
        store = open_store(
            output_root if output_root is not None else data["batch"]["output_root"],
            environ=None if self.store_environ is None else dict(self.store_environ),
        )
        page = render_gallery(data, keys_of=lambda item: item_keys(item, store.location))
        # Recorded text that UTF-8 cannot encode (a lone surrogate, from before submit refused it)
        # must not stop the manifest: it is written as a character reference in the page and as a
        # JSON \u escape in the manifest, which reads back as the same string.
        store.put(
            f"{batch_id}/index.html",
            page.encode("utf-8", "xmlcharrefreplace"),
            overwrite=True,
            content_type="text/html; charset=utf-8",
        )
        manifest_key = f"{batch_id}/manifest.json"
        manifest = json.dumps(data, indent=2, ensure_ascii=False) + "\n"
        store.put(
            manifest_key,
            manifest.encode("utf-8", "backslashreplace"),
            overwrite=True,
            content_type="application/json",
        )
        if data["batch"].get("finished_at"):
            self.redis.hset(self.keys.batch(batch_id), "manifest_at", str(time.time()))
        return Path(store.url(manifest_key)) if not store.location.remote else store.url(manifest_key)


def item_keys(item: Mapping[str, Any], location: Location) -> list[str]:
    """An item's output keys, relative to the output root: from its `files` records, else from
    its `outputs` addresses (records written before files were recorded)."""
    files = item.get("files") or []
    if files:
        return [str(f["key"]) for f in files]
    keys = [location.key_of(str(address)) for address in item.get("outputs") or []]
    return [k for k in keys if k]


@dataclass(frozen=True)
class Transition:
    changed: bool
    previous: str  # status before (or "missing")
    batch_finished: bool  # this change finished the batch (exactly one caller sees True)
    attempt: int  # the item's current attempt after the call

    @classmethod
    def from_reply(cls, reply: Sequence[Any]) -> Transition:
        """ledger_transition.lua's {changed, status before, batch finished, current attempt}."""
        changed, previous, batch_finished, attempt = reply
        return cls(
            changed=int(changed) == 1,
            previous=_text(previous),
            batch_finished=int(batch_finished) == 1,
            attempt=int(attempt),
        )


def iso_time(unix: float | None) -> str | None:
    """A Unix time as ISO 8601 in UTC with milliseconds ('2026-12-04T22:25:43.441Z'), as the
    manifest writes every time."""
    if unix is None:
        return None
    moment = datetime.fromtimestamp(float(unix), tz=timezone.utc)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _json_or_none(raw: str | None) -> Any:
    try:
        return json.loads(raw) if raw else None
    except ValueError:
        return None


def _float(value: str | None) -> float | None:
    return float(value) if value not in (None, "") else None


def _batch_info(raw: dict[str, str]) -> BatchInfo:
    counts = {s: int(raw.get(f"n:{s}") or 0) for s in STATUSES}
    return BatchInfo(
        id=raw["id"],
        created_at=float(raw["created_at"]),
        total=int(raw["total"]),
        output_root=raw.get("output_root", ""),
        options=json.loads(raw.get("options") or "{}"),
        canceled=raw.get("canceled") == "1",
        counts=counts,
        finished=bool(raw.get("finished_at")),
        started_at=_float(raw.get("started_at")),
        finished_at=_float(raw.get("finished_at")),
    )


def _item_record(index: int, raw: dict[str, str]) -> ItemRecord:
    """An item as stored; one whose stored text cannot be read (written by hand, by an older or
    broken writer) comes back with what could be read and says so in its error, instead of
    raising: a manifest, `producer cancel` or the sweep must not fail for the whole batch."""
    try:
        return _decoded_item(index, raw)
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        problem = f"stored record unreadable ({type(exc).__name__}: {str(exc)[:160]})"
        return ItemRecord(
            index=index,
            request=ImageRequest(
                index=index, id=str(index), prompt="", requested_model="", model=raw.get("current_model", "")
            ),
            status=raw.get("status") or "failed",
            attempt=_int(raw.get("attempt")),
            current_model=raw.get("current_model", ""),
            error=f"{raw['error']}; {problem}" if raw.get("error") else problem,
        )


def _int(raw: str | None) -> int:
    try:
        return int(raw or 0)
    except ValueError:
        return 0


def _decoded_item(index: int, raw: dict[str, str]) -> ItemRecord:
    attempts = sorted(
        (AttemptRecord.from_json(v) for k, v in raw.items() if k.startswith("att:")), key=lambda a: a.attempt
    )
    return ItemRecord(
        index=index,
        request=ImageRequest.from_dict(json.loads(raw["request"])),
        status=raw["status"],
        attempt=int(raw.get("attempt") or 0),
        current_model=raw.get("current_model", ""),
        model=raw.get("model") or None,
        outputs=json.loads(raw["outputs"]) if raw.get("outputs") else [],
        files=json.loads(raw["files"]) if raw.get("files") else [],
        error=raw.get("error") or None,
        attempts=attempts,
        base_attempt=int(raw.get("base_attempt") or 1),
        finished_at=_float(raw.get("finished_at")),
        held_reason=raw.get("held_reason") or None,
    )


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
