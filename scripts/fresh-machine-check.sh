#!/usr/bin/env bash
# Proves that the two set-up commands work on a fresh machine, on THIS machine:
# the hand-installed extras a developer's machine collects are taken away, and
# a clean clone must bring back everything it needs by itself.
#
#   scripts/fresh-machine-check.sh --yes           # `make run` must serve "Hello, Ada!"
#   scripts/fresh-machine-check.sh --yes --full    # ... and then `make test` must pass
#
# What it does (it CHANGES THE MACHINE, hence --yes; run as root or with sudo):
#   1. removes every Debian package that scripts/setup.sh installs for `make test`
#      (`apt-get remove`, so a missing install step shows up as a failure);
#   2. clones the committed HEAD of this repository into a temporary folder,
#      with an empty cargo home, no .venv and the PATH of a login shell;
#   3. runs `make run` there and waits until /hello?name=Ada answers "Hello, Ada!";
#   4. with --full, runs `make test` in the same clone. The Kubernetes and helm
#      binaries come from their cache outside the repo when present (set
#      EDGE_K8S_CACHE / EDGE_HELM_CACHE to empty folders to rebuild them too,
#      which takes ~15 min on 2 cores).
# The packages stay installed afterwards: step 3 put them back.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
log() { printf '[fresh-check] %s\n' "$*" >&2; }
die() { log "FAILED: $*"; exit 1; }

yes=0
full=0
for arg in "$@"; do
    case $arg in
        --yes) yes=1 ;;
        --full) full=1 ;;
        -h | --help) sed -n '2,20p' "$0"; exit 0 ;;
        *) die "unknown argument '$arg'" ;;
    esac
done
((yes)) || { sed -n '2,20p' "$0"; die "this removes Debian packages; pass --yes to go on"; }
sudo=()
[[ $(id -u) == 0 ]] || sudo=(sudo)

# Not the C toolchain (gcc, libc6-dev, python3-dev): removing it takes every compiler
# package of the machine with it; setup.sh still installs it where it is missing.
mapfile -t packages < <("$here/scripts/setup.sh" --list test | grep -v -x -E 'gcc|libc6-dev|python3-dev')
log "removing the project's Debian packages: ${packages[*]}"
DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get remove -y -qq "${packages[@]}" >/dev/null
for p in "${packages[@]}"; do
    if [[ "$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null)" == "install ok installed" ]]; then
        die "$p is still installed"
    fi
done

work="$(mktemp -d)"
server_pid=""
cleanup() {
    [[ -n $server_pid ]] && kill -- "-$server_pid" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
git -C "$here" clone -q "$here" "$work/edge-runner"
cd "$work/edge-runner"
export EDGE_CARGO_HOME="$work/cargo-home"
export PATH=/usr/local/go/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
port=18080
admin_port=19090

log "make run in a clean clone at $work/edge-runner (log: $work/run.log)"
start=$SECONDS
set -m
make run PORT=$port ADMIN_PORT=$admin_port >"$work/run.log" 2>&1 &
server_pid=$!
set +m
answer=""
while ((SECONDS - start < 900)); do
    if ! kill -0 "$server_pid" 2>/dev/null; then
        tail -n 30 "$work/run.log" >&2
        die "make run exited before serving"
    fi
    answer="$(curl -fsS "http://127.0.0.1:$port/hello?name=Ada" 2>/dev/null || true)"
    [[ $answer == "Hello, Ada!" ]] && break
    sleep 1
done
[[ $answer == "Hello, Ada!" ]] || { tail -n 30 "$work/run.log" >&2; die "no 'Hello, Ada!' in 900 s"; }
log "make run served 'Hello, Ada!' $((SECONDS - start)) s after the clone"
kill -- "-$server_pid" 2>/dev/null || true
wait "$server_pid" 2>/dev/null || true
server_pid=""

if ((full)); then
    log "make test in the same clone (log: $work/test.log)"
    start=$SECONDS
    if ! make test >"$work/test.log" 2>&1; then
        tail -n 40 "$work/test.log" >&2
        die "make test failed after $((SECONDS - start)) s"
    fi
    tail -n 1 "$work/test.log" >&2
    log "make test passed in $((SECONDS - start)) s"
fi
log "ok"
