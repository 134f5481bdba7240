#!/usr/bin/env bash
# What the ssh and slurm providers cost, against the bare commands they are built on, in the
# same run: `kiln apply` (2 nodes; for ssh the first one copies the worker binary, the second
# only checks it by hash), `kiln plan` (a refresh of every node) and `kiln destroy`, each timed
# RUNS times (median wall seconds), beside the median of one bare `ssh HOST true` and one
# `sbatch --wrap true`. The ssh hosts are two network namespaces with real sshd
# (scripts/hosts.sh), Slurm the one-node cluster of scripts/slurm.sh. Root only.
#   scripts/bench/providers.sh [RUNS]
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
runs="${1:-5}"
cargo build --quiet --release --bins --manifest-path "$root/Cargo.toml"
kiln="$root/target/release/kiln"
export KILN_WORKER_BIN="$root/target/release/kiln-worker"
work="$(mktemp -d)"
cleanup() {
  for p in "$work"/ssh/sshd*.pid; do [ -f "$p" ] && kill "$(cat "$p")" 2>/dev/null; done
  "$root/scripts/hosts.sh" down 3 >/dev/null
  "$root/scripts/slurm.sh" down "$work/slurm" >/dev/null
  rm -rf "$work"
}
trap cleanup EXIT
"$root/scripts/hosts.sh" down 3 >/dev/null
"$root/scripts/hosts.sh" up 3 >/dev/null
"$root/scripts/slurm.sh" up "$work/slurm" >/dev/null
export SLURM_CONF="$work/slurm/slurm.conf"

mkdir -p "$work/ssh" /run/sshd
ssh-keygen -q -t ed25519 -N '' -f "$work/ssh/client_key"
cp "$work/ssh/client_key.pub" "$work/ssh/authorized_keys"
: > "$work/ssh/known_hosts"
for n in 2 3; do
  ip=127.30.0.1$n
  ssh-keygen -q -t ed25519 -N '' -f "$work/ssh/host$n"
  echo "[$ip]:2222 $(cut -d' ' -f1,2 "$work/ssh/host$n.pub")" >> "$work/ssh/known_hosts"
  printf 'ListenAddress %s:2222\nHostKey %s\nAuthorizedKeysFile %s\nPidFile %s\nPasswordAuthentication no\nUsePAM no\nStrictModes no\n' \
    "$ip" "$work/ssh/host$n" "$work/ssh/authorized_keys" "$work/ssh/sshd$n.pid" > "$work/ssh/sshd$n.conf"
  ip netns exec kh$n /usr/sbin/sshd -f "$work/ssh/sshd$n.conf"
done
sleep 0.5

mkdir -p "$work/ssh-cluster" "$work/slurm-cluster"
cat > "$work/ssh-cluster/cluster.hcl" <<EOF
cluster "far" {
  provider = "ssh"
  coordinator {
    listen = "127.30.0.1:0"
  }
  node_pool "cpu" {
    hosts            = ["127.30.0.12", "127.30.0.13"]
    port             = 2222
    identity_file    = "$work/ssh/client_key"
    known_hosts_file = "$work/ssh/known_hosts"
    remote_dir       = "$work/remote"
  }
}
EOF
cat > "$work/slurm-cluster/cluster.hcl" <<'EOF'
cluster "hpc" {
  provider = "slurm"
  coordinator {
    listen = "127.0.0.1:0"
  }
  node_pool "cpu" {
    count = 2
  }
}
EOF

# Seconds `$@` takes.
secs() { local s; s=$(date +%s.%N); "$@" >/dev/null 2>&1 || { echo "failed: $*" >&2; exit 1; }; echo "$(date +%s.%N) - $s" | bc; }
median() { sort -n | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }
# The median of RUNS timings of `$@`.
timed() { for _ in $(seq "$runs"); do secs "$@"; done | median; }

ssh_true=$(timed ssh -o BatchMode=yes -o StrictHostKeyChecking=yes -o UserKnownHostsFile="$work/ssh/known_hosts" -i "$work/ssh/client_key" -p 2222 127.30.0.12 true)
# Its output goes nowhere: by default sbatch writes slurm-ID.out into the current directory.
sbatch_true=$(timed sbatch --parsable --output=/dev/null --wrap true)

cd "$work/ssh-cluster"
first=$(secs "$kiln" apply --auto-approve .)
"$kiln" destroy --auto-approve . >/dev/null
apply=""; plan=""; destroy=""
for _ in $(seq "$runs"); do
  apply+="$(secs "$kiln" apply --auto-approve .)"$'\n'
  plan+="$(secs "$kiln" plan .)"$'\n'
  destroy+="$(secs "$kiln" destroy --auto-approve .)"$'\n'
done
report() { # provider baseline-name baseline first apply plan destroy
  printf '%-6s %-22s %8.3f s\n' "$1" "$2" "$3"
  [ -n "$4" ] && printf '%-6s %-22s %8.3f s  (%.1fx)\n' "$1" "apply, copying" "$4" "$(echo "$4 / $3" | bc -l)"
  for what in apply plan destroy; do
    local v; v=$(printf '%s' "${!what}" | median)
    printf '%-6s %-22s %8.3f s  (%.1fx)\n' "$1" "$what" "$v" "$(echo "$v / $3" | bc -l)"
  done
}
report ssh "bare ssh HOST true" "$ssh_true" "$first"

cd "$work/slurm-cluster"
apply=""; plan=""; destroy=""
for _ in $(seq "$runs"); do
  apply+="$(secs "$kiln" apply --auto-approve .)"$'\n'
  # Once both jobs run, so that destroy signals running workers.
  until [ "$(squeue -h -t RUNNING -n kiln-hpc-cpu-0,kiln-hpc-cpu-1 | wc -l)" = 2 ]; do sleep 0.1; done
  plan+="$(secs "$kiln" plan .)"$'\n'
  destroy+="$(secs "$kiln" destroy --auto-approve .)"$'\n'
done
report slurm "bare sbatch --wrap true" "$sbatch_true" ""
