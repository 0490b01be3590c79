"""The batch ledger: transitions, counters, finality, cancel, reset. Its rules are Lua (ledger.lua):
each test runs on fakeredis (the unit tier) and on the real Redis server."""

from __future__ import annotations

import json
import re
import threading

import pytest

from shared.keys import Keys
from shared.ledger import TERMINAL, Ledger, new_batch_id
from shared.request import ImageRequest


def make_requests(n: int, batch_id: str = "b1", route: tuple[str, ...] = ()) -> list[ImageRequest]:
    return [
        ImageRequest(
            index=i,
            id=f"img-{i}",
            prompt=f"prompt number {i}",
            requested_model="owner/a",
            model="owner/a",
            route=route,
            output=f"{batch_id}/{i:04d}_p.png",
        )
        for i in range(n)
    ]


@pytest.fixture
def ledger(redis_or_fakeredis, key_prefix) -> Ledger:
    return Ledger(redis_or_fakeredis, Keys(key_prefix))


def counts(ledger: Ledger, batch_id: str) -> dict[str, int]:
    return {k: v for k, v in ledger.batch(batch_id).counts.items() if v}


@pytest.mark.unit
def test_batch_id_is_short_and_readable():
    ids = {new_batch_id() for _ in range(50)}
    assert len(ids) == 50
    assert all(re.fullmatch(r"b-\d{8}-[0-9a-f]{6}", i) for i in ids)


def test_create_batch_records_everything_once(ledger, tmp_path):
    reqs = make_requests(3, route=("owner/b",))
    assert ledger.create_batch("b1", reqs, output_root=str(tmp_path), options={"substitute_on_failure": True})
    # the same id again changes nothing, even with other content
    assert not ledger.create_batch("b1", make_requests(5), output_root="/elsewhere", options={})
    info = ledger.batch("b1")
    assert info.total == 3 and info.output_root == str(tmp_path)
    assert info.options == {"substitute_on_failure": True}
    assert counts(ledger, "b1") == {"pending": 3}
    assert not info.finished and not info.canceled
    assert ledger.request("b1", 2) == reqs[2]
    items = ledger.items("b1")
    assert [it.index for it in items] == [0, 1, 2]
    assert items[0].attempt == 1 and items[0].current_model == "owner/a"
    assert ledger.item_states("b1", [0, 1, 7]) == {0: ("pending", 1, "owner/a"), 1: ("pending", 1, "owner/a")}


def test_list_batches_newest_first(ledger, tmp_path):
    for name in ("b-old", "b-mid", "b-new"):
        ledger.create_batch(name, make_requests(1, name), output_root=str(tmp_path))
    assert [b.id for b in ledger.list_batches(limit=2)] == ["b-new", "b-mid"]
    assert ledger.batch("nope") is None


def test_transitions_keep_counters_and_record_attempts(ledger, tmp_path):
    ledger.create_batch("b1", make_requests(2), output_root=str(tmp_path))
    t = ledger.transition(
        "b1",
        0,
        "running",
        allowed_from=("pending",),
        expect_attempt=1,
        attempt=1,
        attempt_update={"model": "owner/a", "status": "running"},
    )
    assert t.changed and t.previous == "pending" and not t.batch_finished
    assert ledger.batch("b1").started_at is not None
    assert ledger.update_attempt("b1", 0, 1, {"prediction_id": "p1"})
    assert not ledger.update_attempt("b1", 0, 2, {"prediction_id": "wrong attempt"})
    assert counts(ledger, "b1") == {"pending": 1, "running": 1}
    t = ledger.transition(
        "b1",
        0,
        "succeeded",
        fields={"model": "owner/a", "outputs": ["x.png"]},
        attempt=1,
        attempt_update={"status": "succeeded", "final": True},
    )
    assert t.changed and not t.batch_finished
    item = ledger.item("b1", 0)
    assert item.status == "succeeded" and item.outputs == ["x.png"] and item.model == "owner/a"
    [att] = item.attempts
    assert (att.attempt, att.model, att.prediction_id, att.status) == (1, "owner/a", "p1", "succeeded")
    assert att.seconds is not None and att.seconds >= 0
    t = ledger.transition("b1", 1, "failed", fields={"error": "boom"})
    assert t.changed and t.batch_finished
    info = ledger.batch("b1")
    assert info.finished and info.finished_at is not None
    assert counts(ledger, "b1") == {"succeeded": 1, "failed": 1}


