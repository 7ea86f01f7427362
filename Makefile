# ModelPilot developer entry points. `make demo` runs the main job; `make test` runs every test.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
export KUBECONFIG := $(CURDIR)/.cluster/kubeconfig

.PHONY: help venv deps triton prometheus helm cluster-build cluster-up cluster-down cluster-status \
        install-crds run demo test unit lint bench clean generate docs chart-lint chart-test

help:
	@echo "make demo          the closed loop on the local cluster (6 stages), ending in a summary table"
	@echo "make test          lint + unit + integration + e2e tests (builds/caches the cluster binaries)"
	@echo "make cluster-up    start the local control plane (kubeconfig: .cluster/kubeconfig)"
	@echo "make cluster-down  stop it, leaving no process behind"
	@echo "make run           run the operator in the foreground against the local cluster"
	@echo "make unit          unit tests only (no cluster)"
	@echo "make lint          ruff over operator, tests, e2e, testkit, bench and scripts"
	@echo "make bench         every benchmark under bench/, each beside its peer (bench/run_all.py --quick: a smoke run)"

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -e '.[test]'
	touch $@

venv: $(VENV)/.installed

# System packages and binaries the tests use: Debian's prometheus, Triton from the nvidia-pytriton wheel.
prometheus:
	@command -v prometheus >/dev/null 2>&1 || { \
	  echo "installing Debian's prometheus package"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null; }

triton: venv
	@bash e2e/triton/install.sh >/dev/null

helm:
	@bash e2e/tools/build-helm.sh >/dev/null

deps: venv prometheus triton cluster-build helm

generate: venv
	$(PY) scripts/gen_chart_rbac.py && $(PY) scripts/gen_reference.py

docs: generate

chart-lint: helm
	$$(bash e2e/tools/build-helm.sh | tail -1) lint --strict charts/modelpilot

chart-test: helm cluster-up
	$(VENV)/bin/pytest -q tests/unit/packaging/test_packaging_*.py tests/integration/test_chart_*.py

cluster-build:
	@bash e2e/cluster/build.sh >/dev/null

cluster-up: venv cluster-build
	$(PY) e2e/cluster/localcluster.py up

cluster-down:
	@if [ -x $(PY) ]; then $(PY) e2e/cluster/localcluster.py down; fi

cluster-status: venv
	$(PY) e2e/cluster/localcluster.py status

install-crds: cluster-up
	$(PY) -m modelpilot.cli install --kubeconfig $(KUBECONFIG)

run: install-crds
	$(VENV)/bin/modelpilot run --kubeconfig $(KUBECONFIG) --all-namespaces

demo: deps install-crds
	$(PY) e2e/demo.py

lint: venv
	$(VENV)/bin/ruff check operator tests e2e bench scripts testkit conftest.py
	$(VENV)/bin/ruff format --check operator tests e2e bench scripts testkit conftest.py

unit: venv
	$(VENV)/bin/pytest -q tests/unit

test: deps lint
	$(VENV)/bin/pytest -q -ra

bench: venv
	$(PY) bench/run_all.py

clean: cluster-down
	rm -rf .cluster
