"""An attempt, and the creation record that keeps it from being paid twice.

An attempt is one try of one item on one model, numbered per item from 1 (a retry or a fallback
is the next number). `AttemptRef(batch_id, index, attempt)` names it and builds its keys: the
claim (one live run at a time, workers.claims), the creation record below, and its marker
`"batch:index:attempt"` (its name on the slot that creates for it, and as a prediction's owner).

The creation record of an attempt (a Redis hash, every time from Redis's clock) makes sure no
attempt ever creates two predictions:
- `intent_at`: written before the creation token is taken: a POST may follow;
- `post_wait`: the `Prefer: wait` seconds the POST asks (0: none); a sync create's prediction
  exists, unknown to its worker, for up to that long, so its settling window is longer by it;
- `posting_at`: stamped by the last check right before the POST (attempt_post.lua, the same
  script that checks the claim, the item's current attempt, the batch's cancel flag and the
  slot's lease): a POST may be in flight from then.
  An intent without it (and with `posting_marked`) means no POST was sent: the token wait or the
  last check was interrupted;
- `post_returned_at`: when the POST came back without a usable answer (5xx, timeout). A gateway
  can answer 502/504 while Replicate still creates the prediction, so "none was created" is only
  concluded a settling window after this time; without it, the POST may still be in flight (its
  sender died or was cut off) until `posting_at` + the in-flight limit, and settles after that;
- `prediction_id`: written the moment the POST answers, before any waiting;
- `tries`: how many runs of this attempt ended in "run it again" (bounded).
A run that finds a `prediction_id` resumes it; one that finds an intent without an id (killed
between POST and record, or an ambiguous 5xx/timeout on the POST) reconciles: it lists recent
predictions and adopts the one with the same model and input before creating anew.
`prediction:<id>` holds the marker of the attempt that owns a prediction, so two items with
identical inputs can never adopt the same prediction. `unresolved:<model>` indexes the last
hour's intents by model: a held sync create of a canceled batch looks there for the unresolved
creates of other batches whose prediction it could otherwise take for its own (workers.held_cancel).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from typing import NamedTuple

import redis

from shared import lua_scripts
from shared.budget import Reservation
from shared.errors import LimiterError
from shared.keys import Keys
from shared.limiter import Lease, Limiter
from shared.limiter.core import TOKEN_PARTS
from shared.redis_conn import text_map

RECORD_TTL = 14 * 24 * 3600  # long after Replicate itself forgets the prediction
_OLDEST_REAL_TIME = 1e9  # an older record wrote post_returned_at = "1" (no time)

log = logging.getLogger(__name__)


class AttemptRef(NamedTuple):
    """One attempt: item `index` of batch `batch_id`, try number `attempt` (from 1)."""

    batch_id: str
    index: int  # type: ignore[assignment]  # the item's index; shadows tuple.index(), unused here
    attempt: int

    @property
    def marker(self) -> str:
        """ "batch:index:attempt": the attempt's name on the slot that creates for it (the
        limiter's `attempt=`) and as a prediction's owner. Batch ids hold no ':'."""
        return f"{self.batch_id}:{self.index}:{self.attempt}"

    @classmethod
    def from_marker(cls, marker: str) -> AttemptRef:
        """The attempt a marker names; ValueError if it names none."""
        batch_id, index, attempt = marker.rsplit(":", 2)
        return cls(batch_id, int(index), int(attempt))

    def claim_key(self, keys: Keys) -> str:
        return keys.claim(self.batch_id, self.index, self.attempt)

    def record_key(self, keys: Keys) -> str:
        """The creation record's key (`attempt:<b>:<i>:<n>`)."""
        return keys.attempt(self.batch_id, self.index, self.attempt)

    def log_fields(self) -> dict[str, str | int]:
        """The fields every log line of a run carries (shared.logging_setup.log_context)."""
        return {"batch": self.batch_id, "item": self.index, "attempt": self.attempt}


class PostVerdict(str, Enum):
    """What the last check before the POST found (attempt_post.lua's reply code)."""

    GO = "go"  # all checks passed: `posting_at` stamped
    LOST = "lost"  # the claim is not this run's any more
    RECORDED = "recorded"  # a prediction is already recorded for the attempt
    CANCELED = "canceled"  # the batch is canceled
    SLOT_LOST = "slot_lost"  # the slot's lease is not held any more (ran out while this run stalled)
    MOVED_ON = "moved_on"  # the item is not running this attempt any more


