# The two commands of the README: `make run` and `make test`. Both set themselves up.
# The interpreter the virtualenv is made from. A distribution's CPython (Debian's
# /usr/bin/python3, as the official Docker image's) is built with profile-guided and
# link-time optimisation and linked statically; a default source build (pyenv's, first on
# this machine's PATH) is neither: on the distribution's, the platform's processes took
# 9-27% less CPU a call, 15% on average (docs/PERFORMANCE.md, session 16). So it is taken
# when it is 3.11 or newer and can make a virtualenv, else python3; `make PYTHON=...`
# chooses another.
PYTHON ?= $(shell /usr/bin/python3 -c 'import sys, ensurepip, venv; sys.exit(sys.version_info < (3, 11))' >/dev/null 2>&1 && echo /usr/bin/python3 || echo python3)
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test install bench lint clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

run: install
	$(BIN)/gomobile run

test: install
	$(BIN)/python -m pytest

bench: install
	$(BIN)/python -m pip install --quiet -e ".[test,bench]"
	$(BIN)/python -m bench.run_all $(BENCH_ARGS)

clean:
	rm -rf $(VENV) var .pytest_cache
