#!/usr/bin/env bash
# L4 direct server return end to end, as root, in network namespaces made here and removed
# on exit:
#
#   sl-cli (10.77.0.2, MTU 1500) ─┐
#   sl-be1 (10.77.0.11)           ├─ br0 in sl-lan ── dp0: sluice-dataplane (net_af_packet)
#   sl-be2 (10.77.0.12)           ┘   tunnel source ("SNAT") 10.77.0.99
#
# Gateway "ipip" (VIP 10.77.0.100, TCP 80 + UDP 53) is annotated
# sluice.dev/forwarding-mode: dsr-ipip, Gateway "gue" (VIP 10.77.0.101, TCP 80 + UDP 53)
# dsr-gue. The backends hold both VIPs on lo (arp_ignore/arp_announce so they never answer
# ARP for them), run sluice-decap (XDP) on eth0 and answer the client directly over the
# shared L2. Checks: Programmed after the ACK; TCP and UDP through both VIPs (also a
# full-size client datagram, which needs MTU headroom on the tunnel side); both backends
# get connections; a 4 MB download through the VIP costs sluice only the client's ACKs
# (dp0 byte counters) and the dataplane counts no return packets.
set -euo pipefail
BUILD=${1:?build dir}
BUILD=$(cd "$BUILD" && pwd)
DP=$BUILD/dataplane/sluice-dataplane
CP=$BUILD/controlplane/sluice-controlplane
DECAP=$BUILD/drivers/bpf/sluice-decap
[ "$(id -u)" -eq 0 ] || { echo "SKIP: needs root"; exit 77; }
[ -x "$DECAP" ] || { echo "SKIP: sluice-decap not built (clang or libbpf missing)"; exit 77; }
for t in ip ss curl socat ethtool python3 sysctl; do command -v $t >/dev/null || { echo "missing $t"; exit 1; }; done

LIB=$(cd "$(dirname "$0")/../lib" && pwd)
. "$LIB/netns.sh"
lan_init sd /tmp/sluice-dsr.XXXXXX
# The tunnel side carries client frames plus 20 (IPIP) or 32 (GUE) bytes: MTU 1600 there,
# 1500 at the client, so full-size client packets still fit once encapsulated.
lan_host cli 10.77.0.2 - 1500
lan_host be1 10.77.0.11 - 1600
lan_host be2 10.77.0.12 - 1600
lan_dp_port 1600

# Backends: VIPs on lo, no ARP for them, decapsulation on eth0; an HTTP server on the
# listener port (DSR does not rewrite ports) and UDP answers bound to each VIP (so the
# answer's source is the VIP), each saying who it is: one process answering every datagram
# (tests/lib/udp_name.py says why not socat's fork).
head -c 4000000 /dev/urandom > "$work/big"
for be in be1 be2; do
  ns=$P-$be
  ip -n "$ns" addr add 10.77.0.100/32 dev lo
  ip -n "$ns" addr add 10.77.0.101/32 dev lo
  ip netns exec "$ns" sysctl -qw net.ipv4.conf.all.arp_ignore=1 net.ipv4.conf.all.arp_announce=2 \
    net.ipv4.conf.eth0.arp_ignore=1 net.ipv4.conf.eth0.arp_announce=2
  ip netns exec "$ns" "$DECAP" --iface eth0 --attach >"$work/decap-$be.log" 2>&1 ||
    { cat "$work/decap-$be.log"; fail "sluice-decap on $be"; }
  mkdir -p "$work/www-$be" && echo "$be" > "$work/www-$be/index.html"
  ln -s "$work/big" "$work/www-$be/big"
  ip netns exec "$ns" taskset -c 0 python3 -m http.server 80 --bind 0.0.0.0 \
    --directory "$work/www-$be" >/dev/null 2>&1 &
  pids+=($!)
  for vip in 10.77.0.100 10.77.0.101; do
    ip netns exec "$ns" taskset -c 0 python3 "$LIB/udp_name.py" "$be" 53 "$vip" >/dev/null 2>&1 &
    pids+=($!)
  done
done
# Probes must not race the backends' start-up (on a busy machine http.server took seconds).
for be in be1 be2; do
  lan_wait_listen "$be" tcp 80
  for vip in 10.77.0.100 10.77.0.101; do lan_wait_listen "$be" udp 53 "$vip"; done
done
echo "ok: backends ready: $(head -1 "$work/decap-be1.log")"

