# Funnel — `make` lists the targets. `make run` and `make test` do their own set-up.
.DEFAULT_GOAL := help
SHELL := /bin/bash

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Re-install whenever the dependency list changes.
STAMP := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)

.PHONY: help install run demo test test-unit browser lint bench replay-deadletters clean

help: ## List the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  \033[36m%-20s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	rm -f $(VENV)/.installed-* && touch $(STAMP)

install: $(STAMP) ## Create .venv and install Funnel with its dev tools

run: $(STAMP) ## Start the whole funnel: broker, databases, 3 APIs, relay and consumers
	$(BIN)/python -m deploy.run

demo: $(STAMP) ## With `make run` going: a few hundred visitors' journeys through the public APIs (VISITORS=300)
	$(BIN)/python -m deploy.demo --visitors $${VISITORS:-300}

test: $(STAMP) browser ## Run every test against a real broker, SQLite and PostgreSQL
	$(BIN)/python -m pytest $(PYTEST_ARGS)

browser: ## Install headless Chromium + chromedriver (Debian) for the page tests, if missing
	@if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "installing chromium and chromium-driver (page tests)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	    chromium chromium-driver >/dev/null; \
	else echo "chromium/chromedriver missing and not root: the page tests will skip"; fi

test-unit: $(STAMP) ## Run only the unit and contract tests (no broker, no PostgreSQL)
	$(BIN)/python -m pytest tests/unit tests/contract $(PYTEST_ARGS)

lint: $(STAMP) ## ruff (lint + format check) and mypy
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

bench: $(STAMP) ## Run the benchmarks; prints ratios, writes var/bench/latest.json
	$(BIN)/python -m bench

replay-deadletters: $(STAMP) ## Replay dead letters to their source topics (LIMIT=100)
	$(BIN)/funnel replay --limit $${LIMIT:-100}

clean: ## Remove var/ (databases, logs, bench results); keeps .venv
	rm -rf var
