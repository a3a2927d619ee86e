# MLflow Trace Insights — everyday commands. Each target installs what it needs into .venv.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PORT ?= 5001
DEMO_DB ?= .demo/mlflow.db
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=
# Worker processes for `make test` (pytest-xdist); 0 runs the suite in this one process.
TEST_WORKERS ?= 2

.PHONY: install demo serve test test-sqlite lint format typecheck check clean bench bench-load

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	@touch $(STAMP)

install: $(STAMP) ## Create .venv and install the service with its test and demo extras

demo: $(STAMP) ## Build a demo SQLite DB of realistic traces (once) and serve it
	$(BIN)/python -m service.demo --db $(DEMO_DB)
	@echo
	@echo "Insights page:     http://127.0.0.1:$(PORT)/insights/"
	@echo "Interactive docs:  http://127.0.0.1:$(PORT)/docs"
	@EXP=$$($(BIN)/python -m service.demo --db $(DEMO_DB) --print-experiment-id 2>/dev/null); \
	echo "Try:  curl -X POST http://127.0.0.1:$(PORT)/api/3.0/mlflow/traces/insights/traffic-cost/volume \\"; \
	echo "        -d '{\"experiment_ids\": [\"$$EXP\"], \"time_bucket\": \"day\"}'"
	@echo
	$(BIN)/insights-server --backend-store-uri sqlite:///$(DEMO_DB) --port $(PORT)

serve: $(STAMP) ## Serve $$INSIGHTS_DATABASE_URL (an existing MLflow tracking DB)
	$(BIN)/insights-server --port $(PORT)

test: $(STAMP) ## Run the whole suite (SQLite, PostgreSQL and MariaDB on 127.0.0.1); extra flags in PYTEST_ARGS
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist worksteal $(PYTEST_ARGS)

test-sqlite: $(STAMP) ## Run the suite on SQLite only (no database servers needed)
	INSIGHTS_TEST_BACKENDS=sqlite $(BIN)/python -m pytest

lint: $(STAMP) ## ruff: lint and format check
	$(BIN)/ruff check service tests bench migrations_readonly
	$(BIN)/ruff format --check service tests bench migrations_readonly

format: $(STAMP)
	$(BIN)/ruff format service tests bench migrations_readonly
	$(BIN)/ruff check --fix service tests bench migrations_readonly

typecheck: $(STAMP) ## mypy over the service package, its tests and the bench
	$(BIN)/mypy

check: lint typecheck test ## Lint, typecheck and the suite

ci: ## What CI runs (as root): databases, e2e deps, then lint, typecheck, the suite with CI=true
	bash .ci/run

e2e-deps: ## Install nginx and Chromium (Debian, as root) for tests/test_e2e_deploy.py
	bash deploy/install-e2e-deps.sh

runtime-check: ## Fresh venv + `pip install .` (the Docker image's install): the service imports and starts
	bash deploy/check-runtime-install.sh

.PHONY: e2e-deps runtime-check ci

clean:
	rm -rf $(VENV) .demo build *.egg-info

BENCH_DB_URL ?= postgresql://postgres@127.0.0.1:5432/insights_bench
BENCH_TRACES ?= 1000000
BENCH_REPEAT ?= 5

bench: $(STAMP) ## Benchmark every endpoint against MLflow (builds the dataset first if missing)
	$(BIN)/python -m bench.generate --db-url $(BENCH_DB_URL) --traces $(BENCH_TRACES) --if-missing
	$(BIN)/python -m bench.run --db-url $(BENCH_DB_URL) --repeat $(BENCH_REPEAT)

bench-load: $(STAMP) ## 32 clients for 60 s against the service on loopback: throughput, errors, RSS
	$(BIN)/python -m bench.load --db-url $(BENCH_DB_URL)
