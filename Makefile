# Tributary: one workspace, one lock file. `make help` lists the targets.
SHELL := /bin/bash
UV ?= uv
PYTEST_ARGS ?=
MYPY_PATHS = $(shell find libs services bench tests simulators deploy -name '*.py' -not -path '*/.venv/*' 2>/dev/null)

.PHONY: help install test e2e soak lint fmt bench clean promtool

help:
	@echo "install  create .venv and install every workspace member from uv.lock"
	@echo "test     unit + integration tests of libs/common and every service (real Redis/PostgreSQL/MySQL)"
	@echo "e2e      all five services as processes, with faults (SIGKILL, Redis restart, PostgreSQL outage)"
	@echo "compose-e2e  the system in containers (docker compose, demo profile), with a docker kill"

	@echo "soak     the whole system for a simulated month (~10.5 min): footprint per day, bounded growth"
	@echo "lint     ruff (lint + format check) and mypy --strict"
	@echo "promtool install promtool (checks the alert rules; tests/deploy/test_monitoring.py)"
	@echo "fmt      ruff format + autofix"
	@echo "bench    benchmarks under bench/ (print JSON figures)"
	@echo "demo     the whole system as local processes with simulators and a live view"
	@echo "tail     follow a stream: make tail STREAM=alerts"

install:
	@command -v $(UV) >/dev/null || python3 -m pip install --quiet uv
	$(UV) sync --all-packages --locked --compile-bytecode
	@# the workspace's own code is installed editable, so compiled here: as in the images,
	@# a process reads bytecode instead of compiling every module at each start
	@# (python -m <service> --help: 3 s -> 1 s where PYTHONDONTWRITEBYTECODE is set)
	.venv/bin/python -m compileall -q -j 0 libs/common/src libs/testing/src services/*/src simulators/src

# two pytest-xdist workers (the machine has 2 cores): about a quarter less wall time
# than one process (README "Tests"); --dist loadscope keeps a module on one worker, so
# a module fixture (tests/integration/test_poison.py starts all five services) runs
# once. `make test PYTEST_XDIST=` runs in one process.
PYTEST_XDIST ?= -n 2 --dist loadscope

test: install
	$(UV) run pytest $(PYTEST_XDIST) --durations=25 $(PYTEST_ARGS)

# the whole system with faults (tests/integration, ~5 min; docs/demo.md)
e2e: install
	$(UV) run pytest tests/integration -m e2e -v $(PYTEST_ARGS)

# the system in containers: build, compose up with the demo profile, check, down -v
# (tests/compose; needs a Docker engine and Compose v2; docs/deploy.md)
.PHONY: compose-e2e
compose-e2e: install
	$(UV) run pytest tests/compose -m compose -v -s $(PYTEST_ARGS)

# a simulated month of the whole system with faults, its footprint sampled daily
# (tests/integration/test_soak.py, ~10.5 min; docs/operations.md "Retention and footprint").
# Shorter while developing (~4 min): make soak SOAK_DAYS=20 SOAK_DAY_SECONDS=10 SOAK_HORIZON_DAYS=4 SOAK_WEEK_DAYS=3
soak: install
	$(UV) run pytest tests/integration/test_soak.py -m soak -v -s $(PYTEST_ARGS)

lint: install
	$(UV) run ruff check .
	$(UV) run ruff format --check .
	$(UV) run mypy $(MYPY_PATHS)

fmt: install
	$(UV) run ruff format .
	$(UV) run ruff check --fix .

bench: install
	for b in bench/[!_]*.py; do m=$$(basename $$b .py); echo "== bench.$$m"; $(UV) run python -m bench.$$m || exit 1; done

# promtool, which checks and unit-tests the alert rules (tests/deploy/test_monitoring.py
# fails without it): when missing, taken out of Debian's prometheus package, unpacked
# rather than installed, so no Prometheus server is installed or started (needs root)
PROMTOOL_DIR ?= /usr/local/bin
promtool:
	@command -v promtool >/dev/null || { \
	  set -e; tmp=$$(mktemp -d); cd "$$tmp"; \
	  apt-get update -qq; apt-get download prometheus; \
	  dpkg-deb -x prometheus_*.deb root; install -m 0755 root/usr/bin/promtool $(PROMTOOL_DIR)/promtool; \
	  cd /; rm -rf "$$tmp"; }
	promtool --version | head -n1

clean:
	rm -rf .venv .mypy_cache .ruff_cache .pytest_cache

STREAM ?= alerts
.PHONY: tail demo
tail: install
	$(UV) run python -m tributary tail $(STREAM)

# the five services + simulators as local processes, with a live view (docs/demo.md)
DEMO_ARGS ?=
demo: install
	$(UV) run python -m simulators.demo $(DEMO_ARGS)

# -- docker compose (docs/deploy.md) ----------------------------------------------------
# make up                       infrastructure + five services (secrets from .env)
# make up COMPOSE_FLAGS="--env-file deploy/compose/demo.env --profile demo"   the demo
COMPOSE ?= docker compose
COMPOSE_FLAGS ?=
SERVICE ?=
.PHONY: up down logs

up:
	$(COMPOSE) $(COMPOSE_FLAGS) up -d --build

down:
	$(COMPOSE) $(COMPOSE_FLAGS) down --remove-orphans

logs:
	$(COMPOSE) $(COMPOSE_FLAGS) logs -f --tail=200 $(SERVICE)
