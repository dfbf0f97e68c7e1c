# Two commands set up everything on a fresh machine: `make synth` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
CDK := node_modules/.bin/cdk
CONFIG ?= config/platform.yaml
STAMPS := .stamps

export JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION := 20
export CDK_DISABLE_CLI_TELEMETRY := true
export PYTHONDONTWRITEBYTECODE := 1

.PHONY: synth test lint typecheck bench clean

$(STAMPS)/venv: requirements.txt requirements-dev.txt lambdas/router/requirements.txt
	@mkdir -p $(STAMPS)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	@touch $@

$(STAMPS)/cdk-cli: package.json package-lock.json
	@mkdir -p $(STAMPS)
	npm ci --no-audit --no-fund --loglevel=error
	@touch $@

## synth: every stack of $(CONFIG) into cdk.out/, through the compliance gate, with a summary
synth: $(STAMPS)/venv $(STAMPS)/cdk-cli
	$(CDK) synth --quiet --no-notices -c config=$(CONFIG)

## test: the whole suite (unit, infra, integration); slow suites have their own targets
test: $(STAMPS)/venv
	$(PY) -m pytest

lint: $(STAMPS)/venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: $(STAMPS)/venv
	$(VENV)/bin/mypy lambdas/router

bench: $(STAMPS)/venv
	$(PY) benchmarks/run.py

clean:
	rm -rf cdk.out $(STAMPS) .pytest_cache .mypy_cache .ruff_cache
