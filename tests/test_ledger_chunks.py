"""Recording a large batch never blocks Redis for long: its items are staged in chunks and the
batch recorded in one short call, so every limiter call of the fleet waits a few ms at most
behind it; and the batch is still all or nothing. Real Redis."""

from __future__ import annotations

import dataclasses
import time

import redis

from shared.keys import Keys
from shared.ledger import CREATE_CHUNK, Ledger
from tests.test_ledger import make_requests
from workers.recovery import Sweeper


class TimedRedis(redis.Redis):
    """A client that notes every command it sends: its name, its number of keys (EVALSHA), its
    time as the client sees it."""

    calls: list[tuple[str, int, float]]

    def execute_command(self, *args, **options):
        began = time.perf_counter()
        try:
            return super().execute_command(*args, **options)
        finally:
            name = str(args[0]).upper()
            keys = int(args[2]) if name in ("EVALSHA", "EVAL") else 0
            self.calls.append((name, keys, time.perf_counter() - began))


def test_a_batch_of_20000_items_is_recorded_in_short_calls(redis_client, key_prefix, tmp_path):
    client = TimedRedis(connection_pool=redis_client.connection_pool)
    client.calls = []
    ledger = Ledger(client, Keys(key_prefix))
    requests = make_requests(20_000, "b-big")
    client.calls.clear()
    assert ledger.create_batch("b-big", requests, output_root=str(tmp_path))
    scripts = [(keys, took) for name, keys, took in client.calls if name in ("EVALSHA", "EVAL")]
    most_keys = max(keys for keys, _ in scripts)
    longest = max(took for _, took in scripts)
    print(
        f"{len(scripts)} script calls; the most keys in one: {most_keys}; the longest: {longest * 1000:.1f} ms"
    )
    assert most_keys <= CREATE_CHUNK + 10 <= 1000  # a few ms of Redis each, whatever the batch size
    info = ledger.batch("b-big")
    assert info.total == 20_000 and info.counts["pending"] == 20_000
    assert ledger.item("b-big", 19_999).request.prompt == "prompt number 19999"
    assert redis_client.ttl(Keys(key_prefix).item("b-big", 12_345)) == -1  # kept: persisted
    assert redis_client.zcard(Keys(key_prefix).batch_live("b-big")) == 20_000
    assert ledger.staged_batches() == []


def test_a_producer_dying_between_chunks_leaves_no_batch_and_nothing_runnable(
    settings, redis_client, key_prefix, tmp_path
):
    keys = Keys(key_prefix)
    ledger = Ledger(redis_client, keys)
    requests = make_requests(1200, "b-half")
    assert ledger._stage("b-half", requests[:CREATE_CHUNK], "dead-producer", first=True) == 1  # ... then died
    assert ledger.batch("b-half") is None
    assert "b-half" not in [b.id for b in ledger.list_batches(100)]
    unfinished, no_manifest = ledger.batches_to_look_after()
    assert "b-half" not in unfinished and "b-half" not in no_manifest
    assert 0 < redis_client.ttl(keys.item("b-half", 0))  # staged items expire by themselves
    Sweeper(settings.with_(key_prefix=key_prefix), redis_client, app=None, quiet=0.0).sweep()
    assert ledger.batch("b-half") is None
    # The id is held for the dead producer a short while; then a new submission records it whole.
    redis_client.pexpire(keys.batch_key("b-half", "staging"), 1)
    time.sleep(0.05)
    changed = make_requests(1200, "b-half")
    changed[0] = dataclasses.replace(changed[0], prompt="the new first prompt")
    assert ledger.create_batch("b-half", changed, output_root=str(tmp_path))
    assert ledger.item("b-half", 0).request.prompt == "the new first prompt"
    assert ledger.batch("b-half").total == 1200 and redis_client.ttl(keys.item("b-half", 0)) == -1


def test_a_batch_recorded_by_a_producer_that_died_before_persisting_is_kept_by_the_sweep(
    settings, redis_client, key_prefix, tmp_path, monkeypatch
):
    keys = Keys(key_prefix)
    ledger = Ledger(redis_client, keys)
    monkeypatch.setattr(Ledger, "persist_staged", lambda self, batch_id: None)  # died right there
    assert ledger.create_batch("b-rec", make_requests(600, "b-rec"), output_root=str(tmp_path))
    monkeypatch.undo()
    assert 0 < redis_client.ttl(keys.item("b-rec", 599)) and ledger.staged_batches() == ["b-rec"]
    Sweeper(settings.with_(key_prefix=key_prefix), redis_client, app=None, quiet=3600.0).sweep()
    assert redis_client.ttl(keys.item("b-rec", 599)) == -1 and ledger.staged_batches() == []
