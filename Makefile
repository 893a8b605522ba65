# neurodecode: the two commands of the README, and helpers.
#   make reproduce   install if needed, then run the paper notebooks for $(SUBJECTS) on the embedded simulated default
#   make test        install if needed, then the whole gate (export/clean/tags/notebooks/pytest), closing `N passed, N failed`
#   make notebook NB=04_noise SUBJECT=1   one paper notebook for one subject (into figures/, executed copy in runs/)
SHELL     := /bin/bash
PYTHON    ?= python3
VENV      ?= .venv
PY        ?= $(VENV)/bin/python
SUBJECTS  ?= 1
PROFILE   ?= default
DATA_DIR  ?=
JOBS      ?= auto
# torch and torchvision must come from the same build. A CPU-only torch wheel in a local pip find-links
# folder cannot run torchvision from PyPI (`operator torchvision::nms does not exist`), so this one step
# installs both from the index, ignoring local find-links. Override TORCH_PIP for your own index or CUDA build.
TORCH_SPEC ?= torch==2.13.0 torchvision==0.28.0
TORCH_PIP  ?= env -u PIP_FIND_LINKS PIP_CONFIG_FILE=/dev/null $(PY) -m pip install
STAMP     := $(VENV)/.neurodecode-installed

.PHONY: install test reproduce notebook export clean-nbs readme lab benchmarks help
help:
	@sed -n '2,4p' Makefile

install: $(STAMP)

$(STAMP): setup.py settings.ini
	@test -x $(PY) || { echo "creating virtual environment $(VENV) with $(PYTHON)"; $(PYTHON) -m venv $(VENV); }
	@$(PY) -c "import torch, torchvision" 2>/dev/null || { echo "installing $(TORCH_SPEC)"; $(TORCH_PIP) $(TORCH_SPEC); }
	$(PY) -m pip install -e ".[dev]"
	@$(PY) -c "import torch, torchvision, diffusers, transformers, nbdev; print('installed: torch', torch.__version__, '| torchvision', torchvision.__version__, '| diffusers', diffusers.__version__, '| transformers', transformers.__version__, '| nbdev', nbdev.__version__)"
	@mkdir -p $(dir $(STAMP)) && touch $(STAMP)

test: install
	@PATH="$(abspath $(VENV))/bin:$$PATH" $(PY) .ci/test.py

reproduce: install
	@PATH="$(abspath $(VENV))/bin:$$PATH" $(PY) .ci/reproduce.py --subjects "$(SUBJECTS)" --jobs "$(JOBS)" --profile "$(PROFILE)" $(if $(DATA_DIR),--data-dir "$(DATA_DIR)")

NB      ?=
SUBJECT ?= 1
notebook: install
	@test -n "$(NB)" || { echo 'name a paper notebook: make notebook NB=04_noise SUBJECT=1'; exit 2; }
	@PATH="$(abspath $(VENV))/bin:$$PATH" $(PY) .ci/reproduce.py --notebooks "$(NB)" --subjects "$(SUBJECT)" --profile "$(PROFILE)" $(if $(DATA_DIR),--data-dir "$(DATA_DIR)")

export: install
	$(VENV)/bin/nbdev_export && $(VENV)/bin/nbdev_clean && $(PY) .ci/readme.py

readme: install
	$(PY) .ci/readme.py

lab: install
	$(VENV)/bin/jupyter lab nbs

# BENCH_ARGS=--quick (default) validates every benchmark at reduced size in minutes; BENCH_ARGS= runs the full
# sizes the issues name (hours on 2 CPU cores: see benchmarks/README.md)
BENCH_ARGS ?= --quick
benchmarks: install
	@for b in benchmarks/*.py; do echo "== $$b $(BENCH_ARGS)"; $(PY) $$b $(BENCH_ARGS) || exit 1; done
