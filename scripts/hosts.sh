#!/bin/bash
# The multi-host tests' "hosts": network namespaces on one bridge, with loopback-range
# addresses (127.30.0.0/24), so no traffic ever leaves this machine or uses a private or
# public range. Root only; scripts/test brings them up before the suite and down after it.
#   hosts.sh up N     -> namespaces kh1..khN at 127.30.0.11.. ; the bridge (this host) is 127.30.0.1
#   hosts.sh down N   -> removes them
# Loopback-range addresses route between interfaces only with route_localnet=1 (set here).
# Cut a host off (a partition): ip link set khN-br down ; heal: ip link set khN-br up
set -eu
cmd=$1; n=${2:-2}
if [ "$cmd" = up ]; then
  sysctl -qw net.ipv4.conf.all.route_localnet=1
  ip link add kilnbr0 type bridge 2>/dev/null || true
  ip addr add 127.30.0.1/24 dev kilnbr0 2>/dev/null || true
  ip link set kilnbr0 up
  sysctl -qw net.ipv4.conf.kilnbr0.route_localnet=1
  for i in $(seq "$n"); do
    ns=kh$i
    # A veth pair outlives its namespace for a moment: never meet one of an earlier run.
    ip link del $ns-br 2>/dev/null || true
    ip netns add $ns
    ip link add $ns-br type veth peer name $ns-eth
    ip link set $ns-br master kilnbr0 up
    ip link set $ns-eth netns $ns
    ip netns exec $ns sysctl -qw net.ipv4.conf.all.route_localnet=1
    ip netns exec $ns ip link set lo up
    ip netns exec $ns ip addr add 127.30.0.$((10 + i))/24 dev $ns-eth
    ip netns exec $ns ip link set $ns-eth up
    ip netns exec $ns sysctl -qw net.ipv4.conf.$ns-eth.route_localnet=1
    ip netns exec $ns ip route add default via 127.30.0.1 2>/dev/null || true
  done
  echo "hosts kh1..kh$n up at 127.30.0.11..$((10 + n)); this host is 127.30.0.1"
elif [ "$cmd" = down ]; then
  for i in $(seq "$n"); do
    # Deleting the host side of the veth pair removes both ends at once.
    ip link del kh$i-br 2>/dev/null || true
    ip netns del kh$i 2>/dev/null || true
  done
  ip link del kilnbr0 2>/dev/null || true
  sysctl -qw net.ipv4.conf.all.route_localnet=0
  echo "hosts down"
fi
