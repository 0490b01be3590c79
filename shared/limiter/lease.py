"""A held slot: renewed in the background by the process's keeper until released or lost."""
from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING, Any

import redis

from shared.errors import LeaseLostError

if TYPE_CHECKING:  # pragma: no cover
    from shared.limiter.limiter import Limiter

log = logging.getLogger(__name__)


class Lease:
    """One concurrency slot. Thread-safe; `release()` is idempotent; usable as a context manager.

    `lost` turns True when a renewal finds the holder gone (lease expired because renewals could
    not get through in time, or `force_release`): the caller no longer counts against the limit
    and should stop (or at least not start) the work the slot was for.
    """

    def __init__(
        self,
        limiter: "Limiter",
        holder_id: str,
        fence: int,
        granted_at: float,
        epoch: str,
        record: dict[str, Any],
        renewed_at: float,
    ):
        self.holder_id = holder_id
        self.fence = fence
        self.granted_at = granted_at  # Unix seconds on the Redis clock
        self.released_at: float | None = None  # Redis clock, set by release()
        self.lost_reason: str | None = None
        self.epoch = epoch
        self._limiter = limiter
        self._record = record  # the info sent with the grant; re-sent if Redis forgets us
        self._lock = threading.Lock()
        self._released = False
        self._lost = threading.Event()
        # Monotonic times kept by the keeper: next renewal, and the latest moment the lease can
        # still be valid (measured from *before* the last successful call, so conservative).
        self._renew_due = renewed_at + limiter.lease_seconds / 3
        self._deadline = renewed_at + limiter.lease_seconds

    # --- state ----------------------------------------------------------------------------------
    @property
    def lost(self) -> bool:
        return self._lost.is_set()

    @property
    def released(self) -> bool:
        return self._released

    def wait_lost(self, timeout: float | None = None) -> bool:
        """Block until the lease is lost (True) or the timeout passes (False)."""
        return self._lost.wait(timeout)

    def check(self) -> None:
        """Raise LeaseLostError if the slot is no longer ours."""
        if self.lost:
            raise LeaseLostError(f"slot lease {self.holder_id} lost: {self.lost_reason}")

    # --- actions --------------------------------------------------------------------------------
    def set_prediction(self, prediction_id: str) -> None:
        """Show the prediction id in status. Display only: a Redis error is logged, not raised."""
        self._record["prediction_id"] = prediction_id
        if self._released or self.lost:
            return
        try:
            self._limiter._call("set_prediction", self.holder_id, prediction_id)
        except Exception as exc:  # noqa: BLE001 - status decoration must never fail the task
            log.warning("could not record prediction id on lease %s: %s", self.holder_id, exc)

    def release(self) -> None:
        """Give the slot back and stop renewing. Idempotent. If Redis cannot be reached the slot
        still comes back on its own when the lease runs out (renewals have stopped)."""
        with self._lock:
            if self._released:
                return
            self._released = True
        self._limiter._forget_lease(self)
        try:
            res = self._limiter._call("drop", self.holder_id)
            self.released_at = float(res[2]) / 1000
        except redis.RedisError as exc:  # pragma: no cover - exercised by the fault suite
            log.warning("release of %s did not reach Redis (%s); it expires within %.0f s",
                        self.holder_id, exc, self._limiter.lease_seconds)
        except Exception as exc:  # noqa: BLE001
            log.warning("release of %s failed (%s); it expires within %.0f s",
                        self.holder_id, exc, self._limiter.lease_seconds)

    def __enter__(self) -> "Lease":
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    # --- keeper side ----------------------------------------------------------------------------
    def _mark_lost(self, reason: str) -> None:
        if self._released or self.lost:
            return
        self.lost_reason = reason
        self._lost.set()
        log.warning("slot lease %s lost: %s", self.holder_id, reason)

    def __repr__(self) -> str:
        state = "released" if self._released else "lost" if self.lost else "held"
        return f"Lease({self.holder_id!r}, fence={self.fence}, {state})"
