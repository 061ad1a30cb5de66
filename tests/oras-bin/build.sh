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
# stderr so callers can take the path with `tail -n1`.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

log() { printf '[oras-bin] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

if [[ -n "${EDGE_ORAS_BIN:-}" ]]; then
    [[ -f "$EDGE_ORAS_BIN" && -x "$EDGE_ORAS_BIN" ]] ||
        die "EDGE_ORAS_BIN=$EDGE_ORAS_BIN is not an executable file"
    printf '%s\n' "$EDGE_ORAS_BIN"
    exit 0
fi

oras_version="$(awk '$1 == "oras.land/oras" && $2 ~ /^v/ {print $2; exit}' "$here/go.mod")"
[[ -n "$oras_version" ]] || die "no oras.land/oras requirement in $here/go.mod"
out_dir="${EDGE_ORAS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/edge-runner/oras}/$oras_version"
binary="$out_dir/oras"

if [[ -f "$binary" && -x "$binary" ]]; then
    log "cached: oras $oras_version at $binary"
    printf '%s\n' "$binary"
    exit 0
fi

go_bin="$(command -v go || true)"
[[ -n "$go_bin" ]] || go_bin=/usr/local/go/bin/go
[[ -x "$go_bin" ]] || die "no Go toolchain found (looked in PATH and /usr/local/go/bin)"
export GOTOOLCHAIN=local
export CGO_ENABLED=0

cd "$here"
mkdir -p "$out_dir"
tmp_dir="$(mktemp -d "$out_dir/.build.XXXXXX")"
trap 'rm -rf "$tmp_dir"' EXIT

log "building oras $oras_version into $binary with $("$go_bin" version)"
start=$SECONDS
# oras stamps its version from internal/version; set it so `oras version`
# names the pinned release.
"$go_bin" build -trimpath \
    -ldflags "-s -w -X oras.land/oras/internal/version.Version=${oras_version#v} -X oras.land/oras/internal/version.BuildMetadata=" \
    -o "$tmp_dir/oras" oras.land/oras/cmd/oras >&2 ||
    die "go build oras.land/oras/cmd/oras failed"
chmod 0755 "$tmp_dir/oras"
"$tmp_dir/oras" version >/dev/null || die "the built oras does not run"
mv -f "$tmp_dir/oras" "$binary"
log "built oras $oras_version in $((SECONDS - start))s"
printf '%s\n' "$binary"
