#!/usr/bin/env bash
# TLS bulk benchmark: sluice-l7 terminating HTTPS with OpenSSL's AES-GCM ("openssl") beside
# sluice-l7 --tls-ipsec-mb (records on Intel ipsec-mb through the sluice-imb provider, "imb"),
# in one invocation, on loopback. Large keep-alive downloads, where record crypto is a real
# part of the proxy's work: nginx serves static files of each SIZE as the backend, wrk
# (HTTP/1.1 over TLS 1.3, OpenSSL's default suite TLS_AES_256_GCM_SHA384) downloads them
# through each sluice-l7. The two variants alternate run by run (A B A B ...), ROUNDS times
# per size, so drifting load from other processes hits both alike; every run is reported.
#
#   perf/tls_bulk_bench.sh [--smoke] [--build DIR] [--out FILE] [--keep]
#
# Environment: SIZES (bytes, default "65536 1048576"), ROUNDS (default 5), DURATION (seconds
# per run, default 5), CONNS (wrk connections, default 8), WRK_CPU / PROXY_CPU / BACKEND_CPU
# (default 0 / 1 / 0), BUILD.
# --smoke: 1-second runs, one round (checks that both variants answer and report figures).
#
# Two clients per run: wrk (CONNS keep-alive connections, as many requests as it can in
# DURATION) and curl (one keep-alive connection, CURL_MIB MiB of sequential downloads: no
# batching across connections, the plainest per-request cost). Per run: req/s and the
# proxy's own CPU time per request (all its threads' run time from /proc/PID/task/*/schedstat,
# µs: what the proxy spends,
# less sensitive than req/s to other processes on the machine), and for wrk the share of the
# proxy's core it used and how busy that core was (others' load shows as the difference).
# Both sluice-l7 are pinned to PROXY_CPU with --workers 1, each with its own controlplane.
#
# PROFILE=1 (needs perf): afterwards one more wrk run per variant and size under
# `perf record -e cpu-clock` on the proxy, and the share of its samples per library:
# libcrypto (OpenSSL's AES-GCM, stripped assembly, plus EVP/BIO/ERR glue) and libIPSec_MB
# (ipsec-mb's GCM) against the kernel, libssl and sluice-l7 itself: where the proxy's time
# goes, which other processes' load moves far less than req/s.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${BUILD:-$ROOT/build}
SMOKE=0
OUT=""
KEEP=0
while (($#)); do
  case "$1" in
    --smoke) SMOKE=1 ;;
    --build) BUILD=$2; shift ;;
    --out) OUT=$2; shift ;;
    --keep) KEEP=1 ;;
    -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
    *) echo "tls_bulk_bench: unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done
BUILD=$(cd "$BUILD" && pwd)
SIZES=${SIZES:-"65536 1048576"}
ROUNDS=${ROUNDS:-5}
DURATION=${DURATION:-5}
CONNS=${CONNS:-8}
CURL_MIB=${CURL_MIB:-256}
WRK_CPU=${WRK_CPU:-0}
PROXY_CPU=${PROXY_CPU:-1}
BACKEND_CPU=${BACKEND_CPU:-0}
if [ "$SMOKE" = 1 ]; then ROUNDS=1; DURATION=1; CURL_MIB=8; fi
export PATH=$PATH:/usr/sbin
for t in nginx wrk taskset curl openssl python3; do
  command -v "$t" >/dev/null 2>&1 || { echo "tls_bulk_bench: $t missing: skipped"; exit 77; }
done
L7=$BUILD/dataplane/sluice-l7
CP=$BUILD/controlplane/sluice-controlplane
for b in "$L7" "$CP"; do [ -x "$b" ] || { echo "tls_bulk_bench: $b missing" >&2; exit 1; }; done

