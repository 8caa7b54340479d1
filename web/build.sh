#!/usr/bin/env bash
# Builds the web page into web/dist/: finegrain's inference compiled to WebAssembly
# (wasm32-unknown-unknown, wgpu's WebGPU backend) with its wasm-bindgen glue, the page,
# the shipped Fashion-MNIST model and sample images, and the exact WGSL of every shader
# module for the pipeline check (check.html). Serve the folder over HTTP and open it:
#
#     bash web/build.sh
#     python3 -m http.server -d web/dist 8000     # then open http://localhost:8000/
#
# Needs the wasm32-unknown-unknown target (added with rustup where rustup exists) and
# wasm-bindgen's command-line tool at the version in web/Cargo.lock (installed with cargo
# when missing: a few minutes, once).
set -euo pipefail
cd "$(dirname "$0")"
web=$PWD
root=$(cd .. && pwd)

if command -v rustup >/dev/null && ! rustup target list --installed | grep -qx wasm32-unknown-unknown; then
  rustup target add wasm32-unknown-unknown
fi
want=$(awk '/^name = "wasm-bindgen"$/ { getline; gsub(/"/, "", $3); print $3 }' Cargo.lock)
have=$(wasm-bindgen --version 2>/dev/null | awk '{ print $2 }' || true)
if [ "$have" != "$want" ]; then
  echo "installing wasm-bindgen-cli $want (found: ${have:-none})"
  # (not --locked: its lock file names a webpki-roots release the registry may not serve)
  cargo install wasm-bindgen-cli --version "$want"
fi

cargo build --release --locked
rm -rf dist
mkdir -p dist/pkg dist/model dist/samples dist/shaders
wasm-bindgen --target web --no-typescript --out-dir dist/pkg \
  target/wasm32-unknown-unknown/release/finegrain_web.wasm
cp index.html app.js check.html check.js dist/
cp "$root/weights/fashion-mnist-tiny.safetensors" dist/model/
cp "$root"/data/fashion-mnist-samples/*.png dist/samples/
(cd dist/samples && ls *.png | python3 -c 'import json,sys; print(json.dumps([l.strip() for l in sys.stdin]))' > index.json)
# The WGSL of every module as a browser compiles it (a native build of the main crate).
(cd "$root" && cargo run --quiet --example wgsl -- --out "$web/dist/shaders")
echo "built $web/dist ($(du -sh dist/pkg/finegrain_web_bg.wasm | cut -f1) of WebAssembly)"
echo "serve it: python3 -m http.server -d web/dist 8000, then open http://localhost:8000/"
