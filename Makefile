# Bazaar — the two commands a new user needs, and a few more.
#   make run    start the local stack (RabbitMQ + PostgreSQL as plain processes, data in .run/)
#   make test   start the stack if needed, then build and run every test against it
#   make stop   stop what `make run` / `make test` started
#   make chaos  the chaos suite: faults injected under load, invariants checked (CHAOS_PROFILE=ci: short)
#   make bench  the benchmark: raw capacity, a ladder of rates, history; table, JSON, chart (BENCH_ARGS=--quick)
# See README.md. Ports and credentials: scripts/stack.sh --help.

SHELL := /usr/bin/env bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

STACK := scripts/stack.sh
SERVICES := scripts/services.sh
VENV := .run/venv
# Serial: some integration tests restart the broker or close every connection, which would
# disturb tests running beside them in other suites. The whole run takes seconds.
SWIFT_TEST_FLAGS ?= --no-parallel

# The chaos suite's profile: full (10,000 orders) or ci (the short run CI does on every change).
CHAOS_PROFILE ?= full
# The benchmark's options (Tests/Bench/bench.py --help): e.g. --quick, --rates 100,250,500, --duration 30.
BENCH_ARGS ?=
# Release binaries built as the Dockerfile builds them (the container test shares this build).
RELEASE_FLAGS := -c release --static-swift-stdlib --scratch-path .build-release
SERVICE_NAMES := order inventory payment notification

.PHONY: help run stop status test build clean chaos bench python-tools

help: ## Show the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-8s %s\n", $$1, $$2}'

run: ## Start the whole system: RabbitMQ, PostgreSQL and the four services, with demo data
	@$(STACK) up
	@$(SERVICES) up
	@echo
	@echo "Bazaar runs. The services (credentials and every other setting: .run/stack.env):"
	@sed -n 's/^\(ORDER\|INVENTORY\|PAYMENT\|NOTIFICATION\)_URL=/  \1_URL=/p' .run/stack.env
	@echo
	@echo "Place an order and watch its saga:  .build/debug/bazaar order place --customer alice --item MUG-01:2"
	@echo "Or over HTTP, as alice (the APIs want a bearer token):"
	@echo "  TOKEN=\$$(.build/debug/bazaar token --customer alice)"
	@echo "  curl -s -X POST localhost:8080/orders -H \"authorization: Bearer \$$TOKEN\" -H 'content-type: application/json' \\"
	@echo "    -d '{\"customerId\":\"alice\",\"items\":[{\"sku\":\"MUG-01\",\"quantity\":2}]}'"
	@echo "  curl -s localhost:8080/orders -H \"authorization: Bearer \$$TOKEN\""
	@echo "Logs in .run/logs/. Stop everything with: make stop"

stop: ## Stop the services and the local stack
	@$(SERVICES) down
	@$(STACK) down

status: ## Say what runs
	@$(STACK) status
	@$(SERVICES) status

build: ## Build everything (debug)
	swift build --build-tests

test: python-tools ## Run all tests against a real RabbitMQ and PostgreSQL (starts the stack if needed)
	@$(STACK) up
	@echo "==> building and running the tests (the first build takes a few minutes)"
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" swift test $(SWIFT_TEST_FLAGS)
	@echo "==> checking the deployment files (compose, Kubernetes, the container's runtime libraries)"
	$(VENV)/bin/python3 -m pytest -q -p no:cacheprovider Tests/Deploy

chaos: python-tools ## The chaos suite: 2 instances per service, faults under load, invariants (CHAOS_PROFILE=ci|full)
	@echo "==> building the four services (release, as the Dockerfile does; the first build takes a few minutes)"
	@for s in $(SERVICE_NAMES); do swift build $(RELEASE_FLAGS) --product $$s-service; done
	@# Its own stack (ports 5683/5443, data in .run/chaos): the faults never touch `make run`'s.
	$(VENV)/bin/python3 Tests/Chaos/chaos.py --profile $(CHAOS_PROFILE) --bin-dir "$$(swift build $(RELEASE_FLAGS) --show-bin-path)"

bench: python-tools ## The benchmark: raw capacity, orders/s and latency at rising rates, with history (BENCH_ARGS=--quick)
	@echo "==> building the four services (as the Dockerfile does) and bazaar, in release (the first build takes a few minutes)"
	@for s in $(SERVICE_NAMES); do swift build $(RELEASE_FLAGS) --product $$s-service; done
	@swift build $(RELEASE_FLAGS) --product bazaar
	@# Its own stack (ports 5693/5453, data in .run/bench); results in .run/bench and docs/bench.
	$(VENV)/bin/python3 Tests/Bench/bench.py --write-docs --bin-dir "$$(swift build $(RELEASE_FLAGS) --show-bin-path)" \
	  $(BENCH_ARGS)

# Python tools from PyPI, in a virtual environment of our own (Debian's python3 refuses pip
# installs): jsonschema for the event schemas; check-jsonschema (the Compose specification),
# kubernetes-validate and PyYAML for the deployment files; pytest runs those; schemathesis fuzzes
# the order API from its OpenAPI document; pika lets the chaos suite publish as a service's user.
python-tools:
	@$(STACK) packages
	@[ -x $(VENV)/bin/python3 ] || python3 -m venv $(VENV)
	@$(VENV)/bin/python3 -c 'import jsonschema, rfc3339_validator, yaml, kubernetes_validate, check_jsonschema, pytest, schemathesis, pika' 2>/dev/null \
	  || { echo "==> installing the Python test tools (PyPI) into $(VENV)"; \
	       $(VENV)/bin/python3 -m pip install -q --disable-pip-version-check \
	         jsonschema rfc3339-validator check-jsonschema kubernetes-validate pyyaml pytest schemathesis pika; }

clean: ## Remove build output (not the stack's data: make stop, then rm -rf .run)
	rm -rf .build
