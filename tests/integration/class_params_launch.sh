#!/usr/bin/env bash
# A GatewayClass's parameters (ports, lcores, exceptionInterface) drive the node's
# sluice-dataplane: the launcher (deploy/k8s/dataplane-daemonset.yaml does exactly this)
# turns the parameters ConfigMap, mounted as a directory, into sluice-dataplane arguments
# with `sluice-controlplane --dataplane-args`, and the dataplane then runs on the class's
# lcores, owns the class's ports and makes the class's exception interface. Invalid
# parameters are refused with the GatewayClass's message before anything starts.
#
# usage: class_params_launch.sh BUILD_DIR   (root; exit 77 without)
set -euo pipefail
BUILD=${1:?build dir}
BUILD=$(cd "$BUILD" && pwd)
DP=$BUILD/dataplane/sluice-dataplane
CP=$BUILD/controlplane/sluice-controlplane
[ "$(id -u)" -eq 0 ] || { echo "SKIP: needs root"; exit 77; }
[ "$(nproc)" -ge 2 ] || { echo "SKIP: needs 2 CPUs (lcores 0-1)"; exit 77; }

work=$(mktemp -d /tmp/sluice-classparams.XXXXXX)
tap=slc$$
tap=${tap:0:15}
dp_pid=""
cleanup() {
  [ -n "$dp_pid" ] && kill -TERM "$dp_pid" 2>/dev/null && wait "$dp_pid" 2>/dev/null || true
  ip link del "$tap" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
fail() {
  echo "FAIL: $*"
  [ -f "$work/dp.log" ] && { echo "--- dataplane log"; tail -20 "$work/dp.log"; }
  exit 1
}

# The ConfigMap as Kubernetes mounts it: a file per key, plus its ..data bookkeeping.
mkdir -p "$work/class/..data"
printf '0-1' > "$work/class/lcores"
printf 'net_null0,size=64\n' > "$work/class/ports"
printf '%s' "$tap" > "$work/class/exceptionInterface"
printf 'dsr-ipip' > "$work/class/forwardingMode"

mapfile -t args < <("$CP" --dataplane-args "$work/class")
want=(--exception-tap "$tap" -- -l 0-1 --vdev=net_null0,size=64)
[ "${args[*]}" = "${want[*]}" ] || fail "dataplane arguments '${args[*]}', want '${want[*]}'"
echo "ok: --dataplane-args: ${args[*]}"

"$DP" --dp-socket "$work/dp.sock" --snat 10.0.0.99 --stats-file "$work/stats.json" \
  "${args[@]}" --no-huge -m 512 --no-pci --file-prefix "cpl$$" --log-level=lib.eal:warning \
  >"$work/dp.log" 2>&1 &
dp_pid=$!
for _ in $(seq 100); do [ -f "$work/stats.json" ] && break; sleep 0.1; done
[ -f "$work/stats.json" ] || fail "sluice-dataplane did not come up"
grep -q "2 worker lcore(s)" "$work/dp.log" || fail "not 2 workers on lcores 0-1"
python3 - "$work/stats.json" <<'PY' || fail "stats file: workers not on lcores 0 and 1"
import json, sys
lcores = sorted(l["lcore"] for l in json.load(open(sys.argv[1]))["lcores"])
sys.exit(0 if lcores == [0, 1] else 1)
PY
echo "ok: sluice-dataplane runs its workers on the class's lcores 0-1"
ip link show "$tap" >/dev/null 2>&1 || fail "exception interface $tap missing"
echo "ok: the class's exception interface $tap exists"
kill -TERM "$dp_pid"
wait "$dp_pid" || fail "sluice-dataplane exit status $?"
dp_pid=""

# Invalid parameters: the launcher gets the GatewayClass's message and exit status 2.
printf '1-3,' > "$work/class/lcores"
set +e
out=$("$CP" --dataplane-args "$work/class" 2>&1)
rc=$?
set -e
[ "$rc" = 2 ] || fail "invalid lcores: exit $rc, want 2"
case "$out" in *'lcores "1-3," is not a DPDK lcore list'*) ;; *) fail "message: $out" ;; esac
echo "ok: invalid parameters refused: $out"
echo "PASS"
