# Two entry points, both install what they need first (scripts/bootstrap).
.PHONY: demo test bootstrap lint bench sim

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

# Deterministic simulation of the whole agent (kagemusha.testing.simulate): SIM_SCHEDULES=10000 for the full run.
SIM_SCHEDULES ?= 2000
SIM_SEED ?= 1
sim: bootstrap
	.venv/bin/python -m kagemusha.testing.simulate --schedules $(SIM_SCHEDULES) --seed $(SIM_SEED)
