# Two commands for a fresh machine: `make serve` and `make test`.
# `make serve` installs geodns and what serving needs; `make test` adds the test tools.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
TEST_STAMP := $(VENV)/.installed-test
CONFIG ?= geodns.yaml
# What the editable install builds or reads at install time: a change to any of them
# installs again (the version, the dependencies, the optional C helper).
INSTALL_INPUTS := pyproject.toml setup.py geodns/__init__.py geodns/_udpbatch.c geodns/_plane.c \
                  geodns/_udpbatch.h geodns/_mmdbtree.c geodns/_zonetext.c

.PHONY: serve test lint check bench clean

$(STAMP): $(INSTALL_INPUTS)
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
	  { echo "geodns needs Python 3.11 or newer; $(PYTHON) is $$($(PYTHON) -V 2>&1)" \
	    "(give another with make PYTHON=python3.12)" >&2; exit 1; }
	@$(PYTHON) -m venv $(VENV) || \
	  { echo "$(PYTHON) -m venv failed: on Debian or Ubuntu, apt install python3-venv" >&2; \
	    rm -rf $(VENV); exit 1; }
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e .
	@$(BIN)/python -c 'import geodns._udpbatch, geodns._mmdbtree, geodns._zonetext' 2>/dev/null || \
	  echo "note: the C helpers for batched UDP, steering maps and zone reading were not built (no C" \
	       "compiler or Python headers: apt install gcc python3-dev, then make clean serve);" \
	       "geodns works without them, more slowly (README.md)" >&2
	@# A helper that failed to build again keeps its old module (setup.py marks them optional):
	@# refuse one older than its sources rather than test or serve stale C.
	@$(BIN)/python -c 'import glob, os, sys; \
	  src = {"_udpbatch": ["_udpbatch.c", "_plane.c", "_udpbatch.h"], "_mmdbtree": ["_mmdbtree.c"], \
	         "_zonetext": ["_zonetext.c"]}; \
	  stale = [m for m, cs in src.items() for so in glob.glob(f"geodns/{m}.*.so") \
	           if os.path.getmtime(so) < max(os.path.getmtime(f"geodns/{c}") for c in cs)]; \
	  stale and print("error: the C helper(s) " + ", ".join(stale) + " did not build again: the" \
	                  " module is older than its source (see why: $(BIN)/pip install -v -e .)", \
	                  file=sys.stderr); sys.exit(1 if stale else 0)'
	touch $(STAMP)

$(TEST_STAMP): $(STAMP)
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(TEST_STAMP)

serve: $(STAMP)
	$(BIN)/geodns serve --config $(CONFIG)

check: $(STAMP)
	$(BIN)/geodns check --config $(CONFIG)

lint: $(TEST_STAMP)
	$(BIN)/ruff check geodns tests bench
	$(BIN)/mypy

test: $(TEST_STAMP) lint
	$(BIN)/python -m pytest -q --durations=25

bench: $(STAMP)
	$(BIN)/python bench/run.py

clean:
	rm -rf $(VENV) build .pytest_cache .mypy_cache .ruff_cache geodns/*.so