WORK=$(mktemp -d /tmp/sluice-tls-bulk.XXXXXX)
chmod 755 "$WORK"
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
  if [ "$rc" != 0 ] && [ "$rc" != 77 ]; then tail -n 15 "$WORK"/*.log >&2 2>/dev/null || true; fi
  if [ "$KEEP" = 1 ]; then echo "tls_bulk_bench: work dir kept: $WORK" >&2; else rm -rf "$WORK"; fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
die() { echo "tls_bulk_bench: $*" >&2; exit 1; }

read -r P_BACKEND P_OSSL P_IMB P_ADMIN < <(python3 -c '
import socket
ss=[socket.socket() for _ in range(4)]
for s in ss: s.bind(("127.0.0.1",0))
print(*[s.getsockname()[1] for s in ss])
for s in ss: s.close()')

# ---- backend: nginx with one static file per size (sendfile; keep-alive)
B=$WORK/nginx
mkdir -p "$B/www"
for s in $SIZES; do head -c "$s" /dev/urandom > "$B/www/f$s"; done
cat > "$B/nginx.conf" <<EOF
worker_processes 1;
pid $B/nginx.pid;
error_log $B/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  sendfile on;
  client_body_temp_path $B/body; proxy_temp_path $B/proxy; fastcgi_temp_path $B/fcgi;
  uwsgi_temp_path $B/uwsgi; scgi_temp_path $B/scgi;
  keepalive_requests 1000000;
  keepalive_timeout 60s;
  server {
    listen 127.0.0.1:$P_BACKEND reuseport backlog=4096;
    root $B/www;
    default_type application/octet-stream;
  }
}
EOF
taskset -c "$BACKEND_CPU" nginx -p "$B" -c "$B/nginx.conf" -e "$B/error.log" -g 'daemon off;' \
  > "$WORK/nginx.log" 2>&1 &
PIDS+=($!)

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$WORK/tls.key" \
  -out "$WORK/tls.crt" -days 2 -subj /CN=bench.example.com >/dev/null 2>&1

declare -A PORT=([openssl]=$P_OSSL [imb]=$P_IMB) PID
start_sluice() {  # VARIANT EXTRA-ARGS...
  local v=$1; shift
  local cfg=$WORK/$v/config sock=$WORK/$v/l7.sock
  mkdir -p "$cfg"
  cat > "$cfg/bench.yaml" <<EOF
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: sluice}
spec: {controllerName: sluice.dev/gateway-controller}
---
apiVersion: v1
kind: Secret
metadata: {name: cert, namespace: default}
type: kubernetes.io/tls
data:
  tls.crt: $(base64 -w0 "$WORK/tls.crt")
  tls.key: $(base64 -w0 "$WORK/tls.key")
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: bench, namespace: default}
spec:
  gatewayClassName: sluice
  listeners:
  - {name: https, protocol: HTTPS, port: ${PORT[$v]}, tls: {certificateRefs: [{name: cert}]}}
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
  - backendRefs: [{name: backend, port: 8080}]
EOF
  taskset -c "$PROXY_CPU" "$L7" --dp-socket "$sock" --workers 1 --stats-file '' "$@" \
    > "$WORK/sluice-$v.log" 2>&1 &
  PIDS+=($!); PID[$v]=$!
  for _ in $(seq 100); do [ -S "$sock" ] && break; sleep 0.05; done
  [ -S "$sock" ] || die "sluice-l7 ($v) did not open $sock"
  taskset -c "$WRK_CPU" "$CP" --config-dir "$cfg" --status-dir "$WORK/$v/status" \
    --dp-socket "$sock" --address 127.0.0.1 > "$WORK/cp-$v.log" 2>&1 &
  PIDS+=($!)
}
start_sluice openssl
start_sluice imb --tls-ipsec-mb --admin "127.0.0.1:$P_ADMIN"
grep -h "ipsec-mb" "$WORK/sluice-imb.log" >&2 || die "sluice-l7 --tls-ipsec-mb: no start line"
grep -q "on Intel ipsec-mb" "$WORK/sluice-imb.log" || die "ipsec-mb did not start (see above)"

ok() {  # VARIANT SIZE: the body arrives whole and equal to the file
  curl -sk --max-time 5 "https://127.0.0.1:${PORT[$1]}/f$2" -o "$WORK/check" 2>/dev/null &&
    cmp -s "$WORK/check" "$B/www/f$2"
}
for v in openssl imb; do
  for s in $SIZES; do
    for _ in $(seq 100); do ok "$v" "$s" && break; sleep 0.1; done
    ok "$v" "$s" || die "$v: /f$s does not come back intact"
  done
done

# CPU time of all the process's threads, ns (schedstat: finer than /proc/PID/stat's ticks).
cpu_ns() { cat /proc/"$1"/task/*/schedstat | awk '{s += $1} END {printf "%.0f\n", s}'; }
core_busy() {  # the proxy core's non-idle jiffies
  awk -v c="cpu$PROXY_CPU" '$1 == c {print $2+$3+$4+$7+$8+$9, $2+$3+$4+$5+$6+$7+$8+$9}' /proc/stat
}
RES=$WORK/results.txt
: > "$RES"
: > "$RES.curl"
echo "tls_bulk_bench: ${DURATION}s runs, $ROUNDS rounds, wrk -t1 -c$CONNS on core $WRK_CPU," \
     "sluice-l7 on core $PROXY_CPU, nginx on core $BACKEND_CPU" >&2
# Warm-up (page cache, TLS session setup paths).
for v in openssl imb; do
  taskset -c "$WRK_CPU" wrk -t1 -c"$CONNS" -d1s "https://127.0.0.1:${PORT[$v]}/f${SIZES%% *}" \
    >/dev/null 2>&1 || true
