# `make run` and `make test` bootstrap .venv from pyproject.toml; nothing needs installing by hand.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test check test-sqlite test-postgres bench bench-sweep bench-acme bench-scep bench-metrics bench-est schema migrations clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/keyward db upgrade
	$(BIN)/keyward demo
	$(BIN)/keyward serve --with-worker --host 127.0.0.1 --port 8000

check: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy api core models pki worker agent bench

test-sqlite: $(STAMP)
	scripts/ensure-test-tools
	KEYWARD_TEST_DB=sqlite $(BIN)/pytest -q

test-postgres: $(STAMP)
	scripts/ensure-postgres
	scripts/ensure-test-tools
	KEYWARD_TEST_DB=postgres $(BIN)/pytest -q

test: check test-sqlite test-postgres

bench: $(STAMP)
	scripts/ensure-postgres
	$(BIN)/python -m bench.issuance

bench-sweep: $(STAMP)
	scripts/ensure-postgres
	$(BIN)/python -m bench.sweep

bench-acme: $(STAMP)
	scripts/ensure-test-tools
	$(BIN)/python -m bench.acme_load

bench-est: $(STAMP)
	scripts/ensure-postgres
	$(BIN)/python -m bench.est_load

bench-scep: $(STAMP)
	scripts/ensure-test-tools
	$(BIN)/python -m bench.scep_load

bench-metrics: $(STAMP)
	scripts/ensure-postgres
	$(BIN)/python -m bench.metrics_scrape

schema: $(STAMP)
	$(BIN)/keyward schema > schema.graphql

migrations: $(STAMP)
	$(BIN)/tortoise -c core.tortoise_cli_config.TORTOISE_ORM makemigrations

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
