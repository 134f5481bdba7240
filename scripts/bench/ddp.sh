#!/usr/bin/env bash
# Data-parallel training against PyTorch DDP, same run: the MLP 784-256-256-10 and the CNN
# (1×28×28, channels [16, 32], hidden [64], 10 classes), Adam, batch 64 per rank, 1 thread
# per rank, with 1 and 2 workers, RUNS times each (medians). kiln's figure is the whole-run
# samples/s `kiln up` reports (first steps included); PyTorch's is timed after 20 warm-up steps.
#   scripts/bench/ddp.sh [RUNS]
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
runs="${1:-3}"
python3 -c "import torch" 2>/dev/null || pip install --quiet torch
cargo build --quiet --release --bins --manifest-path "$root/Cargo.toml"
kiln="$root/target/release/kiln"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
median() { sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
batch=64
steps=300   # per worker, both sides

model_block() {
  case "$1" in
    mlp) echo 'model "mlp" {
    inputs  = 784
    hidden  = [256, 256]
    classes = 10
  }' ;;
    cnn) echo 'model "cnn" {
    input_shape = [1, 28, 28]
    channels    = [16, 32]
    hidden      = [64]
    classes     = 10
  }' ;;
  esac
}

kiln_rate() { # model workers
  local dir="$work/$1-$2"
  mkdir -p "$dir"
  # One epoch of `steps` global batches; no validation split, one checkpoint at the end.
  cat > "$dir/main.hcl" <<HCL
cluster "local" {
  provider = "local"
  node_pool "cpu" {
    count         = $2
    cpus_per_node = 1
  }
  storage {
    url = "file://.kiln/store"
  }
}
job "bench" {
  cluster = "local"
  $(model_block "$1")
  dataset "blobs" {
    source           = "synthetic:blobs"
    samples          = $((batch * $2 * steps))
    features         = 784
    classes          = 10
    validation_split = 0
  }
  training {
    workers    = $2
    batch_size = $batch
    epochs     = 1
    optimizer "adam" {
      learning_rate = 0.001
    }
  }
  checkpoint {
    every_steps = 1000000
  }
}
HCL
  rm -rf "$dir/.kiln"
  "$kiln" up "$dir" 2>/dev/null | awk '/throughput/ {print $2}'
}

printf "%-5s %-8s %14s %14s %12s\n" model workers "kiln samples/s" "torch samples/s" "kiln/torch"
for model in mlp cnn; do
  for workers in 1 2; do
    : > "$work/k"; : > "$work/t"
    for _ in $(seq "$runs"); do
      kiln_rate "$model" "$workers" >> "$work/k"
      python3 "$root/scripts/bench/torch_ddp.py" --model "$model" --workers "$workers" \
        --steps "$steps" --batch-size "$batch" >> "$work/t"
    done
    k=$(median < "$work/k"); t=$(median < "$work/t")
    echo "$model $workers $k $t" >> "$work/table"
    printf "%-5s %-8s %14.0f %14.0f %12.2f\n" "$model" "$workers" "$k" "$t" "$(echo "$k / $t" | bc -l)"
  done
done
for model in mlp cnn; do
  awk -v m="$model" '$1 == m && $2 == 1 {k1 = $3; t1 = $4} $1 == m && $2 == 2 {k2 = $3; t2 = $4}
    END {printf "%s 2 vs 1 workers: kiln x%.2f, torch x%.2f\n", m, k2 / k1, t2 / t1}' "$work/table"
done
echo "(runs: $runs each, $(nproc) cores, $steps steps of batch $batch per worker)"