_POST_CODES = {
    1: PostVerdict.GO,
    0: PostVerdict.LOST,
    2: PostVerdict.RECORDED,
    3: PostVerdict.CANCELED,
    4: PostVerdict.SLOT_LOST,
    5: PostVerdict.MOVED_ON,
}


# attempt_create.lua's token reason when the token could be granted but the last check refused.
DECLINED = "declined"


class Intent(NamedTuple):
    """What an attempt's intent records: the model, the `Prefer: wait` seconds its POST asks (0:
    none) and the input it sends, as JSON text ("": not recorded)."""

    model: str
    wait: int = 0
    input_json: str = ""


class PostCheck(NamedTuple):
    verdict: PostVerdict
    posting_at: float | None  # Unix seconds, Redis clock; set only with GO


@dataclass(frozen=True)
class CreationRecord:
    model: str | None
    intent_at: float | None  # Unix time, Redis clock
    post_returned: bool  # the POST after the intent came back (ambiguously): nothing is in flight
    prediction_id: str | None
    tries: int
    created_here: bool  # the prediction was created (not adopted) by this attempt
    posting_at: float | None = None  # the last check before the POST passed (Redis clock)
    post_returned_at: float | None = None  # when the POST came back (None: unknown or not yet)
    posting_marked: bool = False  # its writer stamps posting_at before any POST (older ones did not)
    post_wait: float = 0.0  # the `Prefer: wait` of the POST (seconds; 0: none, or an older writer)


