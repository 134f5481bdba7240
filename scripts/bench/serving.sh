#!/usr/bin/env bash
# `kiln serve` against MLServer (the reference Open Inference Protocol server) in the same
# run: a digits-sized MLP (64 inputs, hidden [128, 64], 10 classes) trained by kiln and served
# batched (drift watched, the default), batched without drift (--no-drift) and unbatched
# (--max-batch-size 1), and MLServer serving a scikit-learn MLPClassifier of the same widths;
# then kiln's CNN on 8x8 images (channels [8, 16], hidden [64]), which scikit-learn has no
# counterpart of. The same load generator (wrk, closed loop: each connection sends its next
# request when the last is answered) posts the same one-row FP32 request to each for SECONDS
# at 1, 8 and 64 connections; prints requests/s and p50/p99 latency, and kiln's throughput as
# a multiple of MLServer's (of the MLP's, for the CNN).
#   scripts/bench/serving.sh [SECONDS]
# Needs wrk (apt-get install wrk); MLServer is installed into target/mlserver-env once.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
seconds="${1:-10}"
command -v wrk >/dev/null || { echo "needs wrk (apt-get install wrk)" >&2; exit 1; }
env_dir="$root/target/mlserver-env"
if ! "$env_dir/bin/python" -c 'import mlserver, mlserver_sklearn, sklearn, uvloop; assert tuple(map(int, uvloop.__version__.split(".")[:2])) < (0, 21)' 2>/dev/null; then
  python3 -m venv "$env_dir"
  # MLServer 1.7's inference workers call asyncio.get_event_loop(), which uvloop 0.21 and
  # later refuse in a fresh process.
  "$env_dir/bin/pip" install --quiet --disable-pip-version-check mlserver mlserver-sklearn scikit-learn 'uvloop<0.21'
fi
cargo build --quiet --release --bins --manifest-path "$root/Cargo.toml"
kiln="$root/target/release/kiln"
export KILN_WORKER_BIN="$root/target/release/kiln-worker"
work="$(mktemp -d)"
pids=()
trap 'for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"' EXIT

cd "$work"
cat > cluster.hcl <<'EOF'
cluster "local" {
  provider = "local"
  node_pool "cpu" {
    count = 1
  }
}
EOF
cat > job.hcl <<'EOF'
job "digits" {
  cluster = "local"
  model "mlp" {
    inputs  = 64
    hidden  = [128, 64]
    classes = 10
  }
  dataset "blobs" {
    source   = "synthetic:blobs"
    samples  = 2048
    features = 64
    classes  = 10
    seed     = 7
  }
  training {
    workers    = 1
    batch_size = 64
    epochs     = 1
    seed       = 1
    optimizer "adam" {
      learning_rate = 0.001
    }
  }
}

job "images" {
  cluster = "local"
  model "cnn" {
    input_shape = [1, 8, 8]
    channels    = [8, 16]
    kernel_size = 3
    hidden      = [64]
    classes     = 10
  }
  dataset "images" {
    source           = "file://images-x.npy"
    labels           = "file://images-y.npy"
    classes          = 10
    validation_split = 0
  }
  training {
    workers    = 1
    batch_size = 64
    epochs     = 1
    seed       = 1
    optimizer "adam" {
      learning_rate = 0.001
    }
  }
}
EOF
"$env_dir/bin/python" - <<'PY'
import numpy as np
rng = np.random.default_rng(7)
np.save("images-x.npy", rng.integers(0, 256, size=(2048, 1, 8, 8), dtype=np.uint8))
np.save("images-y.npy", rng.integers(0, 10, size=2048).astype(np.int64))
PY
"$kiln" up . --job digits >/dev/null 2>&1
"$kiln" up . --job images >/dev/null 2>&1

"$env_dir/bin/python" - <<'PY'
import json, os, joblib
import numpy as np
from sklearn.neural_network import MLPClassifier
rng = np.random.default_rng(7)
x = rng.normal(size=(2048, 64)).astype(np.float32)
y = rng.integers(0, 10, size=2048)
model = MLPClassifier(hidden_layer_sizes=(128, 64), max_iter=5).fit(x, y)
os.makedirs("mlserver/digits", exist_ok=True)
joblib.dump(model, "mlserver/digits/model.joblib")
json.dump({"name": "digits", "implementation": "mlserver_sklearn.SKLearnModel",
           "parameters": {"uri": "./model.joblib"}}, open("mlserver/digits/model-settings.json", "w"))
json.dump({"http_port": 18182, "grpc_port": 18183, "metrics_port": 18184},
          open("mlserver/settings.json", "w"))
