# Two entry points for a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

.PHONY: install run test lint test-unit test-integration test-e2e test-browser
install: $(STAMP)

run: $(STAMP)
	$(BIN)/mediatasks serve

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports
	$(BIN)/mypy

# The tiers: unit (no services, seconds), integration (PostgreSQL, local HTTP), e2e (the service as
# processes), browser (chromium). `make test` runs lint and every tier, as CI does (.ci/run).
# Test files run on TEST_WORKERS processes (pytest-xdist): a file's tests stay on one process, so a
# module's service starts once; each process has its own databases, schemas and ports. TEST_WORKERS=0: one.
TEST_WORKERS ?= 2
PARALLEL := $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist loadfile)
test-unit: $(STAMP)
	$(BIN)/python -m pytest tests/unit -q $(PYTEST_ARGS)

test-integration: $(STAMP)
	$(BIN)/python -m pytest tests/integration -q $(PARALLEL) $(PYTEST_ARGS)

test-e2e: $(STAMP)
	$(BIN)/python -m pytest tests/e2e -q $(PARALLEL) $(PYTEST_ARGS)

test-browser: $(STAMP)
	$(BIN)/python -m pytest tests/browser -q $(PYTEST_ARGS)

test: lint
	$(BIN)/python -m pytest $(PARALLEL) $(PYTEST_ARGS)
