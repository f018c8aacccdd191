# Two set-up commands that work from a clean clone: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# torch/torchvision pinned to the releases available on this project's machines
TORCH_PINS ?= torch==2.14.1 torchvision==0.29.1

.PHONY: install demo test test-fast test-long lint mutation bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH_PINS)
	$(PY) -m pip install -q -e ".[dev]"
	touch $@

install: $(VENV)/.installed

demo: install
	$(VENV)/bin/feature-complexity demo --out runs/demo

# the README's test command: everything but the long end-to-end and torchrun tests, one worker per core
test: install
	$(PY) -m pytest -q -n auto -m "not distributed and not long"

test-fast: install
	$(PY) -m pytest -q -n auto -m "not slow and not browser and not distributed and not long"

# the demo and a ResNet-50 end to end, 2 gloo processes against one, a worker killed mid-pass
# (minutes each; CI runs these after make test; the torchrun tests start their own 2 processes)
test-long: install
	$(PY) -m pytest -q -n auto -m long
	$(PY) -m pytest -q -m distributed

# style and types (CI runs this before the tests)
lint: install
	$(VENV)/bin/ruff check src tests benchmarks tools
	$(VENV)/bin/mypy

# mutation testing of the numerical core (not in CI: about an hour on 2 cores); see docs/TESTING.md
mutation: install
	mkdir -p test-artifacts
	$(PY) tools/mutation.py --out test-artifacts/mutation.json

clean:
	rm -rf $(VENV) runs .pytest_cache
