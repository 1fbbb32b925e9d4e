# The two commands a fresh machine needs: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test chaos lint schemas clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[test]'
	touch $(STAMP)

## demo: the whole flow offline (embedded broker, daemon, sample request); files in out/
demo: $(STAMP)
	$(BIN)/codegend demo

## test: the whole suite (unit, integration against a real broker, acceptance)
test: $(STAMP)
	$(BIN)/python -m pytest

## chaos: the crash-anywhere soak: 100 SIGKILLs at random moments, then every invariant
chaos: $(STAMP)
	CODEGEND_CHAOS_KILLS=100 $(BIN)/python -m pytest tests/chaos -q -s --timeout 1800

lint: $(STAMP)
	$(BIN)/ruff check daemon tests
	$(BIN)/ruff format --check daemon tests

## schemas: regenerate schemas/*.schema.json from the pydantic models
schemas: $(STAMP)
	$(BIN)/codegend schemas schemas

clean:
	rm -rf $(VENV) out .pytest_cache
