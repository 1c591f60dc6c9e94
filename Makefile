# onboards: `make run` serves the API with demo data; `make test` runs every check.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: install run test lint typecheck spec-check unit clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check --upgrade pip==25.3
	$(BIN)/pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[dev]'
	touch $(STAMP)

run: install
	$(BIN)/onboards serve --demo

lint: install
	$(BIN)/ruff check .

typecheck: install
	$(BIN)/mypy

spec-check: install
	$(BIN)/openapi-spec-validator openapi.yaml

unit: install
	$(BIN)/pytest $(PYTEST_ARGS)

test: lint typecheck spec-check unit

clean:
	rm -rf $(VENV) data .pytest_cache .mypy_cache .ruff_cache .hypothesis
