PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench clean tools

# rsync and git are used for real by the demo and the tests: installed when missing and allowed, else one line
tools:
	@scripts/ensure_tools.sh

$(STAMP): pyproject.toml | tools
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

demo: tools $(STAMP)
	$(BIN)/python -m faces.demo

# the browser tests' chromium too (a missing one skips them, or fails them under CI: tests/test_dashboard.py)
test: tools $(STAMP)
	@scripts/ensure_tools.sh --browser
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check .

bench: $(STAMP)
	for f in benchmarks/bench_*.py; do $(BIN)/python $$f; done

clean:
	find data -mindepth 1 -maxdepth 1 ! -name sample_snapshot.json -exec rm -rf {} + 2>/dev/null || true
	rm -rf $(VENV) logs state reports/processing reports/failed reports/signals reports/outbox reports/ops
