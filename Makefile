# Two commands for a newcomer: `make demo` runs the nightly job on the embedded default,
# `make test` runs lint, types and tests. Both create .venv on first use.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_DIR ?= var/demo

.PHONY: demo ui test lint typecheck pytest install bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# Reproducible install: the committed constraints pin what a resolved environment had.
$(STAMP): pyproject.toml clients/python/pyproject.toml infra/constraints.txt | $(BIN)/python
	$(BIN)/pip install --quiet -c infra/constraints.txt -e clients/python -e '.[dev]'
	touch $(STAMP)

# The S3 server the tests start on loopback (moto's server mode) lives in a venv of its own:
# moto needs botocore, which requires python-dateutil<3, and Airflow's environment has 4.0.
S3_VENV := .venv-s3
$(S3_VENV)/bin/moto_server:
	$(PYTHON) -m venv $(S3_VENV)
	$(S3_VENV)/bin/pip install --quiet 'moto[server]==5.2.6'

install: $(STAMP) $(S3_VENV)/bin/moto_server

demo: $(STAMP)
	$(BIN)/python -m pipelines.dev.demo --data $(DEMO_DIR) --fresh

# The Airflow UI on the demo's metadata (run `make demo` first); UI_PORT=8081 by default.
ui: $(STAMP)
	VENV_BIN=$(abspath $(BIN)) infra/airflow-ui.sh $(DEMO_DIR)

lint: $(STAMP)
	$(BIN)/ruff check pipelines dags tests benchmarks clients
	$(BIN)/ruff format --check pipelines dags tests benchmarks clients

typecheck: $(STAMP)
	$(BIN)/mypy pipelines clients/python/src/number_recycling_client

pytest: $(STAMP) $(S3_VENV)/bin/moto_server
	$(BIN)/pytest -q

test: lint typecheck pytest

bench: $(STAMP)
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf var .pytest_cache .mypy_cache .ruff_cache
