# make book | make test | make lab | make clean | make clean-runs   (the first use creates .venv)
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PROFILE ?= quick
DATA ?= phantom
DEVICE ?= auto

.PHONY: book test lab bench lint clean clean-runs

$(STAMP): pyproject.toml constraints.txt
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11, 5) else "radiolib needs Python 3.11.5 or later, $(PYTHON) is " + sys.version.split()[0] + ": make PYTHON=/path/to/python3.11")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[test,dev]"
	touch $(STAMP)

## Run the study headless (papermill) and build the Jupyter Book into book/_build/html
book: $(STAMP)
	$(BIN)/radiolib study --profile $(PROFILE) --data $(DATA) --device $(DEVICE)

## Every test: unit tests, notebooks through nbval (smoke profile), the built book in Chromium
test: $(STAMP)
	RADIOLIB_PROFILE=smoke $(BIN)/python -m pytest --nbval-lax tests notebooks

## Open the notebooks in jupyter lab
lab: $(STAMP)
	$(BIN)/jupyter lab notebooks/

## Parameters, FLOPs and speed of the three GANs on this machine
bench: $(STAMP)
	$(BIN)/radiolib bench --profile $(PROFILE) --device $(DEVICE)

lint: $(STAMP)
	$(BIN)/ruff check radiolib tests

## Remove the built book and the executed notebooks (runs/ is kept: see clean-runs)
clean:
	rm -rf book/_build book/_build.* book/_executed book/_executed.*

## Remove every run folder under runs/ (phantoms, curated cohorts, checkpoints, results)
clean-runs:
	@if [ -d runs ] && [ -n "$$(ls -A runs)" ]; then \
		echo "removing runs/ (data, checkpoints and results of every run):"; \
		du -sh runs/* | sed 's/^/  /'; \
		rm -rf runs; \
	else \
		echo "nothing to remove: no runs/ folder"; \
		rm -rf runs; \
	fi
