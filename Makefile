# Two commands set everything up: `make dev` serves, `make test` tests.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed

.PHONY: dev test run lint format bench bench-referrals clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(INSTALLED): $(BIN)/python setup.cfg pyproject.toml
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,examples]'
	touch $@

## dev: serve the API on 127.0.0.1:8000 with SQLite and in-process limits
dev: $(INSTALLED)
	$(BIN)/partner-api db upgrade
	$(BIN)/partner-api demo-key
	$(BIN)/partner-api run --host 127.0.0.1 --port 8000

## test: lint, type-check and run every test against real services
test: $(INSTALLED) lint
	$(BIN)/pytest --cov=partner_api --cov-branch --cov-report=term:skip-covered

## run: production serving with gunicorn (needs DATABASE_URL and REDIS_URL)
run: $(INSTALLED)
	$(BIN)/partner-api db upgrade
	$(BIN)/gunicorn -c gunicorn.conf.py wsgi:app

lint: $(INSTALLED)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy src

format: $(INSTALLED)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

## bench: server CPU per request against a bare Flask hello
bench: $(INSTALLED)
	$(BIN)/python bench/request_cpu.py

## bench-referrals: first vs last page among 1,000,000 users (PostgreSQL, ~1 min)
bench-referrals: $(INSTALLED)
	$(BIN)/python bench/referral_pages.py

clean:
	rm -rf $(VENV) instance .pytest_cache .ruff_cache .mypy_cache
