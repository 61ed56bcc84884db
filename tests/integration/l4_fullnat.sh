#!/usr/bin/env bash
# L4 full-NAT end to end, as root, in network namespaces made here and removed on exit:
#
#   sl-cli (10.77.0.2) ─┐
#   sl-be1 (10.77.0.11) ├─ br0 in sl-lan ── dp0: sluice-dataplane (net_af_packet)
#   sl-be2 (10.77.0.12) ┘                    VIP 10.77.0.100, SNAT 10.77.0.99
#
# sluice-controlplane compiles a Gateway with a TCPRoute (weights 3:1) and a UDPRoute and
# pushes the IR; the test checks Programmed=True after the ACK, then real kernel clients
# (curl over TCP, socat over UDP) reach the VIP, the split holds over many connections,
# a backend removed from the manifest gets no new flows, and a killed controlplane leaves
# the dataplane forwarding.
set -euo pipefail
BUILD=${1:?build dir}
BUILD=$(cd "$BUILD" && pwd)
DP=$BUILD/dataplane/sluice-dataplane
CP=$BUILD/controlplane/sluice-controlplane
[ "$(id -u)" -eq 0 ] || { echo "SKIP: needs root"; exit 77; }
for t in ip curl socat ethtool python3; do command -v $t >/dev/null || { echo "missing $t"; exit 1; }; done

P=sl$$
work=$(mktemp -d /tmp/sluice-l4.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  for ns in lan cli be1 be2; do ip netns del "$P-$ns" 2>/dev/null || true; done
  rm -rf "$work" "/dev/hugepages/${P}"* 2>/dev/null || true
}
trap cleanup EXIT
fail() { echo "FAIL: $*"; [ -n "${dp_pid:-}" ] && kill "$dp_pid" 2>/dev/null && sleep 1
         echo "--- dataplane log"; tail -20 "$work/dp.log" || true;
         echo "--- controlplane log"; tail -20 "$work/cp.log" || true; exit 1; }

for ns in lan cli be1 be2; do ip netns add "$P-$ns"; done
ip -n "$P-lan" link add br0 type bridge
ip -n "$P-lan" link set br0 up
addhost() { # ns addr
  ip link add "$P-$1" type veth peer name "v$1" netns "$P-lan"
  ip link set "$P-$1" netns "$P-$1"
  ip -n "$P-$1" link set "$P-$1" name eth0
  ip -n "$P-$1" addr add "$2/24" dev eth0
  ip -n "$P-$1" link set eth0 up
  ip -n "$P-$1" link set lo up
  ip netns exec "$P-$1" ethtool -K eth0 tx off >/dev/null 2>&1 || true
  ip -n "$P-lan" link set "v$1" master br0 up
}
addhost cli 10.77.0.2
addhost be1 10.77.0.11
addhost be2 10.77.0.12
ip -n "$P-lan" link add dp0 type veth peer name dp0p
ip -n "$P-lan" link set dp0p master br0 up
ip -n "$P-lan" link set dp0 up
ip netns exec "$P-lan" ethtool -K dp0 tx off >/dev/null 2>&1 || true
ip netns exec "$P-lan" ethtool -K dp0p tx off >/dev/null 2>&1 || true

# Backends: HTTP-ish TCP answer and a UDP echo, each saying who it is.
for be in be1 be2; do
  mkdir -p "$work/www-$be" && echo "$be" > "$work/www-$be/index.html"
  ip netns exec "$P-$be" taskset -c 0 python3 -m http.server 8080 --bind 0.0.0.0 \
    --directory "$work/www-$be" >/dev/null 2>&1 &
  pids+=($!)
  ip netns exec "$P-$be" taskset -c 0 socat UDP-RECVFROM:5353,fork SYSTEM:"echo $be" 2>/dev/null &
  pids+=($!)
done

mkdir -p "$work/config" "$work/status"
manifest() { # weights of be1 be2
cat > "$work/config/l4.yaml" <<YAML
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: sluice}
spec: {controllerName: sluice.dev/gateway-controller}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: l4, namespace: default}
spec:
  gatewayClassName: sluice
  addresses: [{type: IPAddress, value: 10.77.0.100}]
  listeners:
  - {name: tcp, port: 80, protocol: TCP}
  - {name: udp, port: 53, protocol: UDP}
