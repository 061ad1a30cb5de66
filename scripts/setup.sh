#!/usr/bin/env bash
# Installs and checks what building and testing edge-runner needs on a Debian
# machine. `make run` calls `scripts/setup.sh run`, `make test` calls
# `scripts/setup.sh test`; run it by hand to see what is missing.
#
#   scripts/setup.sh run      # what `make run` needs: Python >= 3.11 with venv,
#                             # Debian's Rust with the wasm32-wasi target and its linker
#   scripts/setup.sh test     # + Go (Kubernetes and helm test binaries), wrk, Prometheus
#   scripts/setup.sh --check  # install nothing; only probe and report (exit 1 if broken)
#   scripts/setup.sh --list test   # print the Debian packages it would install, one a line
#
# It installs the Debian packages listed below that are missing (as root, or
# with sudo), with --no-install-recommends, so every package the build needs is
# named here and nothing works by accident of a recommendation. Then it PROBES
# that the toolchain works, instead of trusting that packages are present: it
# compiles a tiny wasm32-wasi library and command with the same rustc the
# functions use, and checks the result is WebAssembly. Every failure names what
# is missing and the command that brings it.
set -euo pipefail

# Debian packages, with why each is needed (README.md "Set up" lists them too).
declare -A why=(
    [rustc]="Rust compiler (1.63) that builds the sample functions"
    [cargo]="Rust build tool for the sample functions"
    [libstd-rust-dev-wasm32]="Rust standard library for the wasm32-wasi target"
    [lld-14]="the wasm linker (rustc calls it as rust-lld; only *recommended* by libstd-rust-dev-wasm32)"
    [wrk]="HTTP load generator of the benchmarks"
    [prometheus]="prometheus + promtool: the metrics and alert-rule tests"
    [docker-registry]="the CNCF distribution registry the source.oci tests push to and pull from"
    [nodejs]="node, for the jco/componentize-js test guest of the wasi-http tests"
    [npm]="npm ci of the pinned jco toolchain (tests/components/jsecho)"
    [gcc]="C compiler of make compiled (mypyc, docs/performance.md), which make test runs"
    [libc6-dev]="C library headers for gcc"
    [python3-dev]="Python headers of make compiled, for Debian's python3"
)
run_packages=(rustc cargo libstd-rust-dev-wasm32 lld-14)
test_packages=("${run_packages[@]}" wrk prometheus docker-registry gcc libc6-dev)
min_python=(3 11)

log() { printf '[setup] %s\n' "$*" >&2; }
problems=()
problem() { problems+=("$*"); log "MISSING: $*"; }

purpose=run
check_only=0
list_only=0
for arg in "$@"; do
    case $arg in
        run | test) purpose=$arg ;;
        --check) check_only=1 ;;
        --list) list_only=1 ;;
        -h | --help) sed -n '2,18p' "$0"; exit 0 ;;
        *) log "unknown argument '$arg' (expected run, test or --check)"; exit 2 ;;
    esac
done
if [[ $purpose == test ]]; then packages=("${test_packages[@]}"); else packages=("${run_packages[@]}"); fi
# node and npm from elsewhere (e.g. NodeSource, which bundles npm) are fine: only
# a machine without npm gets Debian's.
if [[ $purpose == test ]] && ! command -v npm >/dev/null; then packages+=(nodejs npm); fi
# Python.h for make compiled: Debian's python3 has it in python3-dev (a Python built
# elsewhere, e.g. pyenv, brings its own).
python_bin="${PYTHON:-python3}"
if [[ $purpose == test ]] && [[ "$("$python_bin" -c 'import sys; print(sys.base_prefix)' 2>/dev/null)" == /usr ]] &&
    ! "$python_bin" -c 'import os, sysconfig, sys; sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))' 2>/dev/null; then
    packages+=(python3-dev)
fi
if ((list_only)); then printf '%s\n' "${packages[@]}"; exit 0; fi

