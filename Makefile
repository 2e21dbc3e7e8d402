# bkr: `make run` to see it work, `make test` to check it. Both set up what they need.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DB ?= sqlite:///bkr.db

.PHONY: run test lint typecheck check bench clean postgres-start postgres-stop

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

## run: load the demo (a closed month and one in progress) into ./bkr.db if empty and print it
run: $(STAMP)
	$(BIN)/bkr demo --db $(DB)

## test: start a throwaway PostgreSQL, run lint, types and the whole suite on SQLite and PostgreSQL
test: $(STAMP)
	@set -e; url=$$(scripts/postgres.sh start); \
	trap 'scripts/postgres.sh stop' EXIT; \
	$(BIN)/ruff check src tests bench; \
	$(BIN)/mypy; \
	BKR_TEST_PG_URL=$$url $(BIN)/pytest -n 2 -q $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check src tests bench

typecheck: $(STAMP)
	$(BIN)/mypy

## bench: the ingest and close benchmark on both databases (1M fills; BENCH_ARGS=--fills 10000000)
bench: $(STAMP)
	@set -e; url=$$(scripts/postgres.sh start); \
	trap 'scripts/postgres.sh stop' EXIT; \
	$(BIN)/python bench/ingest_close.py --pg $$url $(BENCH_ARGS)

clean:
	scripts/postgres.sh stop
	rm -rf .pg $(VENV) bkr.db bkr.db-wal bkr.db-shm .pytest_cache .mypy_cache .ruff_cache
