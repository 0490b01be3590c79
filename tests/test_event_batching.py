"""A worker's task events go out a few at a time (workers.event_batching, issue 16.4): the first
buffered event arms one delayed flush, later ones ride along, and the buffer is flushed before
the event connection closes."""

from __future__ import annotations

from typing import Any

import pytest

from workers import event_batching

pytestmark = pytest.mark.unit


class FakeHub:
    def __init__(self) -> None:
        self.soon: list[tuple[Any, tuple[Any, ...]]] = []
        self.later: list[tuple[float, Any, tuple[Any, ...]]] = []

    def call_soon(self, callback: Any, *args: Any) -> None:
        self.soon.append((callback, args))

    def call_later(self, delay: float, callback: Any, *args: Any) -> None:
        self.later.append((delay, callback, args))

    def run_soon(self) -> None:
        ready, self.soon = self.soon, []
        for callback, args in ready:
            callback(*args)

    def run_later(self) -> None:
        due, self.later = self.later, []
        for _, callback, args in due:
            callback(*args)


class FakeConsumer:
    def __init__(self) -> None:
        self.hub = FakeHub()
        self.flushes = 0

    def _flush_events(self) -> None:
        self.flushes += 1


def test_events_buffered_together_go_in_one_flush():
    consumer = FakeConsumer()
    for _ in range(3):  # received, started, another task's succeeded
        event_batching._on_send_event_buffered(consumer)
    assert len(consumer.hub.soon) == 1  # one flush armed, from the loop's thread
    consumer.hub.run_soon()
    assert [delay for delay, *_ in consumer.hub.later] == [event_batching.EVENT_FLUSH_SECONDS]
    event_batching._on_send_event_buffered(consumer)
    assert consumer.hub.soon == [] and consumer.flushes == 0
    consumer.hub.run_later()
    assert consumer.flushes == 1
    # The next event arms the next flush: none waits for one that already ran.
    event_batching._on_send_event_buffered(consumer)
    consumer.hub.run_soon()
    consumer.hub.run_later()
    assert consumer.flushes == 2


def test_the_buffer_is_flushed_before_the_event_connection_closes(monkeypatch):
    calls: list[str] = []

    class Dispatcher:
        def flush(self) -> None:
            calls.append("flush")

    class Consumer:
        connection_errors: tuple[type[Exception], ...] = ()
        channel_errors: tuple[type[Exception], ...] = ()
        event_dispatcher = Dispatcher()

    monkeypatch.setattr(event_batching, "_original_close", lambda step, c: calls.append("close"))
    event_batching._close(object(), Consumer())
    assert calls == ["flush", "close"]


def test_applied_with_the_celery_app():
    from celery.worker.consumer import consumer as celery_consumer
    from celery.worker.consumer import events as celery_events

    import workers.celery_app  # noqa: F401 - applies the patches

    assert celery_consumer.Consumer.on_send_event_buffered is event_batching._on_send_event_buffered
    assert celery_events.Events._close is event_batching._close


def test_a_busy_workers_events_go_out_about_once_a_second():
    """Five events a second for ten seconds (a worker of the bench's fleet: ~1.7 images a second,
    three events each) on a simulated clock: one message per second at most. At the 0.25 s
    first chosen it was 25 messages (PUBLISH task.multi, 81 -> 45 per 100 images in the bench;
    Flower's delay 0.25 -> ~0.9 s, see EVENT_FLUSH_SECONDS)."""
    consumer = FakeConsumer()
    due: list[float] = []  # when the armed flush runs
    for tick in range(50):
        now = tick * 0.2
        while due and due[0] <= now:
            due.pop(0)
            consumer.hub.run_later()
        event_batching._on_send_event_buffered(consumer)
        if consumer.hub.soon:
            consumer.hub.run_soon()
            due.append(now + consumer.hub.later[-1][0])
    consumer.hub.run_later()
    assert consumer.flushes <= 10, consumer.flushes
