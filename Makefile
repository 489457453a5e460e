# Two commands do everything on a fresh machine (Python 3.11 on PATH as python3.11 or python3):
#   make run        executes the notebook series headlessly into runs/<time>-<profile>/ (figures, executed copies)
#   make test       runs the unit tests and executes every notebook with nbval
#   make reference  the study: full profile, the one command that writes the committed figures/ (ONLY=20 21: some)
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

# pyproject.toml holds compatible ranges; constraints.txt the exact set tested here.
$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e ".[dev]"
	$(PY) -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (octlib)" >/dev/null
	touch $@

install: $(VENV)/.installed

run: install
	$(PY) -m octlib run

test: install
	$(PY) -m pytest tests notebooks --nbval-lax -p no:cacheprovider

test-unit: install
	$(PY) -m pytest tests -p no:cacheprovider

# The committed figures: the full profile on the study victim, every notebook; on the project sample with the
# `pooled` split policy (the sample's `test` folder comes from another release than its train/val folders, so the
# `official` policy's victim would measure a release shift; notebook 10 still trains and reports both). Writes
# figures/, figures/results/ and figures/manifests/<notebook>.json as each notebook ends; `make reference ONLY=20`
# reruns one notebook (its inputs: the cached victim, else it is trained first). REFERENCE_ROOT=runs/reference-next
# assembles a new reference (a new victim) there instead, beside the committed one, until every notebook has run.
REFERENCE_POLICY ?= pooled
reference: install
	$(PY) -m octlib run --reference --profile full --split-policy $(REFERENCE_POLICY) --no-progress \
		$(if $(ONLY),--only $(ONLY)) $(if $(REFERENCE_ROOT),--reference-root $(REFERENCE_ROOT))

clean-cache:
	rm -rf data/cache
