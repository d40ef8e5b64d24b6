# Bootstrap and everyday commands. Needs only make and a python3 (3.9 or newer, with venv): .venv gets the CPython
# the locks are made for (environments/hostpython.py: this python3 if it is that version, else pythonX.Y on PATH,
# else one that uv downloads; otherwise one line with the fix).
# `make train` / `make test` create .venv from the hashed lockfiles (the CPU runtime lock + the dev layer), so the
# host matches the CPU image package for package.
# Richer tasks (containers, lock, bench) live in tasks.py: `.venv/bin/invoke --list`.

PYTHON ?= python3
VENV   ?= .venv
CONFIG ?= configs/default.yaml
ARGS   ?=
# Lock platform of this machine (conda naming), from `uname -s` and `uname -m`; the locks live in
# environments/<variant>/pip.<platform>.lock. Any other machine: `make venv` says which platforms have locks.
platform.Linux.x86_64  := linux-64
platform.Linux.aarch64 := linux-aarch64
platform.Linux.arm64   := linux-aarch64
platform.Darwin.arm64  := osx-arm64
UNAME    := $(shell uname -s) $(shell uname -m)
PLATFORM := $(platform.$(subst $() ,.,$(UNAME)))
LOCKS  := environments/cpu/pip.$(PLATFORM).lock environments/dev/pip.$(PLATFORM).lock
NO_LOCK = make: no lock for $(UNAME): locks exist for Linux x86_64 (linux-64), Linux aarch64 (linux-aarch64), macOS arm64 (osx-arm64)
# Where pip and uv find torch's CPU build (+cpu wheels are not on PyPI): environments/lockfile.py's
# TORCH_CPU_FIND_LINKS (Linux only: on macOS PyPI's torch is the CPU build). A wheel folder you set in PIP_FIND_LINKS
# wins (uv is given it as --find-links too).
TORCH_FIND_LINKS ?= $(if $(PIP_FIND_LINKS)$(filter osx-%,$(PLATFORM)),,$(shell $(PYTHON) environments/lockfile.py torch-find-links))
FIND_LINKS := $(addprefix --find-links ,$(TORCH_FIND_LINKS) $(PIP_FIND_LINKS))
PIP := $(VENV)/bin/python -m pip
# uv builds .venv: pinned and hash-checked in environments/bootstrap/uv.txt, installed by pip into $(BOOTSTRAP).
BOOTSTRAP ?= .bootstrap
UV_PIN := environments/bootstrap/uv.txt
UV     := $(BOOTSTRAP)/bin/uv
# The installer of the recipe below, chosen when it runs: uv once $(UV) is there, else pip (the fallback).
INSTALLER = $$(if [ -x $(UV) ]; then echo "env VIRTUAL_ENV=$(VENV) $(UV) pip"; else echo "$(PIP)"; fi)

.DEFAULT_GOAL := help
.PHONY: help venv train test test-fast lint lock lock-check bench clean

help: ## show this help
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  \033[36m%-12s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

# The editable install of the package builds with --no-build-isolation, i.e. with the setuptools the cpu lock has
# just installed (hash-checked): an isolated build would fetch "setuptools>=68" unpinned and without a hash.
# The venv is the stdlib's (with its bundled pip, offline); uv's `uv pip sync --require-hashes` makes it exactly the
# locks (it keeps the seed pip). pip is the fallback only when uv cannot be installed (the recipe says so in one line).
# --compile-bytecode: uv writes no .pyc by default, and where PYTHONDONTWRITEBYTECODE=1 (this machine kind, many CI
# images) Python never writes them: every process then compiled its imports from source, 10 of the 17 s that
# `import finetune.run` took (7 s with bytecode). pip, the fallback, compiles by default.
# BYTECODE= (empty) skips it, for a throwaway venv that runs one import (tests/test_host_python.py): a fresh
# `make venv` took 68.8 CPU-s (user+sys) with bytecode, 12.0 without.
BYTECODE ?= --compile-bytecode

$(VENV)/.installed: $(wildcard $(LOCKS)) pyproject.toml $(UV_PIN)
	$(if $(PLATFORM),,$(error $(NO_LOCK)))
	$(foreach f,$(LOCKS),$(if $(wildcard $f),,$(error make: $f is missing: this platform has no lock yet (add it to platforms: in environments/{cpu,dev}/environment.yml, then make lock))))
	@cmp -s $(UV_PIN) $(BOOTSTRAP)/uv.txt || { rm -rf $(BOOTSTRAP) && $(PYTHON) -m venv $(BOOTSTRAP) \
	  && $(BOOTSTRAP)/bin/python -m pip install --quiet --require-hashes --only-binary :all: --no-deps -r $(UV_PIN) \
	  && cp $(UV_PIN) $(BOOTSTRAP)/uv.txt; } \
	  || { rm -rf $(BOOTSTRAP); echo "make: uv could not be installed from $(UV_PIN): building .venv with pip (slower)"; }
	PY=$$($(PYTHON) environments/hostpython.py --uv $(UV) $(LOCKS)) && $$PY -m venv --clear $(VENV)
	if [ -x $(UV) ]; then $(UV) pip sync --quiet $(BYTECODE) --python $(VENV)/bin/python --require-hashes $(FIND_LINKS) $(LOCKS); \
	else $(PIP) install --quiet --require-hashes --no-deps $(if $(TORCH_FIND_LINKS),--find-links $(TORCH_FIND_LINKS)) $(addprefix -r ,$(LOCKS)); fi
	$(INSTALLER) install --quiet --no-deps --no-build-isolation -e .
	@touch $@

venv: $(VENV)/.installed ## create .venv from the locks (CPU runtime + dev layer); re-run after a lock changes

train: venv ## fine-tune the embedded default (tiny model, offline, ~1 min on 2 cores); CONFIG=... ARGS=...
	$(VENV)/bin/finetune train $(CONFIG) $(ARGS)

# The tests run on every core (pytest-xdist, -n auto): the container tests that share an image or an engine are one
# group each (tests/container/conftest.py), which runs on one worker beside the others; tests/README.md has the
# tiers and their minutes. TEST_WORKERS=0 runs everything in one process (pdb, -x, or when debugging an order).
TEST_WORKERS ?= auto
XDIST = $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist loadgroup)

test: venv ## run the whole test suite (real tiny training runs and container tests included; TEST_WORKERS=0: serial)
	$(VENV)/bin/python -m pytest $(XDIST) $(ARGS)

test-fast: venv ## run the tests that take seconds (skips the slow training tests)
	$(VENV)/bin/python -m pytest $(XDIST) -m "not slow" $(ARGS)

lint: venv ## ruff, hadolint (Dockerfiles), actionlint (workflows), notebooks committed without outputs
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/hadolint docker/Dockerfile tests/container/standin/Dockerfile tests/container/standin/cuda-base.Dockerfile tests/container/newcomer/Dockerfile
	$(VENV)/bin/actionlint
	$(VENV)/bin/python scripts/check_notebooks.py

lock: venv ## regenerate the hashed lockfiles from environments/*/environment.yml
	$(VENV)/bin/python environments/lock.py

lock-check: venv ## fail if any lock is stale against its environment.yml
	$(VENV)/bin/python environments/lock.py --check

bench: venv ## throughput: our pipeline vs a plain Hugging Face Trainer (a table, JSON); others: invoke bench NAME
	$(VENV)/bin/python -m benchmarks throughput $(ARGS)

clean: ## remove .venv, caches and runs/
	rm -rf $(VENV) runs .pytest_cache .ruff_cache benchmarks/results
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
