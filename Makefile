# The README's two commands: `make demo` (the main job) and `make test` (lint, types, tests).
# Both create the virtual environment and install everything on first use.

VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install browser demo test lint types pytest services bench clean

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

# The UI's browser test drives Debian's chromium; Playwright never downloads a browser here.
browser:
	@command -v chromium >/dev/null 2>&1 || { \
		if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
		$$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq --no-install-recommends chromium; }

pytest: install browser
	$(BIN)/python -m pytest

test: lint types pytest

bench: install
	$(BIN)/python -m bench.phash_speed
	$(BIN)/python -m bench.clip_speed

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
