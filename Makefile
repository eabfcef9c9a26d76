# radtrace developer and CI entry points. `make check` and `make test` are exactly what CI runs.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.radtrace-installed

.PHONY: setup check test test-unit run bench clean

# Byte-compiled src: the package is installed editable, so nothing compiles it, and where PYTHONDONTWRITEBYTECODE is
# set (as on CI's machines) every radtrace process compiled each module it imported again: about 0.6 s of CPU for
# the worker's, console's and listener's modules together (5 runs each, same machine). Stale files are recompiled.
setup: $(STAMP)
	$(BIN)/python -m compileall -q src

# pip >= 25.1 reads [dependency-groups]; torch is pinned in pyproject.toml so pip takes the local CPU wheel.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check "pip>=25.1"
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e . --group dev
	touch $@

check: setup
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy

# The suite on TEST_WORKERS pytest-xdist workers (2: CI's two cores, most tests wait on servers and peers); each test
# module stays on one worker, so a module's fixtures (a browser, a served API) start once, and modules go out in
# collection order (xdist would send the modules with most tests first: the few long end-to-end ones came last and
# one worker ran them alone). TEST_WORKERS=0: one process.
TEST_WORKERS ?= 2
test: setup
	$(BIN)/python -m pytest $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder)

test-unit: setup
	$(BIN)/python -m pytest -m unit

# The whole service on embedded defaults: SQLite, embedded broker, everything under ./var, every draft kept in
# var/drafts. `radtrace send` from this machine is allowed in (calling AE RADTRACE-SEND from 127.0.0.1) unless
# RADTRACE_LISTENER__ALLOWED_CALLERS says otherwise. `make run DEMO=1`: no weights needed, recorded model texts
# are replayed and every draft says "DEMO – NOT A MODEL READING".
RUN_CALLERS := [{"ae_title": "RADTRACE-SEND", "host": "127.0.0.1"}]
DEMO_ENV := $(if $(DEMO),RADTRACE_MODEL__BACKEND=demo RADTRACE_MODEL__DEMO=true)
run: setup
	RADTRACE_LISTENER__ALLOWED_CALLERS=$${RADTRACE_LISTENER__ALLOWED_CALLERS:-'$(RUN_CALLERS)'} $(DEMO_ENV) \
		$(BIN)/radtrace serve

bench: setup
	$(BIN)/python bench/run_all.py

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
