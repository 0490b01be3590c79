# Two commands for a fresh machine: `make demo` (whole pipeline on the stand-in) and `make test`.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: venv demo check test test-fast bench clean

$(BIN)/producer: pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $(BIN)/producer

venv: $(BIN)/producer

demo: venv
	$(BIN)/python -m examples.demo

# Two test processes, a file each at a time: the tests mostly wait on workers, Redis and the
# stand-in, so two of them share 2 cores well (tests/support/redis_db.py gives each its own database).
PYTEST := $(BIN)/python -m pytest -q -n 2 --dist loadfile

# What CI runs before the tests: lint (pyflakes, bugbear, import order, pyupgrade), format, and
# types (mypy over shared, producer, workers, replicate_sim; settings in pyproject.toml).
check: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test: venv
	$(PYTEST)

# The unit tier (tests marked `unit`: no server, no process; the ledger's Lua on fakeredis), in
# seconds: one process (starting xdist workers would cost more than the tests take), and only the
# files that hold unit tests are imported.
UNIT_FILES = $(shell grep -l -e 'mark\.unit' -e 'redis_or_fakeredis' tests/test_*.py)

test-fast: venv
	$(BIN)/python -m pytest -q -n 0 -m unit $(UNIT_FILES)

bench: venv
	$(BIN)/pip install -q -e '.[bench]'
	$(BIN)/python -m bench.limiter_bench
	$(BIN)/python -m bench.run --all

clean:
	rm -rf $(VENV) output .pytest_cache
