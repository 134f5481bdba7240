#!/usr/bin/env bash
# `kiln models list` and `kiln models show` on a registry with many versions of one model
# (10,000 by default): the version records are written in the registry's layout
# (docs/registry.md) by this script, with one alias moved once, then each command is timed
# RUNS times (median, min, max wall seconds).
#   scripts/bench/registry.sh [VERSIONS] [RUNS]
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
versions="${1:-10000}"
runs="${2:-5}"
cargo build --quiet --release --bin kiln --manifest-path "$root/Cargo.toml"
kiln="$root/target/release/kiln"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
python3 - "$work/store" "$versions" <<'PY'
import json, os, sys
store, n = sys.argv[1], int(sys.argv[2])
model = os.path.join(store, "registry/models/bench")
os.makedirs(os.path.join(model, "versions"))
for v in range(1, n + 1):
    record = {
        "record_version": 1, "name": "bench", "version": v, "created_unix_ms": 1796236302260 + v,
        "lineage": {"job_id": f"bench-{v}", "spec_sha256": "0" * 64, "kiln_version": "0.1.0",
                    "worker_binary_sha256": "1" * 64, "generations": 1, "restarts": 0,
                    "checkpoint": f"file:///store/jobs/bench-{v}/checkpoints/100/manifest.json",
                    "data": [], "data_source": "synthetic:blobs (samples 1000, seed 7)"},
        "metrics": {"val_accuracy": 0.9, "val_loss": 0.3, "train_loss": 0.2, "steps": 100,
                    "samples_seen": 6400, "wall_seconds": 3.5},
    }
    with open(os.path.join(model, "versions", f"{v}.json"), "w") as f:
        json.dump(record, f)
alias = os.path.join(model, "aliases/production")
os.makedirs(alias)
with open(os.path.join(alias, "000000000001.json"), "w") as f:
    json.dump({"alias": "production", "seq": 1, "from": None, "to": n // 2, "unix_ms": 0,
               "who": "bench@host", "reason": "bench"}, f)
PY
stats() { sort -g | awk '{a[NR]=$1} END {printf "%8.3f %8.3f %8.3f\n", a[int((NR+1)/2)], a[1], a[NR]}'; }
time_it() { # label command...
  local label="$1"; shift
  for _ in $(seq "$runs"); do
    local start=$EPOCHREALTIME
    "$@" > /dev/null
    echo "$EPOCHREALTIME - $start" | bc -l
  done | { printf '%-40s ' "$label"; stats; }
}
printf '%-40s %8s %8s %8s\n' "$versions versions of one model" median min max
time_it "kiln models list" "$kiln" models list --store "$work/store"
time_it "kiln models show bench@$((versions / 3))" "$kiln" models show "bench@$((versions / 3))" --store "$work/store"
time_it "kiln models show bench (the newest)" "$kiln" models show bench --store "$work/store"
time_it "kiln models show bench@production" "$kiln" models show bench@production --store "$work/store"
echo "(wall seconds of the whole process, $runs runs each, $(nproc) cores, file:// store)"
