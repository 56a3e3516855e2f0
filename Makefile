# Two entry points after a fresh clone: `make demo` (the main job) and `make test` (the suite).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Verified PTB: `make demo DATA=/path/to/ptb`, else $NASBENCH_PTB_DATA as set, else the shared copy next to the
# checkout when there is one; with none of them the loader's own cache and checksummed download.
DATA ?= $(or $(NASBENCH_PTB_DATA),$(wildcard $(abspath ../shared/data/ptb)))
ifneq ($(DATA),)
export NASBENCH_PTB_DATA := $(DATA)
endif

.PHONY: demo test lint install bench serve

$(BIN)/nasbench_ptb: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q torch==2.13.0   # the CPU wheel first, so pip never pulls a CUDA build
	$(BIN)/pip install -q -e '.[build,serve,plot,export,syne-tune,cluster,dev]'
	touch $@

install: $(BIN)/nasbench_ptb

# The shipped 2-node table: summary, one query, the search-policy protocol; then the main job at the smoke preset.
demo: install
	$(BIN)/nasbench_ptb info artifacts/2node-cpu10.h5 --reference artifacts/2node-cpu.h5
	$(BIN)/nasbench_ptb query "sigmoid:0|relu:1"
	$(BIN)/nasbench_ptb evaluate --space 2node --runs 10
	$(BIN)/nasbench_ptb build --space 2node --preset smoke --out runs/2node-smoke.h5
	$(BIN)/nasbench_ptb info runs/2node-smoke.h5

serve: install
	$(BIN)/nasbench_ptb serve --port 8000

test: install
	$(BIN)/python -m pytest -q

# ruff (configured under [tool.ruff] in pyproject.toml); CI runs it before the tests
lint: install
	$(BIN)/ruff check nasbench_ptb builder api tests benchmarks docs

bench: install
	$(BIN)/python benchmarks/bench_api.py --requests 20000 --connections 8
	$(BIN)/python benchmarks/bench_evaluate.py
	$(BIN)/python benchmarks/bench_engine.py --preset cpu --space 2node --slots 16 --steps 8
	$(BIN)/python benchmarks/bench_ws_eval.py --preset cpu --space 3node --valid-tokens 4000
	$(BIN)/python benchmarks/bench_threads.py --steps 8
