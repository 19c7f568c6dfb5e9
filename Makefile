# Two commands on a fresh machine (see README):
#   make demo   install into .venv and scan the example pallet on local workers
#   make test   install into .venv (with test extras) and run the test suite
# Services the tests use (Slurm, Docker, helm) are started by .ci/run; without them those tests skip.

VENV   ?= .venv
PYTHON ?= python3
BIN     = $(VENV)/bin
PALLET ?= examples/simple
ARGS   ?=

.PHONY: demo test install clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $@

install: $(BIN)/.installed

demo: $(BIN)/.installed
	PATH=$(abspath $(BIN)):$$PATH $(BIN)/faasctl fit $(PALLET) $(ARGS)

test: $(BIN)/.installed
	PATH=$(abspath $(BIN)):$$PATH $(BIN)/python -m pytest $(ARGS)

clean:
	rm -rf $(VENV) results .pytest_cache
