# syntax=docker/dockerfile:1
# The edge-runner control plane: `edge-operator` (kopf, standalone).
#
# Build from the repository root (the context must hold pyproject.toml, api/,
# runner/ and operator/):
#   docker build -f images/operator.Dockerfile -t ghcr.io/edge-runner/operator:0.1.0 .
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
COPY pyproject.toml README* ./
COPY api/ api/
COPY runner/ runner/
COPY operator/ operator/
RUN /opt/venv/bin/pip install --no-cache-dir --upgrade pip
# One distribution holds the runner and the operator (pyproject.toml); a
# regular install, byte-compiled by pip, so nothing is written at run time.
RUN /opt/venv/bin/pip install --no-cache-dir /src

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="edge-operator" \
      org.opencontainers.image.description="WebAssembly HTTP functions on Kubernetes: the operator" \
      org.opencontainers.image.source="https://github.com/edge-runner/edge-runner" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp
COPY --from=builder /opt/venv /opt/venv
# Non-root, numeric (Kubernetes' runAsNonRoot checks a numeric USER).
USER 65532:65532
# Prometheus /metrics, kopf's liveness /healthz.
EXPOSE 8000 8081
ENTRYPOINT ["edge-operator"]
