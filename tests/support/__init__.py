"""Everything the tests share, in one place (no tests here).

Fixture modules are registered as plugins in tests/conftest.py (`pytest_plugins`), so a test asks for
a fixture by name and never imports it; helpers are imported from their module:

    redis_db        the real Redis test database: redis_url, key_prefix, redis_client, settings;
                    redis_or_fakeredis (a test twice: unit on fakeredis, then on the real Redis)
    sim             the Replicate stand-in: sim, sim_factory; wait_quiet (its ledger stops changing)
    workers         real `celery -A workers worker` processes: worker_factory, compose_worker,
                    messages_pending (on top of bench/processes.py, the harness bench/ uses too)
    limiter         in-process limiters: make_limiter; start_waiter, lose_limiter_state, redis_now;
                    children (spawned child processes, killed at the end of the test)
    limiter_checks  invariants over grant logs (overlap, windows)
    limiter_procs   child-process bodies for the limiter's multi-process tests
    attempt_path    the attempt path (workers/README.md) run inside the test process
    e2e             submit a batch to real workers and wait for it
    flower          a stub Celery worker and a real Flower: stub_fleet
    bench           network-namespace hosts for the bench harness tests
    browser         headless Chromium runs (DOM, network log, screenshots)
    requirements    @pytest.mark.needs(tool): skip where missing, fail where required (CI)
    unit            @pytest.mark.unit: the seconds-long tier, which may not use a server
    wait            wait_until: the one way a test waits for something
"""
