"""The semaphore's Lua scripts against a model of their contract, on the real Redis: hypothesis
drives random interleavings of arrivals, retries, releases, withdrawals and limit changes, and
after every step the scripts' decisions must match the model's.

The contract (shared/limiter/README.md): a caller is admitted only if its place among the live
waiters is below the free slots (limit - holders), so waiters are served in arrival order and
nobody is admitted while the account is at or over its limit (after a shrink, holders finish
first); a release or a larger limit hands the freed slots to exactly the first `free` waiters
(issue 16.4's direct hand-off: they become holders in that same script, and the wake token
each gets carries its grant), no one else."""

from __future__ import annotations

import json
import uuid

import redis
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule, run_state_machine_as_test

from shared.keys import Keys
from shared.limiter import Limiter
from tests.support.redis_db import REDIS_BASE, REDIS_DB, delete_prefix

LEASE_MS = 600_000  # nothing expires during a run: expiry has its own real-time tests
PROCESS = "model-proc"  # every caller id is "<process>/<n>": the scripts' wake list is per process
IDS = [f"{PROCESS}/{n}" for n in range(8)]


class SemaphoreModel(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.client = redis.Redis.from_url(f"{REDIS_BASE}/{REDIS_DB}", decode_responses=True)
        self.prefix = f"test-model-{uuid.uuid4().hex[:8]}"
        self.limit = 0
        self.holders: set[str] = set()
        self.queue: list[str] = []  # waiters in arrival order
        self.woken: set[str] = set()  # waiters handed a slot (a wake token each) since the last check

    @initialize(limit=st.integers(1, 4))
    def start(self, limit: int) -> None:
        from shared.settings import Settings

        settings = Settings(concurrency_limit=limit, key_prefix=self.prefix)
        # A long waiter ttl: registrations never lapse between steps.
        self.limiter = Limiter.from_settings(self.client, Keys(self.prefix), settings, waiter_ttl=600)
        self.wake_key = self.limiter.wake_prefix + PROCESS
        self.limit = limit

    def _free(self) -> int:
        return self.limit - len(self.holders)

    def _expect_wake(self) -> None:
        handed = self.queue[: max(self._free(), 0)]
        self.woken |= set(handed)
        self.queue = self.queue[len(handed) :]
        self.holders |= set(handed)

    @rule(caller=st.sampled_from(IDS))
    def acquire(self, caller: str) -> None:
        if caller in self.holders:
            return  # a retried call of a holder is answered with its grant; not interesting here
        res = self.limiter._call("acquire", caller, LEASE_MS, json.dumps({"task_id": caller}))
        if caller not in self.queue:
            self.queue.append(caller)
        expected = self.queue.index(caller) < self._free()
        assert bool(int(res[0])) == expected, (caller, self.queue, self.holders, self.limit, res)
        if expected:
            self.queue.remove(caller)
            self.holders.add(caller)
        else:
            assert int(res[1]) == self.queue.index(caller)  # its place in line

    @rule(data=st.data())
    def release(self, data) -> None:
        if not self.holders:
            return
        holder = data.draw(st.sampled_from(sorted(self.holders)))
        self.limiter._call("drop", holder)
        self.holders.discard(holder)
        self._expect_wake()

    @rule(data=st.data())
    def give_up(self, data) -> None:
        if not self.queue:
            return
        waiter = data.draw(st.sampled_from(self.queue))
        self.limiter._call("drop", waiter)
        self.queue.remove(waiter)
        self._expect_wake()

    @rule(limit=st.integers(1, 5))
    def set_limit(self, limit: int) -> None:
        self.limiter.set_limits(concurrency_limit=limit)
        self.limit = limit
        self._expect_wake()

    @invariant()
    def scripts_agree_with_the_model(self) -> None:
        if not self.limit:
            return
        status = self.limiter.status()
        assert status.in_use == len(self.holders) and status.waiters == len(self.queue)
        assert {h.holder_id for h in status.holders} == self.holders
        tokens = [json.loads(t) for t in self.client.lrange(self.wake_key, 0, -1)]
        self.client.delete(self.wake_key)
        # Handed a slot: exactly the first `free` waiters at some release since the last step,
        # each token carrying the grant status shows (its fence), unless released since.
        pushed = {t["w"] for t in tokens}
        assert pushed == self.woken, (pushed, self.woken, self.queue)
        fences = {h.holder_id: h.fence for h in status.holders}
        assert all(int(t["f"]) == fences[t["w"]] for t in tokens if t["w"] in fences)
        self.woken = set()

    def teardown(self) -> None:
        delete_prefix(self.client, self.prefix)
        self.client.close()


def test_semaphore_scripts_match_their_model(redis_url):  # redis_url: exits early without Redis
    run_state_machine_as_test(
        SemaphoreModel,
        settings=hsettings(max_examples=60, stateful_step_count=40, deadline=None, derandomize=True),
    )
