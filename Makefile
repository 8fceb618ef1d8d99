# One command to run the platform, one to test it. Both set themselves up.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYX := $(wildcard core_ext/*.pyx core_ext/*.pxd)
# make loadtest: defaults, override on the command line (make loadtest USERS=1000 DURATION=2m)
USERS ?= 100
SPAWN_RATE ?= 50
DURATION ?= 60s
FUZZ_SECONDS ?= 300
CHAOS_ARGS ?=
API_EXAMPLES ?= 25

.PHONY: install build tools run test lint typecheck pytest bench fuzz loadtest chaos clean cluster cluster-stop cluster-status cluster-test

$(STAMP): pyproject.toml setup.py
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP) build

# Rebuild the compiled core in place whenever a .pyx/.pxd changed (a no-op otherwise).
build: $(STAMP)
	@$(BIN)/python setup.py -q build_ext --inplace
	@$(BIN)/python -c "import core_ext" 

# Machine tools the tests need beyond Python packages: promtool for the alert-rule tests,
# PHP's SoapClient for the test that runs seed 002's own PHP example.
# Headless Chromium (+ driver, CJK font) for the operator console's browser tests.
# wrk for the benchmark's HTTP figures (and the test of its Lua script).
tools:
	@sh scripts/ensure_promtool.sh
	@sh scripts/ensure_php_soap.sh
	@sh scripts/ensure_chromium.sh
	@sh scripts/ensure_wrk.sh

run: install
	$(BIN)/rechargectl serve --demo

lint: install
	$(BIN)/ruff check .

typecheck: install
	$(BIN)/mypy app recharge server http_api core_ext loadtest chaos cluster bench

pytest: install tools
	$(BIN)/python -m pytest

test: lint typecheck pytest

# make bench: every figure with its spread → bench/results.json, docs/BENCHMARKS.md (not part of
# make test). BENCH_ARGS="--quick" tries the tooling at tiny sizes; "--only bench_dd" one module.
BENCH_ARGS ?=
bench: install
	@sh scripts/ensure_wrk.sh
	$(BIN)/python -m bench.run_all $(BENCH_ARGS)

# make chaos: the long chaos run (docs/RELIABILITY.md); override on the command line
# (make chaos CHAOS_ARGS="--seed 42 --duration 300 --kills 20").
chaos: install
	$(BIN)/python -m chaos.run --report docs/RELIABILITY.md --api-examples $(API_EXAMPLES) $(CHAOS_ARGS)

fuzz: install
	$(BIN)/python -m tests.fuzz_decoder --seconds $(FUZZ_SECONDS)

loadtest: install
	$(BIN)/python -m loadtest.run --users $(USERS) --spawn-rate $(SPAWN_RATE) --duration $(DURATION)

# A real cluster on this machine: etcd, PostgreSQL x2 under Patroni (synchronous standby),
# HAProxy, $(NODES) platform nodes (docs/SCALING.md). Files under var/cluster.
NODES ?= 2
cluster: install
	@sh scripts/ensure_cluster_tools.sh
	$(BIN)/python -m cluster up --nodes $(NODES)

cluster-stop:
	$(BIN)/python -m cluster down --nodes 3

cluster-status:
	$(BIN)/python -m cluster status --nodes $(NODES)

# Failover under load: node kill, node drain, primary kill; nothing acknowledged lost.
cluster-test: install
	@sh scripts/ensure_cluster_tools.sh
	$(BIN)/python -m cluster test

clean:
	rm -rf build core_ext/*.c core_ext/*.so core_ext/*.html
