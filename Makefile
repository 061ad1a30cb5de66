# edge-runner: the two set-up commands are `make run` and `make test`.
# Both work on a fresh Debian machine: scripts/setup.sh installs missing apt
# packages (as root, or with sudo) and probes the toolchain, then .venv is
# created and the sample functions are built.  `make fresh-check` proves it.

SHELL := /bin/bash
VENV := .venv
PYTHON ?= python3
export PYTHON
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
PORT ?= 8080
ADMIN_PORT ?= 9090
# The sample `make run` serves (functions/$(FN)/manifests).
FN ?= hello-world

.PHONY: run test test-compiled compiled lint unit k8s-bins helm-bin ingress-bin oras-bin functions setup apt-deps fresh-check venv bench bench-density bench-oci clean crds

venv: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	@touch $@

# Installs missing Debian packages and probes that the toolchain works (builds a
# tiny wasm32-wasi library); says what is missing and how to get it.  `make test`
# needs more than `make run` (Go, wrk, prometheus): see scripts/setup.sh.
SETUP_FOR ?= run
setup:
	scripts/setup.sh $(SETUP_FOR)

apt-deps: SETUP_FOR = test
apt-deps: setup

functions: setup
	functions/build.sh

run: setup venv functions
	$(VENV)/bin/edge-runner serve --manifests functions/$(FN)/manifests \
	  --port $(PORT) --admin-port $(ADMIN_PORT) --log-format text

lint: venv
	$(VENV)/bin/ruff check api runner operator tests bench setup.py
	$(VENV)/bin/mypy api/edge_api runner/edge_runner operator/edge_operator tests bench setup.py
	$(VENV)/bin/lint-imports --no-cache

# Kubernetes binaries for the tests, built once per machine (cached outside the repo).
k8s-bins:
	tests/k8s-bins/build.sh

# helm, built from its Go module once per machine (cached outside the repo).
helm-bin:
	tests/helm-bin/build.sh

# Traefik v3, the Ingress controller of tests/helm/test_ingress.py, built from its Go
# module once per machine (cached outside the repo; see the script for what it patches).
ingress-bin:
	tests/ingress-bin/build.sh

# oras, the OCI client the source.oci tests push artifacts with (cached outside the repo).
oras-bin:
	tests/oras-bin/build.sh

# The real CRDs of ServiceMonitor, PrometheusRule and HTTPRoute for the chart's install
# test, from the projects' Go module zips (cached outside the repo; the test fetches
# them on first use too).
.PHONY: crd-schemas
crd-schemas:
	tests/crd-schemas/fetch.sh

# The chart ships a copy of crds/ (Helm installs CRDs from the chart's crds/).
crds:
	cp crds/*.yaml charts/edge-runner/crds/

unit: venv functions
	$(PY) -m pytest tests/unit tests/runner

test: SETUP_FOR = test
test: setup venv functions lint k8s-bins helm-bin ingress-bin oras-bin
	$(PY) -m pytest
	$(MAKE) test-compiled

# The runner image's build (setup.py: the request path compiled with mypyc) in a
# folder of its own; PYTHONPATH=$(COMPILED) runs it.  Rebuilt when a source changes.
COMPILED := build/compiled
COMPILED_STAMP := $(COMPILED)/.stamp
compiled: $(COMPILED_STAMP)

$(COMPILED_STAMP): $(STAMP) Makefile setup.py pyproject.toml $(shell find api runner -name '*.py')
	rm -rf $(COMPILED) build/lib.* build/bdist.*  # setuptools would copy stale extensions
	EDGE_RUNNER_COMPILE=1 $(PY) -m pip install -q --no-build-isolation --no-deps \
	  --target $(COMPILED) .
	@touch $@

# The runner's tests again, on the compiled build: in process, runner processes, its
# metrics and logs.  The scaffold tests find the checkout's functions/edge-sdk
# beside the package, which an install has not.
test-compiled: compiled functions
	PYTHONPATH=$(COMPILED) $(PY) -m pytest tests/unit tests/runner tests/observability \
	  --deselect tests/runner/test_scaffold.py \
	  --deselect tests/unit/test_authoring_units.py::test_new_writes_a_crate_and_refuses_to_overwrite

# Benchmarks print figures next to their baseline; not tests.  density takes minutes.
bench: venv functions
	$(PY) bench/throughput.py
	$(PY) bench/routes.py
	$(PY) bench/coldstart.py
	$(PY) bench/hostile.py
	$(PY) bench/fairness.py

bench-density: venv functions
	$(PY) bench/density.py

bench-oci: venv functions k8s-bins oras-bin
	$(PY) bench/oci.py

clean:
	rm -rf $(VENV) functions/target .mypy_cache .ruff_cache .pytest_cache

# Proof that the set-up works on a fresh machine: removes the project's Debian
# packages, then `make run` (and with FULL=1 `make test`) in a clean clone of HEAD.
fresh-check:
	scripts/fresh-machine-check.sh --yes $(if $(FULL),--full)

# Mutation testing of the pure modules with mutmut, in a scratch copy (never the work
# tree): prints the score per module and the survivors not explained in
# tests/mutation/survivors.md, and fails under 85 % killed or on a survivor it does not
# explain.  Not part of `test`: about 4 minutes on 2 idle cores.  JOBS=N sets the workers.
.PHONY: mutation
mutation: venv
	$(PY) tests/mutation/run.py $(if $(JOBS),--jobs $(JOBS))
