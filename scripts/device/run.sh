#!/usr/bin/env bash
# Every GPU measurement in one run, on a GPU machine prepared by scripts/device/prepare.sh:
# the kernel benchmark at the GPU sizes (GEMM 1024-8192 with every kernel the adapter has: f32,
# f16 storage, cooperative matrices 8x8 / 16x16; the ResNet-50/448/16 step in f32 and mixed
# precision), the default run in f32 and in mixed precision (accuracy and time), the
# full-data Fashion-MNIST run, and the method ablation,
# each under its own time limit so one slow stage cannot eat the others' time, plus the
# GPU kernel tests and the PyTorch parity test on the real GPU. Results go to $OUT
# (default: runs/device): bench.md, memory.md, test-gpu.log, test-parity.log, full.log +
# full/metrics.csv, default-f32.log / default-mixed.log, ablation.md.
#   DEVICE_QUICK=1   tiny settings, to check the script itself on any machine.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-runs/device}
mkdir -p "$OUT"
if [ -f .bin/bins.tar.xz ]; then
  tar -C .bin -xJf .bin/bins.tar.xz
fi
# The Vulkan loader, where the machine lacks one (the packages prepare.sh downloaded).
if ! ldconfig -p | grep -q 'libvulkan.so.1 ' && ls .gl/*.deb >/dev/null 2>&1; then
  for f in .gl/*.deb; do dpkg -x "$f" /; done
  ldconfig
fi
icd=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
if [ -z "${VK_DRIVER_FILES:-}" ] && [ -f "$icd" ]; then
  export VK_DRIVER_FILES=$icd
fi
export WGPU_BACKEND=${WGPU_BACKEND:-vulkan}
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv > "$OUT/gpu.txt" 2>&1 || true

if [ -n "${DEVICE_QUICK:-}" ]; then
  bench_args=(--gemm 64 --conv-batch 0 --reps 1 --step-model tiny --step-size 28 --step-batch 4)
  full_args=(--subset --epochs 1 --max-steps 20)
  abl_seeds="0"; abl_args=(--subset --epochs 1 --max-steps 10)
  t_bench=300; t_full=300; t_abl=300; t_default=300
  default_args=(--subset --epochs 1 --max-steps 20)
else
  bench_args=(--full --reps 5)
  full_args=(--data .data/fashion-mnist --epochs 12)
  abl_seeds="0 1 2"; abl_args=(--subset)
  t_bench=180; t_full=210; t_abl=45; t_default=45
  default_args=(--subset)
fi

echo "== bench" >&2
timeout "$t_bench" .bin/bench "${bench_args[@]}" > "$OUT/bench.md" 2> "$OUT/bench.err"
echo "bench exit $?" >&2

echo "== memory plan (no device needed; the paper's step)" >&2
.bin/bench --memory resnet50,448,16,200 > "$OUT/memory.md" 2>&1
echo "memory exit $?" >&2

echo "== GPU tests (kernels against f64 twins, PyTorch parity)" >&2
# An H200 has cooperative matrices (wgpu lists EXPERIMENTAL_COOPERATIVE_MATRIX there): their
# GEMM tests must run, not fall back. DEVICE_NO_COOP=1 lifts that on other machines.
if [ -z "${DEVICE_NO_COOP:-}" ]; then export FINEGRAIN_REQUIRE_COOP=1; fi
timeout 60 .bin/test-gpu --nocapture > "$OUT/test-gpu.log" 2>&1
echo "test-gpu exit $?" >&2
FINEGRAIN_FIXTURES=tests/fixtures timeout 30 .bin/test-suite parity:: --nocapture > "$OUT/test-parity.log" 2>&1
echo "test-parity exit $?" >&2

echo "== default run, f32 and mixed precision (the shipped subset)" >&2
for p in f32 mixed; do
  timeout "$t_default" .bin/train "${default_args[@]}" --precision "$p" --quiet --overwrite --out "$OUT/default-$p" \
    > "$OUT/default-$p.log" 2>&1
  echo "default $p exit $?" >&2
done

echo "== full-data run" >&2
timeout "$t_full" .bin/train "${full_args[@]}" --quiet --overwrite --out "$OUT/full" > "$OUT/full.log" 2>&1
echo "full exit $?" >&2

echo "== ablation" >&2
FINEGRAIN_TRAIN_BIN=.bin/train ABLATION_DIR="$OUT/ablation" timeout "$t_abl" \
  bash scripts/ablation.sh "$abl_seeds" "${abl_args[@]}" > "$OUT/ablation.md" 2> "$OUT/ablation.err"
echo "ablation exit $?" >&2

# Keep the outputs small: drop checkpoints.
find "$OUT" -name '*.safetensors' -delete
tail -n 3 "$OUT/test-gpu.log" "$OUT/test-parity.log" "$OUT/full.log" "$OUT/ablation.md" >&2
grep -h "^test:" "$OUT"/default-*.log >&2 || true
