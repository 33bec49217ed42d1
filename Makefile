# The two commands of the README: `make demo` and `make test`. Both create .venv when it is missing.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip

.PHONY: demo test lint install install-dev web java chromium clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

# Re-install when the project definition changes.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(PIP) install --quiet -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(PIP) install --quiet -e '.[dev,spark]'
	touch $(VENV)/.installed $@

# Front-end libraries (D3) come from the npm registry at build time; the service serves them locally.
WEB := serving/web
$(WEB)/node_modules/.installed: $(WEB)/package.json $(WEB)/package-lock.json
	@command -v npm >/dev/null 2>&1 || (apt-get update -qq && apt-get install -y -qq npm)
	npm ci --prefix $(WEB) --no-audit --no-fund --loglevel=error
	touch $@

web: $(WEB)/node_modules/.installed

install: $(VENV)/.installed web

install-dev: $(VENV)/.installed-dev web

demo: install
	$(BIN)/salesml demo

# Tests marked spark need a Java runtime; install it from Debian when the machine has none.
java:
	@command -v java >/dev/null 2>&1 || (apt-get update -qq && apt-get install -y -qq default-jre-headless)

# Browser tests render pages in Debian's Chromium; the demo test runs the curl commands the demo prints.
chromium:
	@command -v chromium >/dev/null 2>&1 || (apt-get update -qq && apt-get install -y -qq chromium)
	@command -v curl >/dev/null 2>&1 || (apt-get update -qq && apt-get install -y -qq curl)

# Two workers, one core each (tests/conftest.py gives each one thread); a module's tests stay on one worker.
test: install-dev java chromium
	$(BIN)/python -m pytest -n 2 --dist loadfile --durations=20

lint: install-dev
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) .salesml .pytest_cache .ruff_cache $(WEB)/node_modules
