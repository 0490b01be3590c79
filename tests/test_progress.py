"""Progress snapshots and their two renderings (terminal bar, plain lines)."""

from __future__ import annotations

import io
import re
from types import SimpleNamespace

import pytest

from producer.progress import (
    LineReporter,
    Snapshot,
    TerminalReporter,
    format_duration,
    format_line,
    make_reporter,
    snapshot_from_info,
)


@pytest.fixture(autouse=True)
def plain_terminal_environment(monkeypatch):
    """rich reads these; the tests must not depend on the terminal they are run from."""
    monkeypatch.setenv("TERM", "xterm-256color")
    for name in ("FORCE_COLOR", "NO_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE", "COLUMNS"):
        monkeypatch.delenv(name, raising=False)


pytestmark = pytest.mark.unit


def info(counts: dict, total: int = 10, created_at: float = 1000.0, finished_at=None, canceled=False):
    return SimpleNamespace(
        id="b-1",
        total=total,
        counts=counts,
        created_at=created_at,
        finished=finished_at is not None,
        finished_at=finished_at,
        canceled=canceled,
    )


def test_snapshot_counts_rate_and_eta():
    snap = snapshot_from_info(info({"succeeded": 3, "failed": 1, "running": 2, "pending": 4}), now=1060.0)
    assert (snap.done, snap.running, snap.queued) == (4, 2, 4)
    assert snap.per_minute == pytest.approx(3.0)  # images produced: the failed one made none
    assert snap.eta == pytest.approx(90.0)  # 6 left at the 4/min worked through (succeeded or failed)
    assert not snap.finished and not snap.all_succeeded


def test_snapshot_finished_when_every_item_is_terminal_and_elapsed_stops_at_finish():
    snap = snapshot_from_info(info({"succeeded": 9, "substituted": 1}, finished_at=1030.0), now=5000.0)
    assert snap.finished and snap.elapsed == pytest.approx(30.0) and snap.eta == 0.0
    assert not snap.all_succeeded  # a substitute is not a success
    # the ledger's flag may lag; counts decide
    assert snapshot_from_info(info({"succeeded": 10}), now=1010.0).all_succeeded


def test_queued_never_negative_and_unknown_eta_before_first_result():
    snap = snapshot_from_info(info({"running": 3, "pending": 7}), now=1005.0)
    assert snap.queued == 7 and snap.per_minute is None and snap.eta is None
    assert "ETA ?" in format_line(snap)


def test_slots_from_limiter_status_appear():
    snap = snapshot_from_info(
        info({"running": 3, "pending": 7}),
        now=1005.0,
        limiter_status=SimpleNamespace(in_use=3, concurrency_limit=10),
    )
    assert "slots 3/10" in format_line(snap)
    assert "slots 3/10" in render_bar(snap, 120)


def test_format_line_names_every_count():
    snap = snapshot_from_info(
        info({"succeeded": 5, "failed": 1, "canceled": 2, "running": 1, "pending": 1}), now=1060.0
    )
    line = format_line(snap)
    for text in ("8/10 done", "ok 5", "failed 1", "canceled 2", "running 1", "queued 1", "img/min"):
        assert text in line


@pytest.mark.parametrize("width", [40, 80, 200])
def test_bar_fits_the_terminal(width):
    snap = snapshot_from_info(info({"succeeded": 5, "pending": 5}), now=1060.0)
    bar = render_bar(snap, width)
    assert len(bar) <= width and bar.startswith("━") and "5/10" in bar  # the counts are cut, never wrapped


