# Entry points: `make setup` once, then `make test`. scripts/setup.sh documents the switches
# (PGD_CUDA, PGD_TORCH_INDEX_URL, MMCV_WHEEL_DIR, PGD_VENV, PGD_PYTHON).
VENV ?= .venv
PYTEST := $(VENV)/bin/pytest
PYTEST_ARGS ?=

.PHONY: setup test test-slow test-all mini help

help:
	@echo "make setup       create/update $(VENV) (torch CPU, mmcv 2.1.0 with ops, mmdet 3.3, the project)"
	@echo "make test        fast test suite (slow tests excluded)"
	@echo "make test-slow   end-to-end tests (pytest -m slow)"
	@echo "make test-all    both"
	@echo "make mini        the whole pipeline on the embedded synthetic data (snakemake --cores all)"

setup:
	PGD_VENV="$(VENV)" scripts/setup.sh

$(PYTEST):
	@echo "no $(PYTEST): run 'make setup' first" >&2; exit 1

# pyproject's addopts deselect the slow tests. Exit code 5 (nothing collected) is a failure here, like any other.
test: $(PYTEST)
	$(PYTEST) -q $(PYTEST_ARGS)

test-slow: $(PYTEST)
	$(PYTEST) -q -m slow $(PYTEST_ARGS)

test-all: test test-slow

mini: $(PYTEST)
	$(VENV)/bin/snakemake --cores all
