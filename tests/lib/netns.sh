# Shared by the integration tests (source it): a one-armed LAN in network namespaces made
# for the test and removed on exit, also on failure.
#
#   $P-cli ─┐
#   $P-be1  ├─ br0 in $P-lan ── dp0 (for sluice-dataplane, run inside $P-lan)
#   $P-be2 ─┘
#
# Sets: P (namespace prefix), work (temp dir), pids (background processes to stop).
# Provides: fail MSG (prints the dataplane/controlplane logs, exits 1), lan_host, lan_dp_port,
# lan_wait_listen.

lan_init() { # prefix workdir-template
  P=$1$$
  work=$(mktemp -d "$2")
  pids=()
  trap lan_cleanup EXIT
  for ns in lan cli be1 be2; do
    ip netns add "$P-$ns"
    # No IPv6 duplicate address detection delays.
    ip netns exec "$P-$ns" sysctl -qw net.ipv6.conf.all.accept_dad=0 \
      net.ipv6.conf.default.accept_dad=0
  done
  # The bridge must pass fragments as they are (br_netfilter would reassemble them).
  ip netns exec "$P-lan" sysctl -qw net.bridge.bridge-nf-call-iptables=0 \
    net.bridge.bridge-nf-call-ip6tables=0 2>/dev/null || true
  ip -n "$P-lan" link add br0 type bridge mcast_snooping 0
  ip -n "$P-lan" link set br0 up
}

lan_cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  for ns in lan cli be1 be2; do ip netns del "$P-$ns" 2>/dev/null || true; done
  rm -rf "$work" 2>/dev/null || true
}

fail() {
  echo "FAIL: $*"
  [ -n "${dp_pid:-}" ] && kill "$dp_pid" 2>/dev/null && sleep 1
  echo "--- dataplane log"; tail -20 "$work/dp.log" || true
  echo "--- controlplane log"; tail -20 "$work/cp.log" || true
  exit 1
}

lan_host() { # ns ipv4 [ipv6|-] [mtu]
  local ns=$1 v4=$2 v6=${3:--} mtu=${4:-1500}
  ip link add "$P-$ns" type veth peer name "v$ns" netns "$P-lan"
  ip link set "$P-$ns" netns "$P-$ns"
  ip -n "$P-$ns" link set "$P-$ns" name eth0
  ip -n "$P-$ns" link set eth0 mtu "$mtu"
  ip -n "$P-lan" link set "v$ns" mtu "$mtu"
  ip -n "$P-$ns" addr add "$v4/24" dev eth0
  [ "$v6" = - ] || ip -n "$P-$ns" addr add "$v6/64" dev eth0 nodad
  ip -n "$P-$ns" link set eth0 up
  ip -n "$P-$ns" link set lo up
  # The checksum trap (PLATFORM.md): kernel-sent frames read by a PMD need TX offload off.
  ip netns exec "$P-$ns" ethtool -K eth0 tx off >/dev/null 2>&1 || true
  ip -n "$P-lan" link set "v$ns" master br0 up
}

lan_dp_port() { # [mtu]: dp0 in $P-lan, bridged, for --vdev=...,iface=dp0
  local mtu=${1:-1500}
  ip -n "$P-lan" link add dp0 mtu "$mtu" type veth peer name dp0p mtu "$mtu"
  ip -n "$P-lan" link set dp0p master br0 up
  ip -n "$P-lan" link set dp0 up
  ip netns exec "$P-lan" ethtool -K dp0 tx off >/dev/null 2>&1 || true
  ip netns exec "$P-lan" ethtool -K dp0p tx off >/dev/null 2>&1 || true
}

lan_wait_listen() { # ns tcp|udp port [addr]: waits for a socket listening there in $P-ns
  local ns=$1 proto=$2 port=$3 addr=${4:-} flag=-t filter
  [ "$proto" = udp ] && flag=-u
  filter="sport = :$port"
  [ -n "$addr" ] && filter="src $addr:$port"
  for _ in $(seq 300); do
    [ -n "$(ip netns exec "$P-$ns" ss -Hln $flag "$filter" 2>/dev/null)" ] && return 0
    sleep 0.1
  done
  fail "nothing listens on $proto ${addr:-*}:$port in $ns after 30 s"
}