class CreationRecords:
    """Reads and writes the creation records of attempts (one Redis hash each)."""

    def __init__(self, redis_client: redis.Redis, keys: Keys):
        self.redis = redis_client
        self.keys = keys
        # The intent and the record also write the item's attempt record (its input, its
        # prediction id) with the ledger's own merge (shared/lua/ledger_common.lua).
        ledger_merge = (("shared.lua", "ledger_common"),)
        bind = (*ledger_merge, ("workers.lua", "attempt_bind"))
        before_post = (*ledger_merge, ("workers.lua", "attempt_common"))
        scripts = lua_scripts.register(
            redis_client,
            "workers.lua",
            (
                "attempt_intent",
                "attempt_post",
                "attempt_stamp",
                "attempt_record",
                "attempt_record_slot",
                "attempt_create",
            ),
            inserts={
                "attempt_intent": before_post,
                "attempt_post": before_post,
                "attempt_record": bind,
                # The limiter's prelude first: the slot's part is a limiter step (call_with).
                "attempt_record_slot": (("shared.limiter.lua", "common"), *bind),
                # The limiter's token in the same call: its prelude and functions go first.
                "attempt_create": (*TOKEN_PARTS, *before_post),
            },
        )
        self._intent, self._post, self._stamp, self._record, self._record_slot, self._create = (
            scripts.values()
        )

    def preload(self) -> None:
        """Load the scripts into Redis now (worker start): the step between the slot and the
        POST is then one EVALSHA, not EVALSHA + NOSCRIPT + SCRIPT LOAD + EVALSHA on the first
        creation (after a Redis restart the client reloads them transparently, once)."""
        for script in (self._intent, self._post, self._stamp, self._record, self._record_slot, self._create):
            script.load()

    def get(self, ref: AttemptRef) -> CreationRecord:
        return creation_record(text_map(self.redis.hgetall(ref.record_key(self.keys))))

    def write_intent(self, ref: AttemptRef, model: str, wait: int = 0, input_json: str = "") -> float:
        """Before the creation token, with the `Prefer: wait` its POST will ask (0: none);
        returns the intent time (Unix seconds, Redis clock). `input_json`: the input that POST
        sends, recorded in the same round trip in the item's attempt record (`attempts[].input`
        of the manifest) while the item runs this attempt; so it is there before any POST."""
        return float(
            self._intent(
                keys=[
                    ref.record_key(self.keys),
                    self.keys.unresolved_creates(model),
                    self.keys.item(ref.batch_id, ref.index),
                    self.keys.batch_live(ref.batch_id),
                ],
                args=[model, RECORD_TTL, int(wait), ref.marker, ref.attempt, input_json],
            )
        )

    def unresolved_of_model(self, model: str) -> list[AttemptRef]:
        """The attempts whose create on `model` is unresolved now (an intent, no prediction id):
        each may have a prediction running that nobody owns yet. From the model's index of
        intents (the last hour's), each read against its creation record."""
        refs = []
        for marker in self.redis.zrange(self.keys.unresolved_creates(model), 0, -1):
            try:
                refs.append(AttemptRef.from_marker(str(marker)))
            except ValueError:
                continue
        pipe = self.redis.pipeline(transaction=False)
        for ref in refs:
            pipe.hmget(ref.record_key(self.keys), "intent_at", "prediction_id")
        rows = pipe.execute() if refs else []
        return [ref for ref, (intent, predicted) in zip(refs, rows) if intent and not predicted]

    def begin_post(self, ref: AttemptRef, claim_token: str, slot: tuple[str, int] | None = None) -> PostCheck:
        """The one round trip between the creation token and the POST: GO with `posting_at`
        stamped if the attempt's claim still holds `claim_token`, the item is running this
        attempt, no prediction is recorded for the attempt, the batch is not canceled and the
        slot (`(holder id, fence)` of its lease) is still held in the limiter; else LOST,
        MOVED_ON, RECORDED, CANCELED or SLOT_LOST, and nothing written. Redis errors propagate:
        "cannot tell" is not "lost"."""
        holder, fence = (slot[0], str(slot[1])) if slot is not None else ("", "")
        code, stamped = self._post(
            keys=[
                ref.claim_key(self.keys),
                self.keys.batch(ref.batch_id),
                ref.record_key(self.keys),
                self.keys.item(ref.batch_id, ref.index),
                self.keys.limiter_key("holders"),
                self.keys.limiter_key("info"),
            ],
            args=[claim_token, RECORD_TTL, ref.attempt, holder, fence],
        )
        verdict = _POST_CODES[int(code)]
        return PostCheck(verdict, float(stamped) if verdict is PostVerdict.GO else None)

    def begin_at_once(
        self,
        limiter: Limiter,
        ref: AttemptRef,
        claim_token: str,
        lease: Lease,
        reservation: Reservation | None,
        intent: Intent,
    ) -> PostCheck | None:
        """write_intent, the creation token (Limiter.take_create_token with `lease`, the
        attempt's marker and `reservation`) and begin_post in ONE round trip and atomically
        (workers/lua/attempt_create.lua), when the token can be granted at once: GO with
        `posting_at` when all of it is written; LOST, MOVED_ON, RECORDED or CANCELED (the last
        check's verdicts) with nothing written; None when the token needs a wait (or creations
        are paused), nothing written: the caller takes the three steps one by one. The token's
        other refusals raise as take_create_token's (LeaseLostError, BudgetExceededError), and
        Redis errors propagate: "cannot tell" is not "lost"."""
        token, (code, stamped) = limiter.create_token_with(
            self._create,
            [
                ref.claim_key(self.keys),
                self.keys.batch(ref.batch_id),
                ref.record_key(self.keys),
                self.keys.item(ref.batch_id, ref.index),
                self.keys.unresolved_creates(intent.model),
                self.keys.batch_live(ref.batch_id),
            ],
            [claim_token, RECORD_TTL, ref.attempt, intent.model, int(intent.wait), intent.input_json],
            holder=lease,
            attempt=ref.marker,
            reservation=reservation,
        )
        if token.granted:
            return PostCheck(PostVerdict.GO, float(stamped))
        if token.reason == DECLINED:
            return PostCheck(_POST_CODES[int(code)], None)
        return None

    def mark_post_returned(self, ref: AttemptRef) -> float:
        """The POST answered, but not with a prediction we could record (5xx, timeout): it is
        over, whatever it did; the intent stays for the reconciliation, whose settling window
        counts from this time (returned: Unix seconds, Redis clock)."""
        return float(self._stamp(keys=[ref.record_key(self.keys)], args=["post_returned_at", RECORD_TTL]))

    def redis_now(self) -> float:
        sec, usec = self.redis.time()
        return sec + usec / 1e6

    def clear_intent(self, ref: AttemptRef) -> None:
        """Nothing was created (429, 4xx, a reconciliation that found nothing)."""
        self.redis.hdel(ref.record_key(self.keys), "intent_at", "posting_at", "post_returned_at", "post_wait")

    def record_prediction(
        self, ref: AttemptRef, prediction_id: str, *, origin: str = "created", in_ledger: bool = False
    ) -> bool:
        """Bind the prediction to this attempt (one script: its owner, the creation record and,
        with `in_ledger`, the id in the item's attempt record while the item runs this attempt,
        as `Ledger.update_attempt` would). False (nothing changed) if another attempt owns it."""
        recorded = self._record(
            keys=self._bind_keys(ref, prediction_id),
            args=[ref.marker, prediction_id, origin, RECORD_TTL, ref.attempt, "1" if in_ledger else ""],
        )
        return int(recorded) == 1

    def record_on_slot(self, ref: AttemptRef, prediction_id: str, lease: Lease) -> bool:
        """`record_prediction(ref, prediction_id, in_ledger=True)` and, only if that recorded it,
        `lease.set_prediction(prediction_id)`: one round trip (attempt_record_slot.lua) instead
        of two. False (nothing changed, the slot included) if another attempt owns the prediction.
        The record is what cost safety needs, the slot's id a display and a help: should the
        call fail other than by Redis being out of reach (the limiter's part refused, say), the
        two steps run apart, as before (the record raising as it does, the slot's failure
        logged). Redis out of reach raises (RedisUnavailableError), as the record alone does."""
        try:
            return lease.set_prediction_if(
                prediction_id,
                self._record_slot,
                keys=self._bind_keys(ref, prediction_id),
                args=[ref.marker, "created", RECORD_TTL, ref.attempt],
            )
        except LimiterError as exc:
            log.warning(
                "prediction %s and its slot in one call failed (%s); one at a time", prediction_id, exc
            )
        if not self.record_prediction(ref, prediction_id, in_ledger=True):
            return False
        lease.set_prediction(prediction_id)  # never raises
        return True

    def _bind_keys(self, ref: AttemptRef, prediction_id: str) -> list[str]:
        """bind_prediction()'s keys (workers/lua/attempt_bind.lua), in its order."""
        return [
            self.keys.prediction_owner(prediction_id),
            ref.record_key(self.keys),
            self.keys.item(ref.batch_id, ref.index),
            self.keys.batch_live(ref.batch_id),
        ]

    def carry_over(self, old: AttemptRef, new: AttemptRef, prediction_id: str) -> bool:
        """Give `old`'s prediction to `new` (`producer retry` of an item whose prediction succeeded
        but whose outputs were not written): `new` resumes it, downloading its outputs again
        instead of paying for another. False (nothing changed) if another attempt owns it."""
        owner_key = self.keys.prediction_owner(prediction_id)
        owner = self.redis.get(owner_key)
        if owner is not None and owner != old.marker:
            return False
        self.redis.set(owner_key, new.marker, ex=RECORD_TTL)
        return self.record_prediction(new, prediction_id, origin="retried")

    def owned_by_other(self, prediction_id: str, ref: AttemptRef) -> bool:
        owner = self.redis.get(self.keys.prediction_owner(prediction_id))
        return owner is not None and owner != ref.marker

    def bump_tries(self, ref: AttemptRef) -> int:
        key = ref.record_key(self.keys)
        pipe = self.redis.pipeline(transaction=True)
        pipe.hincrby(key, "tries", 1)
        pipe.expire(key, RECORD_TTL)
        return int(pipe.execute()[0])


def _time(raw: str | None) -> float | None:
    try:
        return float(raw) if raw else None
    except ValueError:
        return None


def creation_record(raw: Mapping[str, str]) -> CreationRecord:
    """A creation record from its hash's fields (HGETALL)."""
    returned = _time(raw.get("post_returned_at"))
    return CreationRecord(
        model=raw.get("model"),
        intent_at=_time(raw.get("intent_at")),
        post_returned=bool(raw.get("post_returned_at")),
        prediction_id=raw.get("prediction_id") or None,
        tries=int(raw.get("tries") or 0),
        created_here=raw.get("origin") == "created",
        posting_at=_time(raw.get("posting_at")),
        post_returned_at=returned if returned is not None and returned > _OLDEST_REAL_TIME else None,
        posting_marked=raw.get("posting_marked") == "1",
        post_wait=_time(raw.get("post_wait")) or 0.0,
    )