@pytest.mark.parametrize("final", sorted(TERMINAL))
def test_terminal_states_are_final(ledger, tmp_path, final):
    ledger.create_batch("b1", make_requests(1), output_root=str(tmp_path))
    assert ledger.transition("b1", 0, final).changed
    for late in ("pending", "running", "succeeded", "failed", "canceled", "substituted"):
        t = ledger.transition("b1", 0, late, fields={"error": "late duplicate"})
        assert not t.changed and t.previous == final
    item = ledger.item("b1", 0)
    assert item.status == final and item.error is None
    assert counts(ledger, "b1") == {final: 1}


def test_allowed_from_and_expected_attempt_guard(ledger, tmp_path):
    ledger.create_batch("b1", make_requests(1), output_root=str(tmp_path))
    # the next attempt is scheduled: item back to pending with attempt 2
    ledger.transition("b1", 0, "running", attempt=1, attempt_update={"status": "running"})
    t = ledger.transition(
        "b1",
        0,
        "pending",
        expect_attempt=1,
        fields={"attempt": 2, "current_model": "owner/b"},
        attempt=1,
        attempt_update={"status": "failed", "error": "nsfw", "final": True},
    )
    assert t.changed and t.attempt == 2
    # a stale execution of attempt 1 cannot touch the item any more
    assert not ledger.transition("b1", 0, "running", expect_attempt=1).changed
    assert not ledger.transition("b1", 0, "succeeded", allowed_from=("running",)).changed
    assert ledger.transition("b1", 0, "running", expect_attempt=2).changed
    assert ledger.item("b1", 0).current_model == "owner/b"


def test_concurrent_duplicates_finish_an_item_exactly_once(ledger, tmp_path):
    ledger.create_batch("b1", make_requests(1), output_root=str(tmp_path))
    ledger.transition("b1", 0, "running")
    results = []
    barrier = threading.Barrier(16)

    def finish(i):
        barrier.wait()
        status = "succeeded" if i % 2 else "failed"
        results.append((status, ledger.transition("b1", 0, status)))

    threads = [threading.Thread(target=finish, args=(i,)) for i in range(16)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    winners = [(s, t) for s, t in results if t.changed]
    assert len(winners) == 1
    assert sum(t.batch_finished for _, t in results) == 1
    assert ledger.item("b1", 0).status == winners[0][0]
    assert sum(ledger.batch("b1").counts.values()) == 1


def test_cancel_marks_pending_and_flags_running(ledger, tmp_path):
    ledger.create_batch("b1", make_requests(4), output_root=str(tmp_path))
    ledger.transition("b1", 0, "running")
    ledger.transition("b1", 1, "succeeded")
    result = ledger.cancel("b1")
    assert (result.canceled, result.stopping, result.already_finished) == (2, 1, False)
    info = ledger.batch("b1")
    assert info.canceled and not info.finished
    assert counts(ledger, "b1") == {"running": 1, "succeeded": 1, "canceled": 2}
    assert ledger.is_canceled("b1")
    # the worker of item 0 sees the flag and finishes the batch
    assert ledger.transition("b1", 0, "canceled").batch_finished
    assert ledger.cancel("b1").canceled == 0
    with pytest.raises(KeyError):
        ledger.cancel("missing")


def test_reset_failed_only_touches_failed_items(ledger, tmp_path):
    reqs = make_requests(3, route=("owner/b",))
    ledger.create_batch("b1", reqs, output_root=str(tmp_path))
    ledger.transition("b1", 0, "pending", fields={"attempt": 2, "current_model": "owner/b"})
    ledger.transition(
        "b1",
        0,
        "failed",
        fields={"error": "every model failed"},
        attempt=2,
        attempt_update={"status": "failed", "final": True},
    )
    ledger.transition("b1", 1, "succeeded")
    ledger.transition("b1", 2, "canceled")
    assert ledger.batch("b1").finished
    assert ledger.reset_failed("b1") == [0]
    item = ledger.item("b1", 0)
    assert (item.status, item.attempt, item.base_attempt, item.current_model, item.error) == (
        "pending",
        3,
        3,
        "owner/a",
        None,
    )
    assert [a.attempt for a in item.attempts] == [2]  # history kept
    info = ledger.batch("b1")
    assert not info.finished and counts(ledger, "b1") == {"pending": 1, "succeeded": 1, "canceled": 1}
    assert ledger.reset_failed("b1") == []


def test_manifest_written_atomically_next_to_outputs(ledger, tmp_path):
    ledger.create_batch("b1", make_requests(2), output_root=str(tmp_path))
    ledger.transition(
        "b1",
        0,
        "running",
        attempt=1,
        attempt_update={"model": "owner/a", "status": "running", "prediction_id": "p0"},
    )
    ledger.transition(
        "b1",
        0,
        "succeeded",
        fields={"model": "owner/a", "outputs": [str(tmp_path / "b1/0.png")]},
        attempt=1,
        attempt_update={"status": "succeeded", "final": True},
    )
    ledger.transition("b1", 1, "substituted", fields={"error": "all failed", "outputs": ["s.png"]})
    path = ledger.write_manifest("b1")
    assert path == tmp_path / "b1" / "manifest.json"
    data = json.loads(path.read_text())
    assert data["batch"]["id"] == "b1" and data["batch"]["finished"]
    first, second = data["items"]
    assert set(first) == {
        "index",
        "id",
        "prompt",
        "requested_model",
        "model",
        "price",
        "status",
        "outputs",
        "files",
        "attempts",
        "error",
        "finished_at",
    }
    assert first["status"] == "succeeded" and first["attempts"][0]["prediction_id"] == "p0"
    assert set(first["attempts"][0]) == {
        "attempt",
        "model",
        "prediction_id",
        "status",
        "error",
        "started_at",
        "seconds",
        "input",
    }
    assert second["status"] == "substituted" and second["error"] == "all failed"
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".part")]
    assert (path.parent / "index.html").is_file()  # the gallery beside it
    # another root (a worker's mount) works too
    assert ledger.write_manifest("b1", tmp_path / "elsewhere").is_file()


