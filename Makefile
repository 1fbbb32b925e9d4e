# The two commands a fresh machine needs: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip --quiet --disable-pip-version-check
STAMP := $(VENV)/.installed
TEST_STAMP := $(VENV)/.installed-test
BENCH_STAMP := $(VENV)/.installed-bench

# The locks (make lock): every package with its version and hashes, for CPython 3.11+ on any
# platform. requirements.lock is the daemon's (make demo, the Dockerfile); requirements-test.lock
# adds the test extra (make test, chaos, lint); requirements-bench.lock the bench extra too.
LOCK := requirements.lock
TEST_LOCK := requirements-test.lock
BENCH_LOCK := requirements-bench.lock
UV_VERSION := 0.13.9
TOOLS := .tools
UV := $(TOOLS)/bin/uv
# setuptools is the build backend: locked too, so codegend installs without build isolation
LOCK_ARGS := --universal --python-version 3.11 --generate-hashes --no-emit-package pip \
	--custom-compile-command 'make lock' --quiet $(if $(UPGRADE),--upgrade)

.PHONY: demo test unit chaos cluster bench lint schemas lock clean

# $(call install,LOCK,STAMPS): a new venv holding exactly LOCK's packages, then codegend;
# pip check fails when pyproject.toml asks for something the lock lacks (run make lock)
define install
	rm -rf $(VENV)
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --require-hashes --no-deps -r $(1)
	$(PIP) install --no-deps --no-build-isolation -e .
	$(PIP) check
	touch $(2)
endef

$(STAMP): pyproject.toml $(LOCK)
	$(call install,$(LOCK),$(STAMP))

$(TEST_STAMP): pyproject.toml $(TEST_LOCK)
	$(call install,$(TEST_LOCK),$(STAMP) $(TEST_STAMP))

$(BENCH_STAMP): pyproject.toml $(BENCH_LOCK)
	$(call install,$(BENCH_LOCK),$(STAMP) $(TEST_STAMP) $(BENCH_STAMP))

$(UV):
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/python -m pip --quiet --disable-pip-version-check install uv==$(UV_VERSION)

## lock: regenerate the three locks from pyproject.toml, keeping the pinned versions that still
## fit; UPGRADE=1 moves every package to its newest allowed version
lock: $(UV)
	echo 'setuptools>=68' | $(UV) pip compile pyproject.toml - $(LOCK_ARGS) -o $(LOCK)
	echo 'setuptools>=68' | $(UV) pip compile pyproject.toml - --extra test \
		-c $(LOCK) $(LOCK_ARGS) -o $(TEST_LOCK)
	echo 'setuptools>=68' | $(UV) pip compile pyproject.toml - --extra test --extra bench \
		-c $(TEST_LOCK) $(LOCK_ARGS) -o $(BENCH_LOCK)

## demo: the whole flow offline (embedded broker, daemon, sample request); files in out/
demo: $(STAMP)
	$(BIN)/codegend demo

## test: the whole suite (unit, integration against a real broker, hostile, acceptance, chaos,
## cluster), in three processes that share the cores well (most of the suite waits on
## brokers and daemons), each with a broker of its own: the first runs the unit, integration
## and hostile tiers, then the cluster tier (three daemons in one group); the second the
## acceptance and chaos tiers; the third the integration tests once more with
## jobs.execution = "parallel", then the toolchain tests (npm, tsc, pip, the generated app:
## the same in either mode, so run once). The others' output follows the first's.
test: $(TEST_STAMP)
	@( CODEGEND_TEST_EXECUTION=parallel $(BIN)/python -m pytest tests/integration -q \
		-m "not toolchain" -p no:cacheprovider; parallel=$$?; \
	  $(BIN)/python -m pytest -q -m toolchain -p no:cacheprovider; toolchain=$$?; \
	  exit $$(( parallel || toolchain )) ) > $(VENV)/third-pass.log 2>&1 & third=$$!; \
	$(BIN)/python -m pytest -q tests/acceptance tests/chaos -m "not toolchain" \
		-p no:cacheprovider > $(VENV)/second-pass.log 2>&1 & second=$$!; \
	$(BIN)/python -m pytest tests/unit tests/integration tests/hostile -m "not toolchain"; \
	first=$$?; \
	$(BIN)/python -m pytest -q tests/cluster -m "not soak" -p no:cacheprovider; cluster=$$?; \
	wait $$second; acceptance=$$?; wait $$third; parallel=$$?; \
	echo "== the acceptance and chaos tiers"; cat $(VENV)/second-pass.log; \
	echo "== integration tests in parallel execution, then the toolchain tests"; \
	cat $(VENV)/third-pass.log; \
	exit $$(( first || cluster || acceptance || parallel ))

## unit: the unit tier alone (in-process, no broker, no model: seconds)
unit: $(TEST_STAMP)
	$(BIN)/python -m pytest tests/unit -q

## chaos: the crash-anywhere soaks: 100 SIGKILLs of one daemon at random moments, then 100
## kills of random daemons of three in one group; then every invariant
chaos: $(TEST_STAMP)
	CODEGEND_CHAOS_KILLS=100 $(BIN)/python -m pytest tests/chaos -q -s --timeout 1800
	CODEGEND_CHAOS_KILLS=100 $(BIN)/python -m pytest tests/cluster -m soak -q -s --timeout 1800

## cluster: three real daemons in one group: kills, a restart, a rolling restart, a duplicate
## after a move (docs/cluster-design.md 7.2)
cluster: $(TEST_STAMP)
	$(BIN)/python -m pytest tests/cluster -m "not soak" -q

## bench: the benchmark (about 5 minutes on 2 cores): bench/RESULTS.md, the plot, the profile;
## BENCH_ARGS=--quick for a one-minute smoke run (written to bench/.runs/quick/); then
## bench/ROBUSTNESS.md, bench/VERIFICATION.md and bench/FAILOVER.md (cluster mode: failover,
## restore, changelog bytes, scaling; about 5 minutes more, python -m bench.failover --quick
## for a smoke run)
bench: $(BENCH_STAMP)
	$(BIN)/python -m bench $(BENCH_ARGS)
	$(BIN)/python -m bench.robustness
	$(BIN)/python -m bench.verification
	$(BIN)/python -m bench.failover

## lint: ruff over everything, then mypy (strict, over daemon/: [tool.mypy] in pyproject.toml)
lint: $(TEST_STAMP)
	$(BIN)/ruff check daemon tests bench
	$(BIN)/ruff format --check daemon tests bench
	$(BIN)/python -m mypy

## schemas: regenerate schemas/*.schema.json from the pydantic models
schemas: $(STAMP)
	$(BIN)/codegend schemas schemas

clean:
	rm -rf $(VENV) $(TOOLS) out .pytest_cache
