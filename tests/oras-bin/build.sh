#!/usr/bin/env bash
# Builds the `oras` client that the OCI source tests (tests/k8s/test_oci.py,
# tests/unit/test_oci_client.py) push artifacts with, from the Go module pinned
# in tests/oras-bin/go.mod (`tool oras.land/oras/cmd/oras`), like
# tests/helm-bin/build.sh: no release download, only the Go module proxy.
#
# Output goes to a cache OUTSIDE the repo, keyed by the oras version:
#   ${EDGE_ORAS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/edge-runner/oras}/<version>/oras
# A machine builds it once; later runs find it and do nothing.
# If EDGE_ORAS_BIN is set, that binary is used as it is (only checked).
# The last line of stdout is always the path of the binary; progress goes to
# stderr so callers can take the path with `tail -n1`, a line every
# EDGE_ORAS_PROGRESS_SECONDS (default 30) while it builds.  Concurrent builds of
# one version wait for each other (flock).  The steps shared with the other
# Go-tool builds are in tests/lib/gotool.sh.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# log, die and the gotool_* steps every Go-tool build shares.
source "$here/../lib/gotool.sh" oras-bin

gotool_use_existing EDGE_ORAS_BIN oras

oras_version="$(gotool_module_version oras.land/oras)"
out_dir="$(gotool_cache_root EDGE_ORAS_CACHE oras)/$oras_version"
binary="$out_dir/oras"

if gotool_is_exe "$binary"; then
    log "cached: oras $oras_version at $binary"
    gotool_result "$binary"
fi

gotool_find_go
export CGO_ENABLED=0

cd "$here"
mkdir -p "$out_dir"
gotool_lock "$out_dir" "oras $oras_version" "$binary" gotool_is_exe "$binary"
gotool_tmp_dir "$out_dir"

log "building oras $oras_version into $binary with $("$go_bin" version)"
start=$SECONDS
# oras stamps its version from internal/version; set it so `oras version`
# names the pinned release.
gotool_go_build "${EDGE_ORAS_PROGRESS_SECONDS:-30}" "" "$tmp_dir/oras" oras.land/oras/cmd/oras \
    -ldflags "-s -w -X oras.land/oras/internal/version.Version=${oras_version#v} -X oras.land/oras/internal/version.BuildMetadata="
"$tmp_dir/oras" version >/dev/null || die "the built oras does not run"
mv -f "$tmp_dir/oras" "$binary"
log "built oras $oras_version in $((SECONDS - start))s"
gotool_result "$binary"
