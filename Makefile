# nautilus-mesh: `make run` runs the mesh, `make test` runs every check. Both set up .venv first.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
DURATION ?= 0
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | sha1sum | cut -c1-12)
CONTRACT_RELEASE := protos/releases/v1.binpb
NODE_DIR := clients/node
NODE_STAMP := $(NODE_DIR)/node_modules/.installed-$(shell cat $(NODE_DIR)/package-lock.json | sha1sum | cut -c1-12)

.PHONY: install run test lint typecheck protos protos-check docs docs-check buf-lint buf-breaking release-contract rules pytest node-test bench bench-micro clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	rm -f $(VENV)/.installed-* && touch $(STAMP)

install: $(STAMP)

# OPS_WORKERS=2 runs ops as two workers; they share PostgreSQL, so pass OPS_DATABASE_URL=postgresql://... too unless
# ops.json has one (docs/scale-out.md). Unset, ops.json decides.
OPS_WORKERS ?=
OPS_DATABASE_URL ?=
run: install
	OPS_WORKERS="$(OPS_WORKERS)" OPS_DATABASE_URL="$(OPS_DATABASE_URL)" $(BIN)/nautilus-mesh up --duration $(DURATION)

test: install lint typecheck buf-lint buf-breaking protos-check docs-check rules pytest node-test

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: install
	$(BIN)/mypy

protos: install
	$(PY) scripts/gen_protos.py

protos-check: install
	$(PY) scripts/gen_protos.py --check

# docs/api.md, docs/configuration.md and docs/metrics.md are generated from the protos, the config models and the
# metric registries; docs-check fails when they no longer match the code.
docs: install
	$(PY) scripts/gen_docs.py

docs-check: install
	$(PY) scripts/gen_docs.py --check

buf-lint: install
	$(BIN)/buf lint

# Breaking-change check against the last released contract, an image kept in the repo.
buf-breaking: install
	$(BIN)/buf breaking --against $(CONTRACT_RELEASE)

# Run when a contract is released: the image the next changes are checked against.
release-contract: install
	$(BIN)/buf build -o $(CONTRACT_RELEASE)

# Prometheus recording and alerting rules: syntax, the compose config that loads them, and their unit tests.
PROMTOOL ?= promtool
rules:
	@command -v $(PROMTOOL) >/dev/null 2>&1 || { echo "error: promtool not found; install the Debian package: apt-get install -y prometheus (.ci/run does)" >&2; exit 1; }
	$(PROMTOOL) check rules deploy/prometheus/rules/*.yml
	$(PROMTOOL) check config deploy/prometheus/prometheus.yml
	$(PROMTOOL) test rules deploy/prometheus/tests/*.yml

pytest: install
	$(BIN)/pytest -q

# The TypeScript client (clients/node): npm ci from the committed lockfile (again only when it changes), types
# generated from protos/, tsc, then node's test runner against a mesh the tests start from .venv.
$(NODE_STAMP): $(NODE_DIR)/package-lock.json
	cd $(NODE_DIR) && npm ci --no-audit --no-fund --ignore-scripts
	touch $(NODE_STAMP)

node-test: install $(NODE_STAMP)
	cd $(NODE_DIR) && rm -rf dist src/gen && npm run --silent build && npm test

# One run, one table (see docs/performance.md); BENCH_ARGS="--duration 30" for a 30 s open loop.
BENCH_ARGS ?=
bench: install
	mkdir -p var/bench
	$(PY) benchmarks/bench_mesh.py --json var/bench/mesh.json --plot var/bench/latency-vs-rate.png $(BENCH_ARGS)

# The engine alone: matching engine and the engine's per-order work (EngineCore.execute on frames); the latency
# floor of this machine (one gRPC hop between two processes, one fsync).
bench-micro: install
	$(PY) benchmarks/bench_matching.py
	$(PY) benchmarks/bench_engine.py
	$(PY) benchmarks/bench_hop.py

clean:
	rm -rf var .pytest_cache .mypy_cache .ruff_cache $(NODE_DIR)/dist $(NODE_DIR)/src/gen
