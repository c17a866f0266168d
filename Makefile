# `make run` and `make test` set up .venv first (scripts/setup.sh), then run.
# `make run` fills the benchmark's verified home ($ITH_HOME/data/auditorybench) from the copy
# beside the checkout (../shared/auditorybench) when there is one, each file checked by its
# sha256, then runs; every later run, deployment or worker on this machine reads the home. Without
# that copy the run downloads the pinned files into the home. Tests read the copy itself.
SHARED_BENCH := $(wildcard $(CURDIR)/../shared/auditorybench)
ifneq ($(SHARED_BENCH),)
test: export ITH_AUDITORYBENCH_DIR ?= $(abspath $(SHARED_BENCH))
endif
export PREFECT_SERVER_ANALYTICS_ENABLED ?= false

ARGS ?=
PYTEST_ARGS ?=

.PHONY: setup run test lint bench rehearse

setup: .venv/.setup-done

.venv/.setup-done: pyproject.toml constraints.txt scripts/setup.sh
	./scripts/setup.sh
	touch $@

run: setup
ifneq ($(SHARED_BENCH),)
	.venv/bin/ith data fetch --from "$(abspath $(SHARED_BENCH))"
endif
	.venv/bin/ith run $(ARGS)

test: setup lint
	./scripts/setup-browser.sh
	HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 .venv/bin/python -m pytest -ra $(PYTEST_ARGS)

# Lint, formatting and the import layers (pyproject.toml's [tool.ruff] and [tool.importlinter]).
lint: setup
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
	.venv/bin/lint-imports

bench: setup
	.venv/bin/python benchmarks/bench_ingest.py

# The paper run rehearsed at full size on random weights (docs/rehearsal.md): about 20 minutes on 2
# CPU cores; the report is kept as benchmarks/results/paper_rehearsal_<device>.json and printed into
# the README by benchmarks/results_table.py.
REHEARSE_DEVICE ?= cpu
rehearse: setup
ifneq ($(SHARED_BENCH),)
	.venv/bin/ith data fetch --from "$(abspath $(SHARED_BENCH))"
endif
	HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 .venv/bin/ith rehearse --device $(REHEARSE_DEVICE) \
		--out benchmarks/results/paper_rehearsal_$(REHEARSE_DEVICE).json $(ARGS)
	.venv/bin/python benchmarks/results_table.py --write
