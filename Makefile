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

# The committed figures: full profile for data, training and evasion, quick profile for extraction and defences
# (whose full settings are sized for a GPU); see figures/README.md.
reference: install
	$(PY) -m octlib run --profile full --only 00 10 20 21 --out runs/reference-full --no-progress && \
	$(PY) -m octlib run --profile quick --only 30 31 40 41 90 --out runs/reference-quick --no-progress

clean-cache:
	rm -rf data/cache
