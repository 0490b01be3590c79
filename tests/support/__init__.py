"""Everything the tests share, in one place (no tests here).

Fixture modules are registered as plugins in tests/conftest.py (`pytest_plugins`), so a test asks for
a fixture by name and never imports it; helpers are imported from their module:

    redis_db        the real Redis test database: redis_url, key_prefix, redis_client, settings
    sim             the Replicate stand-in: sim, sim_factory; wait_quiet (its ledger stops changing)
    workers         real `celery -A workers worker` processes: worker_factory, compose_worker
    limiter         in-process limiters: make_limiter; start_waiter, lose_limiter_state, redis_now
    limiter_checks  invariants over grant logs (overlap, windows)
    limiter_procs   child-process bodies for the limiter's multi-process tests
    pipeline        the worker pipeline run inside the test process
    e2e             submit a batch to real workers and wait for it
    flower          a stub Celery worker and a real Flower: stub_fleet
    bench           network-namespace hosts for the bench harness tests
    wait            wait_until: the one way a test waits for something
"""
