# Two entry points, both install what they need first (scripts/bootstrap).
.PHONY: demo test bootstrap lint bench fuzz

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

# The fuzz tests' full run (>= 1,000 generated inputs per property; `make test` runs a short one).
fuzz: bootstrap
	KAGEMUSHA_FUZZ=full .venv/bin/python -m pytest -q tests/fuzz
