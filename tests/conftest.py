"""The suite's fixtures live in tests/support/ (one module per area) and are registered here, so
a test asks for them by name and never imports them. Helpers are imported from tests.support.*.

Real services: the Redis test database (tests/support/redis_db.py), the Replicate stand-in
(sim.py), real Celery workers (workers.py).
"""

pytest_plugins = [
    "tests.support.redis_db",
    "tests.support.sim",
    "tests.support.workers",
    "tests.support.limiter",
    "tests.support.flower",
    "tests.support.requirements",  # before objstore, which imports it
    "tests.support.objstore",
    "tests.support.unit",
    "pytester",
]
