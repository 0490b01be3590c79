"""A batch's and an item's stored text (their Redis hashes) read into records. An item whose text
cannot be read comes back with what could be read and an error saying so, never an exception."""

from __future__ import annotations

import json

from shared.ledger.records import STATUSES, AttemptRecord, BatchInfo, ItemRecord
from shared.request import ImageRequest


def _float(value: str | None) -> float | None:
    return float(value) if value not in (None, "") else None


def batch_info_from(raw: dict[str, str]) -> BatchInfo:
    """A batch's stored hash (fields and `n:<status>` counters) as a BatchInfo."""
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


def item_record_from(index: int, raw: dict[str, str]) -> ItemRecord:
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
