# The two commands a newcomer needs: `make serve` and `make test`.
# Both create .venv on first use and install the pinned dependencies into it.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: serve test install bench

$(BIN)/concord: pyproject.toml requirements/constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade "pip>=24"
	$(BIN)/pip install --quiet -c requirements/constraints.txt -e ".[dev,mssql]"
	touch $@

install: $(BIN)/concord

serve: install
	$(BIN)/concord serve

test: install
	scripts/install-odbc-driver
	$(BIN)/pytest
