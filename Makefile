# The two set-up commands of the README:
#   make demo   install and run the main job (the demo)
#   make test   install and run the test suite
# The CPU wheel of torch is pinned here so laptops and CI stay small; on a GPU
# cluster install with `pip install .` to resolve a CUDA build instead.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
TORCH  ?= torch==2.13.0

.PHONY: install demo test

$(BIN)/hts: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q "$(TORCH)"
	$(BIN)/pip install -q -e ".[test]"
	touch $@

install: $(BIN)/hts

demo: install
	$(BIN)/hts demo

test: install
	$(BIN)/python -m pytest
