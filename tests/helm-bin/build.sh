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
# EDGE_HELM_PROGRESS_SECONDS (default 30) so CI shows life.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

log() { printf '[helm-bin] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

if [[ -n "${EDGE_HELM_BIN:-}" ]]; then
    [[ -f "$EDGE_HELM_BIN" && -x "$EDGE_HELM_BIN" ]] ||
        die "EDGE_HELM_BIN=$EDGE_HELM_BIN is not an executable file"
    log "using existing helm at $EDGE_HELM_BIN"
    printf '%s\n' "$EDGE_HELM_BIN"
    exit 0
fi

# The version of helm.sh/helm/v3 that go.mod requires (tidy marks it indirect
# because only the `tool` directive uses it).
helm_version="$(awk '$1 == "helm.sh/helm/v3" && $2 ~ /^v/ {print $2; exit}' "$here/go.mod")"
[[ -n "$helm_version" ]] || die "no helm.sh/helm/v3 requirement in $here/go.mod"
cache_root="${EDGE_HELM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/edge-runner/helm}"
out_dir="$cache_root/$helm_version"
binary="$out_dir/helm"

if [[ -f "$binary" && -x "$binary" ]]; then
    log "cached: helm $helm_version at $binary"
    printf '%s\n' "$binary"
    exit 0
fi

go_bin="$(command -v go || true)"
[[ -n "$go_bin" ]] || go_bin=/usr/local/go/bin/go
[[ -x "$go_bin" ]] || die "no Go toolchain found (looked in PATH and /usr/local/go/bin)"
# Never download another toolchain: go.mod's `go` line fits the local Go.
export GOTOOLCHAIN=local
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
tmp_dir="$(mktemp -d "$out_dir/.build.XXXXXX")"
ticker_pid=""
cleanup() {
    [[ -n "$ticker_pid" ]] && kill "$ticker_pid" 2>/dev/null || true
    rm -rf "$tmp_dir"
}
trap cleanup EXIT

log "building helm $helm_version (Kubernetes $k8s_major.$k8s_minor libraries) into $binary" \
    "with $("$go_bin" version)"
start=$SECONDS
(
    while sleep "${EDGE_HELM_PROGRESS_SECONDS:-30}" </dev/null >/dev/null 2>&1; do
        log "still building, $((SECONDS - start))s"
    done
) &
ticker_pid=$!
if ! "$go_bin" build -trimpath -ldflags "$ldflags" -o "$tmp_dir/helm" \
    helm.sh/helm/v3/cmd/helm >&2; then
    die "go build helm.sh/helm/v3/cmd/helm failed"
fi
kill "$ticker_pid" 2>/dev/null || true
wait "$ticker_pid" 2>/dev/null || true
ticker_pid=""
chmod 0755 "$tmp_dir/helm"
"$tmp_dir/helm" version --short >/dev/null || die "the built helm does not run"
mv -f "$tmp_dir/helm" "$binary"
log "built helm $helm_version in $((SECONDS - start))s"
printf '%s\n' "$binary"
