# bkr: `make run` to see it work, `make test` to check it. Both set up what they need.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DB ?= sqlite:///bkr.db
DEMO_KEYS ?= bkr-demo-keys.txt
PORT ?= 8000
CHROMIUM := /usr/bin/chromium
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: java run test lint typecheck check bench bench-http bench-venue bench-settle bench-dashboard chromium clean postgres-start postgres-stop

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev,lake]'
	touch $(STAMP)

## run: load the demo (a closed month and one in progress) into ./bkr.db if empty, print it, make its
## named operators (an admin, two approvers, an operator, a viewer) and a broker key, print their keys
## (kept in $(DEMO_KEYS)) and serve the dashboard and the HTTP API on http://localhost:$(PORT) (Ctrl-C stops it)
run: $(STAMP)
	$(BIN)/bkr demo --db $(DB)
	@set -e; printf '\nOperators and their keys (each signs in to the dashboard; BKR_OPERATOR_KEY=<key> for the CLI):\n'; \
	scripts/demo-keys.sh $(BIN)/bkr $(DB) $(DEMO_KEYS) | sed 's/^/  /'; \
	printf '  (admin: everything, operators and keys; alice, bob: approve and settle, two of them for four eyes;\n'; \
	printf '   olga: enroll, import, close; vera: reads; broker: broker 1400 signs in with this secret)\n'; \
	printf '\nDashboard:   http://localhost:$(PORT)/dashboard\n'; \
	printf 'Post fills:  curl -H "Authorization: Bearer <olga'"'"'s key>" -H "Content-Type: application/x-ndjson" \\\n'; \
	printf '               --data-binary @fills.ndjson http://localhost:$(PORT)/v1/fills\n'; \
	printf 'Trade on the sandbox venue (in another terminal; the dashboard moves with it):\n'; \
	printf '  BKR_OPERATOR_KEY=<olga'"'"'s key> .venv/bin/bkr simulate --live --url http://localhost:$(PORT) --db $(DB)\n\n'
	$(BIN)/bkr serve --db $(DB) --port $(PORT)

## chromium: Debian's Chromium, which the dashboard's browser tests drive (Playwright downloads no browser)
chromium:
	@test -x $(CHROMIUM) || { echo "installing Debian's chromium for the browser tests"; \
	  $(SUDO) apt-get install -y chromium || { $(SUDO) apt-get update && $(SUDO) apt-get install -y chromium; }; }

## java: Debian's headless Java 17, which Spark (`bkr lake`, its tests) runs on, if no `java` is on the machine
java:
	@command -v java >/dev/null || { echo "installing Debian's headless Java for Spark"; \
	  $(SUDO) apt-get install -y openjdk-17-jre-headless || { $(SUDO) apt-get update && $(SUDO) apt-get install -y openjdk-17-jre-headless; }; }

## test: start a throwaway PostgreSQL, run lint, the import layers, types and the whole suite on SQLite and PostgreSQL
test: $(STAMP) chromium java
	@set -e; was=$$(scripts/postgres.sh status); url=$$(scripts/postgres.sh start); \
	trap '[ "$$was" = up ] || scripts/postgres.sh stop' EXIT; \
	$(BIN)/ruff check src tests bench; \
	$(BIN)/lint-imports; \
	$(BIN)/mypy; \
	BKR_TEST_PG_URL=$$url $(BIN)/pytest -n 2 -q $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/lint-imports

typecheck: $(STAMP)
	$(BIN)/mypy

## bench: the ingest and close benchmark on both databases (1M fills; BENCH_ARGS=--fills 10000000)
bench: $(STAMP)
	@set -e; was=$$(scripts/postgres.sh status); url=$$(scripts/postgres.sh start); \
	trap '[ "$$was" = up ] || scripts/postgres.sh stop' EXIT; \
	$(BIN)/python bench/ingest_close.py --pg $$url $(BENCH_ARGS)

## bench-http: HTTP ingest beside the direct import, and the broker summary's latency under 50 clients
## on a 10M-fill month (BENCH_ARGS="--summary-fills 1000000 --seconds 10" for a shorter run)
bench-http: $(STAMP)
	@set -e; was=$$(scripts/postgres.sh status); url=$$(scripts/postgres.sh start); \
	trap '[ "$$was" = up ] || scripts/postgres.sh stop' EXIT; \
	$(BIN)/python bench/http.py --pg $$url $(BENCH_ARGS)

## bench-venue: the venue's matching, order entry in process and over HTTP (1 and 32 clients), and
## the cost of attribution, on SQLite and PostgreSQL (BENCH_ARGS=--quick for a short run)
bench-venue: $(STAMP)
	@set -e; was=$$(scripts/postgres.sh status); url=$$(scripts/postgres.sh start); \
	trap '[ "$$was" = up ] || scripts/postgres.sh stop' EXIT; \
	$(BIN)/python bench/venue.py --pg $$url $(BENCH_ARGS)

## bench-settle: settling 1,000 statements beside the commit rate, and reconciling a month of 1M fills,
## on SQLite and PostgreSQL (BENCH_ARGS="--fills 10000000" for the 10M-fill month)
bench-settle: $(STAMP)
	@set -e; was=$$(scripts/postgres.sh status); url=$$(scripts/postgres.sh start); \
	trap '[ "$$was" = up ] || scripts/postgres.sh stop' EXIT; \
	$(BIN)/python bench/settle.py --pg $$url $(BENCH_ARGS)

## bench-dashboard: server-side render time of every dashboard page on a month of 1M fills, on SQLite
## and PostgreSQL (BENCH_ARGS="--fills 10000000" for the 10M-fill month)
bench-dashboard: $(STAMP)
	@set -e; was=$$(scripts/postgres.sh status); url=$$(scripts/postgres.sh start); \
	trap '[ "$$was" = up ] || scripts/postgres.sh stop' EXIT; \
	$(BIN)/python bench/dashboard.py --pg $$url $(BENCH_ARGS)

clean:
	scripts/postgres.sh stop
	rm -rf .pg $(VENV) bkr.db bkr.db-wal bkr.db-shm $(DEMO_KEYS) .pytest_cache .mypy_cache .ruff_cache tests/browser/artifacts
