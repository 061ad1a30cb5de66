#!/usr/bin/env bash
# Builds the Kubernetes control-plane binaries that the tests run as local
# processes (docs/testing.md): etcd, kube-apiserver, kube-controller-manager
# and kubectl, from the Go modules pinned in tests/k8s-bins/go.mod.
#
# Output goes to a cache OUTSIDE the repo, keyed by the Kubernetes version:
#   ${EDGE_K8S_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/edge-runner/k8s}/<version>/bin/
# A machine builds them once; later runs find all four and do nothing.
# If EDGE_K8S_BIN_DIR is set, the binaries there are used as they are (only
# checked). The last line of stdout is always the bin dir; progress goes to
# stderr so callers can take the path with `tail -n1`.
#
# The first build takes a long time on 2 cores (see the README/Makefile); it
# prints a line every EDGE_K8S_PROGRESS_SECONDS (default 30) so CI shows life.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
binaries=(etcd kube-apiserver kube-controller-manager kubectl)

log() { printf '[k8s-bins] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

have_all() {
    local dir="$1" b
    for b in "${binaries[@]}"; do
        [[ -f "$dir/$b" && -x "$dir/$b" ]] || return 1
    done
}

if [[ -n "${EDGE_K8S_BIN_DIR:-}" ]]; then
    have_all "$EDGE_K8S_BIN_DIR" ||
        die "EDGE_K8S_BIN_DIR=$EDGE_K8S_BIN_DIR lacks one of: ${binaries[*]}"
    log "using existing binaries in $EDGE_K8S_BIN_DIR"
    printf '%s\n' "$EDGE_K8S_BIN_DIR"
    exit 0
fi

k8s_version="$(awk '$1 == "k8s.io/kubernetes" && $2 ~ /^v/ {print $2; exit}' "$here/go.mod")"
[[ -n "$k8s_version" ]] || die "no k8s.io/kubernetes requirement in $here/go.mod"
cache_root="${EDGE_K8S_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/edge-runner/k8s}"
bin_dir="$cache_root/$k8s_version/bin"

if have_all "$bin_dir"; then
    log "cached: Kubernetes $k8s_version binaries in $bin_dir"
    printf '%s\n' "$bin_dir"
    exit 0
fi

go_bin="$(command -v go || true)"
[[ -n "$go_bin" ]] || go_bin=/usr/local/go/bin/go
[[ -x "$go_bin" ]] || die "no Go toolchain found (looked in PATH and /usr/local/go/bin)"
# Never download another toolchain: the pinned release builds with the local Go.
export GOTOOLCHAIN=local

# Version stamps, as Kubernetes' hack/lib/version.sh sets them, so /version
# and `kubectl version` report the pinned release.
ver="${k8s_version#v}"
major="${ver%%.*}"
minor="${ver#*.}"
minor="${minor%%.*}"
build_date="$(date -u +%Y-%m-%dT%H:%M:%SZ)"
ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldflags+=" -X $pkg.gitVersion=$k8s_version -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor"
    ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=$build_date -X $pkg.gitCommit="
done

declare -A package=(
    [etcd]=./etcd
    [kube-apiserver]=k8s.io/kubernetes/cmd/kube-apiserver
    [kube-controller-manager]=k8s.io/kubernetes/cmd/kube-controller-manager
    [kubectl]=k8s.io/kubernetes/cmd/kubectl
)

mkdir -p "$bin_dir"
# One build at a time per version (two test runs started together share it).
if command -v flock >/dev/null; then
    exec 9>"$bin_dir/.lock"
    if ! flock -n 9; then
        log "another build of $k8s_version is running; waiting for it"
        flock 9
    fi
    if have_all "$bin_dir"; then
        log "built meanwhile: $bin_dir"
        printf '%s\n' "$bin_dir"
        exit 0
    fi
fi
tmp_dir="$(mktemp -d "$bin_dir/.build.XXXXXX")"
ticker_pid=""
cleanup() {
    [[ -n "$ticker_pid" ]] && kill "$ticker_pid" 2>/dev/null || true
    rm -rf "$tmp_dir"
}
trap cleanup EXIT

time_cmd=()
if [[ -x /usr/bin/time ]]; then
    time_cmd=(/usr/bin/time -v -o "$tmp_dir/time.txt")
fi

log "building Kubernetes $k8s_version control plane into $bin_dir with $("$go_bin" version)"
total_start=$SECONDS
cd "$here"
for b in "${binaries[@]}"; do
    if [[ -f "$bin_dir/$b" && -x "$bin_dir/$b" ]]; then
        log "$b: already built"
        continue
    fi
    log "$b: go build ${package[$b]}"
    start=$SECONDS
    (
        while sleep "${EDGE_K8S_PROGRESS_SECONDS:-30}" </dev/null >/dev/null 2>&1; do
            log "$b: still building, $((SECONDS - start))s"
        done
    ) &
    ticker_pid=$!
    rm -f "$tmp_dir/time.txt"
    if ! "${time_cmd[@]}" "$go_bin" build -trimpath -ldflags "$ldflags" \
        -o "$tmp_dir/$b" "${package[$b]}" >&2; then
        die "$b: go build failed"
    fi
    kill "$ticker_pid" 2>/dev/null || true
    wait "$ticker_pid" 2>/dev/null || true
    ticker_pid=""
    peak=""
    if [[ -f "$tmp_dir/time.txt" ]]; then
        peak_kib="$(awk -F': ' '/Maximum resident set size/ {print $2}' "$tmp_dir/time.txt")"
        [[ -n "$peak_kib" ]] && peak=", peak RSS of one process $((peak_kib / 1024)) MiB"
    fi
    chmod 0755 "$tmp_dir/$b"
    mv -f "$tmp_dir/$b" "$bin_dir/$b"
    log "$b: built in $((SECONDS - start))s$peak"
done
log "all built in $((SECONDS - total_start))s"
printf '%s\n' "$bin_dir"
