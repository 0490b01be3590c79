"""Rate limits changed at run time, on the real Redis: exact from the moment of the change.

Each test records two times per token: the grant time the script reserved, and the moment the
caller actually went (Redis TIME read right after take_create_token returned). The claim checked:
every window of the CURRENT length that closes at a grant made after the change holds at most
the CURRENT limit, counting every grant before and after the change. (Windows made only of
grants from before the change were legal under the old limits and cannot be undone.)
"""

from __future__ import annotations

import threading
import time

from shared.errors import AcquireTimeoutError
from shared.keys import Keys
from tests.support.limiter import redis_now
from tests.support.limiter_checks import most_in_windows_ending_at
from tests.support.wait import wait_until

MARGIN = 0.1


class Tokens:
    """Takes creation tokens from threads and keeps (granted, went) for each."""

    def __init__(self, limiter, client):
        self.limiter, self.client = limiter, client
        self.granted: list[float] = []
        self.went: list[float] = []
        self._lock = threading.Lock()

    def take(self, timeout: float = 20) -> float:
        granted = self.limiter.take_create_token(timeout=timeout)
        went = redis_now(self.client)
        with self._lock:
            self.granted.append(granted)
            self.went.append(went)
        return went

    def take_in_threads(self, n: int) -> list[threading.Thread]:
        threads = [threading.Thread(target=self.take, daemon=True) for _ in range(n)]
        for thread in threads:
            thread.start()
        return threads

    def after(self, moment: float) -> list[float]:
        return [w for w in self.went if w > moment]

    def check(self, changed_at: float, window: float, limit: int) -> None:
        assert all(w >= g for g, w in zip(self.granted, self.went)), "a caller went before its grant"
        later = self.after(changed_at)
        assert later, "nothing was granted after the change"
        for times in (self.granted, self.went):
            worst = most_in_windows_ending_at(times, [t for t in times if t > changed_at], window)
            assert worst <= limit, (worst, sorted(times), changed_at)


def test_growing_the_window_counts_the_grants_of_the_old_window(make_limiter, redis_client):
    """The audit's repro, scaled: limit 3, window 1 s; 3 grants, 1.2 s later one more; the window
    grows to 3 s; the next two must wait until the old grants leave a 3 s window (before the fix
    the log had been pruned at the old window and both went at once: 6 grants in 3 s)."""
    limiter = make_limiter(create_limit=3, window=1.0, rate_margin=MARGIN)
    tokens = Tokens(limiter, redis_client)
    for _ in range(3):
        tokens.take()
    time.sleep(1.2)
    tokens.take()
    changed_at = redis_now(redis_client)
    limiter.set_limits(rate_window=3.0)
    first, second = tokens.take(), tokens.take()
    # A 3 s window (+ margin) may hold 3: with the 4th grant inside, the first new one goes once
    # the 2nd old grant has left it, the second new one once the 3rd has.
    assert first >= tokens.granted[1] + 3.0 + MARGIN and second >= tokens.granted[2] + 3.0 + MARGIN
    tokens.check(changed_at, 3.0, 3)


def test_lowering_the_limit_holds_at_once_for_callers_already_sleeping(make_limiter, redis_client):
    """Limit 4 per 2 s: 4 go, 4 more are sleeping towards reservations 2.1 s ahead. The limit
    drops to 2: the sleepers are re-planned (2 at the old time, 2 a window later) and each learns
    its new time when it wakes; new callers queue behind them."""
    limiter = make_limiter(create_limit=4, window=2.0, rate_margin=MARGIN)
    tokens = Tokens(limiter, redis_client)
    threads = tokens.take_in_threads(8)
    wait_until(
        lambda: limiter.status().creations_reserved == 4, 5, "4 callers sleeping towards a reservation"
    )
    changed_at = redis_now(redis_client)
    limiter.set_limits(create_limit=2)
    threads += tokens.take_in_threads(1)
    for thread in threads:
        thread.join(15)
    assert len(tokens.went) == 9
    tokens.check(changed_at, 2.0, 2)
    # exact, not merely slower: the limit is used in full after the change, two grants per window
    # at one reserved instant (grant times are the script's, on the Redis clock: no thread delay)
    later = sorted(g for g in tokens.granted if g > changed_at)
    assert len(later) == 5 and later[1] - later[0] < 2.0 / 4 and later[3] - later[2] < 2.0 / 4