mkdir -p "$work/config" "$work/status"
{
cat <<YAML
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: sluice}
spec: {controllerName: sluice.dev/gateway-controller}
---
apiVersion: v1
kind: Service
metadata: {name: be, namespace: default}
spec: {ports: [{name: tcp, port: 80}, {name: udp, port: 53, protocol: UDP}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: be, namespace: default, labels: {kubernetes.io/service-name: be}}
addressType: IPv4
ports: [{name: tcp, port: 80}, {name: udp, port: 53, protocol: UDP}]
endpoints: [{addresses: [10.77.0.11]}, {addresses: [10.77.0.12]}]
YAML
for gw in ipip:10.77.0.100 gue:10.77.0.101; do
  name=${gw%%:*} vip=${gw#*:}
cat <<YAML
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: $name, namespace: default, annotations: {sluice.dev/forwarding-mode: dsr-$name}}
spec:
  gatewayClassName: sluice
  addresses: [{type: IPAddress, value: $vip}]
  listeners:
  - {name: tcp, port: 80, protocol: TCP}
  - {name: udp, port: 53, protocol: UDP}
---
apiVersion: gateway.networking.k8s.io/v1
kind: TCPRoute
metadata: {name: web-$name, namespace: default}
spec:
  parentRefs: [{name: $name, sectionName: tcp}]
  rules: [{backendRefs: [{name: be, port: 80}]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: UDPRoute
metadata: {name: dns-$name, namespace: default}
spec:
  parentRefs: [{name: $name, sectionName: udp}]
  rules: [{backendRefs: [{name: be, port: 53}]}]
YAML
done
} > "$work/config/dsr.yaml"

SOCK=$work/dp.sock
ip netns exec "$P-lan" taskset -c 1 "$DP" --dp-socket "$SOCK" --snat 10.77.0.99 --ct-capacity 65536 \
  -- -l 1 --no-huge -m 256 --no-pci --file-prefix "$P" --log-level=lib.eal:warning \
  --vdev=net_af_packet0,iface=dp0,framecnt=2048,qdisc_bypass=1 >"$work/dp.log" 2>&1 &
dp_pid=$!
pids+=($dp_pid)
for _ in $(seq 100); do [ -S "$SOCK" ] && break; sleep 0.1; done
[ -S "$SOCK" ] || fail "dataplane did not come up"

taskset -c 0 "$CP" --config-dir "$work/config" --status-dir "$work/status" --dp-socket "$SOCK" \
  >"$work/cp.log" 2>&1 &
cp_pid=$!
pids+=($cp_pid)
for gw in ipip gue; do
  for _ in $(seq 100); do
    grep -q "reason: Programmed" "$work/status/Gateway/default/$gw.yaml" 2>/dev/null && break
    sleep 0.1
  done
  grep -q "reason: Programmed" "$work/status/Gateway/default/$gw.yaml" ||
    fail "Gateway $gw not Programmed after the dataplane ACK"
done
echo "ok: Gateways ipip (dsr-ipip) and gue (dsr-gue) Programmed=True after the dataplane ACK"

cli() { ip netns exec "$P-cli" taskset -c 0 "$@"; }
dp0() { ip netns exec "$P-lan" cat "/sys/class/net/dp0/statistics/$1"; }
for gw in ipip:10.77.0.100 gue:10.77.0.101; do
  name=${gw%%:*} vip=${gw#*:}
  # The first SYN may be spent resolving the backend's MAC: curl retries the connection.
  out=$(cli curl -s --max-time 5 --retry 3 --retry-connrefused "http://$vip/" 2>"$work/curl.err" || true)
  case "$out" in be1|be2) echo "ok: dsr-$name: TCP through $vip answered by $out";;
    *) cat "$work/curl.err"; fail "dsr-$name TCP via $vip: '$out'";; esac
  # A datagram that meets an unresolved backend MAC becomes sluice's ARP request: retry.
  for _ in 1 2 3; do
    out=$(echo q | cli socat -T1 - "UDP:$vip:53" || true)
    [ -n "$out" ] && break
  done
  case "$out" in be1|be2) echo "ok: dsr-$name: UDP through $vip answered by $out";;
    *) fail "dsr-$name UDP via $vip: '$out'";; esac
  # A new source port may pick the other backend, whose MAC may still be unresolved: retry.
  for _ in 1 2 3; do
    out=$(head -c 1472 /dev/zero | cli socat -T2 - "UDP:$vip:53" || true)
    [ -n "$out" ] && break
  done
  case "$out" in be1|be2) echo "ok: dsr-$name: a full-size (1500-byte) client datagram arrives encapsulated";;
    *) fail "dsr-$name: full-size UDP datagram via $vip: '$out'";; esac

  N=${SLUICE_DSR_CONNS:-100}
  : > "$work/hits"
  for i in $(seq "$N"); do
    cli curl -s --max-time 3 "http://$vip/" >>"$work/hits" || echo miss >>"$work/hits"
  done
  b1=$(grep -c '^be1$' "$work/hits" || true); b2=$(grep -c '^be2$' "$work/hits" || true)
  miss=$(grep -c '^miss$' "$work/hits" || true)
  echo "dsr-$name: $N connections: be1=$b1 be2=$b2 failed=$miss"
  [ "$miss" -le $((N / 50)) ] || fail "dsr-$name: too many failed connections ($miss)"
  [ "$b1" -gt 0 ] && [ "$b2" -gt 0 ] || fail "dsr-$name: one backend got no connection"

  # The way back bypasses sluice: a 4 MB download costs dp0 only the client's side.
  rx0=$(dp0 rx_bytes) tx0=$(dp0 tx_bytes)
  got=$(cli curl -s --max-time 20 -o /dev/null -w '%{size_download}' "http://$vip/big" || true)
  rx1=$(dp0 rx_bytes) tx1=$(dp0 tx_bytes)
  [ "$got" = 4000000 ] || fail "dsr-$name: download through $vip got '$got' bytes"
  echo "dsr-$name: 4000000-byte download: sluice's dp0 received $((rx1 - rx0)) bytes and sent $((tx1 - tx0))"
  [ $((rx1 - rx0)) -lt 400000 ] || fail "dsr-$name: the answer went through sluice"
done

# The dataplane's own counters: no return packets at all.
kill "$cp_pid"; wait "$cp_pid" 2>/dev/null || true
kill "$dp_pid"; wait "$dp_pid" 2>/dev/null || true
counters=$(grep "counters:" "$work/dp.log" || true)
echo "dataplane ${counters#sluice-dataplane: }"
echo "$counters" | grep -q " return=0 " || fail "the dataplane saw return traffic"
echo "$counters" | grep -q " new_flows=0 " && fail "the dataplane tracked no flows"
echo "ok: no return packets passed sluice"
echo "l4_dsr: all checks passed"
