# The two commands in the README work on a fresh machine: each builds what it needs.
#   make demo   run the demo on the embedded SQLite broker
#   make test   lint, type-check, and run the whole test suite
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin

.PHONY: demo test lint pytest bench faults faults-long clean

$(BIN)/uv:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check uv

$(VENV)/.demo-installed: pyproject.toml | $(BIN)/uv
	$(BIN)/uv pip install --quiet --python $(BIN)/python -e '.[demo]'
	touch $@

$(VENV)/.dev-installed: pyproject.toml | $(BIN)/uv
	$(BIN)/uv pip install --quiet --python $(BIN)/python -e '.[dev]'
	touch $@ $(VENV)/.demo-installed

demo: $(VENV)/.demo-installed
	$(BIN)/offload demo

lint: $(VENV)/.dev-installed
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/mypy
	$(BIN)/lint-imports

# Two pytest processes: most tests wait on real processes and servers, so two halve the
# wall time (16 min -> 8 on this 2-core machine) with the load still under 1.
pytest: $(VENV)/.dev-installed
	$(BIN)/python -m pytest -n 2

test: lint pytest

# The fault-injection suite alone (short: as in CI), and its long versions.
faults: $(VENV)/.dev-installed
	$(BIN)/python -m tests.faults

faults-long: $(VENV)/.dev-installed
	$(BIN)/python -m tests.faults --long

bench: $(VENV)/.dev-installed
	$(BIN)/python benchmarks/throughput.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache offload-demo offload-demo.db*
