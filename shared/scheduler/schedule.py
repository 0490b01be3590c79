"""Sends held in Redis until they are due and it is their turn.

Nothing is given to the broker directly. A producer's items, a worker's follow-up (a retry after
its backoff, a requeue, a recheck), the recovery sweep's re-sends: each is `push`ed here, at once
or with a delay, and the feeder (workers.feeder, one per fleet) `take`s them into the broker's
queue while keeping that queue short. So:

- **delays are measured on one clock**: a delayed send is due at a Redis `TIME`, never at an ETA
  computed by the sender's clock (a host 45 s ahead used to delay everyone's follow-ups by 45 s);
- **priorities and fair share**: the broker holds a few messages at most, refilled from the
  highest priority first and, within one priority, from each batch with something to send in
  turn (round robin), so a small batch submitted during a large one starts within seconds;
- **one pending send per item**: pushing an item that already has one replaces it (or is ignored,
  if it is for an older attempt), so duplicates from retries and the sweep cost nothing.

An item whose send is held here is marked PARKED in its batch's live zset (shared.ledger): the
recovery sweep never takes it for lost. A send the feeder took gets a sign of life at that
moment: if its message never reaches the broker (the feeder was killed in between), the sweep
sends it again after `quiet_after`.

Layout: see lua/sched_common.lua. Times are Redis TIME; the feeder's wake list is
`<prefix>:sched:wake`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import redis

from shared import lua_scripts
from shared.errors import Problem
from shared.keys import Keys
from shared.redis_conn import as_text

PRIORITIES = ("high", "normal", "low")  # rank 0, 1, 2
PARKED = 1e11  # the live-zset score of an item whose send the scheduler holds (lua: PARKED)
KOMBU_PRIORITY_SEPARATOR = "\x06\x16"  # kombu's Redis transport: queue name + sep + priority
# Wake tokens the feeder's list keeps at most (its take empties it): as wake_feeder in
# lua/sched_common.lua, and a worker's delivery nudge (workers.kombu_patches).
WAKE_TOKENS_KEPT = 8


def feeder_wake_key(keys: Keys) -> str:
    """The feeder's wake list: pushed by every push here and every message a worker takes."""
    return f"{keys.prefix}:sched:wake"


# The broker priority of each rank (kombu's Redis transport serves 0 first; steps 0, 3, 6, 9): a
# high-priority message overtakes the few normal ones already in the broker.
_BROKER_PRIORITY = {0: 0, 1: 3, 2: 6}
PUSH_CHUNK = 500  # items per push call (a call over 500 items stays far below a millisecond or two)

_SCRIPTS = ("push", "take", "drop", "depths")


def priority_problem(priority: object) -> Problem | None:
    """Why `priority` is not a batch priority (None: it is one)."""
    if priority in PRIORITIES:
        return None
    return Problem(f"priority must be one of {', '.join(PRIORITIES)}, got {priority!r}", field="priority")


def broker_priority(rank: int) -> int:
    return _BROKER_PRIORITY.get(int(rank), 3)


def broker_lists(queue: str) -> list[str]:
    """The Redis lists kombu keeps the queue's messages in, one per priority step, served in this
    order."""
    return [queue] + [f"{queue}{KOMBU_PRIORITY_SEPARATOR}{step}" for step in (3, 6, 9)]


def fed_lists(queue: str) -> list[str]:
    """The lists the feeder fills (one per rank: steps 0, 3, 6), all the take counts against its
    window. Only the feeder sends into the broker (workers.dispatch), and a redelivered message
    returns to the list it came from, so step 9 stays empty: one LLEN per take fewer."""
    return [queue] + [f"{queue}{KOMBU_PRIORITY_SEPARATOR}{_BROKER_PRIORITY[k]}" for k in (1, 2)]


class Send(NamedTuple):
    """One send the feeder took: run `attempt` of item `index` of `batch_id` on `model`."""

    batch_id: str
    index: int  # type: ignore[assignment]  # the field shadows tuple.index(), which nothing calls
    attempt: int
    model: str
    recheck: int
    prompt: str
    rank: int  # the batch's priority rank (0 high, 1 normal, 2 low)

    @property
    def priority(self) -> str:
        return PRIORITIES[self.rank] if 0 <= self.rank < len(PRIORITIES) else "normal"


@dataclass(frozen=True)
class QueueDepths:
    """What waits to run, per priority: `ready` sends held by the scheduler (due now, waiting for
    their turn), `batches` with such sends, `broker` messages in the broker's queue (taken by no
    worker yet); `scheduled`: sends whose delay has not ended (backoff, retry_after, rechecks)."""

    ready: dict[str, int]
    batches: dict[str, int]
    broker: dict[str, int]
    scheduled: int
    next_due_in: float | None  # seconds until the next delayed send is due (None: none)
    moved: int = 0  # delayed sends moved into their batch's line so far (fleet lifetime)
    max_late: float = 0.0  # the latest a delayed send was moved after its due time (seconds)
    fed: int = 0  # sends the feeder took into the broker so far

    @property
    def waiting(self) -> int:
        """Everything not running yet: held, delayed and in the broker."""
        return sum(self.ready.values()) + self.scheduled + sum(self.broker.values())

    def to_dict(self) -> dict[str, Any]:
        return {
            "ready": dict(self.ready),
            "batches": dict(self.batches),
            "broker": dict(self.broker),
            "scheduled": self.scheduled,
            "next_due_in": self.next_due_in,
            "waiting": self.waiting,
            "moved": self.moved,
            "max_late": self.max_late,
            "fed": self.fed,
        }


