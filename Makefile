# Two commands on a fresh machine:  make demo  (train on moons, write figures
# and metrics under runs/)  and  make test  (the test suite).  Both create the
# virtual environment first and are safe to repeat.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test bench bench-peers-env bench-peers install clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip
	$(BIN)/python -m pip install -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/tfp-realnvp train

# Two pytest processes (each test file stays in one), so that both of CI's two
# cores work; TEST_WORKERS=0 runs the suite in one process.
TEST_WORKERS ?= 2

test: $(STAMP)
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile

# The full benchmark against TFP's built-in RealNVP (about 40 min on 2 idle cores);
# python -m benchmarks.bench --quick --out DIR is its quick smoke test.
bench: $(STAMP)
	$(BIN)/python -m benchmarks.bench --out benchmarks/results --overwrite

# Against FlowJAX and zuko (benchmarks/peers/README.md): each peer in its own virtual
# environment, never in the package's dependencies.  torch is pinned to the CPU build
# (a plain requirement pulls a multi-GB CUDA one).
PEER_ENVS := .venv-flowjax .venv-zuko

.venv-flowjax/.installed:
	$(PYTHON) -m venv .venv-flowjax
	.venv-flowjax/bin/python -m pip install flowjax jax numpy
	touch $@

.venv-zuko/.installed:
	$(PYTHON) -m venv .venv-zuko
	.venv-zuko/bin/python -m pip install torch==2.13.0 zuko numpy
	touch $@

bench-peers-env: .venv-flowjax/.installed .venv-zuko/.installed

# The full comparison; python -m benchmarks.peers --quick --out DIR is its smoke test.
bench-peers: $(STAMP) bench-peers-env
	$(BIN)/python -m benchmarks.peers --out benchmarks/results/peers --overwrite

clean:
	rm -rf $(VENV) $(PEER_ENVS) .pytest_cache .hypothesis
