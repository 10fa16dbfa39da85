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

# the packaged model of `cmbstudy detect` (src/cmbstudy/weights/README.md): its cohort, schedule and work folder
WEIGHTS_WORK ?= weights-work
WEIGHTS_SUBJECTS ?= 150
WEIGHTS_SEED ?= 2
WEIGHTS_EPOCHS ?= 60
# the packaged second look: a cohort of its own (no subject of the network's), a fifth (60 subjects) for the
# combiner and threshold, which the packaged network predicts, the rest for the image model (its learning curve:
# benchmarks/second_look_curve.py); each subject also skull-stripped
SECOND_LOOK_SUBJECTS ?= 300
SECOND_LOOK_VALIDATION ?= 0.2
SECOND_LOOK_SEED ?= 3
# the packaged model's second-look threshold for `cmbstudy monitor`, chosen on follow-up pairs of their own seed
MONITORING_PAIRS ?= 24
MONITORING_SEED ?= 7

.PHONY: setup study test test-unit clean-study weights second-look monitoring-threshold gpu-wheels

$(STAMP): pyproject.toml package-lock.json
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet $(TORCH_SPEC)
	$(PY) -m pip install --quiet -e ".[test]"
	$(PY) -m ipykernel install --sys-prefix --name python3 > /dev/null
	@command -v npm > /dev/null 2>&1 || ! command -v apt-get > /dev/null 2>&1 || \
		(apt-get update -qq && apt-get install -y -qq npm > /dev/null)
	@command -v npm > /dev/null 2>&1 || (echo "npm (Node.js) is needed for the scan viewer's NiiVue: install Node.js"; exit 1)
	npm ci --ignore-scripts --no-audit --no-fund --loglevel=error
	touch $(STAMP)

setup: $(STAMP)

study: setup
	$(VENV)/bin/cmbstudy study --profile $(PROFILE) $(STUDY_ARGS)

test: setup
	@command -v chromium > /dev/null 2>&1 || ! command -v apt-get > /dev/null 2>&1 || \
		(apt-get update -qq && apt-get install -y -qq chromium) || \
		echo "chromium could not be installed: the browser test of the book will be skipped"
	$(PY) -m pytest -q -n auto --dist loadgroup tests

test-unit: setup
	$(PY) -m pytest -q tests/unit

clean-study:
	rm -rf results book/_build

# Regenerates src/cmbstudy/weights/ (about 20 minutes on 2 CPU cores): a synthetic cohort larger than the
# study's, the study's recipe on fold 0 with a longer schedule, the operating point chosen on the
# fold's validation subjects, and the export with its provenance. Measure it with
# `$(PY) benchmarks/packaged_model.py`.
weights: setup
	test -f $(WEIGHTS_WORK)/cohort/participants.tsv || $(VENV)/bin/cmbstudy synth --profile quick \
		--n-subjects $(WEIGHTS_SUBJECTS) --seed $(WEIGHTS_SEED) --out $(WEIGHTS_WORK)/cohort
	$(VENV)/bin/cmbstudy train --profile quick --data $(WEIGHTS_WORK)/cohort --fold 0 --overwrite \
		--out $(WEIGHTS_WORK)/run --set train.epochs=$(WEIGHTS_EPOCHS) --set train.restart_epochs=$(WEIGHTS_EPOCHS) \
		--set train.warmup_epochs=2 --set train.mine_after=10 --set train.mine_subjects=12
	$(PY) -c "from cmbstudy.inference.model_store import export_model; \
		print(export_model('$(WEIGHTS_WORK)/run', 'src/cmbstudy/weights', data_root='$(WEIGHTS_WORK)/cohort', \
		command='make weights WEIGHTS_SUBJECTS=$(WEIGHTS_SUBJECTS) WEIGHTS_SEED=$(WEIGHTS_SEED) WEIGHTS_EPOCHS=$(WEIGHTS_EPOCHS)'))"

# Regenerates the packaged model's second look (src/cmbstudy/weights/rlk_unet_cbam_quick.second_look.*; about
# ten minutes on 2 CPU cores, 9 min 34 s with its 300-subject cohort) for the packaged network as it is. (`make
# weights` exports the second look its run trained; this replaces it with one trained on a cohort of its own.)
second-look: setup
	test -f $(WEIGHTS_WORK)/second-look-cohort/participants.tsv || $(VENV)/bin/cmbstudy synth --profile quick \
		--n-subjects $(SECOND_LOOK_SUBJECTS) --seed $(SECOND_LOOK_SEED) --out $(WEIGHTS_WORK)/second-look-cohort
	$(VENV)/bin/cmbstudy second-look --model packaged --data $(WEIGHTS_WORK)/second-look-cohort \
		--validation-fraction $(SECOND_LOOK_VALIDATION) --out src/cmbstudy/weights --seed $(SECOND_LOOK_SEED) --overwrite

# Chooses the packaged model's second-look threshold for `cmbstudy monitor` (a few minutes on 2 CPU cores) on
# follow-up pairs of their own seed, and records it in rlk_unet_cbam_quick.second_look.json. Rerun it after
# `make second-look`, which replaces the second look and drops the record.
monitoring-threshold: setup
	test -f $(WEIGHTS_WORK)/monitoring-pairs/participants.tsv || $(VENV)/bin/cmbstudy synth --profile quick \
		--follow-up --n-subjects $(MONITORING_PAIRS) --seed $(MONITORING_SEED) --out $(WEIGHTS_WORK)/monitoring-pairs
	$(VENV)/bin/cmbstudy monitor-threshold $(WEIGHTS_WORK)/monitoring-pairs --model packaged --overwrite

# Wheels for benchmarks/gpu_check.sh on a GPU machine that has torch (with numpy, scipy, pandas, scikit-learn)
# but not the project's imaging libraries: nibabel, SimpleITK, MONAI and nilearn (its template makes the synthetic
# cohorts) at this environment's versions, for CPython 3.12 on x86-64 (about 70 MB). Add others with
# GPU_WHEELS="nibabel simpleitk monai nilearn pandas".
GPU_WHEELS ?= nibabel simpleitk monai nilearn
gpu-wheels: setup
	$(PY) -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
		--platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl \
		$$($(PY) -m pip freeze | grep -iE "^($$(echo $(GPU_WHEELS) | tr ' ' '|'))==")
	du -sh .whl
