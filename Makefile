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

demo: $(STAMP)
	$(BIN)/superexperts profile --out runs/demo --overwrite
	$(BIN)/superexperts prune-eval --from runs/demo --random 3 --layer-controlled --causal --generate "the first" --overwrite
	$(BIN)/superexperts sinks --from runs/demo --overwrite
	$(BIN)/superexperts quant-eval --from runs/demo --bits 4 --random 3 --overwrite
	$(BIN)/superexperts report runs/demo
	@echo "SYNTHETIC demo study done: open runs/demo/report.html (profile, pruning, causal check, sinks, quantization)."

test: $(STAMP)
	$(BIN)/python -m pytest -p no:cacheprovider

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks

.PHONY: install demo test lint
