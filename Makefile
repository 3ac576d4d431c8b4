# The README's two commands: `make demo` (the main job) and `make test` (lint, types, tests).
# Both create the virtual environment and install everything on first use.

VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test lint types pytest services bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip 'setuptools<81' wheel
	# torch is pinned to 2.13.0 in pyproject.toml: on this machine pip takes the CPU build on disk.
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(BIN)/lookalike demo

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

types: install
	$(BIN)/mypy

pytest: install
	$(BIN)/python -m pytest

test: lint types pytest

bench: install
	$(BIN)/python -m bench.phash_speed
	$(BIN)/python -m bench.clip_speed

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
