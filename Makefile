# paperwire: one target per job. `make run` and `make test` are the two set-up commands.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
export HF_HUB_OFFLINE := 1

.PHONY: install run demo test test-unit test-integration test-e2e test-faults lint bench eval clean

install: $(VENV)/.installed

# torch first, pinned, so pip takes the CPU build on this disk instead of resolving a CUDA one.
$(VENV)/.installed: pyproject.toml shared/pyproject.toml services/*/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e "shared[vectors]" -e services/ingest -e services/embed \
		-e "services/recommend[eval]" -e services/notify -e ".[all,dev]"
	touch $@

run: install
	$(BIN)/paperwire run

demo: install
	$(BIN)/paperwire demo

test: install
	$(BIN)/pytest

# The README's recommendation-quality tables: cold (with the API's ranking), cold without other
# users' saves, warm (with the API's), and new users with 1 and 5 papers (7-14 minutes on 2 cores;
# the first run also embeds the 16,980 papers, ~2-4 minutes, then cached).
EVAL_DATA ?= ../shared/data/citeulike-a
EVAL := $(BIN)/paperwire eval --data $(EVAL_DATA) --users 1000 --seed 0
eval: install
	$(EVAL) --protocol cold --api
	$(EVAL) --protocol cold --content-only
	$(EVAL) --protocol warm --api
	$(EVAL) --protocol cold --library 1
	$(EVAL) --protocol cold --library 5

test-unit: install
	$(BIN)/pytest tests/unit

test-integration: install
	$(BIN)/pytest tests/integration

test-e2e: install
	$(BIN)/pytest tests/e2e

# Services as processes on a real Valkey, with crashes and outages injected (~1.5 min); `test` runs them too.
test-faults: install
	$(BIN)/pytest tests/faults

lint: install
	$(BIN)/ruff check . && $(BIN)/ruff format --check .
	$(BIN)/mypy -p paperwire_shared -p paperwire_ingest -p paperwire_embed -p paperwire_recommend -p paperwire_notify -p paperwire

bench: install
	$(BIN)/python -m pip install -q -r bench/requirements.txt && $(BIN)/python -m bench.run

clean:
	rm -rf $(VENV) data .pytest_cache .mypy_cache .ruff_cache
