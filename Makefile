# The two commands of the README:  `make run`  (main job)  and  `make test`  (test suite).
# Both create the virtual environment .venv on first use (Python 3.11 + `pip install -e .[dev]`).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

# Standard benchmarks: set ENERGY_DATA_DIR yourself, or keep them in ../shared/data (see README).
SHARED_DATA := $(abspath ../shared/data)
ENERGY_DATA_DIR ?= $(if $(wildcard $(SHARED_DATA)),$(SHARED_DATA),)
export ENERGY_DATA_DIR

# Notebooks whose committed full-profile outputs nbval re-executes and compares (cells marked NBVAL_CHECK_OUTPUT).
# Decimal numbers are masked before comparison (tests/nbval_sanitize.cfg): trained models' numbers differ in their
# last digits between CPU types, so nbval compares the verdicts, labels, counts and table shapes, and each
# notebook's own checks test the numbers.
NBVAL_NOTEBOOKS := notebooks/01_miyasawa_tweedie.ipynb notebooks/04_irem.ipynb notebooks/05_unified_iteration.ipynb notebooks/07_beyond_images.ipynb notebooks/08_normalized_energy.ipynb

.PHONY: run test env smoke check-pairs bench clean

env: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), "Python 3.11 is required, found " + sys.version'
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

run: env  ## execute every notebook in the full profile; regenerates figures/, results/, notebooks/*.ipynb
	$(PY) -m energy_utils.notebooks run --profile full

test: env  ## unit tests + every notebook in the smoke profile + nbval on fast notebooks
	$(PY) -m pytest tests --nbval-lax --nbval-sanitize-with tests/nbval_sanitize.cfg $(NBVAL_NOTEBOOKS)

smoke: env  ## every notebook in the smoke profile, outputs under build/smoke/
	$(PY) -m energy_utils.notebooks run --profile smoke

check-pairs: env
	$(PY) -m energy_utils.notebooks check

bench: env  ## speed benchmarks: one table (metric, setting, ours, goal) from every scripts/bench_*.py; never asserted
	$(PY) scripts/bench.py

clean:
	rm -rf build .pytest_cache
