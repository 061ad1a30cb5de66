#!/usr/bin/env bash
# Build the sample functions into their .wasm artifacts.
#
#   functions/build.sh                 # all functions (dirs with a Cargo.toml and manifests/)
#   functions/build.sh hello-world     # just these
#   functions/build.sh --test          # run the crates' unit tests natively (host target)
#
# Artifact of functions/<name>/ is functions/<name>/<name with - as _>.wasm.
# Uses Debian's rustc (/usr/bin/rustc) with the wasm32-wasi std from
# libstd-rust-dev-wasm32; a rustup toolchain on PATH usually has no wasm
# targets, so PATH is pinned to /usr/bin:/bin for cargo. Offline, no crates.
# Cargo output goes to functions/target/ (override: CARGO_TARGET_DIR); cargo's
# home is ~/.cache/edge-runner/cargo (override: EDGE_CARGO_HOME), never rustup's.
# Idempotent: an artifact is rewritten only when its content changed.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
target_triple=wasm32-wasi
rustc="${EDGE_RUSTC:-/usr/bin/rustc}"   # override only for another rustc with wasm32-wasi std
cargo="${EDGE_CARGO:-/usr/bin/cargo}"
install_hint="apt-get install rustc cargo libstd-rust-dev-wasm32"

die() {
    echo "functions/build.sh: error: $*" >&2
    exit 1
}

[[ -x $rustc ]] || die "$rustc not found (Debian's Rust is required: $install_hint)"
[[ -x $cargo ]] || die "$cargo not found ($install_hint)"
sysroot="$("$rustc" --print sysroot)" || die "'$rustc --print sysroot' failed"
ls "$sysroot/lib/rustlib/$target_triple/lib/"libstd-*.rlib >/dev/null 2>&1 \
    || die "the $target_triple standard library is missing from $sysroot/lib/rustlib ($install_hint)"

run_tests=0
if [[ ${1:-} == --test ]]; then
    run_tests=1
    shift
fi

# Which functions?
all_functions() {
    local d
    for d in "$here"/*/; do
        d="${d%/}"
        [[ -f $d/Cargo.toml && -d $d/manifests ]] && basename "$d"
    done
}
if (($# > 0)); then
    names=("$@")
else
    mapfile -t names < <(all_functions)
fi
((${#names[@]} > 0)) || die "no functions found under $here"

packages=()
for name in "${names[@]}"; do
    [[ $name =~ ^[a-z0-9][a-z0-9_-]*$ ]] || die "bad function name '$name'"
    [[ -f $here/$name/Cargo.toml ]] || die "no such function: $here/$name/Cargo.toml"
    packages+=(-p "$name")
done

export PATH=/usr/bin:/bin
export RUSTC="$rustc"
export CARGO_HOME="${EDGE_CARGO_HOME:-${HOME:-/tmp}/.cache/edge-runner/cargo}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$here/target}"
# Settings that could point cargo at rustup's toolchain or change codegen.
unset RUSTUP_TOOLCHAIN RUSTC_WRAPPER RUSTC_WORKSPACE_WRAPPER RUSTFLAGS CARGO_ENCODED_RUSTFLAGS \
    CARGO_BUILD_TARGET CARGO_BUILD_RUSTFLAGS RUSTDOC
mkdir -p "$CARGO_HOME"

if ((run_tests)); then
    exec "$cargo" test --offline --quiet --manifest-path "$here/Cargo.toml" --workspace
fi

"$cargo" build --offline --release --quiet --manifest-path "$here/Cargo.toml" \
    --target "$target_triple" "${packages[@]}"

out_dir="$CARGO_TARGET_DIR/$target_triple/release"
for name in "${names[@]}"; do
    file="${name//-/_}.wasm"
    src="$out_dir/$file"
    dst="$here/$name/$file"
    [[ -f $src ]] || die "cargo did not produce $src (is [lib] name / [[bin]] name '${name//-/_}'?)"
    if ! cmp -s "$src" "$dst"; then
        # Copy then rename, so a concurrent reader never sees a partial file.
        cp "$src" "$dst.tmp.$$"
        mv -f "$dst.tmp.$$" "$dst"
        echo "built $dst ($(wc -c <"$dst") bytes)"
    fi
done