---
apiVersion: v1
kind: Service
metadata: {name: be1, namespace: default}
spec: {ports: [{name: tcp, port: 8080}, {name: udp, port: 5353, protocol: UDP}]}
---
apiVersion: v1
kind: Service
metadata: {name: be2, namespace: default}
spec: {ports: [{name: tcp, port: 8080}, {name: udp, port: 5353, protocol: UDP}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: be1, namespace: default, labels: {kubernetes.io/service-name: be1}}
addressType: IPv4
ports: [{name: tcp, port: 8080}, {name: udp, port: 5353, protocol: UDP}]
endpoints: [{addresses: [10.77.0.11]}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: be2, namespace: default, labels: {kubernetes.io/service-name: be2}}
addressType: IPv4
ports: [{name: tcp, port: 8080}, {name: udp, port: 5353, protocol: UDP}]
endpoints: [{addresses: [10.77.0.12]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: TCPRoute
metadata: {name: web, namespace: default}
spec:
  parentRefs: [{name: l4, sectionName: tcp}]
  rules: [{backendRefs: [{name: be1, port: 8080, weight: $1}, {name: be2, port: 8080, weight: $2}]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: UDPRoute
metadata: {name: dns, namespace: default}
spec:
  parentRefs: [{name: l4, sectionName: udp}]
  rules: [{backendRefs: [{name: be1, port: 5353}, {name: be2, port: 5353}]}]
YAML
}
manifest 3 1

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
for _ in $(seq 100); do
  grep -q "reason: Programmed" "$work/status/Gateway/default/l4.yaml" 2>/dev/null && break
  sleep 0.1
done
grep -q "reason: Programmed" "$work/status/Gateway/default/l4.yaml" ||
  fail "Gateway not Programmed after the dataplane ACK"
echo "ok: Gateway Programmed=True after the dataplane ACK"

cli() { ip netns exec "$P-cli" taskset -c 0 "$@"; }
# The first SYN may be spent resolving the backend's MAC: curl retries the connection.
out=$(cli curl -sv --max-time 5 --retry 3 --retry-connrefused http://10.77.0.100/ 2>"$work/curl.err" || true); [ -n "$out" ] || cat "$work/curl.err"
case "$out" in be1|be2) echo "ok: TCP through the VIP reached $out";; *) fail "TCP via VIP: '$out'";; esac
out=$(echo q | cli socat -T2 - UDP:10.77.0.100:53 || true)
case "$out" in be1|be2) echo "ok: UDP through the VIP reached $out";; *) fail "UDP via VIP: '$out'";; esac

N=${SLUICE_L4_CONNS:-1000}
: > "$work/hits"
for i in $(seq "$N"); do
  cli curl -s --max-time 3 http://10.77.0.100/ >>"$work/hits" || echo miss >>"$work/hits"
done
b1=$(grep -c '^be1$' "$work/hits" || true); b2=$(grep -c '^be2$' "$work/hits" || true)
miss=$(grep -c '^miss$' "$work/hits" || true)
echo "split over $N connections: be1=$b1 be2=$b2 failed=$miss (weights 3:1)"
[ "$miss" -le $((N / 100)) ] || fail "too many failed connections ($miss)"
share=$((100 * b1 / N))
[ "$share" -ge 70 ] && [ "$share" -le 80 ] || fail "be1 share $share% not within 75±5%"

# be2 removed (weight 0): no new flows reach it.
manifest 1 0
for _ in $(seq 50); do grep -q "generation 2" "$work/dp.log" && break; sleep 0.1; done
grep -q "generation 2" "$work/dp.log" || fail "new configuration not published"
for i in $(seq 30); do cli curl -s --max-time 3 http://10.77.0.100/; done >"$work/hits2"
grep -q be2 "$work/hits2" && fail "weight-0 backend still gets new flows"
echo "ok: a backend set to weight 0 gets no new flows"

# The controlplane dies: the dataplane keeps forwarding with the last tables.
kill "$cp_pid"; wait "$cp_pid" 2>/dev/null || true
out=$(cli curl -s --max-time 3 http://10.77.0.100/ || true)
[ "$out" = be1 ] || fail "dataplane stopped forwarding without its controlplane ('$out')"
echo "ok: forwarding continues with the controlplane gone"
echo "l4_fullnat: all checks passed"
