#!/usr/bin/env bash
# Build edge-runner functions into their .wasm artifacts.
#
#   functions/build.sh                 # all sample functions (dirs with a Cargo.toml and manifests/)
#   functions/build.sh hello-world     # just these
#   functions/build.sh --test          # run the crates' unit tests natively (host target)
#   functions/build.sh --crate DIR     # any function crate, e.g. one `edge-runner new` made
#                                      # (what `edge-runner build` runs)
#
# Artifact of functions/<name>/ is functions/<name>/<name with - as _>.wasm; of
# --crate DIR, DIR/<library name>.wasm (the crate's cdylib, or its bin for wagi).
# Uses Debian's rustc (/usr/bin/rustc) with the wasm32-wasi std from
# libstd-rust-dev-wasm32; a rustup toolchain on PATH usually has no wasm
# targets, so PATH is pinned to /usr/bin:/bin for cargo. The samples build
# offline (no crates); a --crate may use crates.io: they are vendored into
# <target>/edge-vendor first (Debian's cargo 1.65 reaches crates.io only through
# the sparse index, an unstable feature there, so that one step runs with
# RUSTC_BOOTSTRAP=1; the build itself is offline and stable), and each must
# build with rustc 1.63 (pin versions that do: docs/sdk.md).
# Cargo output goes to functions/target/ or DIR/target/ (override:
# CARGO_TARGET_DIR); cargo's home is ~/.cache/edge-runner/cargo (override:
# EDGE_CARGO_HOME), never rustup's.
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
crate=""
case ${1:-} in
    --test)
        run_tests=1
        shift
        ;;
    --crate)
        (($# == 2)) || die "usage: build.sh --crate DIR"
        crate="$(cd "$2" 2>/dev/null && pwd)" || die "no such folder: $2"
        [[ -f $crate/Cargo.toml ]] || die "no Cargo.toml in $crate"
        shift 2
        ;;
esac

export PATH=/usr/bin:/bin
export RUSTC="$rustc"
export CARGO_HOME="${EDGE_CARGO_HOME:-${HOME:-/tmp}/.cache/edge-runner/cargo}"
# Settings that could point cargo at rustup's toolchain or change codegen.
unset RUSTUP_TOOLCHAIN RUSTC_WRAPPER RUSTC_WORKSPACE_WRAPPER RUSTFLAGS CARGO_ENCODED_RUSTFLAGS \
    CARGO_BUILD_TARGET CARGO_BUILD_RUSTFLAGS RUSTDOC RUSTC_BOOTSTRAP
mkdir -p "$CARGO_HOME"

# Copies a built artifact to $2 unless it is unchanged (copy then rename, so a
# concurrent reader never sees a partial file).
publish() {
    local src=$1 dst=$2
    if ! cmp -s "$src" "$dst"; then
        cp "$src" "$dst.tmp.$$"
        mv -f "$dst.tmp.$$" "$dst"
        echo "built $dst ($(wc -c <"$dst") bytes)"
    fi
}

if [[ -n $crate ]]; then
    manifest="$crate/Cargo.toml"
    export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$crate/target}"
    vendor="$CARGO_TARGET_DIR/edge-vendor"
    stamp="$vendor.stamp"
    mkdir -p "$CARGO_TARGET_DIR"
    # Vendor the crate's registry dependencies when its manifest or lock file changed.
    inputs() { cat "$manifest"; if [[ -f $crate/Cargo.lock ]]; then cat "$crate/Cargo.lock"; fi; }
    want="$(inputs | sha256sum)"
    if [[ ! -d $vendor || "$(cat "$stamp" 2>/dev/null)" != "$want" ]]; then
        RUSTC_BOOTSTRAP=1 "$cargo" -Z sparse-registry vendor --quiet --manifest-path "$manifest" \
            "$vendor" >/dev/null || die "could not fetch the dependencies of $crate"
        inputs | sha256sum >"$stamp"
    fi
    messages="$CARGO_TARGET_DIR/edge-build.json"
    "$cargo" build --offline --release --quiet --manifest-path "$manifest" \
        --target "$target_triple" --message-format=json-render-diagnostics \
        --config 'source.crates-io.replace-with="edge-vendor"' \
        --config "source.edge-vendor.directory=\"$vendor\"" >"$messages" \
        || die "cargo could not build $crate"
    # The crate's own artifacts: .wasm files named in its compiler-artifact messages.
    mapfile -t built < <(grep '"reason":"compiler-artifact"' "$messages" \
        | grep -o '"[^"]*\.wasm"' | tr -d '"' | sort -u)
    ((${#built[@]} > 0)) || die "cargo built no .wasm in $crate (is it crate-type = [\"cdylib\"]?)"
    for src in "${built[@]}"; do
        publish "$src" "$crate/$(basename "$src")"
    done
    exit 0
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

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$here/target}"

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
    publish "$src" "$dst"
done
