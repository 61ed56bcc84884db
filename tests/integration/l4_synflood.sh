#!/usr/bin/env bash
# Established flows under a SYN flood and across configuration changes (issue 3).
#
# A client holds a TCP stream through a full-NAT VIP (a line every 20 ms, echoed back by the
# backend) while (1) a SYN flood from spoofed sources hits the same VIP, filling the
# half-open budget, and (2) the configuration changes three times (a backend added, weights
# changed, a rule edited). The stream must not lose a single echo; the flood must show up
# as half-open refusals, not as evicted established flows.
#
# usage: l4_synflood.sh BUILD_DIR   (root; exit 77 without)
set -euo pipefail
BUILD=${1:?build dir}
BUILD=$(cd "$BUILD" && pwd)
DP=$BUILD/dataplane/sluice-dataplane
CP=$BUILD/controlplane/sluice-controlplane
[ "$(id -u)" -eq 0 ] || { echo "SKIP: needs root"; exit 77; }
for t in ip socat ethtool python3; do command -v $t >/dev/null || { echo "missing $t"; exit 1; }; done

. "$(dirname "$0")/../lib/netns.sh"
lan_init sf /tmp/sluice-synflood.XXXXXX
lan_host cli 10.77.0.2
lan_host be1 10.77.0.11
lan_host be2 10.77.0.12
lan_dp_port

for be in be1 be2; do
  ip netns exec "$P-$be" taskset -c 0 socat TCP-LISTEN:9000,reuseaddr,fork EXEC:cat 2>/dev/null &
  pids+=($!)
done

