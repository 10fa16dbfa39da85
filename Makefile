# Two commands for a fresh machine: `make study` and `make test`.
# Both create .venv and install into it. torch is installed first and pinned,
# so that MONAI does not pull a different torch build; override TORCH_SPEC on a
# GPU machine, e.g. `make study TORCH_SPEC="torch==2.13.0 --index-url ..."`.
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
PROFILE ?= quick
STUDY_ARGS ?=

PY := $(VENV)/bin/python
STAMP := $(VENV)/.cmbstudy-installed

.PHONY: setup study test test-unit clean-study

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet $(TORCH_SPEC)
	$(PY) -m pip install --quiet -e ".[test]"
	$(PY) -m ipykernel install --sys-prefix --name python3 > /dev/null
	touch $(STAMP)

setup: $(STAMP)

study: setup
	$(VENV)/bin/cmbstudy study --profile $(PROFILE) $(STUDY_ARGS)

test: setup
	@command -v chromium > /dev/null 2>&1 || ! command -v apt-get > /dev/null 2>&1 || \
		(apt-get update -qq && apt-get install -y -qq chromium) || \
		echo "chromium could not be installed: the browser test of the book will be skipped"
	$(PY) -m pytest -q tests

test-unit: setup
	$(PY) -m pytest -q tests/unit

clean-study:
	rm -rf results book/_build
