# Set-up and the two everyday commands. `make serve` and `make test` work on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# torch first, from the CPU wheel: letting pip resolve torch itself would pull a multi-GB CUDA build.
TORCH_SPEC ?= torch==2.13.0

.PHONY: install serve test lint bench clean

$(BIN)/zantara: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $(BIN)/zantara

install: $(BIN)/zantara

serve: install
	$(BIN)/zantara serve

test: install
	$(BIN)/python -m pytest -q

lint: install
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

bench: install
	$(BIN)/python bench/startup.py
	$(BIN)/python bench/throughput.py
	$(BIN)/python bench/prefix_cache.py
	$(BIN)/python bench/peft_step.py

clean:
	rm -rf $(VENV) var .cache
