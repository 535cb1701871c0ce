# The two set-up commands of the README:
#   make demo   install and run the main job (the demo)
#   make test   install and run the test suite
# The CPU wheel of torch is pinned here so laptops and CI stay small; on a GPU
# cluster install with `pip install .` to resolve a CUDA build instead.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
TORCH  ?= torch==2.13.0

IOHUB  ?= .venv-iohub
.PHONY: install demo test

# iohub 0.3 (NGFF 0.5, zarr 3) needs Python >= 3.12: its own venv for the interop tests
# (tests/interop/iohub_tool.py runs there). Without such a Python the iohub tests are skipped.
$(IOHUB)/bin/iohub-ready:
	@for py in python3.13 python3.12 $$(ls -d /root/.pyenv/versions/3.1[2-9]*/bin/python3 2>/dev/null); do \
	  if $$py -c 'import sys; sys.exit(sys.version_info < (3, 12))' 2>/dev/null; then \
	    $$py -m venv $(IOHUB) && $(IOHUB)/bin/pip install -q "iohub>=0.3,<0.4" && touch $@ && exit 0; \
	  fi; \
	done; echo "note: no Python >= 3.12 found: the iohub interop tests will be skipped"

$(BIN)/hts: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q "$(TORCH)"
	$(BIN)/pip install -q -e ".[test]"
	touch $@

install: $(BIN)/hts

demo: install
	$(BIN)/hts demo

# two test processes: much of the suite waits (SLURM scheduling, cluster start-up, subprocesses), so two
# overlap on two cores; --dist loadfile keeps each test file in one process, so its module fixtures (a plate
# run once for its tests) are made once (each process that runs SLURM tests starts its own test cluster)
TEST_JOBS ?= 2
test: install $(IOHUB)/bin/iohub-ready
	$(BIN)/python -m pytest -n $(TEST_JOBS) --dist loadfile
