# The two commands a newcomer needs: `make serve` and `make test`.
# Both create .venv on first use and install the pinned dependencies into it.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# unixODBC reads its driver list from here (written by scripts/install-odbc-driver).
export ODBCSYSINI ?= $(CURDIR)/$(VENV)/etc/odbc

.PHONY: serve test install

$(BIN)/concord: pyproject.toml requirements/constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade "pip>=24"
	$(BIN)/pip install --quiet -c requirements/constraints.txt -e ".[dev,mssql]"
	touch $@

install: $(BIN)/concord

serve: install
	$(BIN)/concord serve

test: install
	PYTHON=$(BIN)/python scripts/install-odbc-driver
	# Debian's chromium (browser tests) and nginx (the proxy test), when missing.
	scripts/install-chromium
	scripts/install-nginx
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/pytest