done
for s in $SIZES; do
  for r in $(seq "$ROUNDS"); do
    order=(openssl imb)
    ((r % 2 == 0)) && order=(imb openssl)
    for v in "${order[@]}"; do
      t0=$(cpu_ns "${PID[$v]}"); read -r b0 a0 < <(core_busy)
      out=$(taskset -c "$WRK_CPU" wrk -t1 -c"$CONNS" -d"${DURATION}s" --timeout 10s \
        "https://127.0.0.1:${PORT[$v]}/f$s" 2>&1) || true
      t1=$(cpu_ns "${PID[$v]}"); read -r b1 a1 < <(core_busy)
      python3 - "$v" "$s" "$r" "$t0" "$t1" "$b0" "$b1" "$a0" "$a1" "$out" >> "$RES" <<'PY'
import os, re, sys
v, size, rnd, t0, t1, b0, b1, a0, a1, out = sys.argv[1:]
m = re.search(r"(\d+) requests in ([\d.]+)(m?s)", out)
rps = re.search(r"Requests/sec:\s*([\d.]+)", out)
errs = re.search(r"Non-2xx.*|Socket errors.*", out)
n = int(m.group(1)) if m else 0
cpu_s = (int(t1) - int(t0)) / 1e9
secs = float(m.group(2)) / (1000 if m and m.group(3) == "ms" else 1) if m else 0
print(v, size, rnd, n, rps.group(1) if rps else 0,
      round(1e6 * cpu_s / n, 1) if n else 0,            # proxy CPU µs per request
      round(100 * cpu_s / secs, 1) if secs else 0,      # proxy's share of its core
      round(100 * (int(b1) - int(b0)) / max(1, int(a1) - int(a0)), 1),  # core busy %
      "errors:" + errs.group(0).replace(" ", "_") if errs else "ok")
PY
      tail -n1 "$RES" | awk '{printf "  wrk  %-7s %8s B round %s: %9s req/s  %8s us CPU/req  proxy %5s%% of core (core busy %s%%) %s\n", $1, $2, $3, $5, $6, $7, $8, $9}' >&2
      # curl: one connection, sequential keep-alive downloads.
      n=$(( (CURL_MIB << 20) / s )); ((n < 1)) && n=1
      args=()
      for _ in $(seq "$n"); do args+=(-o /dev/null "https://127.0.0.1:${PORT[$v]}/f$s"); done
      t0=$(cpu_ns "${PID[$v]}"); w0=$(date +%s.%N)
      taskset -c "$WRK_CPU" curl -sk --http1.1 "${args[@]}" || echo "curl failed" >&2
      t1=$(cpu_ns "${PID[$v]}"); w1=$(date +%s.%N)
      python3 - "$v" "$s" "$r" "$t0" "$t1" "$w0" "$w1" "$n" >> "$RES.curl" <<'PY'
import os, sys
v, size, rnd, t0, t1, w0, w1, n = sys.argv[1:]
n, secs = int(n), float(w1) - float(w0)
cpu_s = (int(t1) - int(t0)) / 1e9
print(v, size, rnd, n, round(n / secs, 1), round(1e6 * cpu_s / n, 1))
PY
      tail -n1 "$RES.curl" | awk '{printf "  curl %-7s %8s B round %s: %9s req/s  %8s us CPU/req (%s requests, one connection)\n", $1, $2, $3, $5, $6, $4}' >&2
    done
  done
done
if [ "${PROFILE:-0}" = 1 ] && command -v perf >/dev/null 2>&1; then
  : > "$RES.profile"
  for s in $SIZES; do
    for v in openssl imb; do
      perf record -q -e cpu-clock -F 2000 -p "${PID[$v]}" -o "$WORK/perf-$v-$s.data" \
        -- sleep "$DURATION" >/dev/null 2>&1 &
      ppid=$!
      taskset -c "$WRK_CPU" wrk -t1 -c"$CONNS" -d"${DURATION}s" \
        "https://127.0.0.1:${PORT[$v]}/f$s" >/dev/null 2>&1 || true
      wait "$ppid" || true
      perf report -i "$WORK/perf-$v-$s.data" --stdio --no-children --sort dso -n \
        2>/dev/null > "$WORK/perf-$v-$s.txt" || true
      python3 - "$v" "$s" "$WORK/perf-$v-$s.txt" >> "$RES.profile" <<'PY'
import re, sys
v, size, path = sys.argv[1:]
share = {}
for line in open(path, errors="replace"):
    m = re.match(r"\s*([\d.]+)%\s+(\d+)\s+(\S+)", line)
    if m:
        share[m.group(3)] = float(m.group(1))
