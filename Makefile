# `make run` and `make test` set up .venv first (scripts/setup.sh), then run.
# The benchmark is read from ../shared/auditorybench when that copy sits beside the checkout,
# else from $ITH_AUDITORYBENCH_DIR, else downloaded from its pinned upstream and verified.
SHARED_BENCH := $(wildcard $(CURDIR)/../shared/auditorybench)
ifneq ($(SHARED_BENCH),)
export ITH_AUDITORYBENCH_DIR ?= $(abspath $(SHARED_BENCH))
endif
export PREFECT_SERVER_ANALYTICS_ENABLED ?= false

ARGS ?=
PYTEST_ARGS ?=

.PHONY: setup run test bench

setup: .venv/.setup-done

.venv/.setup-done: pyproject.toml constraints.txt scripts/setup.sh
	./scripts/setup.sh
	touch $@

run: setup
	.venv/bin/ith run $(ARGS)

test: setup
	./scripts/setup-browser.sh
	HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 .venv/bin/python -m pytest -ra $(PYTEST_ARGS)

bench: setup
	.venv/bin/python benchmarks/bench_ingest.py
