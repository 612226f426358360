# The README's two commands. Each installs what it needs into .venv.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: install run test

$(BIN)/qbsync: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	@touch $@

install: $(BIN)/qbsync

run: install
	$(BIN)/qbsync demo

test: install
	$(BIN)/python -m pytest
