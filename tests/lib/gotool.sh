# Shared by the scripts that build test tools from Go modules or fetch files
# from Go module zips (tests/k8s-bins/build.sh, tests/helm-bin/build.sh,
# tests/oras-bin/build.sh, tests/ingress-bin/build.sh, tests/crd-schemas/fetch.sh).
# Source it, naming the log tag:
#
#   here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
#   source "$here/../lib/gotool.sh" helm-bin
#
# What every one of them does the same way:
#   - progress and errors go to stderr as `[tag] ...` (log, die); the last line
#     of stdout is the result, a path (gotool_result prints it and exits);
#   - an EDGE_*_BIN variable names an existing binary, used as it is
#     (gotool_use_existing); versions come from the script's go.mod
#     (gotool_module_version);
#   - the cache lives outside the repository:
#     ${EDGE_*_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/edge-runner/<name>} (gotool_cache_root);
#   - only the local Go toolchain, never a downloaded one (gotool_find_go: go_bin);
#   - one build at a time per cache directory (gotool_lock, with flock), in a
#     temporary directory inside it that is removed on exit (gotool_tmp_dir: tmp_dir);
#   - `go build -trimpath`, with a line every so many seconds while it runs
#     (gotool_go_build).
# Bash only; the caller runs under `set -euo pipefail`.

gotool_tag="${1:?usage: source gotool.sh TAG}"

log() { printf '[%s] %s\n' "$gotool_tag" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# Print the result (the last line of stdout) and exit successfully.
gotool_result() {
    printf '%s\n' "$1"
    exit 0
}

gotool_is_exe() { [[ -f "$1" && -x "$1" ]]; }

# gotool_use_existing VAR WHAT: if $VAR is set, it must be an executable file,
# which is the result.
gotool_use_existing() {
    local var=$1 what=$2
    local value="${!var:-}"
    [[ -n "$value" ]] || return 0
    gotool_is_exe "$value" || die "$var=$value is not an executable file"
    log "using existing $what at $value"
    gotool_result "$value"
}

# gotool_module_version MODULE: the version of MODULE that $here/go.mod requires
# (`go mod tidy` may mark it indirect when only a `tool` directive uses it).
gotool_module_version() {
    local version
    version="$(awk -v module="$1" '$1 == module && $2 ~ /^v/ {print $2; exit}' "$here/go.mod")"
    [[ -n "$version" ]] || die "no $1 requirement in $here/go.mod"
    printf '%s\n' "$version"
}

# gotool_cache_root VAR NAME: $VAR, else the edge-runner cache directory NAME.
gotool_cache_root() {
    local var=$1
    printf '%s\n' "${!var:-${XDG_CACHE_HOME:-$HOME/.cache}/edge-runner/$2}"
}

# Sets go_bin: `go` from PATH, else /usr/local/go/bin/go.  Never downloads
# another toolchain: the pinned modules build with the local Go.
gotool_find_go() {
    go_bin="$(command -v go || true)"
    [[ -n "$go_bin" ]] || go_bin=/usr/local/go/bin/go
    [[ -x "$go_bin" ]] || die "no Go toolchain found (looked in PATH and /usr/local/go/bin)"
    export GOTOOLCHAIN=local
}

# gotool_lock DIR WHAT RESULT CHECK...: one build at a time per DIR (two test
# runs started together share it).  The lock is held on fd 9 until the script
# exits; if the command CHECK... succeeds once the lock is ours, another run
# built it meanwhile and RESULT is the result.  Without flock, no lock.
gotool_lock() {
    local dir=$1 what=$2 result=$3
    shift 3
    command -v flock >/dev/null || return 0
    exec 9>"$dir/.lock"
    if ! flock -n 9; then
        log "another build of $what is running; waiting for it"
        flock 9
    fi
    if "$@"; then
        log "built meanwhile: $result"
        gotool_result "$result"
    fi
}

gotool_ticker_pid=""
tmp_dir=""

gotool_cleanup() {
    [[ -n "$gotool_ticker_pid" ]] && kill "$gotool_ticker_pid" 2>/dev/null || true
    if [[ -n "$tmp_dir" ]]; then
        chmod -R u+w "$tmp_dir" 2>/dev/null || true  # copies out of the read-only module cache
        rm -rf "$tmp_dir"
    fi
}

# gotool_tmp_dir DIR [PREFIX]: sets tmp_dir, a new directory in DIR (on the
# cache's file system, so the result is moved in place), removed on exit.
gotool_tmp_dir() {
    tmp_dir="$(mktemp -d "$1/${2:-.build}.XXXXXX")"
    trap gotool_cleanup EXIT
}

# gotool_go_build SECONDS LABEL OUT PACKAGE [FLAGS...]: `go build -trimpath FLAGS
# -o OUT PACKAGE` in the current directory, compiler output on stderr, a line
# "LABELstill building, Ns" every SECONDS; dies if it fails.  OUT is made
# executable.  The command in the array gotool_build_wrapper, if any, runs it.
gotool_build_wrapper=()
gotool_go_build() {
    local every=$1 label=$2 out=$3 package=$4 since=$SECONDS
    shift 4
    (
        while sleep "$every" </dev/null >/dev/null 2>&1; do
            log "${label}still building, $((SECONDS - since))s"
        done
    ) &
    gotool_ticker_pid=$!
    if ! "${gotool_build_wrapper[@]}" "$go_bin" build -trimpath "$@" -o "$out" "$package" >&2
    then
        die "${label}go build $package failed"
    fi
    kill "$gotool_ticker_pid" 2>/dev/null || true
    wait "$gotool_ticker_pid" 2>/dev/null || true
    gotool_ticker_pid=""
    chmod 0755 "$out"
}
