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

.PHONY: env demo demo-data test test-fast lint clean

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

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/snakemake --lint --configfile $(DEMO_CONFIG)

clean:
	rm -rf results .snakemake $(DEMO_DATA)
