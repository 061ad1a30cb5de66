#!/usr/bin/env bash
# Builds the `helm` binary that the chart tests (tests/helm/) run, from the Go
# module pinned in tests/helm-bin/go.mod (`tool helm.sh/helm/v3/cmd/helm`), the
# way tests/k8s-bins/build.sh builds the Kubernetes binaries: no release
# download, only the Go module proxy.
#
# Output goes to a cache OUTSIDE the repo, keyed by the Helm version:
#   ${EDGE_HELM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/edge-runner/helm}/<version>/helm
# A machine builds it once; later runs find it and do nothing.
# If EDGE_HELM_BIN is set, that binary is used as it is (only checked).
# The last line of stdout is always the path of the binary; progress goes to
# stderr so callers can take the path with `tail -n1`.
#
# The first build takes a few minutes on 2 cores; a line is printed every
# EDGE_HELM_PROGRESS_SECONDS (default 30) so CI shows life.  Concurrent builds
# of one version wait for each other (flock).  The steps shared with the other
# Go-tool builds are in tests/lib/gotool.sh.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# log, die and the gotool_* steps every Go-tool build shares.
source "$here/../lib/gotool.sh" helm-bin

gotool_use_existing EDGE_HELM_BIN helm

helm_version="$(gotool_module_version helm.sh/helm/v3)"
out_dir="$(gotool_cache_root EDGE_HELM_CACHE helm)/$helm_version"
binary="$out_dir/helm"

if gotool_is_exe "$binary"; then
    log "cached: helm $helm_version at $binary"
    gotool_result "$binary"
fi

gotool_find_go
export CGO_ENABLED=0

cd "$here"
# Version stamps, as helm's Makefile sets them, so `helm version` reports the
# pinned release and `helm lint`/`helm template` assume the Kubernetes minor
# version of the client-go that helm is built with (not the 1.20 fallback).
client_go="$("$go_bin" list -m -f '{{.Version}}' k8s.io/client-go)"   # e.g. v0.37.0
client_go="${client_go#v}"
k8s_major=$((${client_go%%.*} + 1))
k8s_minor="${client_go#*.}"
k8s_minor="${k8s_minor%%.*}"
ldflags="-s -w"
ldflags+=" -X helm.sh/helm/v3/internal/version.version=$helm_version"
ldflags+=" -X helm.sh/helm/v3/internal/version.metadata="
ldflags+=" -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
for pkg in helm.sh/helm/v3/pkg/lint/rules helm.sh/helm/v3/pkg/chartutil; do
    ldflags+=" -X $pkg.k8sVersionMajor=$k8s_major -X $pkg.k8sVersionMinor=$k8s_minor"
done

mkdir -p "$out_dir"
gotool_lock "$out_dir" "helm $helm_version" "$binary" gotool_is_exe "$binary"
gotool_tmp_dir "$out_dir"

log "building helm $helm_version (Kubernetes $k8s_major.$k8s_minor libraries) into $binary" \
    "with $("$go_bin" version)"
start=$SECONDS
gotool_go_build "${EDGE_HELM_PROGRESS_SECONDS:-30}" "" "$tmp_dir/helm" \
    helm.sh/helm/v3/cmd/helm -ldflags "$ldflags"
"$tmp_dir/helm" version --short >/dev/null || die "the built helm does not run"
mv -f "$tmp_dir/helm" "$binary"
log "built helm $helm_version in $((SECONDS - start))s"
gotool_result "$binary"
