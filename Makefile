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

.PHONY: synth test scan lint typecheck bench clean demo chaos load fuzz plan size shadow-report shadow-overhead

$(STAMPS)/venv: requirements.txt requirements-dev.txt lambdas/router/requirements.txt
	@mkdir -p $(STAMPS)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	@touch $@

$(STAMPS)/cdk-cli: package.json package-lock.json
	@mkdir -p $(STAMPS)
	npm ci --no-audit --no-fund --loglevel=error
	@touch $@

# The router's dependencies as a Lambda layer, without Docker: manylinux wheels for arm64 / CPython 3.13, exactly the
# files of lambdas/router/requirements.lock (pip --require-hashes: a changed wheel fails the build), whose versions a
# test keeps equal to requirements.txt and to what .venv runs, so the layer ships what the tests ran.
ROUTER_DEPS := build/router-deps
$(STAMPS)/router-deps: lambdas/router/requirements.lock $(STAMPS)/venv
	@mkdir -p $(STAMPS) build
	rm -rf $(ROUTER_DEPS)
	$(PY) -m pip install --quiet --disable-pip-version-check --no-compile --only-binary=:all: --require-hashes \
		--no-deps --platform manylinux2014_aarch64 --implementation cp --python-version 3.13 \
		--target $(ROUTER_DEPS)/python -r lambdas/router/requirements.lock
	rm -rf $(ROUTER_DEPS)/python/bin
	@touch $@

# Graphviz draws the security report's diagram; Chromium renders the report in a test. Debian packages: CI runs as
# root on a clean Debian machine; elsewhere sudo asks. Without Chromium the browser test skips and says why.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
$(STAMPS)/graphviz:
	@mkdir -p $(STAMPS)
	command -v dot >/dev/null || { $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq --no-install-recommends graphviz; }
	@touch $@

# redis-server is the fleet's shared store in the local worlds (SPILLWAY_FLEET_STORE_URL); libfaketime gives the chaos
# suite's environments clocks that disagree. Debian packages, installed as graphviz is.
$(STAMPS)/redis-server:
	@mkdir -p $(STAMPS)
	command -v redis-server >/dev/null || { $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq --no-install-recommends redis-server; }
	@touch $@

