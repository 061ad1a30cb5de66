#!/usr/bin/env bash
# Fetches the real CustomResourceDefinitions of the third-party objects the chart
# can create (ServiceMonitor and PrometheusRule of the Prometheus Operator, HTTPRoute
# of the Gateway API), so tests/helm/test_install.py validates the chart's objects
# against their real schemas instead of stub CRDs that accept anything.
#
# Both projects are Go modules, and their module zips (the whole repository at a
# tag) carry the generated CRDs: `go mod download -json MODULE@VERSION` gets them
# from the Go module proxy, checked against the checksum database, the way
# tests/k8s-bins/ and tests/helm-bin/ get their sources.  No release download.
#
# Pinned versions (change them here; the cache key follows):
prometheus_operator="github.com/prometheus-operator/prometheus-operator@v0.85.0"
gateway_api="sigs.k8s.io/gateway-api@v1.6.3"
#   ServiceMonitor, PrometheusRule: example/prometheus-operator-crd/ (apiextensions v1)
#   HTTPRoute: config/crd/standard/ (the standard channel)
#
# Output goes to a cache OUTSIDE the repo, keyed by both versions:
#   ${EDGE_CRD_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/edge-runner/crds}/<key>/*.yaml
# A machine fetches once; later runs find the files and do nothing.  If
# EDGE_CRD_DIR is set, that directory is used as it is (only checked).  The last
# line of stdout is always the directory; progress goes to stderr.
# The steps shared with the other Go-tool scripts are in tests/lib/gotool.sh.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# log, die and the gotool_* steps shared with the Go-tool builds.
source "$here/../lib/gotool.sh" crd-schemas

files=(
    "$prometheus_operator example/prometheus-operator-crd/monitoring.coreos.com_servicemonitors.yaml servicemonitors.yaml"
    "$prometheus_operator example/prometheus-operator-crd/monitoring.coreos.com_prometheusrules.yaml prometheusrules.yaml"
    "$gateway_api config/crd/standard/gateway.networking.k8s.io_httproutes.yaml httproutes.yaml"
)

complete() {
    local dir=$1 entry
    for entry in "${files[@]}"; do
        [[ -s "$dir/${entry##* }" ]] || return 1
    done
}

if [[ -n "${EDGE_CRD_DIR:-}" ]]; then
    complete "$EDGE_CRD_DIR" || die "EDGE_CRD_DIR=$EDGE_CRD_DIR lacks one of the CRD files"
    log "using existing CRDs in $EDGE_CRD_DIR"
    gotool_result "$EDGE_CRD_DIR"
fi

key="prometheus-operator-${prometheus_operator##*@}_gateway-api-${gateway_api##*@}"
cache_root="$(gotool_cache_root EDGE_CRD_CACHE crds)"
out_dir="$cache_root/$key"
if complete "$out_dir"; then
    log "cached: $key in $out_dir"
    gotool_result "$out_dir"
fi

gotool_find_go
export GOFLAGS=-modcacherw

mkdir -p "$cache_root"
# Concurrent fetches wait for each other.
gotool_lock "$cache_root" "$key" "$out_dir" complete "$out_dir"
gotool_tmp_dir "$cache_root" .fetch

declare -A module_dirs=()
for module in "$prometheus_operator" "$gateway_api"; do
    log "go mod download $module"
    # Outside any module (GOFLAGS/-C), so no go.mod of the repository is touched.
    json="$(cd "$tmp_dir" && "$go_bin" mod download -json "$module")" ||
        die "go mod download $module failed"
    dir="$(printf '%s\n' "$json" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",\{0,1\}$/\1/p')"
    [[ -d "$dir" ]] || die "go mod download $module printed no directory: $json"
    module_dirs[$module]=$dir
done
for entry in "${files[@]}"; do
    read -r module path name <<<"$entry"
    source="${module_dirs[$module]}/$path"
    [[ -s "$source" ]] || die "$module has no $path"
    install -m 0644 "$source" "$tmp_dir/$name"
done
mkdir -p "$out_dir"
for entry in "${files[@]}"; do
    name="${entry##* }"
    mv -f "$tmp_dir/$name" "$out_dir/$name"
done
log "fetched $key into $out_dir"
gotool_result "$out_dir"
