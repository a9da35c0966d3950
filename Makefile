# alignax: `make run` and `make test` do the whole set-up on a fresh machine (Python 3.11 + pip).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
# Extra arguments for pytest, e.g. `make test PYTEST_ARGS="-k resume"`.
PYTEST_ARGS ?=

.PHONY: install run test test-slow test-all lint bazel-test bench bench-tiny clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q -U pip
	# torch first, pinned to the CPU wheel, so transformers does not pull a CUDA build.
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e '.[dev,hf,real]'
	touch $(STAMP)

install: $(STAMP)

run: install
	$(BIN)/alignax run experiments/bt_dpo_synthetic.py

lint: install
	$(BIN)/ruff check alignax experiments examples tests tools benchmarks

# Unit tests and every experiment's smoke run.
test: install lint
	$(BIN)/python -m pytest -q -n 2 --dist worksteal -m "not slow" --durations=25 $(PYTEST_ARGS)

# System tests (marker `slow`): whole programs in subprocesses, on several processes or
# simulated devices, killed with SIGKILL/SIGTERM or out of disk, the `:real` configs end to
# end on a tiny HF checkpoint, end-to-end training runs of the recipes (convergence, exact
# resume), the parity runs against TRL / transformers (tests/parity/conftest.py) and the
# notebooks (notebooks/conftest.py). CI runs them after `make test`.
test-slow: install
	$(BIN)/python -m pytest -q -n 2 --dist worksteal -m slow --durations=25 $(PYTEST_ARGS)

test-all: test test-slow

# Benchmarks against the PyTorch peers (TRL, transformers): installs the `peers` extra, runs
# W1-W4 alternating with the peers and appends the table to benchmarks/RESULTS.md.
BENCH_ARGS ?=
bench: install
	$(BIN)/python -m pip install -q -e '.[peers]'
	$(BIN)/python -m benchmarks.run --write $(BENCH_ARGS)

bench-tiny: install
	$(BIN)/python -m benchmarks.run --size tiny --steps 2 --rounds 1 $(BENCH_ARGS)

bazel-test: install
	bash .ci/bazel_test.sh

# The documentation site, offline, warnings as errors: installs the `docs` extra (Sphinx,
# myst-nb, furo), fails on a public function or class without a docstring, assembles the pages,
# the notebooks, the paper index and the API reference in docs/_build/src, builds
# docs/_build/html (open docs/_build/html/index.html).
DOCS_STAMP := $(VENV)/.docs-stamp
$(DOCS_STAMP): $(STAMP) pyproject.toml
	$(BIN)/python -m pip install -q -e '.[docs]'
	touch $(DOCS_STAMP)

.PHONY: docs
docs: $(DOCS_STAMP)
	$(BIN)/python tools/check_docstrings.py
	$(BIN)/python tools/gen_docs.py docs/_build/src
	$(BIN)/sphinx-build -q -W --keep-going -b html -c docs docs/_build/src docs/_build/html
	@echo "docs: docs/_build/html/index.html"

clean:
	rm -rf $(VENV) runs .pytest_cache