def test_format_duration():
    assert [format_duration(s) for s in (None, 5, 65, 3725)] == ["?", "5s", "1m05s", "1h02m"]


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_line_reporter_prints_periodically_and_the_final_state_once():
    out, clock = io.StringIO(), FakeClock()
    reporter = LineReporter(out, interval=10, clock=clock)
    for t, done in ((0, 0), (3, 1), (6, 2), (11, 3), (15, 4)):
        clock.now = t
        reporter.update(snapshot_from_info(info({"succeeded": done, "pending": 10 - done}), now=1000 + t))
    final = snapshot_from_info(info({"succeeded": 10}, finished_at=1020.0), now=1020.0)
    clock.now = 16
    reporter.update(final)
    reporter.close(final)
    lines = out.getvalue().splitlines()
    assert len(lines) == 3  # t=0, t=11, the final state (not repeated by close)
    assert "\r" not in out.getvalue() and "\x1b" not in out.getvalue()
    assert lines[-1].startswith("batch b-1: 10/10 done")


def test_line_reporter_says_what_it_waits_for_at_least_every_30_s():
    """Issue 18.7: a batch nobody works on (no worker consumes the queue) is not silent."""
    out, clock = io.StringIO(), FakeClock()
    reporter = LineReporter(out, interval=10, clock=clock)
    for t in range(0, 65):
        clock.now = t
        reporter.update(snapshot_from_info(info({"pending": 10}), now=1000 + t))
    lines = out.getvalue().splitlines()
    assert len(lines) == 3  # t=0, then t=30 and t=60 although nothing changed
    assert lines[1].endswith("unchanged for 30s, waiting for 10 queued item(s) to be taken by a worker")
    assert "unchanged for 1m00s" in lines[2] or "unchanged for 60s" in lines[2], lines[2]


def test_running_split_into_at_replicate_and_waiting_for_a_slot():
    """Issue 18.5: the limiter's holders of this batch are at Replicate; the rest waits."""
    holders = [SimpleNamespace(batch_id="b-1", prediction_id="p")] * 2 + [
        SimpleNamespace(batch_id="b-1", prediction_id=None),  # a slot, no prediction yet
        SimpleNamespace(batch_id="b-other", prediction_id="q"),
    ]
    snap = snapshot_from_info(
        info({"running": 7, "pending": 3}),
        now=1005.0,
        limiter_status=SimpleNamespace(in_use=3, concurrency_limit=3, holders=holders),
    )
    assert "running 7 (2 at Replicate, 5 waiting to be created or saving)" in format_line(snap)
    assert snap.to_dict()["at_replicate"] == 2


class TTY(io.StringIO):
    encoding = "utf-8"

    def isatty(self):
        return True


class AsciiTTY(TTY):
    encoding = "ascii"


_CONTROL = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def render_bar(snap: Snapshot, width: int) -> str:
    """The live bar as a terminal `width` columns wide last shows it, without control codes."""
    out = TTY()
    TerminalReporter(out, width=width).close(snap)
    frames = [f for f in _CONTROL.sub("", out.getvalue()).split("\r") if f.strip()]
    return frames[-1].rstrip("\n")


def test_terminal_reporter_redraws_one_line():
    out = TTY()
    reporter = TerminalReporter(out, width=100)
    reporter.update(snapshot_from_info(info({"succeeded": 2, "pending": 8}), now=1010))
    reporter.update(snapshot_from_info(info({"succeeded": 4, "pending": 6}), now=1020))
    reporter.close(None)
    text = out.getvalue()
    # redrawn in place (return, erase the line), one newline at the very end, the cursor shown again
    assert "\r\x1b[2K" in text and text.count("\n") == 1 and text.endswith("\n\x1b[?25h")
    assert "━" in text
    assert _CONTROL.sub("", text).split("\r")[-1].split()[1] == "4/10"  # the last frame is the last state


def test_terminal_reporter_draws_ascii_where_the_terminal_cannot_show_the_bar():
    out = AsciiTTY()
    reporter = TerminalReporter(out, width=100)
    reporter.close(snapshot_from_info(info({"succeeded": 4, "pending": 6}), now=1020))
    assert "4/10" in out.getvalue() and "━" not in out.getvalue()
    out.getvalue().encode("ascii")


