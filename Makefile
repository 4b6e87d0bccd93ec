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
# Every dependency (runtime, dev extra, the build backend, pip) at an exact version with its
# hashes; `make lock` writes it from pyproject.toml.
LOCK := requirements.lock
# For `make lock`: --upgrade, or --upgrade-package NAME (repeatable).
ARGS ?=

.PHONY: install lock run test lint typecheck test-services test-zero-setup bench clean agents browser

# Installs only what the lock names, then the project itself without resolving anything;
# `pip check` fails when pyproject.toml asks for something the lock does not hold.
$(VENV)/.installed: pyproject.toml $(LOCK)
	@$(PYTHON) -c 'import sys; sys.exit("llm-proxy needs Python >= 3.11") if sys.version_info < (3, 11) else None'
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --require-hashes --no-deps -r $(LOCK)
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	@$(PY) -m pip check || { echo "$(LOCK) does not match pyproject.toml: run make lock" >&2; exit 1; }
	@touch $@

install: $(VENV)/.installed

# The lock tool comes from the lock (uv, in the dev extra); this needs no `pip check`, so
# `make lock` works while the lock is behind pyproject.toml.
$(VENV)/bin/uv: | $(LOCK)
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --require-hashes --no-deps -r $(LOCK)

# Re-resolve the lock from pyproject.toml, keeping every pin that still fits its range (so a
# new or changed dependency moves only what it must). `make lock ARGS=--upgrade` takes the
# newest versions within pyproject's ranges; `make lock ARGS="--upgrade-package httpx"` one.
lock: $(VENV)/bin/uv
	$(PY) -c 'import tomllib; b = tomllib.load(open("pyproject.toml", "rb"))["build-system"]; print("\n".join([*b["requires"], "pip"]))' \
	| $(VENV)/bin/uv pip compile pyproject.toml - --extra dev --generate-hashes \
	    --python-version 3.11 --python-platform x86_64-unknown-linux-gnu \
	    --quiet --custom-compile-command "make lock" --output-file $(LOCK) $(ARGS)

# The real agent programs the end-to-end tests drive through the proxy (Claude Code, Codex), from
# agents/package-lock.json only: `npm ci` checks every integrity hash and resolves nothing.
# Again only when the lock is newer than the install; without npm there is nothing to do
# (those tests skip when node or npm is missing).
AGENTS := agents
$(AGENTS)/node_modules/.installed: $(AGENTS)/package.json $(AGENTS)/package-lock.json
	npm ci --prefix $(AGENTS) --no-audit --no-fund
	@touch $@

ifneq ($(shell command -v npm 2>/dev/null),)
agents: $(AGENTS)/node_modules/.installed
else
agents:
	@echo "npm not found: the agent tests will skip" >&2
endif

# The browser the console's end-to-end test drives (tests/support/browser.py): Debian's own
# chromium package, installed through apt like any system package (as root, or through
# password-less sudo), never a build `playwright install` would download. Quiet and instant
# when it is already there; without apt-get there is nothing to do (that test then skips).
CHROMIUM := /usr/bin/chromium
APT_GET := $(shell command -v apt-get 2>/dev/null)
ROOT := $(if $(filter 0,$(shell id -u)),,sudo -n)
browser:
ifeq ($(wildcard $(CHROMIUM)),)
ifneq ($(APT_GET),)
	$(ROOT) apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $(ROOT) apt-get install -y -qq --no-install-recommends chromium >/dev/null
	@$(CHROMIUM) --version 2>/dev/null
else
	@echo "no $(CHROMIUM) and no apt-get: the browser test will skip" >&2
endif
else
	@:
endif

# Migrate, load the demo config, print a token and examples, then serve the proxy on
# Daphne with the mock provider beside it (Ctrl-C stops both).
run: install dev-secrets
	$(PY) manage.py migrate --noinput
	MOCK_PORT=$(MOCK_PORT) $(PY) manage.py quickstart --url http://$(HOST):$(PORT)
	@# Metrics of earlier runs would add to this one's (prometheus_client multiprocess mode).
	@rm -rf "$${PROMETHEUS_MULTIPROC_DIR:-var/prometheus}"
	@$(PY) manage.py mock_provider --host 127.0.0.1 --port $(MOCK_PORT) --chunks 12 --chunk-delay 0.05 & \
	mock=$$!; trap 'kill $$mock 2>/dev/null' EXIT INT TERM; \
	$(PY) -m daphne -b $(HOST) -p $(PORT) proxy_site.asgi:application

# Development secrets (SECRET_KEY, Fernet key, JWT signing key, admin password), generated
# once into var/dev-secrets.json ($PROXY_VAR_DIR when set); settings only read the file.
.PHONY: dev-secrets
dev-secrets: install
	$(PY) -c 'from core.devsecrets import ensure_dev_secrets; ensure_dev_secrets()'

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports

typecheck: install
	$(VENV)/bin/mypy .

# The whole suite against PostgreSQL and Redis.
# The agent programs and Chromium are installed first; when that fails (no network to the npm
# registry or the Debian mirror) the rest of the suite still runs and the tests needing them
# fail, saying why.
test-services: install
	@$(MAKE) --no-print-directory agents || echo "installing the agent programs failed: their tests will fail" >&2
	@$(MAKE) --no-print-directory browser || echo "installing Chromium failed: the browser test will fail" >&2
	DATABASE_URL=$(TEST_DATABASE_URL) REDIS_URL=$(TEST_REDIS_URL) $(PY) -m pytest $(PYTEST_ARGS)

# The key tests again on the zero-setup defaults: SQLite and the embedded counter store.
test-zero-setup: install
	env -u DATABASE_URL -u REDIS_URL $(PY) -m pytest -m core $(PYTEST_ARGS)

test: lint typecheck test-services test-zero-setup

# The proxy on Daphne, uvicorn and granian against direct and LiteLLM (bench/README.md);
# BENCH_ARGS passes options, e.g. BENCH_ARGS="--database-url postgres://... --redis-url ...".
bench: install
	$(PY) bench/run.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) var .mypy_cache .ruff_cache .pytest_cache $(AGENTS)/node_modules