get = lambda pat: round(sum(p for d, p in share.items() if pat in d), 1)
# libcrypto: OpenSSL's AES-GCM (its stripped assembly) plus the EVP/BIO/ERR glue both
# variants run; libIPSec_MB: ipsec-mb's GCM.
print(v, size, get("libcrypto"), get("IPSec_MB"), get("kernel"), get("libssl"), get("sluice-l7"))
PY
      tail -n1 "$RES.profile" | awk '{printf "  profile %-7s %8s B: libcrypto %5s%%  libIPSec_MB %5s%%  kernel %5s%%  libssl %5s%%  sluice-l7 %5s%% of the proxy'"'"'s samples\n", $1, $2, $3, $4, $5, $6, $7}' >&2
    done
  done
fi
for v in openssl imb; do kill -0 "${PID[$v]}" 2>/dev/null || die "sluice-l7 ($v) died"; done
# The provider did the records (its counter), and OpenSSL's run had none of it.
IMB_STATS=$(curl -s "http://127.0.0.1:$P_ADMIN/stats")
echo "tls_bulk_bench: imb variant: $IMB_STATS" >&2
python3 -c 'import json,sys; s=json.loads(sys.argv[1])["l7"]; sys.exit(0 if s["tls_imb_records_sealed"] > 0 else 1)' \
  "$IMB_STATS" || die "the imb variant sealed no records through ipsec-mb"

if [ -z "$OUT" ]; then
  if [ "$SMOKE" = 1 ]; then OUT=$WORK/tls-bulk-smoke.json; else
    mkdir -p "$ROOT/perf/results"
    OUT=$ROOT/perf/results/tls-bulk-$(date -u +%F)-$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo nogit).json
  fi
fi
python3 - "$RES" "$OUT" "$DURATION" "$CONNS" "$ROUNDS" "$SMOKE" "$CURL_MIB" <<'PY'
import json, statistics, subprocess, sys, time
res, out, duration, conns, rounds, smoke, curl_mib = sys.argv[1:]
profile = []
try:
    for line in open(res + ".profile"):
        v, size, crypto, imb, kernel, ssl, l7 = line.split()
        profile.append(dict(variant=v, size=int(size), libcrypto_pct=float(crypto),
                            libipsec_mb_pct=float(imb), kernel_pct=float(kernel),
                            libssl_pct=float(ssl), sluice_l7_pct=float(l7)))
except OSError:
    pass
curl_runs = []
for line in open(res + ".curl"):
    v, size, rnd, n, rps, us = line.split()
    curl_runs.append(dict(variant=v, size=int(size), round=int(rnd), requests=int(n),
                          rps=float(rps), cpu_us_per_req=float(us)))
runs = []
for line in open(res):
    v, size, rnd, n, rps, us, share, busy, err = line.split()
    runs.append(dict(variant=v, size=int(size), round=int(rnd), requests=int(n),
                     rps=float(rps), cpu_us_per_req=float(us), proxy_core_pct=float(share),
                     core_busy_pct=float(busy), errors=None if err == "ok" else err))
summary = {}
for client, rr in (("wrk", runs), ("curl", curl_runs)):
    for size in sorted({r["size"] for r in rr}):
        row = {}
        for v in ("openssl", "imb"):
            rs = [r for r in rr if r["size"] == size and r["variant"] == v]
            row[v] = {"rps_median": statistics.median(r["rps"] for r in rs),
                      "cpu_us_per_req_median": statistics.median(r["cpu_us_per_req"] for r in rs)}
        o, i = row["openssl"], row["imb"]
        row["rps_gain_pct"] = round(100 * (i["rps_median"] / o["rps_median"] - 1), 1) if o["rps_median"] else 0
        row["cpu_saving_pct"] = round(100 * (1 - i["cpu_us_per_req_median"] / o["cpu_us_per_req_median"]), 1) if o["cpu_us_per_req_median"] else 0
        summary[f"{client}-{size}"] = row
        print(f"{client:4} {size:>8} B: openssl {o['rps_median']:9.1f} req/s {o['cpu_us_per_req_median']:8.1f} us/req | "
              f"imb {i['rps_median']:9.1f} req/s {i['cpu_us_per_req_median']:8.1f} us/req | "
              f"req/s {row['rps_gain_pct']:+.1f}%, CPU/req {-row['cpu_saving_pct']:+.1f}% (medians)")
bad = [r for r in runs if r["requests"] == 0 or r["errors"]]
doc = {"benchmark": "tls_bulk", "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
       "git": subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True).stdout.strip(),
       "duration_s": float(duration), "conns": int(conns), "rounds": int(rounds),
       "curl_mib": int(curl_mib),
       "client": "wrk -t1 / curl, HTTP/1.1 over TLS 1.3 (TLS_AES_256_GCM_SHA384)",
       "summary": summary, "runs": runs, "curl_runs": curl_runs, "profile": profile}
json.dump(doc, open(out, "w"), indent=1)
print("tls_bulk_bench: wrote", out)
sys.exit(1 if bad else 0)
PY