def test_manifest_times_are_iso_8601_and_each_attempt_keeps_the_input_it_sent(ledger, tmp_path):
    """Unix floats (1796423143.441767) were the manifest's times; each attempt's input was not
    recorded, so what a fallback model was asked could not be told (issue 18.8)."""
    import re
    from datetime import datetime

    ledger.create_batch("b1", make_requests(1), output_root=str(tmp_path))
    ledger.transition("b1", 0, "running", attempt=1, attempt_update={"model": "owner/a", "status": "running"})
    sent = {"prompt": "a cat", "image_input": [], "guidance": 3.000000000000001, "seed": 2**53 - 1}
    assert ledger.update_attempt("b1", 0, 1, {"input": json.dumps(sent)})
    ledger.transition(
        "b1",
        0,
        "succeeded",
        fields={"model": "owner/a", "outputs": ["0.png"]},
        attempt=1,
        attempt_update={"status": "succeeded", "final": True},
    )
    data = json.loads(ledger.write_manifest("b1").read_text())
    iso = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
    times = [data["batch"][k] for k in ("created_at", "started_at", "finished_at")]
    item = data["items"][0]
    times += [item["finished_at"], item["attempts"][0]["started_at"]]
    assert all(isinstance(t, str) and iso.match(t) for t in times), times
    created = datetime.fromisoformat(data["batch"]["created_at"].replace("Z", "+00:00")).timestamp()
    assert abs(created - ledger.batch("b1").created_at) < 0.001
    assert item["attempts"][0]["input"] == sent  # exactly what was sent: the empty list, every digit


def test_empty_batch_is_finished_at_once(ledger, tmp_path):
    assert ledger.create_batch("b0", [], output_root=str(tmp_path))
    assert ledger.batch("b0").finished


# --- content fingerprints (a file submitted twice is noticed, not paid twice) ---------------------
@pytest.mark.unit
def test_fingerprint_ignores_the_batch_id_but_not_the_content():
    from shared.ledger import batch_fingerprint

    a, b = make_requests(3, "b-a"), make_requests(3, "b-b")  # default outputs under their own batch
    assert batch_fingerprint("b-a", a) == batch_fingerprint("b-b", b)
    assert batch_fingerprint("b-a", a, {"overwrite": True}) == batch_fingerprint("b-a", a)
    assert batch_fingerprint("b-a", a, {"substitute_on_failure": True}) != batch_fingerprint("b-a", a)
    changed = [
        a[0],
        ImageRequest(
            **{**a[1].to_dict(), "params": {"seed": 1}, "route": (), "warnings": (), "reference_images": ()}
        ),
        a[2],
    ]
    assert batch_fingerprint("b-a", changed) != batch_fingerprint("b-a", a)
    assert batch_fingerprint("b-a", a[:2]) != batch_fingerprint("b-a", a)
    assert batch_fingerprint("b-a", list(reversed(a))) != batch_fingerprint("b-a", a)


