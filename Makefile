# Two entry points (see README):
#   make run   - install into .venv and run the main job (writes under runs/)
#   make test  - install into .venv (with test extras) and run the test suite
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
TORCH_PIN := torch==2.13.0
# PyTorch's CPU-only wheels (PyPI's Linux wheel pulls the CUDA libraries, several GB)
TORCH_INDEX ?= https://download.pytorch.org/whl/cpu
PYTEST_ARGS ?= -n 2

.PHONY: install install-test run demo test bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# torch first, pinned, when it is absent: never pull a multi-GB CUDA build.
$(VENV)/.torch: | $(BIN)/python
	@$(BIN)/python -c "import torch" 2>/dev/null || \
		$(BIN)/pip install --retries 2 --timeout 30 --index-url "$(TORCH_INDEX)" "$(TORCH_PIN)"
	@touch $@

$(VENV)/.installed: pyproject.toml $(VENV)/.torch
	$(BIN)/pip install -e ".[test,data]"
	@touch $@

install: $(VENV)/.installed

run: install
	$(BIN)/hhld validate --quick --out runs/validate

demo: install
	$(BIN)/hhld demo --out runs/demo

test: install
	$(BIN)/python -m pytest $(PYTEST_ARGS)

bench: install
	$(BIN)/pip install -q -e ".[bench]"
	$(BIN)/python benchmarks/bench_ensemble.py

clean:
	rm -rf $(VENV) runs .pytest_cache
