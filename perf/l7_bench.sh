#!/usr/bin/env bash
# L7 benchmark: sluice-l7 beside HAProxy and nginx as reverse proxies, in one invocation, on
# loopback. One nginx serves a 6-byte body ("hello\n", `return 200`) as the backend; every
# proxy forwards to it over a keep-alive upstream pool. wrk drives each proxy, and the backend
# directly, in two modes: keep-alive and a new connection per request (Connection: close).
#
#   perf/l7_bench.sh [--smoke] [--build DIR] [--out FILE] [--keep]
#
# --smoke   1-second runs, no warm-up, output to a temp file unless --out: checks only that
#           every run produced numbers, answered 2xx and that the JSON is well formed (for CI;
#           no speed assertions). Exit 77 (skip) when nginx, haproxy, wrk or taskset are missing.
# --out     JSON file (default perf/results/l7-<UTC date>-<short git hash>.json).
# --keep    keep the work directory (configs, logs, raw wrk output) and print its path.
#
# Environment: DURATION (seconds per run, default 5), CONNS (wrk connections, 50), RUNS
# (rounds; the figure of each cell is the round with the median req/s, default 1), BUILD
# (build dir, default build), WRK_CPU / PROXY_CPU / BACKEND_CPU (cores, default 0 / 1 / 0),
# RETRIES (repeats of a run disturbed by other processes, default 3; 0 with --smoke),
# SKEW_LIMIT (% of the proxy's core taken by others that counts as disturbed, default 15),
# SLUICE_ARGS (extra sluice-l7 options, e.g. --tls-ipsec-mb; recorded in the JSON).
#
# Placement (2 vCPUs): the proxy under test owns core 1 alone (sluice-l7 --workers 1, HAProxy
# nbthread 1, nginx worker_processes 1: one core each, the same one). wrk and the backend
# nginx share core 0, so the load side is identical for every proxy. The keep-alive "direct"
# row (wrk straight to the backend, both on core 0) is the ceiling of the load side. With
# Connection: close it is not: hit directly the backend accepts a connection per request,
# behind a proxy it gets pooled ones. Besides wrk's figures, each run records the proxy's
# own CPU per request (/proc, children included: steady whatever else runs) and both cores'
# busy time; a run during which other processes took the proxy's core is repeated and the
# least disturbed try kept, and what remains disturbed is a warning (stderr and JSON).
#
# Equal work: every proxy adds X-Forwarded-For and X-Forwarded-Proto (sluice always does),
# keeps upstream connections alive and logs nothing.
#
# TLS (issue 5), same invocation, same certificates for every proxy (self-signed, made here:
# ECDSA P-256 and RSA-2048, one port each), TLS 1.3 negotiated by wrk's OpenSSL:
#   tls-keepalive    HTTPS requests/s over kept-alive connections (ECDSA port), wrk;
#   h2               h2load -c1 -m100 over one TLS connection (ALPN h2): streams/s;
#   handshakes       openssl s_time (TLS 1.3, one connection at a time, a GET each): full
#                    handshakes with the ECDSA and the RSA certificate (-new) and resumed ones
#                    (-reuse, tickets). s_time is the limit of the rate, so the figure is the
#                    proxy's CPU per handshake and what it gives: handshakes/s per core.
#                    (wrk is no handshake client: it speaks TLS 1.2 and resumes sessions.)
# The direct row has no TLS (the backend speaks plain HTTP): it is skipped in these modes.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${BUILD:-$ROOT/build}
SMOKE=0
OUT=""
KEEP=${KEEP:-0}
while (($#)); do
  case "$1" in
    --smoke) SMOKE=1 ;;
    --build) BUILD=$2; shift ;;
    --out) OUT=$2; shift ;;
    --keep) KEEP=1 ;;
    -h|--help) sed -n '2,32p' "$0"; exit 0 ;;
    *) echo "l7_bench: unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done
BUILD=$(cd "$BUILD" && pwd)
DURATION=${DURATION:-5}
CONNS=${CONNS:-50}
RUNS=${RUNS:-1}
WARMUP=1
if [ "$SMOKE" = 1 ]; then DURATION=1; RUNS=1; WARMUP=0; fi
WRK_CPU=${WRK_CPU:-0}
PROXY_CPU=${PROXY_CPU:-1}
BACKEND_CPU=${BACKEND_CPU:-0}
if [ "$(nproc)" -lt 2 ]; then
  echo "l7_bench: fewer than 2 CPUs: everything on core 0 (figures not comparable)" >&2
  WRK_CPU=0; PROXY_CPU=0; BACKEND_CPU=0
fi

for t in nginx haproxy wrk taskset curl python3; do
  if ! command -v "$t" >/dev/null 2>&1 && ! [ -x "/usr/sbin/$t" ]; then
    echo "l7_bench: $t not installed (tools/install-deps.sh): skipped"
    exit 77
  fi
done
export PATH=$PATH:/usr/sbin
L7=$BUILD/dataplane/sluice-l7
CP=$BUILD/controlplane/sluice-controlplane
for b in "$L7" "$CP"; do
  [ -x "$b" ] || { echo "l7_bench: $b missing: ninja -C build dataplane/sluice-l7 controlplane/sluice-controlplane" >&2; exit 1; }
done

WORK=$(mktemp -d /tmp/sluice-l7-bench.XXXXXX)
chmod 755 "$WORK"   # nginx workers run as nobody when started by root
PIDS=()
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  local p
  for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do
    for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$p" 2>/dev/null || true
    wait "$p" 2>/dev/null || true
  done
  if [ "$rc" != 0 ] && [ "$rc" != 77 ]; then
    echo "l7_bench: failed (exit $rc); process logs:" >&2
    tail -n 15 "$WORK"/*.log 2>/dev/null >&2 || true
  fi
  if [ "$KEEP" = 1 ]; then echo "l7_bench: work dir kept: $WORK" >&2; else rm -rf "$WORK"; fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

die() { echo "l7_bench: $*" >&2; exit 1; }

# Certificates: the same files for every proxy.
TLSD=$WORK/tls
mkdir -p "$TLSD"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
  -subj /CN=bench.example -addext subjectAltName=DNS:bench.example \
  -keyout "$TLSD/ecdsa.key" -out "$TLSD/ecdsa.crt" 2>/dev/null || die "openssl: ECDSA certificate"
openssl req -x509 -newkey rsa:2048 -nodes -days 2 \
  -subj /CN=bench.example -addext subjectAltName=DNS:bench.example \
  -keyout "$TLSD/rsa.key" -out "$TLSD/rsa.crt" 2>/dev/null || die "openssl: RSA certificate"
for k in ecdsa rsa; do cat "$TLSD/$k.crt" "$TLSD/$k.key" > "$TLSD/$k.pem"; done  # HAProxy's form

# Free loopback ports (bound and released at once; nothing else races for them here): plain
# HTTP, then TLS with the ECDSA and the RSA certificate, per proxy.
read -r P_BACKEND P_SLUICE P_HAPROXY P_NGINX P_SLUICE_E P_SLUICE_R P_HAPROXY_E P_HAPROXY_R \
  P_NGINX_E P_NGINX_R < <(python3 -c '
import socket
ss=[socket.socket() for _ in range(10)]
for s in ss: s.bind(("127.0.0.1",0))
print(*[s.getsockname()[1] for s in ss])
for s in ss: s.close()')

wait_http() {  # URL SECONDS: until it answers 200
  local end=$((SECONDS + $2))
  while ((SECONDS < end)); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 1 "$1" 2>/dev/null)" = 200 ] && return 0
    sleep 0.1
  done
  return 1
}

# ---- backend nginx: return 200 "hello\n", 1 worker
nginx_common() {  # DIR
  cat <<EOF
worker_processes 1;
pid $1/nginx.pid;
error_log $1/error.log warn;
worker_rlimit_nofile 16384;
events { worker_connections 8192; multi_accept on; }
http {
  access_log off;
  client_body_temp_path $1/body;
  proxy_temp_path $1/proxy;
  fastcgi_temp_path $1/fastcgi;
  uwsgi_temp_path $1/uwsgi;
  scgi_temp_path $1/scgi;
  keepalive_requests 1000000;
  keepalive_timeout 60s;
EOF
}
B=$WORK/nginx-backend
mkdir -p "$B"
{ nginx_common "$B"
  cat <<EOF
  server {
    listen 127.0.0.1:$P_BACKEND reuseport backlog=4096;
    location / { default_type text/plain; return 200 "hello\n"; }
  }
}
EOF
} > "$B/nginx.conf"
taskset -c "$BACKEND_CPU" nginx -p "$B" -c "$B/nginx.conf" -e "$B/error.log" -g 'daemon off;' \
  > "$WORK/nginx-backend.log" 2>&1 &
PIDS+=($!); PID_BACKEND=$!

# ---- nginx as a reverse proxy: 1 worker, upstream keepalive pool; plain HTTP and TLS
nginx_proxy_server() {  # LISTEN [CERT: ecdsa|rsa]
  echo "  server {"
  echo "    listen 127.0.0.1:$1 reuseport backlog=4096;"
  if [ -n "${2:-}" ]; then
    echo "    ssl_certificate $TLSD/$2.crt;"
    echo "    ssl_certificate_key $TLSD/$2.key;"
    # Debian's nginx 1.22 defaults to TLSv1 TLSv1.1 TLSv1.2: without this line it spoke
    # TLS 1.2 (abbreviated resumption, no ECDHE) while sluice and HAProxy spoke 1.3.
    echo "    ssl_protocols TLSv1.2 TLSv1.3;"
  fi
  cat <<'EOF'
    location / {
      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host $bench_host;
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
      proxy_set_header X-Forwarded-Proto $scheme;
    }
  }
EOF
}
N=$WORK/nginx-proxy
mkdir -p "$N"
{ nginx_common "$N"
  cat <<EOF
  # Host for the backend: the client's, or for a request without one (HTTP/1.0, as
  # openssl s_time sends) the address it reached, as sluice does (RFC 9112 3.3); \$host would
  # be empty, the header dropped, and the backend would answer 400 and close.
  map \$http_host \$bench_host { "" \$server_addr:\$server_port; default \$http_host; }
  upstream backend {
    server 127.0.0.1:$P_BACKEND;
    keepalive 64;
    keepalive_requests 1000000;
  }
EOF
  nginx_proxy_server "$P_NGINX"
  nginx_proxy_server "$P_NGINX_E ssl http2" ecdsa
  nginx_proxy_server "$P_NGINX_R ssl http2" rsa
  echo "}"
} > "$N/nginx.conf"
taskset -c "$PROXY_CPU" nginx -p "$N" -c "$N/nginx.conf" -e "$N/error.log" -g 'daemon off;' \
  > "$WORK/nginx-proxy.log" 2>&1 &
PIDS+=($!); PID_NGINX=$!

# ---- HAProxy: 1 thread, http mode, keep-alive to the server
cat > "$WORK/haproxy.cfg" <<EOF
global
  nbthread 1
  maxconn 4000
defaults
  mode http
  option http-keep-alive
  option forwardfor
  http-reuse always
  timeout connect 3s
  timeout client 60s
  timeout server 60s
  timeout http-request 10s
  timeout http-keep-alive 60s
frontend fe
  bind 127.0.0.1:$P_HAPROXY
  http-request set-header X-Forwarded-Proto http
  default_backend be
frontend fe_tls
  bind 127.0.0.1:$P_HAPROXY_E ssl crt $TLSD/ecdsa.pem alpn h2,http/1.1
  bind 127.0.0.1:$P_HAPROXY_R ssl crt $TLSD/rsa.pem alpn h2,http/1.1
  http-request set-header X-Forwarded-Proto https
  default_backend be
backend be
  server s1 127.0.0.1:$P_BACKEND
EOF
haproxy -c -q -f "$WORK/haproxy.cfg" || die "haproxy config rejected"
taskset -c "$PROXY_CPU" haproxy -db -f "$WORK/haproxy.cfg" > "$WORK/haproxy.log" 2>&1 &
PIDS+=($!); PID_HAPROXY=$!

# ---- sluice: sluice-l7 (1 worker, pinned) + controlplane with a one-route Gateway
CFG=$WORK/config
SDIR=$WORK/status
SOCK=$WORK/l7.sock
mkdir -p "$CFG"
cat > "$CFG/bench.yaml" <<EOF
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
  listeners:
  - name: http
    protocol: HTTP
    port: $P_SLUICE
  - name: tls-ecdsa
    protocol: HTTPS
    port: $P_SLUICE_E
    tls: {certificateRefs: [{name: bench-ecdsa}]}
  - name: tls-rsa
    protocol: HTTPS
    port: $P_SLUICE_R
    tls: {certificateRefs: [{name: bench-rsa}]}
---
apiVersion: v1
kind: Secret
metadata: {name: bench-ecdsa, namespace: default}
type: kubernetes.io/tls
data:
  tls.crt: $(base64 -w0 "$TLSD/ecdsa.crt")
  tls.key: $(base64 -w0 "$TLSD/ecdsa.key")
---
apiVersion: v1
kind: Secret
metadata: {name: bench-rsa, namespace: default}
type: kubernetes.io/tls
data:
  tls.crt: $(base64 -w0 "$TLSD/rsa.crt")
  tls.key: $(base64 -w0 "$TLSD/rsa.key")
---
apiVersion: v1
kind: Service
metadata: {name: backend, namespace: default}
spec:
  ports: [{name: http, port: 8080, targetPort: $P_BACKEND}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: backend-1
  namespace: default
  labels: {kubernetes.io/service-name: backend}
addressType: IPv4
ports: [{name: http, port: $P_BACKEND}]
endpoints:
- addresses: ["127.0.0.1"]
  conditions: {ready: true}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: bench, namespace: default}
spec:
  parentRefs: [{name: bench}]
  rules:
  - matches: [{path: {type: PathPrefix, value: /}}]
    backendRefs: [{name: backend, port: 8080}]
EOF
# shellcheck disable=SC2086 # SLUICE_ARGS is a list of options
taskset -c "$PROXY_CPU" "$L7" --dp-socket "$SOCK" --workers 1 --stats-file '' ${SLUICE_ARGS:-} \
  > "$WORK/sluice-l7.log" 2>&1 &
PIDS+=($!); PID_SLUICE=$!
for _ in $(seq 100); do [ -S "$SOCK" ] && break; sleep 0.05; done
[ -S "$SOCK" ] || die "sluice-l7 did not open $SOCK"
# The controlplane is idle once the IR is acknowledged; keep it off the proxy's core.
taskset -c "$WRK_CPU" "$CP" --config-dir "$CFG" --status-dir "$SDIR" --dp-socket "$SOCK" \
  --address 127.0.0.1 > "$WORK/controlplane.log" 2>&1 &
PIDS+=($!)
GW_STATUS=$SDIR/Gateway/default/bench.yaml
programmed() {
  [ -f "$GW_STATUS" ] && python3 - "$GW_STATUS" <<'EOF'
import sys
t = open(sys.argv[1]).read()
i = t.find("type: Programmed")
j = t.rfind("- ", 0, i)
cond = t[j:t.find("\n- ", i) if t.find("\n- ", i) > 0 else len(t)]
sys.exit(0 if 'status: "True"' in cond or "status: True" in cond else 1)
EOF
}
for _ in $(seq 200); do programmed && break; sleep 0.05; done
programmed || { cat "$GW_STATUS" >&2 2>/dev/null; die "Gateway not Programmed=True"; }

wait_http "http://127.0.0.1:$P_BACKEND/" 10 || die "backend nginx does not answer"
wait_http "http://127.0.0.1:$P_SLUICE/" 10 || die "sluice does not answer 200"
wait_http "http://127.0.0.1:$P_HAPROXY/" 10 || die "haproxy does not answer 200"
wait_http "http://127.0.0.1:$P_NGINX/" 10 || die "nginx proxy does not answer 200"
[ "$(curl -s "http://127.0.0.1:$P_SLUICE/")" = hello ] || die "sluice: unexpected body"
for p in $P_SLUICE_E $P_SLUICE_R $P_HAPROXY_E $P_HAPROXY_R $P_NGINX_E $P_NGINX_R; do
  for _ in $(seq 50); do
    [ "$(curl -sk --max-time 1 "https://127.0.0.1:$p/")" = hello ] && break
    sleep 0.1
  done
  [ "$(curl -sk --max-time 2 "https://127.0.0.1:$p/")" = hello ] || die "HTTPS on port $p does not answer hello"
done

declare -A URL=([direct]=http://127.0.0.1:$P_BACKEND/ [sluice]=http://127.0.0.1:$P_SLUICE/
                [haproxy]=http://127.0.0.1:$P_HAPROXY/ [nginx]=http://127.0.0.1:$P_NGINX/)
declare -A URL_E=([sluice]=https://127.0.0.1:$P_SLUICE_E/ [haproxy]=https://127.0.0.1:$P_HAPROXY_E/
                  [nginx]=https://127.0.0.1:$P_NGINX_E/)
declare -A URL_R=([sluice]=https://127.0.0.1:$P_SLUICE_R/ [haproxy]=https://127.0.0.1:$P_HAPROXY_R/
                  [nginx]=https://127.0.0.1:$P_NGINX_R/)
TARGETS=(direct sluice haproxy nginx)
MODES=(keepalive close tls-keepalive)
url_of() {  # TARGET MODE: '' when the target has no such mode (direct: no TLS)
  case $2 in
    keepalive|close) echo "${URL[$1]}" ;;
    tls-keepalive) echo "${URL_E[$1]:-}" ;;
  esac
}
mkdir -p "$WORK/wrk"
declare -A TPID=([direct]=$PID_BACKEND [sluice]=$PID_SLUICE [haproxy]=$PID_HAPROXY
                 [nginx]=$PID_NGINX)
# CPU time (user + system, clock ticks) of a process and its children (nginx's workers):
# CPU per request does not depend on what else the machine runs, unlike req/s.
tree_ticks() {
  python3 - "$@" <<'PY'
import os, sys
kids, ticks = {}, {}
for d in os.listdir("/proc"):
    if d.isdigit():
        try:
            f = open(f"/proc/{d}/stat").read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        kids.setdefault(int(f[1]), []).append(int(d))
        ticks[int(d)] = int(f[11]) + int(f[12])
out = []
for root in map(int, sys.argv[1:]):
    todo, tot = [root], 0
    while todo:
        p = todo.pop()
        tot += ticks.get(p, 0)
        todo += kids.get(p, [])
    out.append(str(tot))
print(" ".join(out), os.sysconf("SC_CLK_TCK"))
PY
}
wrk_run() {  # TARGET MODE SECONDS OUTFILE
  local hdr=()
  case $2 in *close*) hdr=(-H 'Connection: close') ;; esac
  # Per-core /proc/stat before and after: did the proxy's core saturate (the proxy is the
  # bottleneck) or the load side's? And the proxy's and the backend's own CPU time.
  grep '^cpu[0-9]' /proc/stat > "$4.stat0" 2>/dev/null || true
  tree_ticks "${TPID[$1]}" "$PID_BACKEND" > "$4.cpu0"
  taskset -c "$WRK_CPU" wrk -t1 -c"$CONNS" -d"$3"s --timeout 5s --latency "${hdr[@]}" \
    "$(url_of "$1" "$2")" > "$4" 2>&1 || true
  tree_ticks "${TPID[$1]}" "$PID_BACKEND" > "$4.cpu1"
  grep '^cpu[0-9]' /proc/stat > "$4.stat1" 2>/dev/null || true
}
# Other load on the machine skews every figure: measure it (all cores, 1 s) and record it.
BUSY_PCT=$(python3 -c '
import time
def snap():
    v = list(map(int, open("/proc/stat").readline().split()[1:]))
    return sum(v), v[3] + v[4]
t0, i0 = snap(); time.sleep(1); t1, i1 = snap()
print(round(100.0 * (1 - (i1 - i0) / max(1, t1 - t0)), 1))')
if python3 -c "import sys; sys.exit(0 if float('$BUSY_PCT') > 10 else 1)"; then
  echo "l7_bench: WARNING: the machine is ${BUSY_PCT}% busy before the runs: figures are skewed" >&2
fi
# How much of the proxy's core went to other processes during a run (%): for a proxy, its
# core's busy time minus the proxy's own CPU and interrupts; for the direct run, all of it.
skew_of() {  # WRKFILE TARGET
  python3 - "$1" "$2" "$PROXY_CPU" <<'PY'
import re, sys
path, target, core = sys.argv[1], sys.argv[2], sys.argv[3]
try:
    def rd(sfx):
        for line in open(path + sfx):
            f = line.split()
            if f[0] == "cpu" + core:
                return list(map(int, f[1:9]))
    a, b = rd(".stat0"), rd(".stat1")
    d = [y - x for x, y in zip(a, b)]
    tot = max(1, sum(d))
    busy = 100.0 * (tot - d[3] - d[4]) / tot
    if target == "direct":
        print(round(busy - 100.0 * (d[5] + d[6]) / tot, 1)); sys.exit()
    c0, c1 = (list(map(int, open(path + s).read().split())) for s in (".cpu0", ".cpu1"))
    secs = float(re.search(r"requests in ([\d.]+)(m?s)", open(path).read()).group(1))
    own = 100.0 * (c1[0] - c0[0]) / c0[-1] / secs
    # (the proxy's own CPU already holds the softirq work done in its system calls)
    print(round(busy - own, 1))
except Exception:
    print(0)
PY
}
SKEW_LIMIT=${SKEW_LIMIT:-15}
RETRIES=${RETRIES:-3}
[ "$SMOKE" = 1 ] && RETRIES=0
echo "l7_bench: ${DURATION}s per run, ${RUNS} round(s), wrk -t1 -c$CONNS on core $WRK_CPU," \
     "proxies on core $PROXY_CPU, backend on core $BACKEND_CPU" >&2
if [ "$WARMUP" = 1 ]; then
  for t in "${TARGETS[@]}"; do wrk_run "$t" keepalive 1 /dev/null; done
fi
for r in $(seq "$RUNS"); do
  for m in "${MODES[@]}"; do
    for t in "${TARGETS[@]}"; do
      [ -n "$(url_of "$t" "$m")" ] || continue
      # A run during which other processes took the proxy's core is repeated (RETRIES times
      # at most); the least disturbed try is kept.
      base=$WORK/wrk/$t.$m.$r.txt
      best=""; best_skew=""
      for try in $(seq 0 "$RETRIES"); do
        wrk_run "$t" "$m" "$DURATION" "$base.try$try"
        skew=$(skew_of "$base.try$try" "$t")
        echo "  round $r $m $t: $(grep -h 'Requests/sec' "$base.try$try" || echo 'no result')," \
             "core $PROXY_CPU taken by others: ${skew}%" >&2
        # Connection-close runs leave TIME_WAIT sockets; give the kernel a breath between runs.
        case $m in *close*) sleep 1 ;; esac
        if [ -z "$best" ] || python3 -c "import sys; sys.exit(0 if $skew < $best_skew else 1)"; then
          best=$try; best_skew=$skew
        fi
        python3 -c "import sys; sys.exit(0 if $skew > $SKEW_LIMIT else 1)" || break
        if [ "$try" -lt "$RETRIES" ]; then
          echo "  another process used core $PROXY_CPU during that run: again in 5 s" >&2
          sleep 5
        fi
      done
      for sfx in "" .stat0 .stat1 .cpu0 .cpu1; do cp "$base.try$best$sfx" "$base$sfx"; done
      echo "$try" > "$base.retries"
    done
  done
done
# HTTP/2: h2load, one TLS connection (ALPN h2), 100 concurrent streams, DURATION seconds.
mkdir -p "$WORK/h2"
if command -v h2load >/dev/null; then
  for t in sluice haproxy nginx; do
    grep '^cpu[0-9]' /proc/stat > "$WORK/h2/$t.txt.stat0" 2>/dev/null || true
    tree_ticks "${TPID[$t]}" "$PID_BACKEND" > "$WORK/h2/$t.txt.cpu0"
    taskset -c "$WRK_CPU" h2load -c1 -m100 -D "$DURATION" --warm-up-time=$((WARMUP)) \
      "${URL_E[$t]}" > "$WORK/h2/$t.txt" 2>&1 || true
    tree_ticks "${TPID[$t]}" "$PID_BACKEND" > "$WORK/h2/$t.txt.cpu1"
    grep '^cpu[0-9]' /proc/stat > "$WORK/h2/$t.txt.stat1" 2>/dev/null || true
    echo "  h2 $t: $(grep -h 'finished in' "$WORK/h2/$t.txt" || echo 'no result')" >&2
  done
fi
# TLS handshakes: openssl s_time, one connection at a time, each fetching / (TLS 1.3).
# First what each proxy negotiates and what s_time's Host-less HTTP/1.0 request gets: equal
# work means TLS 1.3 everywhere and a 200 from the backend (not a 400 and a closed upstream).
mkdir -p "$WORK/hs"
for t in sluice haproxy nginx; do
  hp=${URL_E[$t]#https://}; hp=${hp%/}
  proto=$(openssl s_client -connect "$hp" -brief </dev/null 2>&1 | sed -n 's/^Protocol version: //p')
  st=$( (printf 'GET / HTTP/1.0\r\n\r\n'; sleep 0.5) |
        timeout 5 openssl s_client -quiet -connect "$hp" 2>/dev/null | head -1 | tr -d '\r')
  printf '%s\n%s\n' "$proto" "$st" > "$WORK/hs/$t.proto"
  [ "$proto" = TLSv1.3 ] || die "$t negotiated '$proto' with openssl s_client, not TLSv1.3"
done
# RUNS rounds, the proxies taking turns in each (the JSON keeps the median round).
for r in $(seq "$RUNS"); do
for t in sluice haproxy nginx; do
  for hm in full-ecdsa full-rsa resumed; do
    case $hm in
      full-ecdsa) u=${URL_E[$t]}; how=-new ;;
      full-rsa) u=${URL_R[$t]}; how=-new ;;
      resumed) u=${URL_E[$t]}; how=-reuse ;;
    esac
    hp=${u#https://}; hp=${hp%/}
    f=$WORK/hs/$t.$hm.$r.txt
    tree_ticks "${TPID[$t]}" "$PID_BACKEND" > "$f.cpu0"
    taskset -c "$WRK_CPU" openssl s_time -connect "$hp" "$how" -time "$DURATION" -www / \
      > "$f" 2>&1 || true
    tree_ticks "${TPID[$t]}" "$PID_BACKEND" > "$f.cpu1"
    echo "  handshakes $hm $t (round $r): $(grep -h 'real seconds' "$f" || echo 'no result')" >&2
  done
done
done
# Every proxy still alive (a crash mid-run would otherwise show only as socket errors).
for p in "${PIDS[@]}"; do kill -0 "$p" 2>/dev/null || die "a server process (pid $p) died during the runs"; done

if [ -z "$OUT" ]; then
  if [ "$SMOKE" = 1 ]; then
    OUT=$WORK/l7-smoke.json
  else
    mkdir -p "$ROOT/perf/results"
    OUT=$ROOT/perf/results/l7-$(date -u +%F)-$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo nogit).json
  fi
fi

python3 - "$WORK/wrk" "$OUT" "$SMOKE" "$DURATION" "$CONNS" "$RUNS" "$WRK_CPU" "$PROXY_CPU" \
  "$BACKEND_CPU" "$ROOT" "$BUSY_PCT" <<'EOF'
import json, os, platform, re, subprocess, sys, time
wrkdir, out, smoke, duration, conns, runs, wrk_cpu, proxy_cpu, backend_cpu, root, busy = sys.argv[1:]
smoke, runs = smoke == "1", int(runs)
targets = ["direct", "sluice", "haproxy", "nginx"]
modes = ["keepalive", "close", "tls-keepalive"]
h2dir = os.path.join(os.path.dirname(wrkdir), "h2")
def has(t, m):
    return not (t == "direct" and m.startswith("tls"))

def ms(v):
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", v)
    if not m:
        return None
    return float(m.group(1)) * {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 6e4}[m.group(2)]

def parse(path):
    t = open(path, errors="replace").read()
    r = {"rps": None, "p50_ms": None, "p75_ms": None, "p90_ms": None, "p99_ms": None,
         "requests": None, "non2xx": 0, "socket_errors": {"connect": 0, "read": 0, "write": 0,
         "timeout": 0}}
    m = re.search(r"Requests/sec:\s+([\d.]+)", t)
    if m:
        r["rps"] = float(m.group(1))
    for pct in ("50", "75", "90", "99"):
        m = re.search(r"^\s+%s%%\s+(\S+)" % pct, t, re.M)
        if m:
            v = ms(m.group(1))
            r["p%s_ms" % pct] = round(v, 4) if v is not None else None
    m = re.search(r"(\d+) requests in", t)
    if m:
        r["requests"] = int(m.group(1))
    m = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", t)
    if m:
        r["non2xx"] = int(m.group(1))
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", t)
    if m:
        r["socket_errors"] = dict(zip(["connect", "read", "write", "timeout"], map(int, m.groups())))
    return r

STAT_FIELDS = ["user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal"]

def core_split(path):
    """Per core over the run, from the /proc/stat snapshots around it: % of the time in each
    of user, system, softirq, steal... and busy (everything but idle and iowait)."""
    try:
        snaps = []
        for suffix in (".stat0", ".stat1"):
            d = {}
            for line in open(path + suffix):
                f = line.split()
                d[int(f[0][3:])] = list(map(int, f[1:9]))
            snaps.append(d)
        out = {}
        for c in snaps[0]:
            delta = [b - a for a, b in zip(snaps[0][c], snaps[1][c])]
            tot = max(1, sum(delta))
            pct = {k: round(100.0 * v / tot, 1) for k, v in zip(STAT_FIELDS, delta)}
            pct["busy"] = round(100.0 - pct["idle"] - pct["iowait"], 1)
            out[c] = pct
        return out
    except Exception:
        return {}

def core_busy(path):
    return {c: v["busy"] for c, v in core_split(path).items()}

def cpu_per_req(path, requests):
    """Microseconds of CPU (user + system) per request: [proxy (or backend when direct), backend]."""
    try:
        a = list(map(int, open(path + ".cpu0").read().split()))
        b = list(map(int, open(path + ".cpu1").read().split()))
        hz = a[-1]
        return [round((b[i] - a[i]) / hz * 1e6 / requests, 2) for i in range(2)]
    except Exception:
        return [None, None]

def version(cmd):
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=5)
        return ((p.stdout or "") + (p.stderr or "")).strip().splitlines()[0]
    except Exception:
        return None

res, problems = {}, []
for t in targets:
    res[t] = {}
    for m in modes:
        if not has(t, m):
            continue
        rounds = []
        for r in range(1, runs + 1):
            p = os.path.join(wrkdir, f"{t}.{m}.{r}.txt")
            x = parse(p)
            busy_c = core_busy(p)
            x["load_core_busy_pct"] = busy_c.get(int(wrk_cpu))
            x["proxy_core_busy_pct"] = busy_c.get(int(proxy_cpu))
            x["proxy_core_split_pct"] = core_split(p).get(int(proxy_cpu))
            try:
                x["retries"] = int(open(p + ".retries").read())
            except (OSError, ValueError):
                x["retries"] = 0
            cp = cpu_per_req(p, x["requests"]) if x["requests"] else [None, None]
            x["cpu_us_per_req"], x["backend_cpu_us_per_req"] = cp
            # Time on the proxy's core that the proxy's own CPU (softirq work done in its
            # system calls included) does not account for: another process ran there.
            sp = x["proxy_core_split_pct"]
            if t != "direct" and sp and x["rps"] and cp[0] is not None:
                own = cp[0] * x["rps"] / 1e4
                x["proxy_core_other_pct"] = round(sp["busy"] - own, 1)
            rounds.append(x)
        good = [x for x in rounds if x["rps"] is not None]
        if not good:
            problems.append(f"{t}/{m}: wrk produced no figures")
            res[t][m] = rounds[0]
            continue
        good.sort(key=lambda x: x["rps"])
        cell = dict(good[(len(good) - 1) // 2])  # the median round (the lower one of two)
        if runs > 1:
            cell["rps_rounds"] = [x["rps"] for x in rounds]
        res[t][m] = cell
        for k in ("p50_ms", "p99_ms", "requests"):
            if cell[k] is None:
                problems.append(f"{t}/{m}: no {k}")
        if cell["requests"] and cell["non2xx"] > 0.01 * cell["requests"]:
            problems.append(f"{t}/{m}: {cell['non2xx']} of {cell['requests']} answers not 2xx/3xx")

# HTTP/2 streams over one connection (h2load).
def parse_h2(path):
    try:
        t = open(path, errors="replace").read()
    except OSError:
        return None
    # h2load prints the duration in s, ms or us (format_duration): "finished in 999.93ms"
    # when a run ends just under a second (a CI run read no figures from that).
    m = re.search(r"finished in ([\d.]+)(?:us|ms|s), ([\d.]+) req/s", t)
    ok = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed", t)
    st = re.search(r"status codes: (\d+) 2xx", t)
    if not m or not ok:
        return None
    done = int(ok.group(3))
    cp = cpu_per_req(path, done) if done else [None, None]
    return {"streams_per_s": float(m.group(2)), "done": done, "failed": int(ok.group(5)),
            "2xx": int(st.group(1)) if st else 0, "cpu_us_per_stream": cp[0]}
h2 = {}
for t in targets[1:]:
    r = parse_h2(os.path.join(h2dir, t + ".txt"))
    if os.path.isdir(h2dir):
        if r is None:
            problems.append(f"{t}/h2: h2load produced no figures")
        elif r["done"] and r["2xx"] < 0.99 * r["done"]:
            problems.append(f"{t}/h2: {r['done'] - r['2xx']} of {r['done']} streams not 2xx")
    h2[t] = r

# TLS handshakes (openssl s_time): CPU per handshake -> handshakes/s per core.
hsdir = os.path.join(os.path.dirname(wrkdir), "hs")
hs, hs_setup = {}, {}
for t in targets[1:]:
    hs[t] = {}
    for hm in ("full-ecdsa", "full-rsa", "resumed"):
        got = []
        for r in range(1, runs + 1):
            p = os.path.join(hsdir, f"{t}.{hm}.{r}.txt")
            try:
                txt = open(p, errors="replace").read()
            except OSError:
                continue
            m = re.search(r"(\d+) connections in (\d+) real seconds", txt)
            if not m or int(m.group(1)) == 0:
                continue
            n, secs = int(m.group(1)), int(m.group(2))
            cpu = cpu_per_req(p, n)[0]
            if cpu:
                got.append({"handshakes": n, "seconds": secs, "cpu_us_per_handshake": cpu,
                            "handshakes_per_core_s": round(1e6 / cpu)})
        if not got:
            problems.append(f"{t}/handshakes {hm}: s_time produced no figures")
            continue
        got.sort(key=lambda x: x["cpu_us_per_handshake"])
        hs[t][hm] = dict(got[len(got) // 2])  # the median round
        hs[t][hm]["rounds_cpu_us"] = [x["cpu_us_per_handshake"] for x in got]
    try:
        proto, status_line = (open(os.path.join(hsdir, f"{t}.proto")).read().split("\n") + ["", ""])[:2]
        hs_setup[t] = {"protocol": proto, "hostless_http10_status": status_line}
        if " 200 " not in status_line + " ":
            problems.append(f"{t}/handshakes: s_time's request (HTTP/1.0, no Host) got '{status_line}'")
    except OSError:
        pass

# The direct runs leave the proxies' core idle: if it was busy then, something else ran there.
warnings = []
for m in ("keepalive", "close"):
    b = res["direct"][m].get("proxy_core_busy_pct")
    if b is not None and b > 10 and int(proxy_cpu) != int(wrk_cpu):
        warnings.append(f"core {proxy_cpu} was {b:.0f}% busy during the direct {m} run: "
                        "another process competes with the proxies; figures are skewed")
for t in targets[1:]:
    for m in modes:
        o = res[t].get(m, {}).get("proxy_core_other_pct")
        if o is not None and o > 15:
            warnings.append(f"{t}/{m}: {o:.0f}% of core {proxy_cpu} went to something other "
                            "than the proxy during its run: that figure is skewed")
if float(busy) > 10:
    warnings.append(f"the machine was {busy}% busy before the runs")

def ratio(a, b):
    return round(a / b, 3) if a and b else None

ratios = {}
for m in modes:
    s, h, n, d = (res[x].get(m, {}).get("rps") for x in ("sluice", "haproxy", "nginx", "direct"))
    ratios[m] = {"sluice_to_haproxy_rps": ratio(s, h), "sluice_to_nginx_rps": ratio(s, n),
                 "sluice_to_direct_rps": ratio(s, d), "haproxy_to_direct_rps": ratio(h, d),
                 "nginx_to_direct_rps": ratio(n, d),
                 "sluice_to_haproxy_cpu_per_req": ratio(res["sluice"][m].get("cpu_us_per_req"),
                                                        res["haproxy"][m].get("cpu_us_per_req")),
                 "sluice_to_nginx_cpu_per_req": ratio(res["sluice"][m].get("cpu_us_per_req"),
                                                      res["nginx"][m].get("cpu_us_per_req")),
                 "sluice_to_haproxy_p99": ratio(res["sluice"][m].get("p99_ms"), res["haproxy"][m].get("p99_ms")),
                 "sluice_to_nginx_p99": ratio(res["sluice"][m].get("p99_ms"), res["nginx"][m].get("p99_ms"))}

def git(*a):
    try:
        return subprocess.run(["git", "-C", root, *a], capture_output=True, text=True).stdout.strip()
    except Exception:
        return ""

cpu = ""
try:
    cpu = next(l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name"))
except Exception:
    pass
doc = {
    "benchmark": "l7",
    "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    "commit": git("rev-parse", "--short", "HEAD"),
    "tree_dirty": bool(git("status", "--porcelain", "--untracked-files=no")),
    "smoke": smoke,
    "duration_s": int(duration), "connections": int(conns), "wrk_threads": 1, "rounds": runs,
    "cores": {"wrk": int(wrk_cpu), "proxy": int(proxy_cpu), "backend": int(backend_cpu)},
    "machine": {"nproc": os.cpu_count(), "cpu": cpu, "kernel": platform.release(),
                "busy_pct_before": float(busy)},
    "versions": {"haproxy": version(["haproxy", "-v"]), "nginx": version(["nginx", "-v"]),
                 "wrk": version(["wrk", "-v"])},
    "backend": "nginx 1 worker, return 200 \"hello\\n\"",
    "sluice_args": os.environ.get("SLUICE_ARGS", ""),
    "results": res,
    "ratios": ratios,
    "h2": h2,
    "handshakes": hs,
    "handshake_setup": hs_setup,
    "handshake_ratios": {hm: {"sluice_to_haproxy_per_core": ratio((hs.get("sluice", {}).get(hm) or {}).get("handshakes_per_core_s"),
                                                                  (hs.get("haproxy", {}).get(hm) or {}).get("handshakes_per_core_s")),
                              "sluice_to_nginx_per_core": ratio((hs.get("sluice", {}).get(hm) or {}).get("handshakes_per_core_s"),
                                                                (hs.get("nginx", {}).get(hm) or {}).get("handshakes_per_core_s"))}
                         for hm in ("full-ecdsa", "full-rsa", "resumed")},
    "h2_ratios": {"sluice_to_haproxy_streams": ratio((h2.get("sluice") or {}).get("streams_per_s"),
                                                     (h2.get("haproxy") or {}).get("streams_per_s")),
                  "sluice_to_nginx_streams": ratio((h2.get("sluice") or {}).get("streams_per_s"),
                                                   (h2.get("nginx") or {}).get("streams_per_s"))},
    "tls": "self-signed ECDSA P-256 / RSA-2048, TLS 1.3 (wrk, h2load: OpenSSL 3 clients)",
    "problems": problems,
    "warnings": warnings,
}
os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
with open(out, "w") as f:
    json.dump(doc, f, indent=2, sort_keys=False)
    f.write("\n")
json.load(open(out))  # well formed

def f(v, fmt):
    return format(v, fmt) if v is not None else "-"

def rk0(t, m):
    return f(res[t].get(m, {}).get("rps"), ",.0f")
names = {"direct": "direct (ceiling)", "sluice": "sluice-l7", "haproxy": "haproxy", "nginx": "nginx proxy"}
print(f"{'target':<18} {'mode':<10} {'req/s':>10} {'p50 ms':>8} {'p99 ms':>8} {'non-2xx':>8} "
      f"{'sock err':>8} {'core'+wrk_cpu+' %':>8} {'core'+proxy_cpu+' %':>8} {'cpu us/req':>10}")
for m in modes:
    for t in targets:
        if m not in res[t]:
            continue
        c = res[t][m]
        se = sum(c["socket_errors"].values())
        print(f"{names[t]:<18} {m:<10} {f(c['rps'], ',.0f'):>10} {f(c['p50_ms'], '.3f'):>8} "
              f"{f(c['p99_ms'], '.3f'):>8} {c['non2xx']:>8} {se:>8} "
              f"{f(c['load_core_busy_pct'], '.0f'):>8} {f(c['proxy_core_busy_pct'], '.0f'):>8} "
              f"{f(c['cpu_us_per_req'], '.1f'):>10}")
for m in modes:
    r = ratios[m]
    print(f"ratios {m}: sluice/haproxy {f(r['sluice_to_haproxy_rps'], '.2f')}, sluice/nginx "
          f"{f(r['sluice_to_nginx_rps'], '.2f')} (req/s); p99 sluice/haproxy "
          f"{f(r['sluice_to_haproxy_p99'], '.2f')}, sluice/nginx {f(r['sluice_to_nginx_p99'], '.2f')}; "
          f"CPU per request sluice/haproxy {f(r['sluice_to_haproxy_cpu_per_req'], '.2f')}, sluice/nginx "
          f"{f(r['sluice_to_nginx_cpu_per_req'], '.2f')}")
for t in targets[1:]:
    r = h2.get(t)
    if r:
        print(f"{names[t]:<18} {'h2 (1 conn, 100 streams)':<26} {r['streams_per_s']:>12,.0f} streams/s "
              f"{f(r['cpu_us_per_stream'], '.1f'):>8} us CPU/stream")
for t in targets[1:]:
    for hm, r in hs.get(t, {}).items():
        print(f"{names[t]:<18} {'TLS 1.3 ' + hm:<26} {f(r['cpu_us_per_handshake'], '.0f'):>8} us CPU/handshake "
              f"-> {f(r['handshakes_per_core_s'], ',.0f')} handshakes/s per core ({r['handshakes']} in {r['seconds']} s)")
m = "tls-keepalive"
print(f"l7_bench: {m}: sluice {rk0('sluice', m)} req/s, haproxy {rk0('haproxy', m)}, nginx "
      f"{rk0('nginx', m)}; sluice/haproxy {f(ratios[m]['sluice_to_haproxy_rps'], '.2f')}, "
      f"sluice/nginx {f(ratios[m]['sluice_to_nginx_rps'], '.2f')}")
for hm in ("full-ecdsa", "full-rsa", "resumed"):
    r = doc["handshake_ratios"][hm]
    print(f"l7_bench: handshakes {hm} per core: sluice/haproxy {f(r['sluice_to_haproxy_per_core'], '.2f')}, "
          f"sluice/nginx {f(r['sluice_to_nginx_per_core'], '.2f')}")
print(f"json: {out}")
k, c = ratios["keepalive"], ratios["close"]
rk = lambda t, m: f(res[t][m].get("rps"), ".0f")
print(f"l7_bench: sluice {rk('sluice','keepalive')} req/s (keep-alive), haproxy {rk('haproxy','keepalive')}, "
      f"nginx {rk('nginx','keepalive')}, direct {rk('direct','keepalive')}; ratio sluice/haproxy "
      f"{f(k['sluice_to_haproxy_rps'], '.2f')}, sluice/nginx {f(k['sluice_to_nginx_rps'], '.2f')}; "
      f"connection-close: sluice {rk('sluice','close')}, haproxy {rk('haproxy','close')}, nginx "
      f"{rk('nginx','close')} (ratios {f(c['sluice_to_haproxy_rps'], '.2f')}, "
      f"{f(c['sluice_to_nginx_rps'], '.2f')}); p99 keep-alive sluice "
      f"{f(res['sluice']['keepalive'].get('p99_ms'), '.2f')} ms, haproxy "
      f"{f(res['haproxy']['keepalive'].get('p99_ms'), '.2f')} ms, nginx "
      f"{f(res['nginx']['keepalive'].get('p99_ms'), '.2f')} ms")
for w in warnings:
    print("l7_bench: WARNING " + w, file=sys.stderr)
if problems:
    for p in problems:
        print("l7_bench: PROBLEM " + p, file=sys.stderr)
    sys.exit(1)
EOF
