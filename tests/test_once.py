"""workers.once: the feeder's and the sweeper's thread are started once per process, however many
callers race to start them, and stopped without the lock (from a signal handler)."""

from __future__ import annotations

import threading

import pytest

from workers.once import OnePerProcess


class Started:
    def __init__(self) -> None:
        self.stopped = False

    def stop(self) -> None:
        self.stopped = True


@pytest.mark.unit
def test_racing_starts_build_one_and_all_get_it():
    holder: OnePerProcess[Started] = OnePerProcess()
    built: list[Started] = []
    got: list[Started] = []
    gate = threading.Barrier(8)

    def build() -> Started:
        built.append(Started())
        return built[-1]

    def start() -> None:
        gate.wait()
        got.append(holder.start(build))

    threads = [threading.Thread(target=start) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(built) == 1 and got == built * 8


@pytest.mark.unit
def test_stop_reaches_the_started_one_and_is_a_no_op_before_any_start():
    holder: OnePerProcess[Started] = OnePerProcess()
    holder.stop()  # nothing started: nothing to stop
    started = holder.start(Started)
    holder._lock.acquire()  # a signal handler may interrupt a thread holding the lock
    try:
        holder.stop()
    finally:
        holder._lock.release()
    assert started.stopped
