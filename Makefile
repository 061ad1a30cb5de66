# edge-runner: the two set-up commands are `make run` and `make test`.
# Both work on a fresh Debian machine: they install missing apt packages
# (as root, or with sudo), create .venv and build the sample functions.

SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
PORT ?= 8080
ADMIN_PORT ?= 9090
APT_PACKAGES := rustc cargo libstd-rust-dev-wasm32 wrk prometheus
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: run test lint unit k8s-bins helm-bin functions apt-deps venv bench bench-density clean crds

venv: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	@touch $@

# Debian's rustc 1.63 + libstd-rust-dev-wasm32 give the wasm32-wasi target;
# wrk drives the benchmarks; prometheus/promtool check the alerting rules.
apt-deps:
	@missing=""; \
	test -x /usr/bin/rustc || missing="$$missing rustc"; \
	test -x /usr/bin/cargo || missing="$$missing cargo"; \
	test -d /usr/lib/rustlib/wasm32-wasi || missing="$$missing libstd-rust-dev-wasm32"; \
	command -v wrk >/dev/null || missing="$$missing wrk"; \
	command -v promtool >/dev/null || missing="$$missing prometheus"; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

functions: apt-deps
	functions/build.sh

run: venv functions
	$(VENV)/bin/edge-runner serve --manifests functions/hello-world/manifests \
	  --port $(PORT) --admin-port $(ADMIN_PORT) --log-format text

lint: venv
	$(VENV)/bin/ruff check api runner operator tests bench
	$(VENV)/bin/mypy api/edge_api runner/edge_runner operator/edge_operator tests bench

# Kubernetes binaries for the tests, built once per machine (cached outside the repo).
k8s-bins:
	tests/k8s-bins/build.sh

# helm, built from its Go module once per machine (cached outside the repo).
helm-bin:
	tests/helm-bin/build.sh

# The chart ships a copy of crds/ (Helm installs CRDs from the chart's crds/).
crds:
	cp crds/*.yaml charts/edge-runner/crds/

unit: venv functions
	$(PY) -m pytest tests/unit tests/runner

test: venv functions lint k8s-bins helm-bin
	$(PY) -m pytest

# Benchmarks print figures next to their baseline; not tests.  density takes minutes.
bench: venv functions
	$(PY) bench/throughput.py
	$(PY) bench/coldstart.py
	$(PY) bench/hostile.py

bench-density: venv functions
	$(PY) bench/density.py

clean:
	rm -rf $(VENV) functions/target .mypy_cache .ruff_cache .pytest_cache