def test_create_batch_refuses_a_live_duplicate_atomically(ledger, tmp_path):
    from shared.errors import DuplicateFingerprintError

    root = str(tmp_path)
    assert ledger.create_batch("b1", make_requests(2, "b1"), output_root=root, fingerprint="f" * 64)
    assert ledger.find_fingerprint("f" * 64).id == "b1"
    with pytest.raises(DuplicateFingerprintError) as info:
        ledger.create_batch(
            "b2", make_requests(2, "b2"), output_root=root, fingerprint="f" * 64, unique_fingerprint=True
        )
    assert info.value.batch_id == "b1" and ledger.batch("b2") is None
    assert not ledger.redis.exists(ledger.keys.item("b2", 0))
    # on purpose (again / an explicit id): recorded, and the newest owns the fingerprint
    assert ledger.create_batch("b3", make_requests(2, "b3"), output_root=root, fingerprint="f" * 64)
    assert ledger.find_fingerprint("f" * 64).id == "b3"
    # a batch that is gone (deleted, pruned) is no duplicate any more
    ledger.redis.delete(ledger.keys.batch("b3"))
    assert ledger.find_fingerprint("f" * 64) is None
    assert ledger.create_batch(
        "b4", make_requests(2, "b4"), output_root=root, fingerprint="f" * 64, unique_fingerprint=True
    )
    assert ledger.find_fingerprint("f" * 64).id == "b4" and ledger.find_fingerprint("e" * 64) is None


def test_pruning_a_batch_forgets_its_fingerprint_but_not_a_newer_owner(ledger, tmp_path):
    root = str(tmp_path)
    for batch_id, fp in (("old", "a" * 64), ("older", "b" * 64), ("newer", "b" * 64)):
        ledger.create_batch(batch_id, make_requests(1, batch_id), output_root=root, fingerprint=fp)
        ledger.transition(batch_id, 0, "succeeded")
    assert ledger.prune_finished(before=float(ledger.redis.time()[0]) + 10, scan=2) == ["old", "older"]
    assert not ledger.redis.exists(ledger.keys.fingerprint("a" * 64))
    assert ledger.find_fingerprint("b" * 64).id == "newer"  # "older" did not take it away


# --- sent task ids, cancel and retry ---------------------------------------------------------------
def test_sent_task_ids_are_kept_per_item_and_returned_by_cancel(ledger, tmp_path):
    ledger.create_batch("b1", make_requests(3), output_root=str(tmp_path))
    assert ledger.mark_enqueued("b1", [0, 1, 2], task_ids=["t0", "t1", "t2"]) == 3
    for n in range(7):  # follow-ups and re-sends: only the last five are kept
        ledger.mark_enqueued("b1", [1], task_ids=[f"t1-{n}"])
    assert ledger.redis.hget(ledger.keys.item("b1", 1), "sent_tasks") == "t1-2 t1-3 t1-4 t1-5 t1-6"
    ledger.mark_enqueued("b1", [2])  # a send without an id (older workers) keeps the ones known
    assert ledger.redis.hget(ledger.keys.item("b1", 2), "sent_tasks") == "t2"
    with pytest.raises(ValueError):
        ledger.mark_enqueued("b1", [0, 1], task_ids=["only one"])
    ledger.transition("b1", 2, "running")
    result = ledger.cancel("b1")
    assert (result.canceled, result.finished) == (2, False)
    assert result.task_ids == ["t0", "t1-2", "t1-3", "t1-4", "t1-5", "t1-6"]  # not the running item's
    assert ledger.cancel("b1").task_ids == []  # nothing canceled now, nothing to revoke


def test_retry_after_cancel_lifts_the_cancel_once_nothing_runs(ledger, tmp_path):
    from shared.errors import StillCancelingError

    ledger.create_batch("b1", make_requests(4), output_root=str(tmp_path))
    ledger.transition("b1", 0, "failed")
    ledger.transition("b1", 1, "running")
    ledger.transition("b1", 2, "succeeded")
    assert ledger.cancel("b1").canceled == 1  # item 3
    with pytest.raises(StillCancelingError) as info:  # item 1 is still being canceled by its worker
        ledger.reset_failed("b1")
    assert info.value.open_items == 1 and ledger.is_canceled("b1")
    assert counts(ledger, "b1") == {"failed": 1, "running": 1, "succeeded": 1, "canceled": 1}
    ledger.transition("b1", 1, "canceled")
    assert ledger.batch("b1").finished

    assert ledger.reset_failed("b1") == [0]  # only the failed one, and the cancel is lifted for it
    info = ledger.batch("b1")
    assert not info.canceled and not ledger.is_canceled("b1") and not info.finished
    assert counts(ledger, "b1") == {"pending": 1, "succeeded": 1, "canceled": 2}
    ledger.transition("b1", 0, "succeeded")
    assert ledger.batch("b1").finished

    # A finished batch has nothing to cancel: it is not flagged (issue 18.5).
    assert ledger.cancel("b1").already_finished and not ledger.is_canceled("b1")
    assert ledger.reset_failed("b1") == []  # nothing failed
    assert ledger.reset_failed("b1", include_canceled=True) == [1, 3]
    assert not ledger.is_canceled("b1")
    item = ledger.item("b1", 3)
    assert (item.status, item.attempt, item.error) == ("pending", 2, None)
    assert counts(ledger, "b1") == {"pending": 2, "succeeded": 2}