row = rng.normal(size=64).round(4).tolist()
body = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 64], "data": row}]}
open("body.json", "w").write(json.dumps(body))
image = (rng.integers(0, 256, size=(1, 1, 8, 8)) / 255).round(4).tolist()
body = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 1, 8, 8], "data": image}]}
open("image.json", "w").write(json.dumps(body))
PY
for body in body image; do
  cat > "$body.lua" <<EOF
local f = io.open("$body.json"); wrk.body = f:read("*a"); f:close()
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
EOF
done

# Its log times each drift evaluation (debug).
KILN_LOG=warn,kiln_worker=debug "$kiln" serve digits@1 --listen 127.0.0.1:18180 >serve-batched.log 2>&1 & pids+=($!)
"$kiln" serve digits@1 --listen 127.0.0.1:18181 --max-batch-size 1 >serve-unbatched.log 2>&1 & pids+=($!)
"$kiln" serve digits@1 --listen 127.0.0.1:18185 --no-drift >serve-no-drift.log 2>&1 & pids+=($!)
"$kiln" serve images@1 --listen 127.0.0.1:18186 >serve-cnn.log 2>&1 & pids+=($!)
(cd mlserver && exec "$env_dir/bin/mlserver" start . >../mlserver.log 2>&1) & pids+=($!)
for server in 18180:digits 18181:digits 18182:digits 18185:digits 18186:images; do
  ready="http://127.0.0.1:${server%%:*}/v2/models/${server##*:}/ready"
  for _ in $(seq 600); do
    curl -sf "$ready" >/dev/null 2>&1 && break
    sleep 0.1
  done
  curl -sf "$ready" >/dev/null || { echo "$ready never got ready" >&2; tail -n 5 ./*.log; exit 1; }
done

# requests/s p50 p99 (milliseconds) of one wrk run.
load() { # port connections [model body]
  local threads=$(( $2 < 2 ? 1 : 2 )) model="${3:-digits}" body="${4:-body}"
  wrk -t"$threads" -c"$2" -d"${seconds}s" --latency -s "$body.lua" "http://127.0.0.1:$1/v2/models/$model/infer" |
    awk '
      function ms(v) { if (v ~ /us$/) return v / 1000; if (v ~ /ms$/) return v + 0; if (v ~ /s$/) return v * 1000; return v }
      /^ +50%/ { p50 = ms($2) } /^ +99%/ { p99 = ms($2) } /^Requests\/sec/ { rps = $2 }
      /Non-2xx/ { bad = $NF }
      END { if (bad) { print "non-2xx answers: " bad > "/dev/stderr"; exit 1 } printf "%.0f %.3f %.3f\n", rps, p50, p99 }'
}
# Each server answers a second of load first: the figures are of warm servers.
for server in 18180:digits:body 18181:digits:body 18182:digits:body 18185:digits:body 18186:images:image; do
  IFS=: read -r port model body <<<"$server"
  wrk -t1 -c8 -d1s -s "$body.lua" "http://127.0.0.1:$port/v2/models/$model/infer" >/dev/null
done
printf '%-15s %5s %12s %10s %10s %10s\n' server clients "requests/s" "p50 ms" "p99 ms" "vs MLServer"
for clients in 1 8 64; do
  read -r m_rps m_p50 m_p99 < <(load 18182 "$clients")
  for server in "kiln batched:18180" "kiln no drift:18185" "kiln unbatched:18181"; do
    read -r rps p50 p99 < <(load "${server##*:}" "$clients")
    printf '%-15s %5d %12d %10.3f %10.3f %9.1fx\n' "${server%%:*}" "$clients" "$rps" "$p50" "$p99" "$(echo "$rps / $m_rps" | bc -l)"
  done
  read -r rps p50 p99 < <(load 18186 "$clients" images image)
  printf '%-15s %5d %12d %10.3f %10.3f %9.1fx\n' "kiln CNN" "$clients" "$rps" "$p50" "$p99" "$(echo "$rps / $m_rps" | bc -l)"
  printf '%-15s %5d %12d %10.3f %10.3f\n' "MLServer" "$clients" "$m_rps" "$m_p50" "$m_p99"
done
# What drift costs off the request path: the batched server's evaluations, once a second.
grep -o 'drift evaluated seconds=[0-9.e-]*' serve-batched.log | cut -d= -f2 | sort -g |
  awk '{ t[NR] = $1 } END { if (NR) printf "\ndrift: %d evaluations of the batched MLP server'"'"'s window (1000 inputs, 64 features), once a second off the request path: median %.2f ms, max %.2f ms\n", NR, t[int((NR + 1) / 2)] * 1000, t[NR] * 1000 }'
