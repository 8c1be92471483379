# One command set for people, hooks and CI.
PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test lint typecheck unit bench bench-pipeline bench-sim bench-bus bench-streams bench-stream-calls demo clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

## run: the whole service in one process on embedded defaults, with the built-in simulator and a demo
run: $(STAMP)
	TRADEWIRE_LOG_FORMAT=$${TRADEWIRE_LOG_FORMAT:-console} $(BIN)/tradewire run --demo

## demo: the demo scenario to completion; last line is a JSON summary
demo: $(STAMP)
	$(BIN)/tradewire demo

## lint: ruff and mypy (strict) on the package
lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/mypy

## test: lint, then the whole suite (services: PostgreSQL, Redis; skipped locally when absent, required in CI)
test: lint
	$(BIN)/pytest

unit: $(STAMP)
	$(BIN)/pytest tests/unit

## bench: every benchmark; each prints one JSON object on its last line
bench: bench-pipeline bench-sim bench-bus bench-streams bench-stream-calls

bench-pipeline: $(STAMP)
	$(BIN)/python bench/pipeline.py

## bench-sim: simulator throughput (signed orders/s, user-data events/s over 5,000 listenKeys)
bench-sim: $(STAMP)
	$(BIN)/python bench/sim.py

## bench-bus: publish p99 at 1,000 msg/s and events/s + commit p99 through TWO worker processes
## on PostgreSQL, for Redis, RabbitMQ and the embedded bus (needs PostgreSQL, Redis, RabbitMQ)
bench-bus: $(STAMP)
	$(BIN)/python bench/bus.py

## bench-streams: one `streams` process with 5,000 accounts (memory, ingest events/s, publish p99,
## keepalive spread), then two pods with 2,000 accounts: SIGKILL failover and a rolling restart
## with fills counted in PostgreSQL (needs PostgreSQL and Redis; uses Redis DB 3, flushed)
bench-streams: $(STAMP)
	$(BIN)/python bench/streams.py

## bench-stream-calls: client CPU of a streams pod's work on its event loop: one socket's
## messages (paced and in bursts), the keepalive PUT (httpx vs LeanHttp), the listing digest
## (session vs held connection), a 256-shard lease round (redis-py vs the lean pipe)
bench-stream-calls: $(STAMP)
	$(BIN)/python bench/stream_calls.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
