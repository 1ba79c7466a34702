# Two entry points: `make demo` and `make test`. Both create .venv and install
# everything they need on a fresh machine (the CPU build of torch where no GPU is).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test bench clean

demo: $(STAMP)
	$(BIN)/python examples/demo.py --out demo-out --tour

test: $(STAMP)
	@$(BIN)/python -m pytest -q; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests (exit 5): a failure to investigate, not a pass" >&2; fi; \
	exit $$rc

bench: $(STAMP)
	mkdir -p benchmarks/results
	$(BIN)/python -m benchmarks.fashion_fewshot --json benchmarks/results/fashion_fewshot.json \
		--png benchmarks/results/fashion_fewshot.png
	$(BIN)/python -m benchmarks.runtime_bench --json benchmarks/results/runtime_bench.json

$(STAMP): pyproject.toml .ci/install-torch
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	bash .ci/install-torch $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

clean:
	rm -rf $(VENV) demo-out .pytest_cache .hypothesis *.egg-info
