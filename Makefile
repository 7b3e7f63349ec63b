# The README's commands. `make install` is idempotent; every other target installs first if needed.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
PYTEST_ARGS ?=

.PHONY: install test test-e2e demo lint format plan clean

install: $(STAMP)

# torch is pinned to 2.13.0 and installed first: on a CPU machine pip takes the local CPU wheel, and nothing
# later can pull a newer (CUDA) build. pip byte-compiles on one core; compileall does the same on all of them
# (the .pyc must exist up front: with PYTHONDONTWRITEBYTECODE set, every Ray worker would recompile on import).
# Like pip's, a module that does not compile (torch's Python 3.12-only test helper) is left as it is.
$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --no-compile torch==2.13.0
	$(PY) -m pip install --quiet --no-compile -e '.[dev]'
	$(PY) -m compileall -q -j 0 "$$($(PY) -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')" > /dev/null || true
	touch $(STAMP)

# The test suite without the end-to-end Ray runs (the everyday loop).
test: install
	$(VENV)/bin/pytest -q -m "not e2e" $(PYTEST_ARGS)

# The end-to-end Ray runs: the stages on Ray Train, every experiment file submitted, a Ray job to a head with
# token authentication. CI runs both.
test-e2e: install
	$(VENV)/bin/pytest -q -m e2e $(PYTEST_ARGS)

# The README's main command: a loss-ratio sweep (4 trials x 3 stages, ASHA) on an embedded local Ray, tracked
# in a local MLflow store under .vlsa/, then its report.
demo: install
	$(VENV)/bin/vlsa-platform submit experiments/loss_ratio_sweep.yaml --scale tiny
	$(VENV)/bin/vlsa-platform report vlsa-loss-ratio
	@echo
	@echo "Browse the runs:  $(VENV)/bin/vlsa-platform ui    (MLflow at http://127.0.0.1:5000)"

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
