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
# The steps shared with the other Go-tool scripts are in tests/lib/gotool.sh.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# log, die and the gotool_* steps every Go-tool build shares.
source "$here/../lib/gotool.sh" k8s-bins
binaries=(etcd kube-apiserver kube-controller-manager kubectl)

have_all() {
    local dir="$1" b
    for b in "${binaries[@]}"; do
        gotool_is_exe "$dir/$b" || return 1
    done
}

if [[ -n "${EDGE_K8S_BIN_DIR:-}" ]]; then
    have_all "$EDGE_K8S_BIN_DIR" ||
        die "EDGE_K8S_BIN_DIR=$EDGE_K8S_BIN_DIR lacks one of: ${binaries[*]}"
    log "using existing binaries in $EDGE_K8S_BIN_DIR"
    gotool_result "$EDGE_K8S_BIN_DIR"
fi

k8s_version="$(gotool_module_version k8s.io/kubernetes)"
bin_dir="$(gotool_cache_root EDGE_K8S_CACHE k8s)/$k8s_version/bin"

if have_all "$bin_dir"; then
    log "cached: Kubernetes $k8s_version binaries in $bin_dir"
    gotool_result "$bin_dir"
fi

gotool_find_go

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
gotool_lock "$bin_dir" "$k8s_version" "$bin_dir" have_all "$bin_dir"
gotool_tmp_dir "$bin_dir"

if [[ -x /usr/bin/time ]]; then
    gotool_build_wrapper=(/usr/bin/time -v -o "$tmp_dir/time.txt")
fi

log "building Kubernetes $k8s_version control plane into $bin_dir with $("$go_bin" version)"
total_start=$SECONDS
cd "$here"
for b in "${binaries[@]}"; do
    if gotool_is_exe "$bin_dir/$b"; then
        log "$b: already built"
        continue
    fi
    log "$b: go build ${package[$b]}"
    start=$SECONDS
    rm -f "$tmp_dir/time.txt"
    gotool_go_build "${EDGE_K8S_PROGRESS_SECONDS:-30}" "$b: " "$tmp_dir/$b" "${package[$b]}" \
        -ldflags "$ldflags"
    peak=""
    if [[ -f "$tmp_dir/time.txt" ]]; then
        peak_kib="$(awk -F': ' '/Maximum resident set size/ {print $2}' "$tmp_dir/time.txt")"
        [[ -n "$peak_kib" ]] && peak=", peak RSS of one process $((peak_kib / 1024)) MiB"
    fi
    mv -f "$tmp_dir/$b" "$bin_dir/$b"
    log "$b: built in $((SECONDS - start))s$peak"
done
log "all built in $((SECONDS - total_start))s"
gotool_result "$bin_dir"