installed() { [[ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null)" == "install ok installed" ]]; }

# 1. Debian packages.
if ! command -v dpkg-query >/dev/null || ! command -v apt-get >/dev/null; then
    log "this is not a Debian-family system (no dpkg/apt-get); install by other means:"
    for p in "${packages[@]}"; do log "  $p: ${why[$p]}"; done
else
    missing=()
    for p in "${packages[@]}"; do installed "$p" || missing+=("$p"); done
    if ((${#missing[@]})) && ((!check_only)); then
        sudo=()
        if [[ $(id -u) != 0 ]]; then
            command -v sudo >/dev/null || {
                log "not root and no sudo: run as root: apt-get install ${missing[*]}"
                exit 1
            }
            sudo=(sudo)
        fi
        log "installing Debian packages: ${missing[*]}"
        "${sudo[@]}" apt-get update -qq
        DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq \
            --no-install-recommends "${missing[@]}" >/dev/null
        missing=()
        for p in "${packages[@]}"; do installed "$p" || missing+=("$p"); done
    fi
    for p in "${missing[@]}"; do problem "Debian package $p (${why[$p]}): apt-get install $p"; done
fi

# 2. Python: the venv needs >= 3.11 with the venv module (Debian: python3-venv).
python="${PYTHON:-python3}"
if ! command -v "$python" >/dev/null; then
    problem "python3 >= ${min_python[0]}.${min_python[1]}: apt-get install python3 python3-venv"
elif ! "$python" -c "import sys; sys.exit(sys.version_info < (${min_python[0]}, ${min_python[1]}))"; then
    problem "python3 >= ${min_python[0]}.${min_python[1]} (found $("$python" -V 2>&1)); set PYTHON=/path/to/python3.11"
elif ! "$python" -c "import venv, ensurepip" 2>/dev/null; then
    problem "the Python venv module with ensurepip: apt-get install python3-venv"
fi

# 3. The wasm32-wasi toolchain, probed by building with it.
probe_wasm() {
    local rustc=/usr/bin/rustc dir out
    [[ -x $rustc ]] || { problem "Debian's rustc at $rustc: apt-get install rustc"; return; }
    dir="$(mktemp -d)"
    # shellcheck disable=SC2064
    trap "rm -rf '$dir'" RETURN
    printf '#[no_mangle]\npub extern "C" fn probe(x: i32) -> i32 { x + 1 }\n' >"$dir/lib.rs"
    printf 'fn main() { println!("probe"); }\n' >"$dir/main.rs"
    # PATH as functions/build.sh sets it: Debian's rustc and its rust-lld, not rustup's.
    if ! out="$(cd "$dir" && PATH=/usr/bin:/bin "$rustc" --target wasm32-wasi -O \
        --crate-type cdylib -o lib.wasm lib.rs 2>&1 &&
        PATH=/usr/bin:/bin "$rustc" --target wasm32-wasi -O -o main.wasm main.rs 2>&1)"; then
        local hint="apt-get install rustc libstd-rust-dev-wasm32 lld-14"
        if grep -q "rust-lld" <<<"$out"; then
            hint="the linker rust-lld (a link to lld-14) is missing: apt-get install lld-14"
        elif grep -q "can't find crate for .std." <<<"$out"; then
            hint="the wasm32-wasi standard library is missing: apt-get install libstd-rust-dev-wasm32"
        fi
        problem "a working wasm32-wasi Rust toolchain ($hint); rustc said: $(grep -m1 "error" <<<"$out")"
        return
    fi
    local f
    for f in lib.wasm main.wasm; do
        [[ "$(head -c 4 "$dir/$f" | od -An -tx1 | tr -d ' \n')" == 0061736d ]] ||
            problem "rustc --target wasm32-wasi produced $f that is not WebAssembly"
    done
}
probe_wasm
[[ -x /usr/bin/cargo ]] || problem "Debian's cargo at /usr/bin/cargo: apt-get install cargo"

# 4. What only the tests and benchmarks need.
if [[ $purpose == test ]]; then
    go_bin="$(command -v go || echo /usr/local/go/bin/go)"
    here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
    # The newest Go that any of the test binaries' modules asks for.
    want_go="$(awk '$1 == "go" {print $2}' "$here"/tests/*-bin*/go.mod | sort -V | tail -n1)"
    if [[ ! -x $go_bin ]]; then
        problem "Go >= $want_go (builds the Kubernetes and helm test binaries): https://go.dev/doc/install"
    else
        have_go="$("$go_bin" env GOVERSION)"
        have_go="${have_go#go}"
        if [[ "$(printf '%s\n%s\n' "$want_go" "$have_go" | sort -V | head -n1)" != "$want_go" ]]; then
            problem "Go >= $want_go (found $have_go; tests/*-bin*/go.mod ask for it)"
        fi
    fi
    command -v wrk >/dev/null || problem "wrk on PATH: apt-get install wrk"
    promtool --version >/dev/null 2>&1 || problem "a working promtool: apt-get install prometheus"
    [[ -x /usr/bin/docker-registry ]] ||
        problem "/usr/bin/docker-registry: apt-get install docker-registry"
fi

if ((${#problems[@]})); then
    log "${#problems[@]} problem(s); the set-up cannot continue until they are fixed:"
    for p in "${problems[@]}"; do log "  - $p"; done
    exit 1
fi
log "ok: toolchain for '$purpose' works (wasm32-wasi probe built)"
