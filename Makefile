# Two entry points, both install what they need first (scripts/bootstrap).
.PHONY: demo test bootstrap lint bench faults

bootstrap:
	@bash scripts/bootstrap

demo:
	@bash scripts/bootstrap --demo
	.venv/bin/python -m kagemusha.demo

test: bootstrap
	.venv/bin/python -m pytest -q

lint: bootstrap
	.venv/bin/ruff check src tests
	.venv/bin/mypy

bench: bootstrap
	.venv/bin/python bench/failover_local.py

# The fault-injection campaign (root): every fault kind on both stores; results in
# bench/results/faults.json and the table in docs/reliability.md. RUNS=50 for the full figures.
RUNS ?= 5
faults: bootstrap
	.venv/bin/python bench/faults.py --runs $(RUNS)
