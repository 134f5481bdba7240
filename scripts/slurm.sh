#!/bin/bash
# A one-node Slurm cluster for the tests, without systemd: munged, slurmctld and slurmd on
# loopback, with two fake GPUs (gres). Root only; scripts/test brings it up before the suite
# and down after it.
#   slurm.sh up DIR    -> state, logs and slurm.conf under DIR; prints SLURM_CONF=DIR/slurm.conf
#   slurm.sh down DIR  -> stops the daemons started there
set -euo pipefail
cmd=$1; S=$(mkdir -p "$2" && cd "$2" && pwd)
here=$(cd "$(dirname "$0")" && pwd)/slurm
export SLURM_CONF=$S/slurm.conf
stop() {
  for d in slurmd slurmctld munged; do
    f=$S/run/$d.bgpid; [ -f "$f" ] || continue; p=$(cat "$f")
    kill "$p" 2>/dev/null || true
    for _ in $(seq 150); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$p" 2>/dev/null && kill -9 "$p"
    rm -f "$f"
  done
}
if [ "$cmd" = down ]; then stop; exit 0; fi
stop
H=$(hostname -s)
# Fresh state each time: a stale node state keeps old DRAIN reasons.
rm -rf "$S/state" "$S/spool" "$S/log" "$S/run" "$S/dev"
mkdir -p "$S/state" "$S/spool" "$S/log" "$S/run" "$S/dev"
for f in slurm.conf gres.conf; do sed "s#@DIR@#$S#g" "$here/$f" > "$S/$f"; done
sed -i "s/^SlurmctldHost=.*/SlurmctldHost=$H(127.0.0.1)/; s/^NodeName=[^ ]*/NodeName=$H/; s/^PartitionName=debug Nodes=[^ ]*/PartitionName=debug Nodes=$H/" "$S/slurm.conf"
sed -i "s/^NodeName=[^ ]*/NodeName=$H/" "$S/gres.conf"
getent hosts "$H" >/dev/null || echo "127.0.0.1 $H" >> /etc/hosts
# gres/gpu needs File= to be character devices: (1,3) is /dev/null's.
mknod -m 666 "$S/dev/gpu0" c 1 3; mknod -m 666 "$S/dev/gpu1" c 1 3
wait_for() { # name timeout cmd...
  local n=$1 to=$2; shift 2; local end=$((SECONDS + to))
  until "$@" >/dev/null 2>&1; do
    kill -0 "$(cat "$S/run/$n.bgpid")" 2>/dev/null || { echo "$n died:"; tail -5 "$S/log/$n.out"; exit 1; }
    [ $SECONDS -lt $end ] || { echo "$n not ready after ${to}s"; tail -5 "$S/log/$n.out"; exit 1; }
    sleep 0.2
  done
}
install -d -o munge -g munge -m 0755 /run/munge
setpriv --reuid=munge --regid=munge --init-groups /usr/sbin/munged --foreground >"$S/log/munged.out" 2>&1 &
echo $! > "$S/run/munged.bgpid"
wait_for munged 10 sh -c 'munge -n </dev/null'
slurmctld -D -i -f "$SLURM_CONF" >"$S/log/slurmctld.out" 2>&1 &
echo $! > "$S/run/slurmctld.bgpid"
slurmd -D -f "$SLURM_CONF" >"$S/log/slurmd.out" 2>&1 &
echo $! > "$S/run/slurmd.bgpid"
wait_for slurmctld 30 sh -c 'timeout 5 sinfo -h -N -o %T | grep -qx idle'
# Another Slurm (or munged) on the same ports and socket would answer the checks above while
# ours exit: make sure ours still run.
sleep 0.5
for d in munged slurmctld slurmd; do
  kill -0 "$(cat "$S/run/$d.bgpid")" 2>/dev/null || { echo "$d exited (is another Slurm or munged running here?):"; tail -5 "$S/log/$d.out"; exit 1; }
done
echo "SLURM_CONF=$SLURM_CONF"