def test_make_reporter_picks_by_terminal(monkeypatch):
    assert isinstance(make_reporter(TTY()), TerminalReporter)
    assert isinstance(make_reporter(io.StringIO()), LineReporter)
    monkeypatch.setenv("FORCE_COLOR", "1")  # colours asked for do not turn a pipe into a terminal
    assert isinstance(make_reporter(io.StringIO()), LineReporter)
    monkeypatch.setenv("TERM", "dumb")  # a terminal that cannot redraw a line gets the plain lines
    assert isinstance(make_reporter(TTY()), LineReporter)
    assert make_reporter(None) is None and make_reporter(False) is None
    seen = []
    make_reporter(seen.append).update(Snapshot("b", 1, {}, 0.0, False))
    assert len(seen) == 1
    with pytest.raises(TypeError):
        make_reporter(42)


def test_summary_line_separates_every_count_with_commas():
    snap = snapshot_from_info(
        info({"succeeded": 0, "failed": 0, "canceled": 20}, total=20, finished_at=1010.0), now=1010.0
    )
    assert format_line(snap).startswith("batch b-1: 20/20 done (ok 0, failed 0, canceled 20), running 0")
    snap = snapshot_from_info(
        info({"succeeded": 3, "failed": 1, "substituted": 2, "canceled": 4}), now=1060.0
    )
    assert "(ok 3, failed 1, substituted 2, canceled 4)" in format_line(snap)


def test_rate_counts_only_produced_images_and_eta_ignores_cancels():
    # 6 succeeded and 30 canceled in one minute: 6 images/min, not 36
    snap = snapshot_from_info(
        info({"succeeded": 6, "canceled": 30, "running": 2, "pending": 62}, total=100), now=1060.0
    )
    assert snap.per_minute == pytest.approx(6.0)
    assert snap.eta == pytest.approx(64 / 6 * 60)  # 64 left at the 6/min the fleet works through
    assert "6.0 img/min" in format_line(snap)
    # failures made no image but took work: no rate yet, an ETA from the items worked through
    snap = snapshot_from_info(info({"failed": 2, "pending": 8}), now=1060.0)
    assert snap.per_minute is None and snap.eta == pytest.approx(8 / 2 * 60)
    # only cancels so far: neither
    snap = snapshot_from_info(info({"canceled": 5, "pending": 5}), now=1060.0)
    assert snap.per_minute is None and snap.eta is None and snap.to_dict()["per_minute"] is None


def test_a_canceled_batch_shows_canceling_instead_of_an_eta():
    snap = snapshot_from_info(info({"succeeded": 2, "canceled": 6, "running": 2}, canceled=True), now=1060.0)
    assert "canceling" in format_line(snap) and "ETA" not in format_line(snap)
    assert "canceling" in render_bar(snap, 200)


def test_terminal_bar_shows_canceled_and_substituted_counts():
    snap = snapshot_from_info(
        info({"succeeded": 3, "substituted": 1, "canceled": 2, "running": 1, "pending": 3}), now=1060.0
    )
    bar = render_bar(snap, 200)
    for text in ("6/10", "ok 3", "failed 0", "subst 1", "canceled 2", "running 1", "queued 3"):
        assert text in bar, (text, bar)
    plain = render_bar(snapshot_from_info(info({"succeeded": 3, "pending": 7}), now=1060.0), 200)
    assert "subst" not in plain and "canceled" not in plain


def test_a_batch_whose_rest_is_held_by_a_spending_limit():
    from producer.progress import batch_state

    snap = snapshot_from_info(info({"succeeded": 6, "held": 4}), now=1010.0)
    assert snap.stalled_on_budget and not snap.finished and batch_state(snap) == "held"
    assert (snap.held, snap.queued, snap.eta) == (4, 0, None)
    assert ", held 4 |" in format_line(snap)
    running = snapshot_from_info(info({"succeeded": 5, "running": 1, "held": 4}), now=1010.0)
    assert not running.stalled_on_budget and batch_state(running) == "running"
