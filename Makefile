# Rapport's two commands are `make demo` and `make test`; everything else is a step of them.
SHELL := /bin/bash
.DEFAULT_GOAL := help
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: help setup demo demo-stop test lint typecheck unit integration stack-up stack-down stack-status topics bench eval clean

help:
	@echo "make demo    set up, start Kafka + Redis, create topics, stream simulated traffic; prints where to look"
	@echo "make test    lint, type-check, unit and integration tests (starts the stack if it is not running)"
	@echo "make bench   benchmarks; figures go to stdout (record them in docs/benchmarks.md)"
	@echo "make eval    model quality on a fixed-seed simulation vs baselines and the simulator's truth (docs/models.md)"
	@echo "make stack-up | stack-down | stack-status | demo-stop"

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

demo: setup
	$(BIN)/rapport demo up

demo-stop: setup
	$(BIN)/rapport demo down

# Two workers: the integration tests spend much of their time waiting on brokers and subprocesses, and the
# suite takes about half as long (docs/testing.md).
test: setup lint typecheck
	$(BIN)/pytest -n 2 --dist worksteal

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: setup
	$(BIN)/mypy

unit: setup
	$(BIN)/pytest -m 'not integration'

integration: setup
	$(BIN)/pytest -n 2 --dist worksteal -m integration

stack-up: setup
	$(BIN)/rapport stack up

stack-down: setup
	$(BIN)/rapport stack down

stack-status: setup
	$(BIN)/rapport stack status

topics: setup
	$(BIN)/rapport topics create

bench: setup
	$(BIN)/python -m bench.run

eval: setup
	$(BIN)/rapport stack up
	$(BIN)/rapport eval --days 730 --write-docs

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
