# The README's commands. `make install` is idempotent; every other target installs first if needed.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
PYTEST_ARGS ?=

.PHONY: install test lint format plan clean

install: $(STAMP)

# torch is pinned to 2.13.0 and installed first: on a CPU machine pip takes the local CPU wheel, and nothing
# later can pull a newer (CUDA) build.
$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

test: install
	$(VENV)/bin/pytest -q $(PYTEST_ARGS)

lint: install
	$(VENV)/bin/ruff check platform tests benchmarks
	$(VENV)/bin/ruff format --check platform tests benchmarks

format: install
	$(VENV)/bin/ruff check --fix platform tests benchmarks
	$(VENV)/bin/ruff format platform tests benchmarks

# The plan of the full paper recipe: runs, stages, trainable parts, parameter counts, placement.
plan: install
	$(VENV)/bin/vlsa-platform validate experiments/vlsa_paper.yaml

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
