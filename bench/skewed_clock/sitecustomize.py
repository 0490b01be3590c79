"""Loaded only into processes the bench runs with a skewed wall clock (bench.hosts.faketime_env
puts this folder first on PYTHONPATH).

A host whose clock is wrong has a wrong wall clock (CLOCK_REALTIME); its monotonic clock, which
every timed wait uses, is as good as anyone's. libfaketime 0.9.10 fakes only the wall clock with
FAKETIME_DONT_FAKE_MONOTONIC=1 (faking both makes every `threading.Event.wait(timeout)` in the
process hang: the waits' deadlines are computed on the faked clock and waited for on the real
one), but then its clock_nanosleep wrapper answers EINVAL to the absolute monotonic sleep that
Python's `time.sleep` makes. So `time.sleep` waits on an Event here, which is what it means."""

import threading
import time


def _sleep(seconds: float) -> None:
    if seconds < 0:
        raise ValueError("sleep length must be non-negative")
    threading.Event().wait(seconds)


time.sleep = _sleep
