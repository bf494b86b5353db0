# Two entry points: `make demo` and `make test`. Both create .venv on first use.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# The CPU torch wheel first: a bare `torch` requirement would pull a multi-GB CUDA build.
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# The whole study on the built-in demo (a tiny trained MoE, SYNTHETIC), into one run folder.
DEMO_OUT := runs/demo
DEMO_RES := src/superexperts/resources
# One thread: the demo model is tiny, and extra threads only spin on a busy machine.
demo: export OMP_NUM_THREADS ?= 1
demo: $(STAMP)
	$(BIN)/superexperts profile --out $(DEMO_OUT) --overwrite
	$(BIN)/superexperts prune-eval --from $(DEMO_OUT) --random 3 --layer-controlled --causal \
	    --tasks demo_arith --generate $(DEMO_RES)/demo/prompts.txt --overwrite
	$(BIN)/superexperts sinks --from $(DEMO_OUT) --overwrite
	$(BIN)/superexperts quant-eval --from $(DEMO_OUT) --bits 2 --group-size 16 --random 3 --overwrite
	$(BIN)/superexperts report --from $(DEMO_OUT)
	@echo "SYNTHETIC demo study done. Open $(DEMO_OUT)/report.html: the SEs found, what pruning them does"
	@echo "(perplexity, demo_arith accuracy, generations, causal check), attention sinks, quantization."

test: $(STAMP)
	$(BIN)/python -m pytest -p no:cacheprovider

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks scripts
	$(BIN)/lint-imports

.PHONY: install demo test lint
