#!/usr/bin/env bash
# Builds the page's wasm module and its JS glue (zoo_web_bg.wasm, zoo_web.js) into OUT, where
# `zoo web` serves them from (default: $ZOO_CACHE/web/pkg, ZOO_CACHE being ~/.cache/burn-zoo):
#
#     examples/web/build.sh [OUT]
#
# Needs Debian's rustc-web toolchain (rustc 1.96 with the wasm32 target and the standard
# library's source), lld and wasm-bindgen-cli at the wasm-bindgen version of Cargo.lock;
# as root it installs what is missing (apt, and `cargo install` into the cache), about
# 12 minutes once. The build itself goes to $ZOO_WEB_TARGET (default $CARGO_TARGET_DIR/wasm,
# else ~/.cache/burn-zoo/target/wasm): about 13 minutes cold on 2 cores, a few after an edit.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cache=${ZOO_CACHE:-$HOME/.cache/burn-zoo}
out=${1:-$cache/web/pkg}
target=${ZOO_WEB_TARGET:-${CARGO_TARGET_DIR:-$cache/target}/wasm}
jobs=${ZOO_WEB_JOBS:-1}
wbg_version=$(sed -n '/^name = "wasm-bindgen"$/{n;s/^version = "\(.*\)"$/\1/p;}' "$here/Cargo.lock")
wbg_root=$cache/wasm-bindgen-cli-$wbg_version
wbg=$wbg_root/bin/wasm-bindgen

have_toolchain() {
  /usr/bin/rustc --print target-list 2>/dev/null | grep -qx wasm32-unknown-unknown &&
    [ -d /usr/lib/rustlib/src/rust/library ] && [ -x /usr/bin/wasm-ld-22 ] && [ -x /usr/bin/cargo ]
}
if ! have_toolchain; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "the wasm toolchain is missing: run 'sudo apt-get install rustc-web cargo-web rust-web-src lld-22'" >&2
    exit 1
  fi
  echo "installing Debian's rustc-web toolchain (rustc-web cargo-web rust-web-src lld-22)" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq rustc-web cargo-web rust-web-src lld-22 >/dev/null
fi
if [ ! -x "$wbg" ]; then
  echo "installing wasm-bindgen-cli $wbg_version into $wbg_root (about 12 minutes on 2 cores)" >&2
  # Not --locked: its lock file pins a webpki-roots version the registry no longer serves.
  nice -n 10 cargo install wasm-bindgen-cli --version "=$wbg_version" --root "$wbg_root.part" -j "$jobs"
  rm -rf "$wbg_root" && mv "$wbg_root.part" "$wbg_root"
fi

# Debian's rustc builds the standard library for wasm32 from source (-Z build-std); from the
# crate's folder, so that its .cargo/config.toml (getrandom's wasm_js cfg) applies.
cd "$here"
RUSTC=/usr/bin/rustc RUSTDOC=/usr/bin/rustdoc RUSTC_BOOTSTRAP=1 CARGO_TARGET_DIR=$target \
  nice -n 10 /usr/bin/cargo build --release --locked --target wasm32-unknown-unknown \
  -Z build-std=std,panic_abort -j "$jobs"

mkdir -p "$(dirname "$out")"
tmp=$(mktemp -d "${out%/}.XXXXXX")
"$wbg" --target web --remove-name-section --remove-producers-section --out-dir "$tmp" \
  "$target/wasm32-unknown-unknown/release/zoo_web.wasm"
rm -rf "$out" && mv "$tmp" "$out"
size=$(stat -c %s "$out/zoo_web_bg.wasm")
gz=$(gzip -9 -c "$out/zoo_web_bg.wasm" | wc -c)
echo "built $out: zoo_web_bg.wasm $((size / 1024)) KiB, $((gz / 1024)) KiB gzipped" >&2
