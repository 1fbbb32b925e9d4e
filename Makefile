# The two commands a fresh machine needs: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
BENCH_STAMP := $(VENV)/.installed-bench

.PHONY: demo test chaos bench lint schemas clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[test]'
	touch $(STAMP)

$(BENCH_STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[test,bench]'
	touch $(STAMP) $(BENCH_STAMP)

## demo: the whole flow offline (embedded broker, daemon, sample request); files in out/
demo: $(STAMP)
	$(BIN)/codegend demo

## test: the whole suite (unit, integration against a real broker, acceptance, chaos), then
## the integration tests once more with jobs.execution = "parallel"
test: $(STAMP)
	$(BIN)/python -m pytest
	CODEGEND_TEST_EXECUTION=parallel $(BIN)/python -m pytest tests/integration -q

## chaos: the crash-anywhere soak: 100 SIGKILLs at random moments, then every invariant
chaos: $(STAMP)
	CODEGEND_CHAOS_KILLS=100 $(BIN)/python -m pytest tests/chaos -q -s --timeout 1800

## bench: the benchmark (about 5 minutes on 2 cores): bench/RESULTS.md, the plot, the profile;
## BENCH_ARGS=--quick for a one-minute smoke run (written to bench/.runs/quick/)
bench: $(BENCH_STAMP)
	$(BIN)/python -m bench $(BENCH_ARGS)
	$(BIN)/python -m bench.robustness

lint: $(STAMP)
	$(BIN)/ruff check daemon tests bench
	$(BIN)/ruff format --check daemon tests bench

## schemas: regenerate schemas/*.schema.json from the pydantic models
schemas: $(STAMP)
	$(BIN)/codegend schemas schemas

clean:
	rm -rf $(VENV) out .pytest_cache
