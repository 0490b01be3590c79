"""What names a batch: its id, and the fingerprint of its content (a second submission of the
same work is noticed instead of paid twice)."""

from __future__ import annotations

import hashlib
import json
import secrets
import time
from collections.abc import Sequence
from typing import Any

from shared.request import ImageRequest


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
