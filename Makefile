# Two entry points, both install what they need first (scripts/bootstrap).
.PHONY: demo test bootstrap lint bench fuzz sim faults

bootstrap:
	@bash scripts/bootstrap

demo:
	@bash scripts/bootstrap --demo
	.venv/bin/python -m kagemusha.demo

# Two passes: the timing-critical tests alone (marked serial, see tests/conftest.py), then the rest
# over $(TEST_WORKERS) pytest-xdist workers, a test file (or a group of files sharing fixed ports) per worker. A pass that runs no test fails
# (pytest exits 5). The durations of the slowest tests are printed for each pass.
TEST_WORKERS ?= 3
PYTEST = .venv/bin/python -m pytest -q --durations=15

test: bootstrap
	@serial=0; parallel=0; \
	$(PYTEST) -m serial -p no:xdist || serial=$$?; \
	$(PYTEST) -m "not serial" -n $(TEST_WORKERS) --dist loadgroup || parallel=$$?; \
	echo "make test: serial pass exit $$serial, parallel pass exit $$parallel"; \
	test $$serial -eq 0 && test $$parallel -eq 0

lint: bootstrap
	.venv/bin/ruff check src tests bench
	.venv/bin/mypy

bench: bootstrap
	.venv/bin/python bench/failover_local.py

# The fuzz tests' full run (>= 1,000 generated inputs per property; `make test` runs a short one).
fuzz: bootstrap
	KAGEMUSHA_FUZZ=full .venv/bin/python -m pytest -q tests/fuzz

# Deterministic simulation of the whole agent (kagemusha.testing.simulate): SIM_SCHEDULES=10000 for the full run.
SIM_SCHEDULES ?= 2000
SIM_SEED ?= 1
sim: bootstrap
	.venv/bin/python -m kagemusha.testing.simulate --schedules $(SIM_SCHEDULES) --seed $(SIM_SEED)

# The fault-injection campaign (root): every fault kind on both stores; results in
# bench/results/faults.json and the table in docs/reliability.md. RUNS=50 for the full figures.
RUNS ?= 5
faults: bootstrap
	.venv/bin/python bench/faults.py --runs $(RUNS)