def take_reply(reply: Sequence[Any]) -> tuple[list[Send], float | None]:
    """The take script's reply: (the sends, in order; seconds until the next delayed send is due,
    None when there is none)."""
    next_due = float(reply[0])
    sends = []
    for n in range(1, len(reply), 4):
        batch_id, index, raw, rank = reply[n : n + 4]
        entry = json.loads(raw)
        sends.append(
            Send(
                as_text(batch_id),
                int(index),
                int(entry["a"]),
                str(entry["m"]),
                int(entry.get("r") or 0),
                str(entry.get("p") or ""),
                int(rank),
            )
        )
    return sends, (None if next_due < 0 else next_due / 1000)


class Scheduler:
    """Thread-safe (one Redis client); cheap to build."""

    def __init__(self, redis_client: redis.Redis, keys: Keys):
        self.redis = redis_client
        self.keys = keys
        self._scripts = lua_scripts.register(
            redis_client, "shared.scheduler.lua", _SCRIPTS, prelude="sched_common"
        )

    @property
    def wake_key(self) -> str:
        return feeder_wake_key(self.keys)

    @property
    def feeder_lock(self) -> str:
        return f"{self.keys.prefix}:sched:feeder"

    def push(
        self,
        batch_id: str,
        sends: Iterable[tuple[int, int, str]],
        *,
        delay: float = 0.0,
        recheck: int = 0,
        prompts: dict[int, str] | None = None,
    ) -> int:
        """Hold a send for each (index, attempt, model) of `batch_id`, due after `delay` seconds
        (Redis time), and wake the feeder. Terminal items are skipped; an item's held send is
        replaced (one for an older attempt is ignored). Returns how many are held."""
        prompts = prompts or {}
        entries = [
            (
                int(i),
                json.dumps(
                    {"a": int(a), "m": str(m), "r": int(recheck), "p": _short(prompts.get(int(i), ""))}
                ),
            )
            for i, a, m in sends
        ]
        held = 0
        for start in range(0, len(entries), PUSH_CHUNK):
            args: list[Any] = [self.keys.prefix, batch_id, repr(round(max(float(delay), 0.0) * 1000, 3))]
            for index, entry in entries[start : start + PUSH_CHUNK]:
                args += [index, entry]
            held += int(self._scripts["push"](args=args))
        return held

    def take(self, queue: str, *, window: int, limit: int | None = None) -> tuple[list[Send], float | None]:
        """Move due sends into their lines and take the next ones, keeping the broker's queue at
        `window` messages at most. Returns (the sends, in order; seconds until the next delayed
        send is due, None when there is none)."""
        return take_reply(self._scripts["take"](args=self._take_args(queue, window, limit)))

    def take_in(self, pipe: Any, queue: str, *, window: int) -> None:
        """The same take queued on `pipe` as a plain EVALSHA, behind what the pipeline holds
        (a script called with client= a pipeline costs a SCRIPT EXISTS request first); its reply
        goes to take_reply, and a NoScriptError (Redis restarted) means: call take()."""
        pipe.evalsha(self._scripts["take"].sha, 0, *self._take_args(queue, window, None))

    def _take_args(self, queue: str, window: int, limit: int | None) -> list[Any]:
        return [self.keys.prefix, limit if limit is not None else window, window, *fed_lists(queue)]

    def drop_batch(self, batch_id: str) -> int:
        """Forget every send held for the batch (it was canceled). Returns how many."""
        return int(self._scripts["drop"](args=[self.keys.prefix, batch_id]))

    def depths(self, queue: str) -> QueueDepths:
        """Per-priority depths of what waits to run (one script call)."""
        lists = broker_lists(queue)
        reply = self._scripts["depths"](args=[self.keys.prefix, *lists])
        ranks = len(PRIORITIES)
        batches = {PRIORITIES[k]: int(reply[2 * k]) for k in range(ranks)}
        ready = {PRIORITIES[k]: int(reply[2 * k + 1]) for k in range(ranks)}
        scheduled, next_due = int(reply[2 * ranks]), float(reply[2 * ranks + 1])
        lengths = [int(x) for x in reply[2 * ranks + 2 : 2 * ranks + 2 + len(lists)]]
        moved, max_late, fed = reply[2 * ranks + 2 + len(lists) :]
        # The broker's lists by the rank they carry (the 4th step, 9, is never used by the feeder).
        broker = {PRIORITIES[k]: lengths[k] for k in range(ranks)}
        broker["normal"] += lengths[3]
        return QueueDepths(
            ready=ready,
            batches=batches,
            broker=broker,
            scheduled=scheduled,
            next_due_in=None if next_due < 0 else next_due / 1000,
            moved=int(moved),
            max_late=float(max_late) / 1000,
            fed=int(fed),
        )

    def held(self, batch_id: str) -> dict[int, dict[str, Any]]:
        """The sends held for a batch, by item (tests, diagnostics)."""
        raw = self.redis.hgetall(f"{self.keys.prefix}:sched:entry:{batch_id}")
        return {int(i): json.loads(v) for i, v in raw.items()}


def _short(prompt: str) -> str:
    return prompt if len(prompt) <= 40 else prompt[:40] + "..."


def sends_of(states: dict[int, tuple[str, int, str]], indexes: Sequence[int]) -> list[tuple[int, int, str]]:
    """(index, attempt, model) of each non-terminal item among `states` (Ledger.item_states)."""
    from shared.ledger import TERMINAL

    return [(i, states[i][1], states[i][2]) for i in indexes if i in states and states[i][0] not in TERMINAL]
