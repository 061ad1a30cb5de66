# syntax=docker/dockerfile:1
# The edge-runner data plane: `edge-runner serve` (FastAPI/uvicorn + wasmtime).
#
# Build from the repository root (the context must hold pyproject.toml, api/,
# runner/ and operator/):
#   docker build -f images/runner.Dockerfile -t ghcr.io/edge-runner/runner:0.1.0 .
#
# Two stages: the builder installs the project with pip into a venv at
# /opt/venv; the final image is the same slim base plus that venv (no pip
# caches, no build tools), running as uid/gid 65532. The base is pinned by
# tag; publish with it pinned by digest as well
# (--build-arg PYTHON_IMAGE=python:3.11.9-slim-bookworm@sha256:<digest>).
# tests/helm/test_images.py replays this file's RUN steps in a fresh venv.
ARG PYTHON_IMAGE=python:3.11.9-slim-bookworm

FROM ${PYTHON_IMAGE} AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
RUN python -m venv /opt/venv
WORKDIR /src
# README* is optional (pyproject.toml names it as the long description).
COPY pyproject.toml setup.py README* ./
COPY api/ api/
COPY runner/ runner/
COPY operator/ operator/
RUN /opt/venv/bin/pip install --no-cache-dir --upgrade pip
# A regular (not editable) install: the venv holds the packages themselves,
# byte-compiled by pip, so nothing is written at run time.
RUN /opt/venv/bin/pip install --no-cache-dir /src
# Then the request path compiled to C with mypyc (setup.py, docs/performance.md):
# mypyc checks the modules against the dependencies just installed, so the build
# is not isolated.  The compiler, mypy and the build tools stay in this stage.
RUN apt-get update && apt-get install -y --no-install-recommends gcc libc6-dev \
    && rm -rf /var/lib/apt/lists/*
RUN /opt/venv/bin/pip install --no-cache-dir "mypy>=1.10" "setuptools>=77" wheel
RUN EDGE_RUNNER_COMPILE=1 /opt/venv/bin/pip install --no-cache-dir --no-build-isolation \
    --no-deps --force-reinstall /src
RUN /opt/venv/bin/pip uninstall -y mypy

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="edge-runner" \
      org.opencontainers.image.description="WebAssembly HTTP functions on Kubernetes: the runner" \
      org.opencontainers.image.source="https://github.com/edge-runner/edge-runner" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    EDGE_RUNNER_CACHE_DIR=/var/cache/edge-runner
COPY --from=builder /opt/venv /opt/venv
# Non-root, numeric (Kubernetes' runAsNonRoot checks a numeric USER).
USER 65532:65532
# Data plane, admin plane (/healthz, /readyz, /metrics, /v1/functions).
EXPOSE 8080 9090
ENTRYPOINT ["edge-runner"]
CMD ["serve"]
