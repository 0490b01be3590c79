"""An item's state changes: one transition (ledger_transition.lua), which never leaves a
terminal state, and the merge into the record of its current attempt."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from shared.ledger.base import LedgerBase
from shared.ledger.records import STATUSES, Transition


class LedgerTransitions(LedgerBase):
    """One Lua call per change; terminal states are final."""

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
