# Two commands do everything on a fresh machine (Python 3.11 on PATH as python3.11 or python3):
#   make run    executes the notebook series headlessly (figures/, results/, runs/<time>-<profile>/)
#   make test   runs the unit tests and executes every notebook with nbval
# Settings: OCTLIB_PROFILE=quick|full, OCTLIB_DATA=<OCT2017 folder>|octmnist[-64|-128|-224].
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
PY := $(VENV)/bin/python
SAMPLE := $(abspath ../shared/data/oct2017-sample)

# Default data for developers and CI: the project sample when it sits beside the checkout.
ifeq ($(OCTLIB_DATA),)
ifneq ($(wildcard $(SAMPLE)/test),)
export OCTLIB_DATA := $(SAMPLE)
endif
endif

.PHONY: install run test test-unit reference clean-cache

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	$(PY) -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (octlib)" >/dev/null
	touch $@

install: $(VENV)/.installed

run: install
	$(PY) -m octlib run

test: install
	$(PY) -m pytest tests notebooks --nbval-lax -p no:cacheprovider

test-unit: install
	$(PY) -m pytest tests -p no:cacheprovider

# The committed figures: full profile for data and training (00, 10), quick profile for the evaluation notebooks
# (20-90, one study: the 64-px quick victim, one attack suite on the same scans; their full settings do not yet fit
# 2 CPU cores); see figures/README.md. Each step keeps its manifest beside the figures.
reference: install
	$(PY) -m octlib run --profile full --only 00 10 --out runs/reference-full --no-progress && \
	cp runs/reference-full/manifest.json figures/manifest-full.json && \
	$(PY) -m octlib run --profile quick --only 20 21 30 31 40 41 90 --out runs/reference-quick --no-progress && \
	cp runs/reference-quick/manifest.json figures/manifest-quick.json

clean-cache:
	rm -rf data/cache
