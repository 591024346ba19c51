# rlopt — one-command setup, tests and demo.
#   make setup      create .venv and install rlopt with its dev extras (idempotent)
#   make test       setup, then the default test suite (no GPU, no network, a few minutes on 2 cores)
#   make test-slow  setup, then the long training runs behind the README's results
#   make demo       setup, then the main job
#   make lint       ruff check + ruff format --check
#   make bench      setup, then scripts/bench_envs.py (env steps per second against Gymnasium/Minigrid references)
#   make clean      delete .venv, runs/ (every training run in it) and the tool caches
#   make help       this text
#
# Torch: where .venv has no torch yet, TORCH_SPEC decides what is installed. By default it is torch==2.13.0 (a
# CPU build from this project's machines' local wheels, quick to install) unless an NVIDIA GPU is visible
# (nvidia-smi works), in which case plain `torch` (the CUDA build) is installed. Override with e.g.
# `make setup TORCH_SPEC='torch==2.5.1'`; TORCH_PIP_ARGS adds pip options, e.g.
# `TORCH_PIP_ARGS='--index-url https://download.pytorch.org/whl/cpu'` for PyTorch's CPU wheels where PyPI's
# Linux wheel would be the CUDA one.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.rlopt-installed
TORCH_CPU_SPEC ?= torch==2.13.0
TORCH_SPEC ?= $(shell if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then echo torch; else echo '$(TORCH_CPU_SPEC)'; fi)
TORCH_PIP_ARGS ?=
PYTEST_ARGS ?=

.PHONY: setup test test-slow demo lint bench clean help

setup: $(STAMP)

help:
	@sed -n '2,/^$$/p' Makefile | sed -n '/^#/p' | sed 's/^# \{0,1\}//'

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	@if $(PY) -c "import torch" >/dev/null 2>&1; then \
	  echo "torch already in $(VENV): $$($(PY) -c 'import torch; print(torch.__version__)')"; \
	else \
	  echo "installing $(TORCH_SPEC) into $(VENV)"; \
	  $(PY) -m pip install -q "$(TORCH_SPEC)" $(TORCH_PIP_ARGS); \
	fi
	$(PY) -m pip install -q -e ".[dev]"
	touch $(STAMP)

test: setup
	$(PY) -m pytest -q $(PYTEST_ARGS)

test-slow: setup
	$(PY) -m pytest -q -m slow $(PYTEST_ARGS)

demo: setup
	$(VENV)/bin/rlopt demo

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

bench: setup
	$(PY) scripts/bench_envs.py

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache
