#!/usr/bin/env bash
# L4 line-rate rig: sluice-pktgen drives, over one net_memif port (two DPDK processes,
# --no-huge by default), first dpdk-testpmd io-forward (the baseline: frames are returned
# untouched, --port-topology=loop) and then sluice-dataplane doing full-NAT on a UDP VIP
# (10.0.0.100:53 -> 4 backends 10.0.0.11-14:5353, N client flows), in one invocation.
#
#   perf/pktgen_l4_bench.sh [--smoke] [--build DIR] [--out FILE] [--hugepages] [--keep]
#
# For each device under test (DUT):
#   max     pktgen sends as fast as it can (rate_pps: 0) for DURATION s: forwarded Mpps,
#           loss, p50/p99 latency (memif back-pressures the sender, so "max" is the rate the
#           pair sustains; latency there is queueing).
#   search  RFC 2544-style binary search for the zero-loss rate (loss <= 1e-4, 2 s trials),
#           then p50/p99 at 10/25/50/75/90% of it.
#   (sluice only) tcp: the same "max" run through a TCP VIP (10.0.0.100:80, SYN first);
#   dsr: max + search through a DSR (IP-in-IP) UDP VIP 10.0.0.101:53 (pktgen reads the
#   stamp inside the tunnel; the destination counted is the outer one, the backend);
#   dsr-gue: max through a DSR (GUE, outer UDP to port 6080) VIP 10.0.0.101:54;
#   syn-max: a SYN flood (random source ports) through the DSR TCP VIP 10.0.0.101:80;
#   syn_with_established: one run of two streams mixed packet by packet at max rate (50/50
#   by default): the FLOWS established full-NAT UDP flows of "max" and the SYN flood of
#   syn-max; pktgen splits the result by stream: each one's forwarded Mpps and loss.
# Then (c) the Linux kernel doing the same full-NAT job with nftables (DNAT to numgen inc
# mod 4, SNAT to 10.0.0.99, conntrack) in a router namespace, fed by pktgen over a veth
# pair (net_af_packet). The kernel is not a DPDK process, so its figure is its per-core
# capacity: forwarded pps divided by the share of the DUT core its softirq work took (RPS
# steers the router veth's receive work to the DUT core and the generator veth's to
# pktgen's core; /proc/stat's softirq ticks on the DUT core are the kernel's cost).
# Skipped (recorded in the JSON) when nft is missing (package nftables).
# --smoke     short runs, no search: checks that every run produced figures, sluice's
#             output went to the backends and the JSON is well formed (CI; no speeds).
#             Output goes to a temp file unless --out.
# --out       result JSON (default perf/results/pktgen-<UTC date>-<short git hash>.json).
# --hugepages run both sides on 2 MiB hugepages (mounted under the work directory here,
#             nr_hugepages restored and unmounted on exit) instead of --no-huge.
# --keep      keep the work directory (profiles, logs, raw pktgen JSON, charts).
# Environment: DURATION (s per max run, default 5), FLOWS (default 10000; up to 1000000: full-NAT then gets one --snat address per 60k flows), MIX_SYN_SHARE (% of
# the syn_with_established packets that are SYNs, default 50), PKTGEN_CPU /
# DUT_CPU (default 0 / 1), SEARCH_MAX_PPS (default 10000000), RSIZE (log2 memif ring size,
# default 14 = 16384 slots: absorbs a few ms of either process being descheduled, which on
# a shared 2-vCPU machine otherwise shows up as loss at any rate).
#
# Placement (2 vCPUs): pktgen sends and receives on one lcore (core 0), the DUT forwards on
# the other (core 1). sluice needs its IR: sluice-controlplane (core 0, briefly) pushes it,
# then is stopped once the Gateway is Programmed. sluice ARPs for the backends and pktgen
# answers for them (arp_reply_for); pktgen resolves the VIP's MAC by ARP (dst_mac: arp).
# Exit 77 (skip) without root or without dpdk-testpmd in --smoke.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${BUILD:-$ROOT/build}
SMOKE=0
OUT=""
KEEP=0
HUGE=0
while (($#)); do
  case "$1" in
    --smoke) SMOKE=1 ;;
    --build) BUILD=$2; shift ;;
    --out) OUT=$2; shift ;;
    --keep) KEEP=1 ;;
    --hugepages) HUGE=1 ;;
    -h|--help) sed -n '2,41p' "$0"; exit 0 ;;
    *) echo "pktgen_l4_bench: unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done
BUILD=$(cd "$BUILD" && pwd)
[ "$(id -u)" -eq 0 ] || { echo "pktgen_l4_bench: needs root (DPDK EAL): skipped"; exit 77; }
PKTGEN=$BUILD/tools/pktgen/sluice-pktgen
DP=$BUILD/dataplane/sluice-dataplane
CP=$BUILD/controlplane/sluice-controlplane
for b in "$PKTGEN" "$DP" "$CP"; do
  [ -x "$b" ] || { echo "pktgen_l4_bench: $b missing (ninja -C build tools/pktgen/sluice-pktgen dataplane/sluice-dataplane controlplane/sluice-controlplane)" >&2; exit 1; }
done
TESTPMD=$(command -v dpdk-testpmd || true)
if [ -z "$TESTPMD" ]; then
  [ "$SMOKE" = 1 ] && { echo "pktgen_l4_bench: dpdk-testpmd missing (package dpdk-dev): skipped"; exit 77; }
  echo "pktgen_l4_bench: dpdk-testpmd missing (package dpdk-dev)" >&2; exit 1
fi
command -v python3 >/dev/null || { echo "pktgen_l4_bench: python3 missing" >&2; exit 1; }

DURATION=${DURATION:-5}
FLOWS=${FLOWS:-10000}
PKTGEN_CPU=${PKTGEN_CPU:-0}
DUT_CPU=${DUT_CPU:-1}
SEARCH_MAX_PPS=${SEARCH_MAX_PPS:-10000000}
RSIZE=${RSIZE:-14} # log2 of the memif ring size (DPDK's default is 10)
MIX_SYN_SHARE=${MIX_SYN_SHARE:-50}
((MIX_SYN_SHARE > 0 && MIX_SYN_SHARE < 100)) || { echo "pktgen_l4_bench: MIX_SYN_SHARE must be 1-99" >&2; exit 2; }
WARMUP=1
if [ "$SMOKE" = 1 ]; then DURATION=0.5; FLOWS=1000; WARMUP=0.3; fi
if [ "$(nproc)" -lt 2 ]; then
  echo "pktgen_l4_bench: fewer than 2 CPUs: pktgen and the DUT share core 0 (figures not comparable)" >&2
  PKTGEN_CPU=0; DUT_CPU=0
fi

W=$(mktemp -d /tmp/sluice-pktgen-bench.XXXXXX)
PIDS=()
KNS=() # network namespaces of the kernel baseline
# shellcheck source=perf/hugepages.sh
. "$(dirname "$0")/hugepages.sh"
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  local p
  for p in "${PIDS[@]}"; do kill -INT "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do
    for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$p" 2>/dev/null || true
    wait "$p" 2>/dev/null || true
  done
  for p in "${KNS[@]}"; do ip netns del "$p" 2>/dev/null || true; done
  huge_release
  if [ "$KEEP" = 1 ] || { [ "$rc" -ne 0 ] && [ "$SMOKE" = 0 ]; }; then
    echo "pktgen_l4_bench: work directory kept: $W" >&2
  else
    rm -rf "$W"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# EAL memory: --no-huge (default) or hugepages mounted privately for this run.
if [ "$HUGE" = 1 ]; then
  huge_reserve 768 600 "$W/huge" || exit 1 # 2 x 512 MiB + slack, in 2 MiB pages
  MEM=(-m 512 --huge-dir "$HUGE_MNT")
  MEMNAME=hugepages
else
  MEM=(--no-huge -m 512)
  MEMNAME=no-huge
fi
EAL_COMMON=(--no-pci --log-level=lib.eal:warning --log-level=lib.telemetry:error "${MEM[@]}")

fail() { echo "pktgen_l4_bench: FAIL: $*" >&2; exit 1; }

# pktgen profiles (written here so durations and rates follow the mode).
profile() { # name dst_mac proto dport [extra YAML lines...] (DST: the VIP, default 10.0.0.100)
  local name=$1 dmac=$2 proto=$3 dport=$4; shift 4
  cat > "$W/$name.yaml" <<YAML
proto: $proto
src: 10.1.0.0/16
dst: ${DST:-10.0.0.100}
sport: ${SPORT:-1024-1087}
dport: $dport
flows: ${PFLOWS:-$FLOWS}
size: $([ "$proto" != udp ] && echo 74 || echo 64)
duration_s: $DURATION
warmup_s: $WARMUP
drain_s: 0.3
src_mac: 02:00:00:00:01:01
dst_mac: $dmac
arp_reply_for: [10.0.0.11-10.0.0.14]
YAML
  for line in "$@"; do echo "$line" >> "$W/$name.yaml"; done
}

pktgen() { # memif-socket tag args... (writes $W/tag.json and $W/tag.log)
  local sock=$1 tag=$2; shift 2
  taskset -c "$PKTGEN_CPU" "$PKTGEN" "$@" --json "$W/$tag.json" -- -l "$PKTGEN_CPU" \
    "${EAL_COMMON[@]}" --file-prefix "pg$$" \
    --vdev="net_memif0,role=client,socket=$sock,socket-abstract=no,rsize=$RSIZE,mac=02:00:00:00:01:01" \
    >"$W/$tag.log" 2>&1 &
  local pid=$!
  PIDS+=("$pid")
  if ! wait "$pid"; then
    tail -20 "$W/$tag.log" >&2
    fail "pktgen run $tag failed"
  fi
  grep "^sluice-pktgen: \(run\|zero-loss\|search\|sweep\)" "$W/$tag.log" | sed "s/^sluice-pktgen/  $tag/" || true
}

stop_pid() {
  local p=$1
  kill -INT "$p" 2>/dev/null || true
  for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$p" 2>/dev/null || true
  wait "$p" 2>/dev/null || true
}

echo "pktgen_l4_bench: $([ "$SMOKE" = 1 ] && echo smoke || echo full) run, memif $MEMNAME, pktgen on core $PKTGEN_CPU, DUT on core $DUT_CPU, $FLOWS flows, load $(cut -d' ' -f1-3 /proc/loadavg)"
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)

# ---------------------------------------------------------------------------------------
# (a) dpdk-testpmd io-forward, frames looped back out of the same memif port.
# ---------------------------------------------------------------------------------------
TP_SOCK=$W/testpmd.memif
start_testpmd() {
  rm -f "$TP_SOCK"
  local started
  started=$(cat "$W/testpmd.log" 2>/dev/null | grep -c "packet forwarding - ports" || true)
  taskset -c "$DUT_CPU" "$TESTPMD" --lcores="0@$DUT_CPU,1@$DUT_CPU" "${EAL_COMMON[@]}" \
    --file-prefix "tp$$" \
    --vdev="net_memif0,role=server,socket=$TP_SOCK,socket-abstract=no,rsize=$RSIZE,mac=02:00:00:00:00:02" \
    -- --forward-mode=io --port-topology=loop --total-num-mbufs=16384 --auto-start \
    --stats-period 60 >>"$W/testpmd.log" 2>&1 &
  TP_PID=$!
  PIDS+=("$TP_PID")
  for _ in $(seq 100); do [ -S "$TP_SOCK" ] && break; sleep 0.1; done
  [ -S "$TP_SOCK" ] || { tail "$W/testpmd.log" >&2; fail "testpmd did not create $TP_SOCK"; }
  # The socket exists from the probe on, but until testpmd has started its port the memif
  # server refuses a client ("ID 0 not found") and the client does not retry: wait for
  # forwarding to start (slow --no-huge mempool set-up on a busy machine made this a race).
  for _ in $(seq 100); do
    (($(grep -c "packet forwarding - ports" "$W/testpmd.log" || true) > started)) && break
    sleep 0.1
  done
}
# dpdk-testpmd 22.11 as memif server once died (SIGSEGV) when pktgen, the client, went away
# after a run: every pktgen run gets a fresh testpmd.
testpmd_run() { # tag pktgen-args...
  start_testpmd
  pktgen "$TP_SOCK" "$@"
  stop_pid "$TP_PID"
}
# max: as fast as possible (smoke: a modest fixed rate); search: rates from the search block.
MAX_RATE=$([ "$SMOKE" = 1 ] && echo 50000 || echo 0)
profile testpmd-max 02:00:00:00:00:02 udp 53 "rate_pps: $MAX_RATE"
SEARCH="search: {min_pps: 50000, max_pps: $SEARCH_MAX_PPS, loss_threshold: 0.0001, trial_s: 2, warmup_s: 0.5, precision_pps: 50000}"
SWEEP="sweep: [10, 25, 50, 75, 90]"
profile testpmd-search 02:00:00:00:00:02 udp 53 "$SEARCH" "$SWEEP"
echo "(a) dpdk-testpmd io-forward"
# The search first, so that the two "max" runs (the ratio) are seconds apart, not minutes.
if [ "$SMOKE" = 0 ]; then
  testpmd_run testpmd-search --profile "$W/testpmd-search.yaml" --search --plot "$W/plots-testpmd"
fi
testpmd_run testpmd-max --profile "$W/testpmd-max.yaml"

# ---------------------------------------------------------------------------------------
# (b) sluice-dataplane full-NAT (UDP VIP; TCP VIP for the extra run).
# ---------------------------------------------------------------------------------------
mkdir -p "$W/config" "$W/status"
cat > "$W/config/bench.yaml" <<'YAML'
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: sluice}
spec: {controllerName: sluice.dev/gateway-controller}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: bench, namespace: default}
spec:
  gatewayClassName: sluice
  addresses: [{type: IPAddress, value: 10.0.0.100}]
  listeners:
  - {name: udp, port: 53, protocol: UDP}
  - {name: tcp, port: 80, protocol: TCP}
---
apiVersion: v1
kind: Service
metadata: {name: be, namespace: default}
spec: {ports: [{name: udp, port: 5353, protocol: UDP}, {name: tcp, port: 8080}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: be, namespace: default, labels: {kubernetes.io/service-name: be}}
addressType: IPv4
ports: [{name: udp, port: 5353, protocol: UDP}, {name: tcp, port: 8080}]
endpoints: [{addresses: [10.0.0.11]}, {addresses: [10.0.0.12]}, {addresses: [10.0.0.13]}, {addresses: [10.0.0.14]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: UDPRoute
metadata: {name: dns, namespace: default}
spec:
  parentRefs: [{name: bench, sectionName: udp}]
  rules: [{backendRefs: [{name: be, port: 5353}]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: TCPRoute
metadata: {name: web, namespace: default}
spec:
  parentRefs: [{name: bench, sectionName: tcp}]
  rules: [{backendRefs: [{name: be, port: 8080}]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: dsr, namespace: default, annotations: {sluice.dev/forwarding-mode: dsr-ipip}}
spec:
  gatewayClassName: sluice
  addresses: [{type: IPAddress, value: 10.0.0.101}]
  listeners:
  - {name: udp, port: 53, protocol: UDP}
  - {name: gue, port: 54, protocol: UDP}
  - {name: tcp, port: 80, protocol: TCP}
---
apiVersion: v1
kind: Service
metadata: {name: be-dsr, namespace: default}
spec: {ports: [{name: udp, port: 53, protocol: UDP}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: be-dsr, namespace: default, labels: {kubernetes.io/service-name: be-dsr}}
addressType: IPv4
ports: [{name: udp, port: 53, protocol: UDP}]
endpoints: [{addresses: [10.0.0.11]}, {addresses: [10.0.0.12]}, {addresses: [10.0.0.13]}, {addresses: [10.0.0.14]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: UDPRoute
metadata: {name: dns-dsr, namespace: default}
spec:
  parentRefs: [{name: dsr, sectionName: udp}]
  rules: [{backendRefs: [{name: be-dsr, port: 53}]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: UDPRoute
metadata: {name: dns-gue, namespace: default, annotations: {sluice.dev/forwarding-mode: dsr-gue}}
spec:
  parentRefs: [{name: dsr, sectionName: gue}]
  rules: [{backendRefs: [{name: be-dsr, port: 53}]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: TCPRoute
metadata: {name: web-dsr, namespace: default}
spec:
  parentRefs: [{name: dsr, sectionName: tcp}]
  rules: [{backendRefs: [{name: be-dsr, port: 53}]}]
YAML
DP_SOCK=$W/dp.sock
DP_MEMIF=$W/sluice.memif
DUT_RESTARTS=0
# Full-NAT needs a SNAT port per flow: one --snat address per ~60k flows (at most 16), and
# a conntrack table of ~1.3x the flows (power of two), so that FLOWS=1000000 fits.
SNAT_ARGS=(--snat 10.0.0.99)
for ((i = 1; i < (FLOWS + 59999) / 60000 && i < 16; i++)); do SNAT_ARGS+=(--snat "10.0.0.$((79 + i))"); done
# The TCP run opens FLOWS connections at line rate, which the half-open budget (an eighth of
# the table by default) rightly treats as a SYN flood: --ct-half-open lifts it to the table.
CT_CAPACITY=262144
while ((CT_CAPACITY < FLOWS * 13 / 10)); do CT_CAPACITY=$((CT_CAPACITY * 2)); done
start_sluice() { # dataplane on the DUT core, then its IR from the controlplane
  rm -f "$DP_SOCK" "$DP_MEMIF"
  rm -rf "$W/status"
  mkdir -p "$W/status"
  taskset -c "$DUT_CPU" "$DP" --dp-socket "$DP_SOCK" "${SNAT_ARGS[@]}" --ct-capacity "$CT_CAPACITY" \
    --ct-half-open "${CT_HALF_OPEN:-$CT_CAPACITY}" \
    --stats-file "$W/dp-stats.json" \
    -- -l "$DUT_CPU" "${EAL_COMMON[@]}" --file-prefix "dp$$" \
    --vdev="net_memif0,role=server,socket=$DP_MEMIF,socket-abstract=no,rsize=$RSIZE,mac=02:00:00:00:00:02" \
    >>"$W/dataplane.log" 2>&1 &
  DP_PID=$!
  PIDS+=("$DP_PID")
  for _ in $(seq 100); do [ -S "$DP_SOCK" ] && break; sleep 0.1; done
  [ -S "$DP_SOCK" ] || { tail "$W/dataplane.log" >&2; fail "sluice-dataplane did not come up"; }
  taskset -c "$PKTGEN_CPU" "$CP" --config-dir "$W/config" --status-dir "$W/status" \
    --dp-socket "$DP_SOCK" >>"$W/controlplane.log" 2>&1 &
  local cp_pid=$!
  PIDS+=("$cp_pid")
  local gw
  for gw in bench dsr; do
    for _ in $(seq 100); do
      grep -q "reason: Programmed" "$W/status/Gateway/default/$gw.yaml" 2>/dev/null && break
      sleep 0.1
    done
    grep -q "reason: Programmed" "$W/status/Gateway/default/$gw.yaml" 2>/dev/null ||
      { tail "$W/controlplane.log" "$W/dataplane.log" >&2; fail "Gateway $gw not Programmed"; }
  done
  stop_pid "$cp_pid" # the dataplane keeps its tables; nothing else runs beside the two lcores
}
# sluice-dataplane stays up across pktgen runs (its flows stay established); should it die
# as testpmd once did on a memif disconnect, it is restarted and the restart is reported.
sluice_run() { # tag pktgen-args...
  if ! kill -0 "$DP_PID" 2>/dev/null; then
    echo "pktgen_l4_bench: sluice-dataplane exited ($(tail -1 "$W/dataplane.log")): restarted" >&2
    DUT_RESTARTS=$((DUT_RESTARTS + 1))
    start_sluice
  fi
  pktgen "$DP_MEMIF" "$@"
}
start_sluice
profile sluice-max arp udp 53 "rate_pps: $MAX_RATE"
profile sluice-search arp udp 53 "$SEARCH" "$SWEEP"
profile sluice-tcp-max arp tcp 80 "rate_pps: $MAX_RATE"
echo "(b) sluice-dataplane full-NAT, UDP VIP 10.0.0.100:53 -> 4 backends"
sluice_run sluice-max --profile "$W/sluice-max.yaml"
if [ "$SMOKE" = 0 ]; then
  sluice_run sluice-search --profile "$W/sluice-search.yaml" --search --plot "$W/plots-sluice"
fi
echo "(b') sluice-dataplane full-NAT, TCP VIP 10.0.0.100:80 (SYN, then ACK|PSH per flow)"
if ((FLOWS > 500000)); then
  # The UDP runs' flows still hold their SNAT ports (16 addresses give ~1M): a fresh
  # dataplane, so that FLOWS new TCP flows find ports.
  kill -TERM "$DP_PID" 2>/dev/null || true
  wait "$DP_PID" 2>/dev/null || true
  start_sluice
fi
sluice_run sluice-tcp-max --profile "$W/sluice-tcp-max.yaml"
DST=10.0.0.101 profile sluice-dsr-max arp udp 53 "rate_pps: $MAX_RATE"
DST=10.0.0.101 profile sluice-dsr-search arp udp 53 "$SEARCH" "$SWEEP"
echo "(b'') sluice-dataplane DSR (IP-in-IP to the backends), UDP VIP 10.0.0.101:53"
sluice_run sluice-dsr-max --profile "$W/sluice-dsr-max.yaml"
if [ "$SMOKE" = 0 ]; then
  sluice_run sluice-dsr-search --profile "$W/sluice-dsr-search.yaml" --search --plot "$W/plots-sluice-dsr"
fi
DST=10.0.0.101 profile sluice-gue-max arp udp 54 "rate_pps: $MAX_RATE"
echo "(b''') sluice-dataplane DSR (GUE, outer UDP to 6080), UDP VIP 10.0.0.101:54"
sluice_run sluice-gue-max --profile "$W/sluice-gue-max.yaml"
# New flows: every packet a SYN from a random source port (a SYN flood), through the DSR TCP
# VIP: past the half-open budget DSR still forwards by the Maglev pick (stateless), so this
# is the rate at which the worker takes new flows (lookup miss, insert or budget refusal,
# Maglev, encapsulation), not a count of what the budget lets in.
DST=10.0.0.101 SPORT=1024-65535 PFLOWS=$((FLOWS < 65536 ? FLOWS : 65536)) profile sluice-syn-max arp syn 80 "rate_pps: $MAX_RATE"
echo "(b'''') sluice-dataplane new flows: SYN flood (random source ports) to the DSR TCP VIP 10.0.0.101:80"
sluice_run sluice-syn-max --profile "$W/sluice-syn-max.yaml"
# SYN flood while established flows keep forwarding (issue 7): one pktgen run of two streams
# interleaved packet by packet, as fast as the port takes them: the FLOWS full-NAT UDP flows
# of the max run (established during the warm-up) and the SYN flood of the run above. pktgen attributes what comes back to its stream by the
# stamp (the SYNs arrive IP-in-IP), so run.streams gives each one's forwarded rate and loss.
MIX_WARMUP=$WARMUP
# A fresh dataplane with the default half-open budget (an eighth of the table): the runs
# above lift it (the TCP run opens FLOWS connections at line rate), and without it the SYN
# flood would fill the whole table with half-open flows and leave the established flows'
# entries no room; this run measures the protection as shipped. The warm-up sends both
# streams and establishes the UDP flows (long enough for FLOWS of them above 500k).
kill -TERM "$DP_PID" 2>/dev/null || true
wait "$DP_PID" 2>/dev/null || true
CT_HALF_OPEN=$((CT_CAPACITY / 8)) start_sluice
if ((FLOWS > 500000)); then MIX_WARMUP=3; fi
cat > "$W/sluice-syn-with-established.yaml" <<YAML
rate_pps: $MAX_RATE
duration_s: $DURATION
warmup_s: $MIX_WARMUP
drain_s: 0.3
dst_mac: arp
arp_reply_for: [10.0.0.11-10.0.0.14]
streams:
  - name: established
    proto: udp
    src: 10.1.0.0/16
    dst: 10.0.0.100
    sport: 1024-1087
    dport: 53
    flows: $FLOWS
    size: 64
    src_mac: 02:00:00:00:01:01
    share: $((100 - MIX_SYN_SHARE))
  - name: syn
    proto: syn
    src: 10.1.0.0/16
    dst: 10.0.0.101
    sport: 1024-65535
    dport: 80
    flows: $((FLOWS < 65536 ? FLOWS : 65536))
    size: 74
    src_mac: 02:00:00:00:01:01
    share: $MIX_SYN_SHARE
YAML
echo "(b''''') sluice-dataplane SYN flood (DSR TCP VIP 10.0.0.101:80) while established full-NAT UDP flows (10.0.0.100:53) forward: $MIX_SYN_SHARE% SYNs, one run"
sluice_run sluice-syn-with-established --profile "$W/sluice-syn-with-established.yaml"
sleep 1.2 # the stats file is rewritten every second
cp "$W/dp-stats.json" "$W/dp-stats-final.json" 2>/dev/null || true
stop_pid "$DP_PID"

# ---------------------------------------------------------------------------------------
# (c) the Linux kernel: nftables full-NAT in a router namespace, pktgen over a veth pair.
# ---------------------------------------------------------------------------------------
KERNEL_SKIP=""
cpu_ticks() { # core -> "softirq busy total" ticks of that core (/proc/stat)
  awk -v c="cpu$1" '$1==c { b=$2+$3+$4+$7+$8; t=b+$5+$6; print $8, b, t }' /proc/stat
}
if ! command -v nft >/dev/null; then
  KERNEL_SKIP="nft missing (package nftables)"
  echo "(c) kernel nftables: skipped: $KERNEL_SKIP"
else
  echo "(c) Linux kernel $(uname -r): nftables DNAT (numgen) + SNAT, UDP VIP 10.0.0.100:53, veth + RPS"
  KG=plk-gen-$$; KD=plk-dut-$$
  KNS=("$KG" "$KD")
  ip netns add "$KG"; ip netns add "$KD"
  ip link add kg0 netns "$KG" type veth peer name kd0 netns "$KD"
  ip -n "$KG" link set kg0 address 02:00:00:00:01:01 up
  ip -n "$KD" link set kd0 address 02:00:00:00:00:02 up
  ip -n "$KD" addr add 10.0.0.2/24 dev kd0
  ip -n "$KD" addr add 10.0.0.99/24 dev kd0
  ip -n "$KD" route add 10.1.0.0/16 dev kd0
  ip netns exec "$KD" sysctl -qw net.ipv4.ip_forward=1 net.ipv4.conf.all.send_redirects=0 \
    net.ipv4.conf.kd0.send_redirects=0 net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.kd0.rp_filter=0
  ip netns exec "$KD" ethtool -K kd0 tx off >/dev/null 2>&1 || true
  ip netns exec "$KD" nft -f - <<'NFT'
table ip lb {
  chain pre {
    type nat hook prerouting priority dstnat; policy accept;
    ip daddr 10.0.0.100 udp dport 53 dnat to numgen inc mod 4 map { 0 : 10.0.0.11, 1 : 10.0.0.12, 2 : 10.0.0.13, 3 : 10.0.0.14 } : 5353
  }
  chain post {
    type nat hook postrouting priority srcnat; policy accept;
    ip daddr 10.0.0.11-10.0.0.14 snat to 10.0.0.99
  }
}
NFT
  # The router's receive work on the DUT core, the generator veth's delivery on pktgen's.
  ip netns exec "$KD" sh -c "printf '%x' $((1 << DUT_CPU)) > /sys/class/net/kd0/queues/rx-0/rps_cpus"
  ip netns exec "$KG" sh -c "printf '%x' $((1 << PKTGEN_CPU)) > /sys/class/net/kg0/queues/rx-0/rps_cpus"
  profile kernel-max 02:00:00:00:00:02 udp 53 "rate_pps: $MAX_RATE"
  read -r k_si0 k_busy0 k_tot0 < <(cpu_ticks "$DUT_CPU")
  ip netns exec "$KG" taskset -c "$PKTGEN_CPU" "$PKTGEN" --profile "$W/kernel-max.yaml" \
    --json "$W/kernel-max.json" -- -l "$PKTGEN_CPU" "${EAL_COMMON[@]}" --file-prefix "pgk$$" \
    --vdev="net_af_packet0,iface=kg0,framecnt=4096,qdisc_bypass=1" >"$W/kernel-max.log" 2>&1 ||
    { tail -20 "$W/kernel-max.log" >&2; fail "pktgen run kernel-max failed"; }
  read -r k_si1 k_busy1 k_tot1 < <(cpu_ticks "$DUT_CPU")
  grep "^sluice-pktgen: run" "$W/kernel-max.log" | sed "s/^sluice-pktgen/  kernel-max/" || true
  echo "$((k_si1 - k_si0)) $((k_busy1 - k_busy0)) $((k_tot1 - k_tot0))" > "$W/kernel-ticks.txt"
  ip netns exec "$KD" nstat -az IpForwDatagrams 2>/dev/null | awk '$1=="IpForwDatagrams"{print $2}' \
    > "$W/kernel-forwarded.txt" || true
  for p in "${KNS[@]}"; do ip netns del "$p" 2>/dev/null || true; done
  KNS=()
fi
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)

# ---------------------------------------------------------------------------------------
# Result JSON + summary.
# ---------------------------------------------------------------------------------------
HASH=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
if [ -z "$OUT" ]; then
  if [ "$SMOKE" = 1 ]; then OUT=$W/result.json; else OUT=$ROOT/perf/results/pktgen-$(date -u +%F)-$HASH.json; fi
fi
KERNEL_SKIP=$KERNEL_SKIP SMOKE=$SMOKE W=$W OUT=$OUT HASH=$HASH MEMNAME=$MEMNAME FLOWS=$FLOWS DURATION=$DURATION \
DUT_RESTARTS=$DUT_RESTARTS RSIZE=$RSIZE LOAD_BEFORE=$LOAD_BEFORE LOAD_AFTER=$LOAD_AFTER PKTGEN_CPU=$PKTGEN_CPU DUT_CPU=$DUT_CPU \
python3 - <<'PY'
import json, os, platform, sys

W, smoke = os.environ["W"], os.environ["SMOKE"] == "1"
errors = []

def load(tag):
    path = os.path.join(W, tag + ".json")
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)

def brief(t):
    lat = t["latency_ns"]
    return {"offered_pps": t["offered_pps"], "tx_mpps": round(t["tx"]["pps"] / 1e6, 4),
            "rx_mpps": round(t["rx"]["pps"] / 1e6, 4), "loss_ratio": t["loss_ratio"],
            "lost": t["lost"], "p50_us": lat["p50"] / 1e3, "p90_us": lat["p90"] / 1e3,
            "p99_us": lat["p99"] / 1e3, "p999_us": lat["p999"] / 1e3, "max_us": lat["max"] / 1e3,
            "reordered": t["reordered"], "tx_ring_full": t["tx"]["ring_full"],
            "destinations": {d["dst"]: d["packets"] for d in t["destinations"]["top"][:8]},
            "flows_seen": t["flows"]["seen"]}

def search_brief(doc):
    if not doc or "search" not in doc:
        return None
    s = doc["search"]
    return {"zero_loss_pps": s["zero_loss_pps"], "zero_loss_rx_pps": s["zero_loss_rx_pps"],
            "lowest_failing_pps": s["lowest_failing_pps"], "loss_threshold": s["loss_threshold"],
            "trials": [{"offered_pps": t["offered_pps"], "tx_pps": round(t["tx"]["pps"]),
                        "rx_pps": round(t["rx"]["pps"]), "loss_ratio": t["loss_ratio"],
                        "passed": t["passed"], "sent_offered_rate": t["sent_offered_rate"]}
                       for t in s["trials"]],
            "sweep": [{k: p[k] for k in ("percent", "offered_pps", "tx_pps", "rx_pps", "loss_ratio",
                                         "p50_ns", "p99_ns", "p999_ns")}
                      for p in doc.get("sweep", {}).get("points", [])]}

res = {"benchmark": "pktgen_l4", "git": os.environ["HASH"], "smoke": smoke,
       "machine": {"cpus": os.cpu_count(), "kernel": platform.release(),
                   "load_before": os.environ["LOAD_BEFORE"], "load_after": os.environ["LOAD_AFTER"]},
       "setup": {"link": "net_memif, one port, pktgen role=client / DUT role=server",
                 "memory": os.environ["MEMNAME"], "memif_ring": 2 ** int(os.environ["RSIZE"]),
                 "sluice_restarts": int(os.environ["DUT_RESTARTS"]), "pktgen_core": int(os.environ["PKTGEN_CPU"]),
                 "dut_core": int(os.environ["DUT_CPU"]), "flows": int(os.environ["FLOWS"]),
                 "frame_bytes": {"udp": 64, "tcp": 74}, "duration_s": float(os.environ["DURATION"]),
                 "vip": "10.0.0.100 (udp 53, tcp 80)", "backends": "10.0.0.11-14 (:5353, :8080)",
                 "snat": "10.0.0.99 (+10.0.0.80.. per 60k flows)", "ct_capacity_min": 262144}}
for dut in ("testpmd", "sluice"):
    mx = load(dut + "-max")
    if not mx or "run" not in mx:
        errors.append(f"{dut}: no max-run result")
        continue
    r = mx["run"]
    entry = {"max": brief(r)}
    if r["tx"]["packets"] == 0 or r["rx"]["packets"] == 0:
        errors.append(f"{dut}: nothing sent or received ({r['tx']['packets']}/{r['rx']['packets']})")
    if dut == "sluice":
        dsts = set(entry["max"]["destinations"])
        want = {f"10.0.0.{i}:5353" for i in range(11, 15)}
        if not dsts or not dsts <= want:
            errors.append(f"sluice: received destinations {sorted(dsts)} are not the backends")
        if mx.get("dst_mac") != "02:00:00:00:00:02":
            errors.append(f"sluice: VIP resolved to {mx.get('dst_mac')}")
        dsr = load("sluice-dsr-max")
        if dsr and "run" in dsr:
            entry["dsr_ipip_max"] = brief(dsr["run"])
            if not set(entry["dsr_ipip_max"]["destinations"]) <= {f"10.0.0.{i}:53" for i in range(11, 15)}:
                errors.append("sluice dsr: destinations are not the backends")
            if dsr["run"]["rx"]["tunneled"] != dsr["run"]["rx"]["packets"]:
                errors.append("sluice dsr: not every packet arrived IP-in-IP encapsulated")
        else:
            errors.append("sluice: no DSR result")
        syn = load("sluice-syn-max")
        if syn and "run" in syn:
            entry["syn_dsr_max"] = brief(syn["run"])
        else:
            errors.append("sluice: no SYN-flood result")
        mix = load("sluice-syn-with-established")
        streams = {s["name"]: s for s in mix["run"].get("streams", [])} if mix and "run" in mix else {}
        if set(streams) == {"established", "syn"}:
            est, sy = streams["established"], streams["syn"]
            def stream_brief(s):
                lat = s["latency_ns"]
                return {"fraction": s["fraction"], "tx_mpps": round(s["tx"]["pps"] / 1e6, 4),
                        "rx_mpps": round(s["rx"]["pps"] / 1e6, 4), "tx": s["tx"]["packets"],
                        "rx": s["rx"]["packets"], "lost": s["lost"], "loss_ratio": s["loss_ratio"],
                        "tunneled": s["rx"]["tunneled"], "p50_us": lat["p50"] / 1e3,
                        "p99_us": lat["p99"] / 1e3, "reordered": s["reordered"],
                        "flows_seen": s["flows"]["seen"],
                        "destinations": {d["dst"]: d["packets"] for d in s["destinations"]["top"][:8]}}
            entry["syn_with_established"] = {
                "syn_forwarded_mpps": round(sy["rx"]["pps"] / 1e6, 4),
                "established_forwarded_mpps": round(est["rx"]["pps"] / 1e6, 4),
                "established_loss_ratio": est["loss_ratio"],
                "syn_loss_ratio": sy["loss_ratio"],
                "total": brief(mix["run"]),
                "streams": {"established": stream_brief(est), "syn": stream_brief(sy)},
                "note": ("one pktgen run, the two streams interleaved packet by packet by their "
                         "shares, " + ("as fast as the port takes them" if mix["run"]["offered_pps"] == 0
                                       else f"{mix['run']['offered_pps']:.0f} pps offered in all")
                         + "; forwarded = received back by pktgen from the measured window")}
            for name, s in (("established", est), ("syn", sy)):
                if s["tx"]["packets"] == 0 or s["rx"]["packets"] == 0:
                    errors.append(f"sluice syn_with_established: stream {name} has no figures "
                                  f"(tx {s['tx']['packets']}, rx {s['rx']['packets']})")
            if not set(stream_brief(est)["destinations"]) <= {f"10.0.0.{i}:5353" for i in range(11, 15)}:
                errors.append("sluice syn_with_established: established destinations are not the backends")
            if not set(stream_brief(sy)["destinations"]) <= {f"10.0.0.{i}:80" for i in range(11, 15)}:
                errors.append("sluice syn_with_established: SYN destinations are not the backends")
            if sy["rx"]["tunneled"] != sy["rx"]["packets"]:
                errors.append("sluice syn_with_established: not every SYN arrived IP-in-IP encapsulated")
            if est["rx"]["packets"] + sy["rx"]["packets"] != mix["run"]["rx"]["packets"]:
                errors.append("sluice syn_with_established: the streams' rx do not add up to the total")
        else:
            errors.append(f"sluice: no syn_with_established result for both streams ({sorted(streams)})")
        gue = load("sluice-gue-max")
        if gue and "run" in gue:
            entry["dsr_gue_max"] = brief(gue["run"])
            if not set(entry["dsr_gue_max"]["destinations"]) <= {f"10.0.0.{i}:54" for i in range(11, 15)}:
                errors.append("sluice dsr-gue: destinations are not the backends")
            if gue["run"]["rx"]["tunneled"] != gue["run"]["rx"]["packets"]:
                errors.append("sluice dsr-gue: not every packet arrived GUE encapsulated")
        else:
            errors.append("sluice: no DSR-GUE result")
        sbd = search_brief(load("sluice-dsr-search"))
        if sbd:
            entry["dsr_ipip_search"] = sbd
        tcp = load("sluice-tcp-max")
        if tcp and "run" in tcp:
            entry["tcp_max"] = brief(tcp["run"])
            if not set(entry["tcp_max"]["destinations"]) <= {f"10.0.0.{i}:8080" for i in range(11, 15)}:
                errors.append("sluice tcp: destinations are not the backends")
        else:
            errors.append("sluice: no TCP result")
        try:
            with open(os.path.join(W, "dp-stats-final.json")) as f:
                st = json.load(f)["lcores"][0]
            entry["dataplane_counters"] = {k: v for k, v in st["counters"].items() if v}
            entry["dataplane_drops"] = {k: v for k, v in st["drops"].items() if v}
        except (OSError, ValueError, KeyError, IndexError):
            pass
    sb = search_brief(load(dut + "-search"))
    if sb:
        entry["search"] = sb
    res[dut] = entry

def ratio(a, b):
    return round(a / b, 3) if b else None

if "testpmd" in res and "sluice" in res:
    t, s = res["testpmd"], res["sluice"]
    res["ratio_sluice_to_testpmd"] = {"max_rx_mpps": ratio(s["max"]["rx_mpps"], t["max"]["rx_mpps"])}
    if "search" in t and "search" in s:
        res["ratio_sluice_to_testpmd"]["zero_loss_pps"] = ratio(s["search"]["zero_loss_pps"],
                                                                t["search"]["zero_loss_pps"])
    if "dsr_ipip_max" in s:
        res["ratio_sluice_to_testpmd"]["dsr_max_rx_mpps"] = ratio(s["dsr_ipip_max"]["rx_mpps"],
                                                                  t["max"]["rx_mpps"])
    if "dsr_ipip_search" in s and "search" in t:
        res["ratio_sluice_to_testpmd"]["dsr_zero_loss_pps"] = ratio(
            s["dsr_ipip_search"]["zero_loss_pps"], t["search"]["zero_loss_pps"])
# (c) the kernel: per-core capacity from the DUT core's softirq ticks during the run.
if os.environ.get("KERNEL_SKIP"):
    res["kernel_nftables"] = {"skipped": os.environ["KERNEL_SKIP"]}
else:
    mx = load("kernel-max")
    if not mx or "run" not in mx:
        errors.append("kernel: no max-run result")
    else:
        r = mx["run"]
        k = {"max": brief(r), "link": "veth pair, net_af_packet on the generator side",
             "rules": "nft: dnat to numgen inc mod 4 map {10.0.0.11-14}:5353, snat to 10.0.0.99"}
        si, busy, tot = map(int, open(os.path.join(W, "kernel-ticks.txt")).read().split())
        k["dut_core_ticks"] = {"softirq": si, "busy": busy, "total": tot}
        try:
            k["ip_forwarded"] = int(open(os.path.join(W, "kernel-forwarded.txt")).read().split()[0])
        except (OSError, ValueError, IndexError):
            pass
        if r["rx"]["packets"] == 0:
            errors.append("kernel: nothing forwarded")
        elif si > 0 and tot > 0:
            share = si / tot
            k["softirq_share_of_dut_core"] = round(share, 3)
            # packets the router forwarded per second of its softirq time = per-core capacity
            k["capacity_mpps_per_core"] = round(r["rx"]["pps"] / share / 1e6, 4)
            k["note"] = ("capacity = forwarded pps / softirq share of the DUT core (tick-sampled, "
                         "no IRQ time accounting in this kernel); the generator's af_packet "
                         "limits the offered rate, not the router")
        dsts = set(k["max"]["destinations"])
        if not dsts or not dsts <= {f"10.0.0.{i}:5353" for i in range(11, 15)}:
            errors.append(f"kernel: received destinations {sorted(dsts)} are not the backends")
        res["kernel_nftables"] = k
        if "sluice" in res and k.get("capacity_mpps_per_core"):
            res["ratio_sluice_to_kernel"] = {
                "max_rx_mpps_per_core": ratio(res["sluice"]["max"]["rx_mpps"], k["capacity_mpps_per_core"])}
with open(os.environ["OUT"], "w") as f:
    json.dump(res, f, indent=1)
    f.write("\n")
for dut in ("testpmd", "sluice"):
    if dut in res:
        m = res[dut]["max"]
        zl = res[dut].get("search", {}).get("zero_loss_pps")
        print(f"pktgen_l4_bench: {dut:8s} max rx {m['rx_mpps']:.3f} Mpps (tx {m['tx_mpps']:.3f}), "
              f"loss {100 * m['loss_ratio']:.4f}%, p50 {m['p50_us']:.1f} us, p99 {m['p99_us']:.1f} us"
              + (f"; zero-loss {zl / 1e6:.3f} Mpps" if zl is not None else ""))
if "sluice" in res and "dsr_ipip_max" in res["sluice"]:
    m = res["sluice"]["dsr_ipip_max"]
    zl = res["sluice"].get("dsr_ipip_search", {}).get("zero_loss_pps")
    print(f"pktgen_l4_bench: sluice DSR (IP-in-IP) max rx {m['rx_mpps']:.3f} Mpps, loss "
          f"{100 * m['loss_ratio']:.4f}%, p50 {m['p50_us']:.1f} us, p99 {m['p99_us']:.1f} us"
          + (f"; zero-loss {zl / 1e6:.3f} Mpps" if zl is not None else ""))
if "sluice" in res and "dsr_gue_max" in res["sluice"]:
    m = res["sluice"]["dsr_gue_max"]
    print(f"pktgen_l4_bench: sluice DSR (GUE) max rx {m['rx_mpps']:.3f} Mpps, loss "
          f"{100 * m['loss_ratio']:.4f}%")
if "sluice" in res and "syn_dsr_max" in res["sluice"]:
    m = res["sluice"]["syn_dsr_max"]
    print(f"pktgen_l4_bench: sluice new flows (SYN flood, DSR) max rx {m['rx_mpps']:.3f} Mpps, "
          f"loss {100 * m['loss_ratio']:.4f}%")
if "sluice" in res and "syn_with_established" in res["sluice"]:
    m = res["sluice"]["syn_with_established"]
    e, s = m["streams"]["established"], m["streams"]["syn"]
    print(f"pktgen_l4_bench: sluice SYN flood with established flows ({100 * s['fraction']:.0f}% SYNs, one run): "
          f"SYNs forwarded {m['syn_forwarded_mpps']:.3f} Mpps (loss {100 * m['syn_loss_ratio']:.4f}%), "
          f"established forwarded {m['established_forwarded_mpps']:.3f} Mpps (loss "
          f"{100 * m['established_loss_ratio']:.4f}%, p99 {e['p99_us']:.1f} us)")
if "sluice" in res and "tcp_max" in res["sluice"]:
    m = res["sluice"]["tcp_max"]
    print(f"pktgen_l4_bench: sluice full-NAT TCP max rx {m['rx_mpps']:.3f} Mpps, loss "
          f"{100 * m['loss_ratio']:.4f}%")
if "ratio_sluice_to_testpmd" in res:
    print("pktgen_l4_bench: sluice/testpmd", res["ratio_sluice_to_testpmd"])
k = res.get("kernel_nftables", {})
if "max" in k:
    print(f"pktgen_l4_bench: kernel nftables forwarded {k['max']['rx_mpps']:.3f} Mpps using "
          f"{100 * k.get('softirq_share_of_dut_core', 0):.0f}% of core {os.environ['DUT_CPU']}: "
          f"{k.get('capacity_mpps_per_core', 0):.3f} Mpps per core; sluice/kernel",
          res.get("ratio_sluice_to_kernel"))
elif "skipped" in k:
    print("pktgen_l4_bench: kernel nftables skipped:", k["skipped"])
print("pktgen_l4_bench: results in", os.environ["OUT"])
for e in errors:
    print("pktgen_l4_bench: FAIL:", e, file=sys.stderr)
sys.exit(1 if errors else 0)
PY
