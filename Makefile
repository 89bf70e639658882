# Two commands set everything up: `make demo` and `make test` (see README.md).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# Nothing may download models or data at run time.
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export DAGSTER_DISABLE_TELEMETRY := 1

.PHONY: venv demo test test-all ui clean k8s-render k8s-build

venv: $(VENV)/.installed

# torch goes first, pinned to the CPU build, so that no later requirement pulls a CUDA
# build; deepspeed is a source distribution whose setup imports torch, so it is built
# without build isolation once torch is present.
$(VENV)/.installed: pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip setuptools wheel
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet --no-build-isolation -c constraints.txt deepspeed
	$(BIN)/pip install --quiet -c constraints.txt -e ".[dev]"
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

# k8s/training/*.yaml are rendered from the launcher's code (tests keep them equal).
k8s-render: venv
	$(BIN)/python -m hkgai_pipelines.training.pod_spec k8s/training

# What `kubectl apply -k` would send, for review (needs only kubectl, no cluster).
k8s-build:
	kubectl kustomize k8s/overlays/prod

clean:
	rm -rf .hkgai
