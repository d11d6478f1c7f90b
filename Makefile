# Two commands do everything on a fresh machine (see README.md):
#   make run    set up .venv if needed, then run the main job
#   make test   set up .venv if needed, then run the test suite
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# torch is installed first and pinned: an unpinned torch pulls the CUDA build on Linux.
TORCH  ?= torch==2.13.0
PYTEST_ARGS ?=
# What `make run` runs (any optimlab command line); the data directory for the real-task commands.
ARGS   ?= study adam-saddle --out results/adam-saddle
DATA   ?= $(firstword $(wildcard ../shared/data) $(HOME)/.cache/optimlab/data)

.PHONY: setup browser run test test-all clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(TORCH)
	$(BIN)/python -m pip install -q -e '.[test,ray]'
	touch $@

setup: $(VENV)/.installed

# The browser tests/test_html_report.py opens index.html in: Debian's chromium, installed only if missing
# (root, as CI runs; elsewhere those tests skip with a reason).
browser:
	command -v chromium >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null)

run: setup
	OPTIMLAB_DATA_DIR=$${OPTIMLAB_DATA_DIR:-$(DATA)} $(BIN)/optimlab $(ARGS)

test: setup
	$(BIN)/python -m pytest -n 2 -m "not slow" $(PYTEST_ARGS)

test-all: setup
	$(BIN)/python -m pytest -n 2 $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache
