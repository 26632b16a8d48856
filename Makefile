# Every target bootstraps .venv itself: a fresh clone needs only Python 3.11 and make.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run run-smoke test test-scale test-stress bench bench-smoke lint clean

# Reinstall when pyproject.toml changes (the stamp is older than it).
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $(STAMP)

# make run PORT=3001 HOST=0.0.0.0: the UI's port and bind address (default dagster.port, dagster.host).
run: $(STAMP)
	$(BIN)/coco serve --home projects $(if $(PORT),--port $(PORT)) $(if $(HOST),--host $(HOST))

# make run on this checkout, checked: the UI up with every example project, the demo downloaded
# and imported, Ctrl-C, nothing left running (scripts/run_smoke.py; .ci/run runs it after make test).
run-smoke: $(STAMP)
	$(BIN)/python scripts/run_smoke.py

# scripts/test-services.sh installs Chromium for the browser test when missing and exports where it
# is (CORE4_TEST_*); it starts nothing and never fails, the test skips with its reason. What the tests
# start they stop (Chromium per test; the PostgreSQL test's own server from the pgserver wheel).
# pytest's own exit status is make's: failures and "no tests ran" (5) both fail the target.
# TEST_WORKERS=N runs the suite on N pytest-xdist workers (--dist loadfile keeps a file's tests on one
# worker and tests/live's shared stack on one: tests/conftest.py); 0 runs it in one process. The
# suite mostly waits (for sensor ticks, servers starting, runs launching): on 2 cores two workers
# took 597 s where one process took 1144 s (2026-12-05, since the shared live stack stops after
# its last test), so the default is 2.
TEST_WORKERS ?= 2
test: $(STAMP)
	eval "$$(bash scripts/test-services.sh)"; $(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile -m "not bench and not scale"

# The scale-out suite (tests/live/test_live_celery.py: Redis, PostgreSQL, coco serve and two Celery
# workers, kill -9 of a worker, the broker, the daemon); three minutes, so out of make test.
test-scale: $(STAMP)
	$(BIN)/python -m pytest -q -m scale

test-stress: $(STAMP)
	CORE4_STRESS=1 $(BIN)/python -m pytest -q -m stress

bench: $(STAMP)
	$(BIN)/python -m bench

# Every benchmark at a tiny size, and each result checked (tests/test_bench_smoke.py): they work.
bench-smoke: $(STAMP)
	$(BIN)/python -m pytest -q -m bench tests/test_bench_smoke.py

lint: $(STAMP)
	$(BIN)/python -m pip install -q ruff
	$(BIN)/ruff check core4_resources core4_pipelines tests bench projects

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache
