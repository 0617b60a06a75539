# Two commands on a fresh machine:  make demo  (train on moons, write figures
# and metrics under runs/)  and  make test  (the test suite).  Both create the
# virtual environment first and are safe to repeat.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test bench install clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip
	$(BIN)/python -m pip install -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/tfp-realnvp train

test: $(STAMP)
	$(BIN)/python -m pytest

# The full benchmark against TFP's built-in RealNVP (about 40 min on 2 idle cores);
# python -m benchmarks.bench --quick --out DIR is its quick smoke test.
bench: $(STAMP)
	$(BIN)/python -m benchmarks.bench --out benchmarks/results --overwrite

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