mkdir -p "$work/config" "$work/status"
manifest() { # weight-be1 weight-be2 extra-listener-port
cat > "$work/config/l4.yaml.tmp" <<YAML
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
  - {name: tcp, port: 9000, protocol: TCP}
  - {name: extra, port: $3, protocol: TCP}
---
apiVersion: v1
kind: Service
metadata: {name: echo, namespace: default}
spec: {ports: [{name: tcp, port: 9000}]}
---
apiVersion: v1
kind: Service
metadata: {name: echo2, namespace: default}
spec: {ports: [{name: tcp, port: 9000}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: echo, namespace: default, labels: {kubernetes.io/service-name: echo}}
addressType: IPv4
ports: [{name: tcp, port: 9000}]
endpoints: [{addresses: [10.77.0.11]}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: echo2, namespace: default, labels: {kubernetes.io/service-name: echo2}}
addressType: IPv4
ports: [{name: tcp, port: 9000}]
endpoints: [{addresses: [10.77.0.12]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: TCPRoute
metadata: {name: echo, namespace: default}
spec:
  parentRefs: [{name: l4, sectionName: tcp}]
  rules: [{backendRefs: [{name: echo, port: 9000, weight: $1}, {name: echo2, port: 9000, weight: $2}]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: TCPRoute
metadata: {name: extra, namespace: default}
spec:
  parentRefs: [{name: l4, sectionName: extra}]
  rules: [{backendRefs: [{name: echo2, port: 9000}]}]
YAML
mv "$work/config/l4.yaml.tmp" "$work/config/l4.yaml"
}
manifest 1 0 9001

SOCK=$work/dp.sock
# A small table (4096 flows, half-open budget 512) so the flood exhausts the budget quickly.
ip netns exec "$P-lan" taskset -c 1 "$DP" --dp-socket "$SOCK" --snat 10.77.0.99 --ct-capacity 4096 \
  --stats-file "$work/dp-stats.json" \
  -- -l 1 --no-huge -m 256 --no-pci --file-prefix "$P" --log-level=lib.eal:warning \
  --vdev=net_af_packet0,iface=dp0,framecnt=2048,qdisc_bypass=1 >"$work/dp.log" 2>&1 &
dp_pid=$!
pids+=($dp_pid)
for _ in $(seq 100); do [ -S "$SOCK" ] && break; sleep 0.1; done
taskset -c 0 "$CP" --config-dir "$work/config" --status-dir "$work/status" --dp-socket "$SOCK" \
  >"$work/cp.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do grep -q "generation 1 published" "$work/dp.log" && break; sleep 0.1; done
grep -q "generation 1 published" "$work/dp.log" || fail "no configuration published"

# The long-lived stream: one line every 20 ms for STREAM_S seconds, each echo checked.
cat > "$work/stream.py" <<'PY'
import socket, sys, time
dur = float(sys.argv[1])
for attempt in range(5):  # the first SYN may be spent resolving the backend's MAC
    try:
        s = socket.create_connection(("10.77.0.100", 9000), timeout=2)
        break
    except OSError:
        time.sleep(0.3)
else:
    print("connect failed"); sys.exit(1)
s.settimeout(3)
end, n, lost = time.time() + dur, 0, 0
f = s.makefile("rb")
while time.time() < end:
    msg = b"line %d\n" % n
    try:
        s.sendall(msg)
        if f.readline() != msg:
            lost += 1
    except OSError as e:
        print("stream broken after %d lines: %s" % (n, e)); sys.exit(1)
    n += 1
    time.sleep(0.02)
print("lines %d lost %d" % (n, lost))
sys.exit(1 if lost else 0)
PY
# The flood: SYNs from spoofed sources (raw socket), for FLOOD_S seconds.
cat > "$work/flood.py" <<'PY'
import random, socket, struct, sys, time
def csum(b):
    if len(b) % 2: b += b"\0"
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    s = (s >> 16) + (s & 0xffff); s += s >> 16
    return ~s & 0xffff
dst = socket.inet_aton("10.77.0.100")
raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
end, n = time.time() + float(sys.argv[1]), 0
while time.time() < end:
    src = struct.pack("!I", (10 << 24) | random.randrange(1 << 24) | 0x00400000)
    sport = random.randrange(1024, 65535)
    tcp = struct.pack("!HHIIBBHHH", sport, 9000, random.randrange(1 << 32), 0, 5 << 4, 0x02, 64240, 0, 0)
    pseudo = src + dst + struct.pack("!BBH", 0, 6, len(tcp))
    tcp = tcp[:16] + struct.pack("!H", csum(pseudo + tcp)) + tcp[18:]
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 40, n & 0xffff, 0, 64, 6, 0, src, dst)
    ip = ip[:10] + struct.pack("!H", csum(ip)) + ip[12:]
    raw.sendto(ip + tcp, ("10.77.0.100", 0))
    n += 1
print("sent %d SYNs" % n)
PY

cli() { ip netns exec "$P-cli" "$@"; }
cli taskset -c 0 python3 "$work/stream.py" 9 >"$work/stream.out" 2>&1 &
stream_pid=$!
sleep 1
cli taskset -c 0 python3 "$work/flood.py" 4 >"$work/flood.out" 2>&1 &
flood_pid=$!
sleep 1
manifest 1 1 9001   # a second backend joins the rule
sleep 1
manifest 3 1 9002   # weights change, a listener moves
sleep 1
manifest 1 1 9003
wait "$flood_pid" || true
echo "flood: $(cat "$work/flood.out")"
if wait "$stream_pid"; then
  echo "ok: established stream survived the SYN flood and 3 configuration changes ($(cat "$work/stream.out"))"
else
  fail "established stream: $(cat "$work/stream.out")"
fi
grep -q "generation 4 published" "$work/dp.log" || fail "the configuration changes were not all published"
echo "ok: 3 configuration changes published while the stream ran"
sleep 1.2
python3 - "$work/dp-stats.json" <<'PY' || fail "counters do not show the flood hitting the half-open budget"
import json, sys
l = json.load(open(sys.argv[1]))["lcores"][0]
f, c = l["flows"], l["counters"]
print(f"ok: conntrack entries {f['entries']} of {f['capacity']}, refused by the half-open "
      f"budget {f['insert_budget']}, refused full {f['insert_full']}; new_flows {c['new_flows']}")
sys.exit(0 if f["insert_budget"] > 0 else 1)
PY
# New connections work again once the flood's half-open entries time out (tcp_syn_ms,
# 5 s): during a flood the budget refuses new SYNs (no SYN cookies yet), established flows
# are what it protects.
out=$(cli timeout 15 python3 -c "
import socket, time
t0 = time.time()
while time.time() - t0 < 12:
    try:
        s = socket.create_connection(('10.77.0.100', 9000), timeout=2)
        s.sendall(b'hi\n'); print(s.recv(10).decode().strip(), round(time.time() - t0, 1)); break
    except OSError:
        time.sleep(0.2)
else:
    print('none')" 2>&1 || true)
case "$out" in "hi "*) echo "ok: new connections work again after the flood (after ${out#hi } s)";;
  *) sleep 1.2  # what the dataplane did with the attempts (diagnosis of a rare CI failure)
     python3 -c "import json,sys; l=json.load(open(sys.argv[1]))['lcores'][0]; print('counters after the attempts:', {k: v for k, v in l['counters'].items() if v}, l['flows'])" \
       "$work/dp-stats.json" || true
     fail "new connection after the flood: '$out'";; esac
echo "l4_synflood: all checks passed"
