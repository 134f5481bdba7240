#!/usr/bin/env bash
# `kiln data push` against DVC (`dvc add` + `dvc push` to a local remote) on the same directory
# of many small files, and against `cp` and DVC on one large file, in the same run, each into
# an empty store. Prints wall seconds and ratios.
#   scripts/bench/data.sh [FILES] [BIG_MIB]      # defaults: 100000 files, 1024 MiB
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
files="${1:-100000}"
big_mib="${2:-1024}"
command -v dvc >/dev/null || pip install --quiet dvc
cargo build --quiet --release --bin kiln --manifest-path "$root/Cargo.toml"
kiln="$root/target/release/kiln"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
seconds() { local start=$EPOCHREALTIME; "$@" > /dev/null; echo "$EPOCHREALTIME - $start" | bc -l; }

echo "making $files small files and one $big_mib MiB file in $work"
python3 - "$work/small" "$files" <<'PY'
import os, sys
root, n = sys.argv[1], int(sys.argv[2])
for i in range(n):
    d = os.path.join(root, f"{i // 1000:03d}")
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, f"{i}.txt"), "w") as f:
        f.write(f"sample {i}\n" * (1 + i % 20))
PY
mkdir -p "$work/big"
head -c "$((big_mib << 20))" /dev/urandom > "$work/big/blob.bin"
sync

dvc_push() { # data-dir
  local repo="$work/dvc-$(basename "$1")"
  mkdir -p "$repo" && cp -r "$1" "$repo/data"
  (cd "$repo" && git init -q && dvc init -q && dvc remote add -q -d local "$repo.remote" &&
    seconds sh -c 'dvc add -q data && dvc push -q')
}

k_small=$(seconds "$kiln" data push "$work/small" --name small --store "$work/kiln-small")
d_small=$(dvc_push "$work/small")
k_big=$(seconds "$kiln" data push "$work/big/blob.bin" --name big --store "$work/kiln-big")
c_big=$(seconds cp "$work/big/blob.bin" "$work/copy.bin")
d_big=$(dvc_push "$work/big")

printf '\n%-34s %10s %10s %12s\n' "" "kiln s" "other s" "other/kiln"
printf '%-34s %10.2f %10.2f %12.2f\n' "$files small files vs dvc add+push" "$k_small" "$d_small" "$(echo "$d_small / $k_small" | bc -l)"
printf '%-34s %10.2f %10.2f %12.2f\n' "$big_mib MiB file vs cp" "$k_big" "$c_big" "$(echo "$c_big / $k_big" | bc -l)"
printf '%-34s %10.2f %10.2f %12.2f\n' "$big_mib MiB file vs dvc add+push" "$k_big" "$d_big" "$(echo "$d_big / $k_big" | bc -l)"
echo "($(nproc) cores; every push into an empty store; dvc $(dvc --version))"
