# Two commands set everything up: `make demo` and `make test` (see README.md).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# DVC's own environment: its hydra-core/omegaconf pin antlr4-python3-runtime 4.9, Dagster's
# asset-selection parser needs 4.13, so the two cannot share one (constraints-dvc.txt).
DVC_ENV := $(VENV)/tools/dvc
# Nothing may download models or data at run time.
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export DAGSTER_DISABLE_TELEMETRY := 1

# Data-Juicer, a peer of benchmarks/dedup_peer.py only, in its own environment (its pins
# of dill, multiprocess and fsspec are not the project's; constraints-data-juicer.txt holds
# it as resolved); aiohttp is imported by its file utilities but not declared.
DJ_ENV := $(VENV)/tools/data-juicer

.PHONY: venv demo test test-all ui clean k8s-render k8s-build bench-peers

venv: $(VENV)/.installed $(DVC_ENV)/.installed

# torch goes first, pinned to the CPU build, so that no later requirement pulls a CUDA
# build; deepspeed is a source distribution whose setup imports torch, so it is built
# without build isolation once torch is present. An environment made when DVC was still a
# dependency loses it (and its antlr4 4.9 users) before the project is installed.
$(VENV)/.installed: pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip setuptools wheel
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet --no-build-isolation -c constraints.txt deepspeed
	if $(BIN)/pip show --quiet dvc 2>/dev/null; then $(BIN)/pip uninstall --quiet --yes dvc hydra-core omegaconf; fi
	$(BIN)/pip install --quiet -c constraints.txt -e ".[dev]"
	touch $@

# DVC is a program here, never imported: hkgai_pipelines/versioning.py runs this binary, and the
# link in $(BIN) puts `dvc repro` / `dvc push` on the PATH of the activated environment.
$(DVC_ENV)/.installed: constraints-dvc.txt | $(VENV)/.installed
	test -x $(DVC_ENV)/bin/python || $(PYTHON) -m venv $(DVC_ENV)
	$(DVC_ENV)/bin/pip install --quiet --upgrade pip
	$(DVC_ENV)/bin/pip install --quiet -c constraints-dvc.txt dvc
	ln -sfn ../tools/dvc/bin/dvc $(BIN)/dvc
	touch $@

bench-peers: $(DJ_ENV)/.installed

$(DJ_ENV)/.installed: constraints-data-juicer.txt | $(VENV)/.installed
	test -x $(DJ_ENV)/bin/python || $(PYTHON) -m venv $(DJ_ENV)
	$(DJ_ENV)/bin/pip install --quiet --upgrade pip
	$(DJ_ENV)/bin/pip install --quiet -c constraints-data-juicer.txt py-data-juicer "ray[data]" aiohttp
	touch $@

demo: venv
	$(BIN)/hkgai demo

test: venv
	$(BIN)/python -m pytest

# The slow tests start the Dagster webserver and the MLflow server on localhost.
test-all: venv
	$(BIN)/python -m pytest -m "not gpu"

ui: venv
	$(BIN)/hkgai ui

# k8s/training/*.yaml and k8s/cluster/training-runtime.yaml are rendered from the launcher's code (tests keep them equal).
k8s-render: venv
	$(BIN)/python -m hkgai_pipelines.training.pod_spec k8s

# What `kubectl apply -k` would send, for review (needs only kubectl, no cluster).
k8s-build:
	kubectl kustomize k8s/overlays/prod

clean:
	rm -rf .hkgai
