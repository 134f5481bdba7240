#!/usr/bin/env bash
# `kiln validate` on a generated configuration of FILES files of 100 lines each (default 200
# files = 20,000 lines): median wall time of RUNS runs, against `kiln fmt --check` on the same
# directory (parsing and layout only, no evaluation or checks) as the same-run baseline.
#   scripts/bench/validate.sh [FILES] [RUNS]
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
files="${1:-200}"
runs="${2:-5}"
cargo build --quiet --release --bins --manifest-path "$root/Cargo.toml"
kiln="$root/target/release/kiln"
dir="$(mktemp -d)"
trap 'rm -rf "$dir"' EXIT

# One cluster and one job per file, with variables, locals, functions and comments; padded
# with comment lines to exactly 100 lines.
python3 - "$dir" "$files" <<'PY'
import sys
d, n = sys.argv[1], int(sys.argv[2])
for i in range(n):
    text = f'''# Generated file {i}: one cluster and one job.
variable "workers_{i}" {{
  type        = number
  default     = {1 + i % 4}
  description = "Workers of job j{i}."
  validation {{
    condition     = var.workers_{i} >= 1 && var.workers_{i} <= 8
    error_message = "Between 1 and 8 workers."
  }}
}}

locals {{
  features_{i} = {8 + i % 16}
  classes_{i}  = {2 + i % 5}
  name_{i}     = lower(format("Run-%d", {i}))
  hidden_{i}   = [for w in range(2) : 16 * (w + 1)]
}}

cluster "c{i}" {{
  provider = "local"
  node_pool "cpu" {{
    count         = max(var.workers_{i}, 2)
    cpus_per_node = 1
    labels = {{
      zone = "zone-${{{i} % 3}}"
      tier = "cpu"
    }}
  }}
  node_pool "spare" {{
    count = 1
  }}
  storage {{
    url = "file://.kiln/store-{i}"
  }}
  state {{
    backend = "embedded"
    path    = ".kiln/state-{i}"
  }}
}}

job "j{i}" {{
  cluster = "c{i}"
  model "mlp" {{
    inputs  = local.features_{i}
    hidden  = local.hidden_{i}
    classes = local.classes_{i}
  }}
  dataset "blobs" {{
    source           = "synthetic:blobs"
    samples          = {1024 * (1 + i % 8)}
    features         = local.features_{i}
    classes          = local.classes_{i}
    seed             = {i}
    validation_split = 0.1
  }}
  training {{
    workers    = var.workers_{i}
    batch_size = 32
    epochs     = 2
    seed       = {i}
    optimizer "adam" {{
      learning_rate = 0.001
    }}
  }}
  checkpoint {{
    every_steps = 50
    keep        = 2
  }}
  restart {{
    max_restarts = 3
    backoff      = "2s"
  }}
}}
'''
    lines = text.splitlines()
    lines += [f"# padding {k}" for k in range(100 - len(lines))]
    open(f"{d}/f{i:04}.hcl", "w").write("\n".join(lines) + "\n")
PY
"$kiln" fmt "$dir" > /dev/null # the baseline measures a canonical directory: no rewrites
echo "$("$kiln" validate "$dir"), $(cat "$dir"/*.hcl | wc -l) lines in $files files"

median() { sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
time_runs() {
  for _ in $(seq "$runs"); do
    start=$(date +%s.%N)
    "$@" > /dev/null
    end=$(date +%s.%N)
    echo "$end - $start" | bc
  done | median
}
v=$(time_runs "$kiln" validate "$dir")
f=$(time_runs "$kiln" fmt --check "$dir")
printf "%-22s %12s\n" command "median wall s"
printf "%-22s %12.3f\n" "kiln validate" "$v" "kiln fmt --check" "$f"
printf "validate vs parse-and-format baseline: x%.2f (runs: %s, %s cores)\n" \
  "$(echo "$v / $f" | bc -l)" "$runs" "$(nproc)"
