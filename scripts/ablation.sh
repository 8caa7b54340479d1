#!/usr/bin/env bash
# Ablation of the method on Fashion-MNIST: cross-entropy / +DB / +GCE / DB+GCE, several
# seeds each; prints a markdown table of final test top-1 (mean and sample std).
#
#   scripts/ablation.sh [SEEDS] [EXTRA TRAIN FLAGS...]
#   scripts/ablation.sh "0 1 2" --subset --epochs 4          # the table in docs/performance.md
#
# Runs the release `train` example; outputs go to runs/ablation/<config>-s<seed>/, replacing
# those of an earlier ablation (--overwrite).
# Environment: FINEGRAIN_TRAIN_BIN = a prebuilt train binary (skips the cargo build),
# ABLATION_DIR = output folder instead of runs/ablation.
set -euo pipefail
cd "$(dirname "$0")/.."
seeds=${1:-"0 1 2"}
shift || true
bin=${FINEGRAIN_TRAIN_BIN:-}
if [ -z "$bin" ]; then
  cargo build --release --example train
  bin=target/release/examples/train
fi
root=${ABLATION_DIR:-runs/ablation}
declare -A flags=(
  [ce]="--loss ce --no-db"
  [ce+db]="--loss ce"
  [gce]="--loss gce --k 3 --no-db"
  [db+gce]="--loss gce --k 3"
)
order=(ce ce+db gce db+gce)
mkdir -p "$root"
for cfg in "${order[@]}"; do
  for s in $seeds; do
    out="$root/${cfg}-s${s}"
    echo "== $cfg seed $s" >&2
    # shellcheck disable=SC2086
    $bin --quiet --seed "$s" --out "$out" --overwrite ${flags[$cfg]} "$@" > "$out.log" 2>&1 || { echo "run failed: $out.log" >&2; exit 1; }
  done
done
echo "| configuration | seeds | test top-1 % (mean ± std) | per seed |"
echo "|---|---|---|---|"
for cfg in "${order[@]}"; do
  vals=()
  for s in $seeds; do
    v=$(tail -n 1 "$root/${cfg}-s${s}/metrics.csv" | cut -d, -f7)
    vals+=("$v")
  done
  python3 - "$cfg" "${vals[@]}" <<'PY'
import statistics, sys
cfg, vals = sys.argv[1], [100 * float(v) for v in sys.argv[2:]]
sd = statistics.stdev(vals) if len(vals) > 1 else 0.0
print(f"| {cfg} | {len(vals)} | {statistics.mean(vals):.2f} ± {sd:.2f} | {', '.join(f'{v:.2f}' for v in vals)} |")
PY
done
