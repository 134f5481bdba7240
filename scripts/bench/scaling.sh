#!/usr/bin/env bash
# Quickstart wall time and data-parallel scaling: runs the quickstart job with 1 and with 2
# workers (same global data, per-worker batch as in the example) RUNS times each, and prints the
# median wall time and the throughput `kiln up` reports, with the 2-vs-1 ratio.
#   scripts/bench/scaling.sh [RUNS]
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
runs="${1:-5}"
cargo build --quiet --release --bins --manifest-path "$root/Cargo.toml"
kiln="$root/target/release/kiln"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

median() { sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }

for workers in 1 2; do
  dir="$work/w$workers"
  mkdir -p "$dir"
  sed "s/count *= *2/count         = $workers/" "$root/examples/quickstart/cluster.hcl" > "$dir/cluster.hcl"
  sed "s/workers *= *2/workers    = $workers/" "$root/examples/quickstart/job.hcl" > "$dir/job.hcl"
  : > "$work/wall$workers"; : > "$work/sps$workers"
  for _ in $(seq "$runs"); do
    rm -rf "$dir/.kiln"
    start=$(date +%s.%N)
    out=$("$kiln" up "$dir" 2>/dev/null)
    end=$(date +%s.%N)
    echo "$end - $start" | bc >> "$work/wall$workers"
    echo "$out" | awk '/throughput/ {print $2}' >> "$work/sps$workers"
  done
done
w1=$(median < "$work/wall1"); w2=$(median < "$work/wall2")
s1=$(median < "$work/sps1"); s2=$(median < "$work/sps2")
printf "%-10s %14s %16s\n" workers "median wall s" "samples/s"
printf "%-10s %14.2f %16.0f\n" 1 "$w1" "$s1"
printf "%-10s %14.2f %16.0f\n" 2 "$w2" "$s2"
printf "2 vs 1 workers: throughput x%.2f, wall time x%.2f (runs: %s each, %s cores)\n" \
  "$(echo "$s2 / $s1" | bc -l)" "$(echo "$w2 / $w1" | bc -l)" "$runs" "$(nproc)"
