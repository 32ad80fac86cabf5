# One-command set-up and runs from a fresh clone: `make demo` (the main job) and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python
# the CPU build of torch on these machines; any other torch pulls several GB of CUDA packages
TORCH  ?= torch==2.13.0
PYTEST  = $(PY) -m pytest -q -p no:cacheprovider

.PHONY: setup demo test test-core test-sim test-compile test-adapters test-gpu bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH)"
	$(PY) -m pip install -q -e ".[test]"
	touch $@

setup: $(VENV)/.installed

demo: setup
	$(PY) -m gpuops

# the four CI tiers, each in its own process (the simulator must not share a process with compiles)
test: test-core test-sim test-compile test-adapters

test-core: setup
	$(PYTEST) tests/core

# the simulator and adapter tiers are many independent tests: one worker per core as well
test-sim: setup
	NUMBA_ENABLE_CUDASIM=1 $(PYTEST) -n auto tests/sim

# compiles are independent and CPU-bound: one worker per core
test-compile: setup
	$(PYTEST) -n auto tests/compile

test-adapters: setup
	$(PYTEST) -n auto tests/adapters

# on a GPU machine (never in CI)
test-gpu:
	$(PYTHON) -m pytest -q -m gpu tests/gpu

bench:
	$(PYTHON) -m benchmarks

clean:
	rm -rf $(VENV) .pytest_cache
