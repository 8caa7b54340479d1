#!/usr/bin/env bash
# Prepare, on a machine with Rust, everything a GPU machine without a Rust toolchain needs
# (see docs/performance.md, "On a GPU"): release binaries in .bin/, the Vulkan loader packages
# in .gl/, the full Fashion-MNIST set in .data/fashion-mnist/, all git-ignored (the binaries
# xz-packed in .bin/bins.tar.xz, including the release GPU and parity test binaries). Then,
# with .bin, .gl and .data copied next to the checkout on the GPU machine, run there
#   bash scripts/device/run.sh
# Everything it measures is written under $OUT.
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo build --release --examples
# The GPU-vs-twin kernel tests and the suite (whose parity:: tests run there), as release
# binaries.
tests=$(cargo test --release --no-run --test gpu --test suite --message-format=json 2>/dev/null |
  python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["kind"] == ["test"]:
        print(m["target"]["name"], m["executable"])
')
rm -rf .bin && mkdir -p .bin/raw
cp target/release/examples/{train,bench} .bin/raw/
while read -r name exe; do cp "$exe" ".bin/raw/test-$name"; done <<< "$tests"
strip .bin/raw/* 2>/dev/null || true
# Compressed, so binaries and the full data set fit what one call can carry.
tar -C .bin/raw -cJf .bin/bins.tar.xz . && rm -rf .bin/raw

if ! ls .gl/libvulkan1_*.deb >/dev/null 2>&1; then
  mkdir -p .gl /tmp/amd64/partial
  o='-oAPT::Architecture=amd64 -oAPT::Architectures=amd64 -oDir::State::Lists=/tmp/amd64'
  # shellcheck disable=SC2086
  apt-get $o update
  # shellcheck disable=SC2086
  (cd .gl && apt-get $o download libvulkan1 libegl1 libglvnd0 libopengl0 libgl1 libglx0 libgles2)
fi

mkdir -p .data/fashion-mnist
src=/usr/share/datasets/fashion-mnist
if [ ! -f "$src/train-images-idx3-ubyte.gz" ]; then
  tmp=$(mktemp -d)
  (cd "$tmp" && apt-get download dataset-fashion-mnist && dpkg -x dataset-fashion-mnist_*.deb x)
  src="$tmp/x/usr/share/datasets/fashion-mnist"
fi
cp "$src"/*-ubyte.gz .data/fashion-mnist/
du -sh .bin .gl .data
