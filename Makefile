# Two entry points after a fresh clone: `make demo` (the main job) and `make test` (the suite).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Verified PTB: the shared copy next to the checkout; override with `make demo DATA=/path/to/ptb`.
DATA ?= $(abspath ../shared/data/ptb)
export NASBENCH_PTB_DATA := $(DATA)

.PHONY: demo test install bench

$(BIN)/nasbench_ptb: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q torch==2.13.0   # the CPU wheel first, so pip never pulls a CUDA build
	$(BIN)/pip install -q -e '.[build,serve,plot,dev]'
	touch $@

install: $(BIN)/nasbench_ptb

demo: install
	$(BIN)/nasbench_ptb build --space 2node --preset smoke --out runs/2node-smoke.h5
	$(BIN)/nasbench_ptb info runs/2node-smoke.h5
	@if [ -f artifacts/2node-cpu.h5 ]; then $(BIN)/nasbench_ptb info artifacts/2node-cpu.h5; fi

test: install
	$(BIN)/python -m pytest -q

bench: install
	$(BIN)/python benchmarks/bench_engine.py --preset cpu --space 2node --slots 16 --steps 8
	$(BIN)/python benchmarks/bench_ws_eval.py --preset cpu --space 3node --valid-tokens 4000