def test_growing_the_window_moves_sleeping_reservations_later(make_limiter, redis_client):
    limiter = make_limiter(create_limit=3, window=1.0, rate_margin=MARGIN)
    tokens = Tokens(limiter, redis_client)
    threads = tokens.take_in_threads(6)  # 3 now, 3 sleeping towards now + 1.1 s
    time.sleep(0.3)
    changed_at = redis_now(redis_client)
    limiter.set_limits(rate_window=3.0)
    for thread in threads:
        thread.join(15)
    assert len(tokens.went) == 6
    tokens.check(changed_at, 3.0, 3)
    assert min(tokens.after(changed_at)) >= min(tokens.granted) + 3.0 + MARGIN


def test_growing_limit_and_window_together_stays_within_both(make_limiter, redis_client, key_prefix):
    """Limit 2 per 1 s grows to 6 per 3 s after the log dropped grants beyond the old limit: the
    6th most recent grant is gone, and the newest dropped one stands in for it. Safe, and late
    by at most the gap between the two (here one pair, 1.2 s): the only change that is not
    exact, since exactness would mean keeping a day of grants."""
    limiter = make_limiter(create_limit=2, window=1.0, rate_margin=MARGIN)
    tokens = Tokens(limiter, redis_client)
    for _ in range(3):  # pairs 1.2 s apart: the third pair drops the first from the log
        tokens.take()
        tokens.take()
        time.sleep(1.2)
    assert redis_client.zcard(Keys(key_prefix).limiter_key("creates")) == 3  # 2 kept + the newest
    changed_at = redis_now(redis_client)
    limiter.set_limits(create_limit=6, rate_window=3.0)
    nxt = tokens.take()
    assert tokens.granted[2] + 3.0 + MARGIN <= nxt < tokens.granted[2] + 3.0 + MARGIN + 0.5
    tokens.check(changed_at, 3.0, 6)


def test_a_reservation_moved_beyond_the_callers_timeout_is_given_back(make_limiter, redis_client):
    limiter = make_limiter(create_limit=1, window=1.0, rate_margin=MARGIN)
    limiter.take_create_token()
    errors: list = []

    def impatient():
        try:
            limiter.take_create_token(timeout=2.0)  # reserved 1.1 s ahead: fine at first
        except AcquireTimeoutError as exc:
            errors.append(exc)

    thread = threading.Thread(target=impatient)
    thread.start()
    time.sleep(0.3)
    limiter.set_limits(rate_window=5.0)  # now 5.1 s after the first grant: beyond its timeout
    thread.join(5)
    assert errors and errors[0].retry_after > 2.0
    assert limiter.status().creations_reserved == 0  # its reservation was taken back


def test_the_log_keeps_the_last_grants_for_a_day_not_the_whole_day(make_limiter, redis_client, key_prefix):
    """Memory stays bounded by the limit: grants beyond the limit that left the window are
    dropped; the log and its marker expire a day after the last grant."""
    limiter = make_limiter(create_limit=3, window=1.0, rate_margin=0.0)
    keys = Keys(key_prefix)
    for _ in range(3):
        for _ in range(3):
            limiter.take_create_token(timeout=5)
    time.sleep(1.05)
    limiter.take_create_token(timeout=5)
    log_key = keys.limiter_key("creates")
    assert redis_client.zcard(log_key) == 4  # limit-many kept, the rest dropped, + the new one
    assert 86_400_000 < redis_client.pttl(log_key) <= 86_400_000 + 62_000
    assert redis_client.hget(keys.limiter_key("rates"), "create") is not None
