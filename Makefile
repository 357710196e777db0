# The README's two commands: `make demo` and `make test`. Both set up first.
PY := .venv/bin/python

.PHONY: setup demo test bench

setup:
	@bash scripts/setup.sh

demo: setup
	@bash scripts/demo.sh

test: setup
	$(PY) -m pytest -q tests

bench: setup
	$(PY) benchmarks/bench_network.py
