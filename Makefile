# llm-proxy: `make run` for a working local proxy, `make test` for the checks CI runs.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
HOST ?= 127.0.0.1
PORT ?= 8000
MOCK_PORT ?= 8001
# What `make test` uses; .ci/run makes sure both services are up.
TEST_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/llm_proxy
TEST_REDIS_URL ?= redis://127.0.0.1:6379/9
PYTEST_ARGS ?=

.PHONY: install run test lint typecheck test-services test-zero-setup bench clean

$(VENV)/.installed: pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit("llm-proxy needs Python >= 3.11") if sys.version_info < (3, 11) else None'
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	@touch $@

install: $(VENV)/.installed

# Migrate, load the demo config, print a token and examples, then serve the proxy on
# Daphne with the mock provider beside it (Ctrl-C stops both).
run: install
	$(PY) manage.py migrate --noinput
	MOCK_PORT=$(MOCK_PORT) $(PY) manage.py quickstart --url http://$(HOST):$(PORT)
	@$(PY) manage.py mock_provider --host 127.0.0.1 --port $(MOCK_PORT) --chunks 12 --chunk-delay 0.05 & \
	mock=$$!; trap 'kill $$mock 2>/dev/null' EXIT INT TERM; \
	$(PY) -m daphne -b $(HOST) -p $(PORT) proxy_site.asgi:application

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: install
	$(VENV)/bin/mypy .

# The whole suite against PostgreSQL and Redis.
test-services: install
	DATABASE_URL=$(TEST_DATABASE_URL) REDIS_URL=$(TEST_REDIS_URL) $(PY) -m pytest $(PYTEST_ARGS)

# The key tests again on the zero-setup defaults: SQLite and the embedded counter store.
test-zero-setup: install
	env -u DATABASE_URL -u REDIS_URL $(PY) -m pytest -m core $(PYTEST_ARGS)

test: lint typecheck test-services test-zero-setup

bench: install
	$(PY) bench/run.py

clean:
	rm -rf $(VENV) var .mypy_cache .ruff_cache .pytest_cache
