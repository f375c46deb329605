# fr-exporter: `make demo` (offline, simulated exchanges), `make test`, `make run` (live), `make bench`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
DURATION ?= 0
CONFIG ?= config/live.yaml

.PHONY: install demo run test test-fast lint tools bench bench-cryptofeed generate clean

$(BIN)/fr-exporter: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -e '.[test]'
	touch $@

install: $(BIN)/fr-exporter

demo: install
	$(BIN)/fr-exporter demo --config config/demo.yaml --duration $(DURATION)

run: install
	$(BIN)/fr-exporter --config $(CONFIG)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy exporter

# the external tools the e2e tests run: a missing one fails here, naming its Debian package
tools:
	@bash .ci/tools

# -rs prints the reason of every skip; with CI=true a skip fails the run (tests/conftest.py).
# Four workers on the two cores (many tests wait on sockets and subprocesses: the other workers'
# CPU fills the waits), one test file each at a time, longest files first (pyproject addopts and
# tests/conftest.py; docs/testing.md). PYTEST_N=0 runs in one process.
PYTEST_N ?= 4
PYTEST_PAR = $(if $(filter 0,$(PYTEST_N)),,-n $(PYTEST_N))
test: install lint tools
	$(BIN)/pytest -q -p no:cacheprovider -rs $(PYTEST_PAR) $(PYTEST_ARGS)

# everything but the end-to-end tests (no external tools needed)
test-fast: install
	$(BIN)/pytest -q -p no:cacheprovider -rs -m "not e2e" $(PYTEST_PAR) $(PYTEST_ARGS)

# Every benchmark prints the figures of the README's performance section. The cryptofeed
# side-by-side runs in its own environment: cryptofeed is not a dependency of the project or of CI.
# each benchmark as the exporter runs: recording measured through a loopback websocket with
# permessage-deflate as each exchange answers and TLS (what the README quotes), 15 interleaved pairs
# a configuration: a one-instrument ticker frame's recording is ~0.6 us of ~6.5 us, and single pairs
# range over +-15 points, so 7 pairs left the median a few points from run to run
BENCH_ARGS_bench_recording = --socket --tls --runs 15

bench: install bench-cryptofeed
	@for b in bench/bench_*.py; do [ "$$b" = bench/bench_cryptofeed.py ] && continue; \
	  n=$$(basename $$b .py); echo "== $$b"; \
	  case $$n in bench_recording) args="$(BENCH_ARGS_bench_recording)";; *) args="";; esac; \
	  $(BIN)/python $$b $$args || exit 1; done

BENCH_VENV ?= .venv-bench
$(BENCH_VENV)/.installed: pyproject.toml
	test -x $(BENCH_VENV)/bin/python || $(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/pip install -q -e . 'cryptofeed>=2.4,<2.5'
	touch $@

bench-cryptofeed: $(BENCH_VENV)/.installed
	@echo "== bench/bench_cryptofeed.py"
	$(BENCH_VENV)/bin/python bench/bench_cryptofeed.py

generate: install
	$(BIN)/python -m mixin.generate

clean:
	rm -rf var build *.egg-info .pytest_cache .ruff_cache
