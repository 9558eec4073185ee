# Two commands: `make run` (set up and start on the embedded default) and `make test`.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell sha1sum pyproject.toml | cut -c1-12)
HOST ?= 127.0.0.1
PORT ?= 8000
# The local Messages API server (examples and the demo talk to it unless ANTHROPIC_API_KEY is set).
LLM_PORT ?= $(shell echo $$(( $(PORT) + 1 )))

.PHONY: setup run test lint bench browser-deps sandbox-deps gvisor-deps clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check --upgrade pip
	$(PY) -c "import tomllib; p = tomllib.load(open('pyproject.toml', 'rb'))['project']; \
	  print('\n'.join(p['dependencies'] + p['optional-dependencies']['dev'] \
	  + p['optional-dependencies']['instrumentations']))" > $(VENV)/requirements.txt
	$(PY) -m pip install -q --disable-pip-version-check -r $(VENV)/requirements.txt
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

setup: $(STAMP)

run: setup sandbox-deps
	mkdir -p var
	$(PY) manage.py migrate --noinput -v0
	$(PY) manage.py collectstatic --noinput -v0
	HOST=$(HOST) PORT=$(PORT) $(PY) manage.py demo_setup
	HOST=$(HOST) PORT=$(PORT) $(PY) manage.py demo_agents
	PYTHONUNBUFFERED=1 MALLOC_ARENA_MAX=2 FLIGHTDECK_HOST=$(HOST) FLIGHTDECK_PORT=$(PORT) \
	  PATH=$(abspath $(VENV))/bin:$$PATH \
	  EXECUTION_LOCAL_LLM_PORT=$(LLM_PORT) EXECUTION_LOCAL_LLM_URL=http://127.0.0.1:$(LLM_PORT) \
	  $(VENV)/bin/honcho -f Procfile start

# Debian's Chromium drives the browser tests; Playwright never downloads a browser.
browser-deps:
	@command -v chromium >/dev/null || (apt-get update -qq && apt-get install -y -qq chromium >/dev/null) \
	  || echo "chromium could not be installed: browser tests will say so"

# Agents run in bubblewrap's sandbox (Debian package bubblewrap).
sandbox-deps:
	@command -v bwrap >/dev/null || (apt-get update -qq && apt-get install -y -qq bubblewrap >/dev/null) \
	  || echo "bubblewrap could not be installed: agent runs will fail to start"

# gVisor (Debian package runsc) is used instead of bubblewrap where installed; the tests
# install it so both backends are exercised.
gvisor-deps:
	@command -v runsc >/dev/null || (apt-get update -qq && apt-get install -y -qq runsc >/dev/null) \
	  || echo "runsc could not be installed: the gVisor backend's tests will say so"

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# The whole suite on PostgreSQL, then again on SQLite, the embedded default that `make run`
# uses: the span path and its readers, and billing (its budget windows take SQLite's write
# turn), less the tests of what only PostgreSQL has.
test: setup browser-deps sandbox-deps gvisor-deps lint
	$(PY) -m pytest $(PYTEST_ARGS)
	FLIGHTDECK_TEST_DB=sqlite $(PY) -m pytest -m "not slow and not postgres" tests/controlplane tests/tracing tests/frontend tests/billing $(PYTEST_ARGS)

bench: setup sandbox-deps gvisor-deps
	@for b in bench/*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean:
	rm -rf var .pytest_cache test-artifacts
