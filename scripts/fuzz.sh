#!/bin/sh
# Long fuzzing run (profile fuzz: release with overflow checks) of every reader of user data: 1,000,000 seeded,
# structure-aware cases per reader by default, printed as the markdown table of docs/testing.md.
#   scripts/fuzz.sh [CASES [SEED]]
# Needs an adapter for the torchvision reader (lavapipe will do: WGPU_BACKEND=vulkan);
# without one that row says it was skipped. Exits 1 if any case failed (panic, case over
# 2 s, allocation over 1 GiB, error that does not name the file) and prints how to replay it.
set -eu
cd "$(dirname "$0")/.."
cases=${1:-1000000}
seed=${2:-1}
cargo build --profile fuzz --example fuzz
echo "machine: $(nproc) cores, $(uname -m), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')" >&2
exec ./target/fuzz/examples/fuzz --reader all --cases "$cases" --seed "$seed"
