# Two commands do everything on a fresh machine: `make demo` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export HF_HUB_OFFLINE := 1
export PATH := $(CURDIR)/$(BIN):$(PATH)

DEMO_DATA := demo-data
DEMO_CONFIG := tests/demo/config.yaml
CORES ?= 2

.PHONY: env demo demo-data test test-fast test-slurm-newest lint clean

env: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements.txt
	$(BIN)/pip install --quiet --no-deps -e .
	touch $(STAMP)

$(DEMO_DATA)/.done: $(STAMP) $(wildcard src/chexdino/demo/*.py)
	rm -rf $(DEMO_DATA)
	$(BIN)/chexdino demo-data $(DEMO_DATA)
	touch $@

demo-data: $(DEMO_DATA)/.done

demo: $(DEMO_DATA)/.done
	$(BIN)/snakemake --cores $(CORES) --configfile $(DEMO_CONFIG) --rerun-incomplete all
	$(BIN)/snakemake --cores $(CORES) --configfile $(DEMO_CONFIG) --report results/demo/report.html
	$(BIN)/chexdino predict --model results/demo/export --out results/demo/predict/predictions.csv \
		$$(ls -d $(DEMO_DATA)/chexpert/CheXpert-v1.0/test/* | head -8)
	@$(BIN)/chexdino scorecard results/demo
	@echo "Report: $(CURDIR)/results/demo/report.html"

test: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/python -m pytest -q

# The suite without the end-to-end runs marked slow (workflow, reruns, SLURM, report, faults).
test-fast: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/python -m pytest -q -m "not slow"

# The SLURM tests (as root: they start a single-node cluster) against the newest releases of
# Snakemake and its SLURM plugins, in an environment of their own (.venv stays as pinned):
# requirements.txt, then those upgraded, then chexdino from this folder.
NEWEST_VENV ?= ../venv-newest
test-slurm-newest:
	test -x $(NEWEST_VENV)/bin/python || $(PYTHON) -m venv $(NEWEST_VENV)
	$(NEWEST_VENV)/bin/pip install --quiet -r requirements.txt
	$(NEWEST_VENV)/bin/pip install --quiet --upgrade snakemake snakemake-executor-plugin-slurm \
		snakemake-executor-plugin-slurm-jobstep
	$(NEWEST_VENV)/bin/pip install --quiet --no-deps -e .
	$(NEWEST_VENV)/bin/pip list 2>/dev/null | grep -i '^snakemake'
	$(NEWEST_VENV)/bin/python -m pytest -q tests/test_snakemake_public_api.py \
		tests/test_slurm_check.py tests/test_slurm.py

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/snakemake --lint --configfile $(DEMO_CONFIG)

clean:
	rm -rf results .snakemake $(DEMO_DATA)