$(STAMPS)/faketime:
	@mkdir -p $(STAMPS)
	ls /usr/lib/*/faketime/libfaketime.so.1 >/dev/null 2>&1 || { $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq --no-install-recommends faketime; }
	@touch $@

$(STAMPS)/chromium:
	@mkdir -p $(STAMPS)
	command -v chromium >/dev/null || command -v google-chrome >/dev/null \
		|| { $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq --no-install-recommends chromium; } \
		|| echo "warning: chromium could not be installed: the report's browser test will skip"
	@touch $@

## synth: every stack of $(CONFIG) into cdk.out/, through the compliance gate, with a summary
synth: $(STAMPS)/venv $(STAMPS)/cdk-cli $(STAMPS)/router-deps $(STAMPS)/graphviz
	$(CDK) synth --quiet --no-notices -c config=$(CONFIG)
	$(PY) -m review cdk.out reports

## test: the whole suite (unit, infra, integration); slow suites have their own targets
test: $(STAMPS)/venv $(STAMPS)/router-deps $(STAMPS)/cdk-cli $(STAMPS)/graphviz $(STAMPS)/chromium $(STAMPS)/redis-server
	$(PY) -m pytest --durations=15
	$(MAKE) --no-print-directory test-lambda-runtime

# The router's own tests again on the interpreter the Lambda runs (3.13), in a venv of its own. python3.13 from
# PATH, else pyenv's newest 3.13; a machine with neither says so and skips (the suite above still ran).
LAMBDA_VENV := .venv-lambda
LAMBDA_PYTHON ?= $(shell python3.13 -c 'print("python3.13")' 2>/dev/null || { v=$$(pyenv versions --bare 2>/dev/null | grep '^3\.13' | sort -V | tail -1); [ -n "$$v" ] && echo "env PYENV_VERSION=$$v python3.13"; })
$(STAMPS)/venv-lambda: lambdas/router/requirements.txt lambdas/router/requirements-test.txt
	@mkdir -p $(STAMPS)
	test -x $(LAMBDA_VENV)/bin/python || $(LAMBDA_PYTHON) -m venv $(LAMBDA_VENV)
	$(LAMBDA_VENV)/bin/python -m pip install --quiet --disable-pip-version-check -r lambdas/router/requirements-test.txt
	@touch $@

.PHONY: test-lambda-runtime
ifeq ($(strip $(LAMBDA_PYTHON)),)
test-lambda-runtime:
	@echo "warning: no python3.13 here: the router's tests ran on $$($(PY) -V) only"
else
test-lambda-runtime: $(STAMPS)/venv-lambda
	$(LAMBDA_VENV)/bin/python -m pytest -q tests/unit tests/router
endif

## scan: checkov over every synthesized template, in its own venv (its release pins an old boto3); a failed check
## not in review/checkov-baseline.yaml (each entry with its reason) fails. Not part of `make test`.
CHECKOV_VENV := .venv-checkov
$(STAMPS)/checkov: review/checkov-requirements.txt
	@mkdir -p $(STAMPS)
	test -x $(CHECKOV_VENV)/bin/python || $(PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/pip install --quiet --disable-pip-version-check -r review/checkov-requirements.txt
	@touch $@

scan: synth $(STAMPS)/checkov
	$(PY) -m review.checkov_gate --checkov $(CHECKOV_VENV)/bin/checkov cdk.out review/checkov-baseline.yaml

lint: $(STAMPS)/venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: $(STAMPS)/venv
	$(VENV)/bin/mypy lambdas/router

## bench: the benchmarks (local/benchmarks/README.md); the fleet's figures from the production shape (BENCH_ARGS=--quick).
BENCH_ARGS ?=
bench: $(STAMPS)/venv $(STAMPS)/redis-server
	$(PY) local/benchmarks/run.py $(BENCH_ARGS)

## demo: the example platform on loopback (emulator, redis-server, router behind a local API Gateway endpoint) through a
## steady load, a 3x PT surge and a home-region outage; summary and plot in reports/demo/. No AWS account.
demo: $(STAMPS)/venv $(STAMPS)/redis-server
	$(PY) -m local.demo

## chaos: the failure scenarios, each with its assertions; ends with `chaos: N passed, N failed`.
chaos: $(STAMPS)/venv $(STAMPS)/redis-server $(STAMPS)/faketime
	$(PY) -m local.chaos

## load: bounded load through the local endpoint (LOAD_ARGS="--concurrency 8 --duration 20").
LOAD_ARGS ?=
load: $(STAMPS)/venv $(STAMPS)/redis-server
	$(PY) -m local.load $(LOAD_ARGS)

## fuzz: schemathesis against docs/openapi.json on the local endpoint: no 5xx, every error documented.
FUZZ_ARGS ?=
fuzz: $(STAMPS)/venv $(STAMPS)/redis-server
	$(PY) -m local.fuzz $(FUZZ_ARGS)

## plan: capacity and cost plan per feature (config/traffic.yaml, config/prices.yaml), each replayed through the
## router's engine in simulated time; table and plots in reports/plan/ (PLAN_ARGS="--shape lambda-fleet"; docs/operating.md).
PLAN_ARGS ?=
plan: $(STAMPS)/venv
	$(PY) -m tools.planner $(PLAN_ARGS)

## size: stepped load against one target (the emulator on loopback; SIZE_ARGS="--aws --model-id ARN" for a real PT)
## up to throttles or the latency knee; YAML snippet and plot in reports/sizing/.
SIZE_ARGS ?=
size: $(STAMPS)/venv
	$(PY) -m tools.sizing $(SIZE_ARGS)

## shadow-report: candidate against incumbent per feature from the router's shadow and judge records (SHADOW_LOG=a
## log file; default: the records of `make shadow-overhead`); table with judge scores, JSON and latency/TTFT plots
## in reports/shadow/.
SHADOW_LOG ?= reports/shadow/records.jsonl
shadow-report: $(STAMPS)/venv
	@test -f $(SHADOW_LOG) || $(PY) -m tools.shadow_overhead --out $(dir $(SHADOW_LOG))
	$(PY) -m tools.shadow_report $(SHADOW_LOG) --out reports/shadow

## shadow-overhead: the caller's p50/p99 with shadowing on and off, same run (docs/design-notes.md quotes it).
shadow-overhead: $(STAMPS)/venv
	$(PY) -m tools.shadow_overhead --requests 600 --grace-ms 50
	$(PY) -m tools.shadow_overhead --requests 600 --grace-ms 0

clean:
	rm -rf cdk.out build reports $(STAMPS) $(LAMBDA_VENV) .pytest_cache .mypy_cache .ruff_cache
