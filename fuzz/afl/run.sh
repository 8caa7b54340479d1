#!/bin/sh
# Coverage-guided fuzzing of finegrain's readers with AFL++ (cargo-afl, stable toolchain).
#   cargo install cargo-afl && cargo afl config --build    # once
#   fuzz/afl/run.sh [SECONDS per target] [TARGETS...]      # default 600 s, all four
# Builds the instrumented targets, runs each for SECONDS from the seeds in in/<target>/,
# and prints AFL++'s figures per target; crashes and hangs land in out/<target>/default/.
set -eu
cd "$(dirname "$0")"
secs=${1:-600}
[ $# -gt 0 ] && shift
targets=${*:-idx image checkpoint cub}
cargo afl build --release
# The checkpoint target's seed is the shipped model (not copied into the repository twice).
mkdir -p in/checkpoint
[ -f in/checkpoint/model.safetensors ] || cp ../../weights/fashion-mnist-tiny.safetensors in/checkpoint/model.safetensors
export AFL_SKIP_CPUFREQ=1 AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES=1 AFL_NO_UI=1
for t in $targets; do
  rm -rf "out/$t" && mkdir -p out
  cargo afl fuzz -i "in/$t" -o "out/$t" -V "$secs" -t 2000 "target/release/$t" > "out-$t.log" 2>&1 || true
  s=out/$t/default/fuzzer_stats
  printf '%s: ' "$t"
  awk -F' *: *' '/^(execs_done|execs_per_sec|corpus_count|edges_found|total_edges|saved_crashes|saved_hangs|run_time)/ {printf "%s=%s ", $1, $2} END {print ""}' "$s"
done
