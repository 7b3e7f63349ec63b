# The README's commands. `make install` is idempotent; every other target installs first if needed.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
RUNTIME_STAMP := $(VENV)/.runtime-stamp
PYTEST_ARGS ?=
UV_VERSION := 0.13.9
UV := $(VENV)/bin/uv
# uv copies from its cache where it cannot hard-link (another file system), without warning about it.
export UV_LINK_MODE ?= copy

# Python writes each module's bytecode (.pyc) the first time it is imported, unless PYTHONDONTWRITEBYTECODE is
# set, as it is on some machines (this one included): then every process (each Ray worker) compiles again
# everything it imports. Python's default is restored here, and the install compiles nothing (pip is told not to,
# uv does not by default): only the modules a run imports are compiled, once (about a third of the installed ones
# for a sweep).
unexport PYTHONDONTWRITEBYTECODE

.PHONY: install install-runtime install-eval test test-e2e demo bench lint format plan clean

install: $(STAMP)

install-runtime: $(RUNTIME_STAMP)

# torch is pinned to 2.13.0 and installed first, with pip: on a CPU machine pip takes the local CPU wheel (its
# configuration names where it lies), and nothing later can pull a newer (CUDA) build. The rest is installed by
# uv (itself a wheel from PyPI, pinned): it resolves the same versions pip does, keeps the installed torch, and
# downloads and unpacks in parallel, in about 15 s where pip took about 110 s on 2 cores. uv reads its own
# configuration, not pip's: for a private index set UV_INDEX_URL (or UV_DEFAULT_INDEX). The runtime alone is
# what `make demo` needs; the dev extras (pytest, ruff, an S3 server for the tests) come on top of it.
$(RUNTIME_STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --no-compile torch==2.13.0 uv==$(UV_VERSION)
	$(UV) pip install --quiet --python $(PY) -e .
	touch $(RUNTIME_STAMP)

$(STAMP): $(RUNTIME_STAMP)
	test -x $(UV) || $(PY) -m pip install --quiet uv==$(UV_VERSION)
	$(UV) pip install --quiet --python $(PY) -e '.[dev]'
	touch $(STAMP)

# The test suite without the end-to-end Ray runs (the everyday loop).
# checkov (the infra/ checks of tests/infra/test_terraform.py) pins older boto3, packaging and networkx than the
# project: it gets its own environment, inside $(VENV).
CHECKOV_VERSION := 3.3.30
CHECKOV := $(VENV)/checkov/bin/checkov
$(CHECKOV): | $(STAMP)
	$(UV) venv --quiet --python $(PY) $(VENV)/checkov
	$(UV) pip install --quiet --python $(VENV)/checkov/bin/python checkov==$(CHECKOV_VERSION)

test: install $(CHECKOV)
	$(VENV)/bin/pytest -q -m "not e2e" $(PYTEST_ARGS)

# lmms-eval (docs/evaluation.md) gets its own environment, inside $(VENV): it pins wandb==0.25.0, ruff>=0.16.4,
# pre-commit and about 60 other packages that must not move the training and lint environment's versions (nor
# lengthen `make install`). It holds the project too (editable, the same CPU torch wheel, taken by pip as above)
# and lmms-eval without torchvision and timm, which only some of lmms-eval's own model modules import and whose
# PyPI builds do not import beside this torch: uv drops them through $(EVAL_OVERRIDES) (the reasons are there).
# About 80 s fresh (136 s with an empty uv cache) on 2 cores. The evaluation tests (tests/lmms, in
# test-e2e) run its interpreter.
LMMS_EVAL_VERSION := 0.7.3
EVAL_VENV ?= $(VENV)/eval
EVAL_PY := $(EVAL_VENV)/bin/python
EVAL_STAMP := $(EVAL_VENV)/.installed-stamp
EVAL_OVERRIDES := infra/eval/overrides.txt

install-eval: $(EVAL_STAMP)

$(EVAL_STAMP): pyproject.toml $(EVAL_OVERRIDES) | $(STAMP)
	test -x $(EVAL_PY) || python3 -m venv $(EVAL_VENV)
	$(EVAL_PY) -m pip install --quiet --no-compile torch==2.13.0
	$(UV) pip install --quiet --python $(EVAL_PY) -e . lmms-eval==$(LMMS_EVAL_VERSION) --overrides $(EVAL_OVERRIDES)
	touch $(EVAL_STAMP)

# The end-to-end Ray runs: the stages on Ray Train, every experiment file submitted, a Ray job to a head with
# token authentication; the evaluation through lmms-eval. CI runs both.
test-e2e: install install-eval
	$(VENV)/bin/pytest -q -m e2e $(PYTEST_ARGS)

# The README's main command: a loss-ratio sweep (4 trials x 3 stages, ASHA) on an embedded local Ray, tracked
# in a local MLflow store under .vlsa/, then its report.
demo: install-runtime
	$(VENV)/bin/vlsa-platform submit experiments/loss_ratio_sweep.yaml --scale tiny
	$(VENV)/bin/vlsa-platform report vlsa-loss-ratio
	@echo
	@echo "Browse the runs:  $(VENV)/bin/vlsa-platform ui    (MLflow at http://127.0.0.1:5000)"

# Every benchmark with the project's settings: benchmarks/results.json and the table of benchmarks/RESULTS.md
# (figures against goals). About 20 minutes here; BENCH_ARGS="--only NAME" runs one.
BENCH_ARGS ?=
bench: install
	$(VENV)/bin/python benchmarks/bench.py $(BENCH_ARGS)

lint: install
	$(VENV)/bin/ruff check platform tests benchmarks infra/checks
	$(VENV)/bin/ruff format --check platform tests benchmarks infra/checks

format: install
	$(VENV)/bin/ruff check --fix platform tests benchmarks infra/checks
	$(VENV)/bin/ruff format platform tests benchmarks infra/checks

# The plan of the full paper recipe: runs, stages, trainable parts, parameter counts, placement.
plan: install
	$(VENV)/bin/vlsa-platform validate experiments/vlsa_paper.yaml

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
