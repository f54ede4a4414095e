# The two commands a newcomer runs: `make demo` and `make test`. Both set up .venv first.
PY ?= python3
VENV := .venv
VPY := $(VENV)/bin/python
STAMP := $(VENV)/.alignlab-installed
TORCH_VERSION ?= 2.13.0

.PHONY: setup demo test clean

$(VPY):
	$(PY) -m venv $(VENV)
	$(VPY) -m pip install --quiet --upgrade pip

# torch first, pinned, only when absent: a bare `torch` requirement pulls GB of CUDA wheels.
$(STAMP): $(VPY) pyproject.toml
	@$(VPY) -c "import torch" 2>/dev/null || $(VPY) -m pip install --quiet torch==$(TORCH_VERSION)
	$(VPY) -m pip install --quiet -e ".[eval,test]"
	@touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/alignlab demo

test: $(STAMP)
	$(VPY) -m pytest -q tests

clean:
	rm -rf runs/demo .pytest_cache
