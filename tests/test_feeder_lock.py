"""One worker process feeds at a time (workers.feeder): the others learn, with each try, when the
holder's lock would lapse and try again just after (issue 16.4: a try every ~2.5 s, not every
second), and a holder that stops renewing is replaced within LOCK_SECONDS plus a few hundred ms."""

from __future__ import annotations

import time

from workers.celery_app import app
from workers.feeder import LOCK_SECONDS, Feeder, FeederThread


def test_a_silent_feeder_is_replaced_just_after_its_lock_lapses(settings, redis_client):
    holder = FeederThread(Feeder(settings, redis_client, app))
    other = FeederThread(Feeder(settings, redis_client, app))
    assert holder._hold_lock() and redis_client.get(holder.feeder.scheduler.feeder_lock) == holder.token
    assert not other._hold_lock()
    # The lock was just set: the next try is due just after its LOCK_SECONDS would end.
    assert LOCK_SECONDS - 0.1 < other.retry_in <= LOCK_SECONDS + 0.25, other.retry_in
    time.sleep(1.0)
    assert holder._hold_lock()  # a renewal keeps it
    assert not other._hold_lock() and other.retry_in > LOCK_SECONDS - 0.2
    began = time.monotonic()
    time.sleep(other.retry_in)  # the holder stops renewing (killed): the next try takes over
    assert other._hold_lock(), redis_client.pttl(holder.feeder.scheduler.feeder_lock)
    assert time.monotonic() - began < LOCK_SECONDS + 1.0  # sleep overshoots on a loaded machine
    assert redis_client.get(other.feeder.scheduler.feeder_lock) == other.token
    assert not holder._hold_lock()  # the old holder finds it lost the lock
