# The README's commands. Every target creates and uses .venv by itself.
SHELL := /bin/bash
.DEFAULT_GOAL := help
VENV ?= .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
PYTHON ?= $(shell for p in python3.13 python3.12 python3.11 python3; do command -v $$p >/dev/null && $$p -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null && { echo $$p; break; }; done)

.PHONY: help venv demo test test-unit test-integration test-images molecule bench lint system-deps hw-validate mutation

help:
	@echo "make demo      simulated fleet + fleetctl health (no root, no Docker, no GPU)"
	@echo "make test      unit and integration tests"
	@echo "make molecule  every role's Molecule scenario and the fleet-level scenario"
	@echo "make bench     benchmarks, JSON figures"
	@echo "make mutation  mutation testing of the costly-bug modules, score per module (slow, not in CI)"
	@echo "make lint      ruff, mypy, ansible-lint (production), yamllint, promtool"
	@echo "make hw-validate  on a GPU host: the agent against nvidia-smi, kept as a test fixture"

$(VENV)/.stamp: pyproject.toml agents/pyproject.toml
	@test -n "$(PYTHON)" || { echo "make: Python >= 3.11 is required (python3.11 or newer on PATH)" >&2; exit 2; }
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	@# the agent's distribution was called fleet-agent before 0.1.0's rename: an old venv still holds it
	$(PY) -m pip uninstall -q -y fleet-agent 2>/dev/null || true
	$(PY) -m pip install -q -e './agents[nvml,tpu]' -e '.[dev]'
	touch $@

venv: $(VENV)/.stamp

demo: $(VENV)/.stamp
	@PATH="$(abspath $(BIN)):$$PATH" bash scripts/demo.sh

# System services the integration tests use (Prometheus, Slurm, Docker): installed with apt when
# run as root on Debian/Ubuntu, otherwise a one-line message says what is missing.
system-deps:
	@bash scripts/system-deps.sh

# The Debian 12 images the SSH tests and Molecule start (debootstrap + docker build, no registry).
# Cached: an image that exists and matches its Dockerfile is kept, so a re-run costs a second.
test-images: system-deps
	@bash tests/images/build.sh

test: $(VENV)/.stamp system-deps test-images
	PATH="$(abspath $(BIN)):$$PATH" $(PY) -m pytest -q -p no:cacheprovider tests/unit tests/integration roles/container_runtime/tests

test-unit: $(VENV)/.stamp
	PATH="$(abspath $(BIN)):$$PATH" $(PY) -m pytest -q -p no:cacheprovider tests/unit

molecule: $(VENV)/.stamp system-deps test-images
	@PATH="$(abspath $(BIN)):$$PATH" bash scripts/molecule-all.sh

# On a real GPU host (no .venv needed): scripts/hw-validate.sh --help for its options.
hw-validate:
	@bash scripts/hw-validate.sh $(HW_ARGS)

bench: $(VENV)/.stamp
	@PATH="$(abspath $(BIN)):$$PATH" bash scripts/bench-all.sh

# mutmut over the state database, drain, fan-out classification, health checks, XID table, verdict and
# secret redaction; settings in setup.cfg [mutmut]; MUTATION_GROUPS="drain classify" for some only.
mutation: $(VENV)/.stamp
	@test -x $(BIN)/mutmut || $(PY) -m pip install -q 'mutmut==3.8.1'
	@PATH="$(abspath $(BIN)):$$PATH" bash scripts/mutation.sh $(MUTATION_GROUPS)

lint: $(VENV)/.stamp
	$(BIN)/ruff check .
	$(BIN)/mypy
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/yamllint -s .
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/ansible-lint --profile production
	@bash scripts/promtool-check.sh
