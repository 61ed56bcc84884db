#!/usr/bin/env bash
# The README's first command: runs sluice on the embedded default, the seed scenario
# (examples/seed: the 2021 announcement's manifests verbatim + the companion objects), with
# real HTTPS traffic.
#
# Topology (network namespaces made here, removed on exit, also on failure):
#
#   sl<pid>-cli 10.77.1.2 ──veth── [sluice-dataplane: DPDK net_af_packet, --no-huge]
#   (curl)                           │ exception TAP sl-exc: 10.77.1.1 + VIP 10.77.1.10
#                                    └ sluice-l7 (HTTPS :443) ── 10.77.0.1 ──veth── sl<pid>-be
#                                         (sl<pid>-lb)                         10.77.0.11-15
#                                                                              echo backends
#
# The client's side of sluice is a DPDK port: every frame from the client goes through the
# dataplane worker, which hands what is not L4 VIP traffic (here: the HTTPS listener's) to
# the kernel through the exception TAP, where sluice-l7 terminates TLS and proxies.
# (Without DPDK installed the client leg is a plain veth and sluice-l7 alone serves it.)
#
# sluice-controlplane reads the seed (v1alpha1, verbatim) + companion.yaml, gives Gateway
# prod-web the address 10.77.1.10, and sends the IR to sluice-l7, which terminates TLS with
# admin-controlled-cert and proxies to the echo backends foo-auth, foo-home, foo-404, bar-v1
# and bar-v2. curl in the client namespace then checks what the announcement promises, the
# statuses and the counters; the same is checked again with the scenario written with the v1
# API (examples/seed-v1). Exits non-zero if any answer is wrong; leaves nothing behind.
#
# usage: tools/demo.sh [--keep]     (root: network namespaces; without root only the
#                                    compiled decisions are shown, via sluicectl explain)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
KEEP=0
[ "${1:-}" = "--keep" ] && KEEP=1
bash tools/install-deps.sh >/dev/null
BUILD=${BUILD:-build}
[ -f "$BUILD/build.ninja" ] || meson setup "$BUILD" -Dbuildtype=debugoptimized >/dev/null
ninja -C "$BUILD" controlplane/sluice-controlplane dataplane/sluice-l7 tools/sluicectl >/dev/null
DP=$BUILD/dataplane/sluice-dataplane
ninja -C "$BUILD" dataplane/sluice-dataplane >/dev/null 2>&1 || DP=""
CP=$BUILD/controlplane/sluice-controlplane
L7=$BUILD/dataplane/sluice-l7
CTL=$BUILD/tools/sluicectl
ECHO=$ROOT/tools/echo/sluice-echo

P=sl$$
work=$(mktemp -d /tmp/sluice-demo.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  for ns in cli lb be; do ip netns del "$P-$ns" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

fails=0
ok() { printf '  ok    %s\n' "$*"; }
wrong() { printf '  WRONG %s\n' "$*"; fails=$((fails + 1)); }

if [ "$(id -u)" != 0 ]; then
  echo "demo: not root, so no network namespaces: showing the compiled decisions only"
  mkdir -p "$work/config"
  cp examples/seed/*.yaml "$work/config/"
  for q in "foo.example.com /login" "foo.example.com /home" "foo.example.com /anything-else" \
           "bar.example.com /"; do
    set -- $q
    echo "== https://$1$2"
    "$CTL" explain "$work/config" --gateway default/prod-web --sni "$1" --host "$1" --path "$2" |
      sed -n '/^backends:/,$p'
  done
  exit 0
fi

# ---------------------------------------------------------------- topology
for ns in cli lb be; do
  ip netns add "$P-$ns"
  ip -n "$P-$ns" link set lo up
done
ip link add "$P-c" type veth peer name "$P-lc"
ip link set "$P-c" netns "$P-cli"
ip link set "$P-lc" netns "$P-lb"
ip link add "$P-b" type veth peer name "$P-lb"
ip link set "$P-b" netns "$P-be"
ip link set "$P-lb" netns "$P-lb"
ip -n "$P-cli" addr add 10.77.1.2/24 dev "$P-c"
ip -n "$P-cli" link set "$P-c" up
ip netns exec "$P-cli" ethtool -K "$P-c" tx off >/dev/null 2>&1 || true # PLATFORM.md: checksum trap
ip -n "$P-lb" link set "$P-lc" up
ip -n "$P-lb" addr add 10.77.0.1/24 dev "$P-lb"
ip -n "$P-lb" link set "$P-lb" up
KIF="$P-lc" # where the kernel has the client-side addresses
if [ -n "$DP" ]; then
  ip netns exec "$P-lb" taskset -c 1 "$DP" --dp-socket "$work/dp.sock" --snat 10.77.1.99 \
    --stats-file "$work/dp-stats.json" --exception-tap sl-exc --ct-capacity 65536 \
    -- -l 1 --no-huge -m 256 --no-pci --file-prefix "$P" --log-level=lib.eal:warning \
    --log-level=lib.telemetry:error --vdev="net_af_packet0,iface=$P-lc,framecnt=2048,qdisc_bypass=1" \
    >"$work/dataplane.log" 2>&1 &
  pids+=($!)
  for _ in $(seq 100); do ip -n "$P-lb" link show sl-exc >/dev/null 2>&1 && [ -S "$work/dp.sock" ] && break; sleep 0.1; done
  ip -n "$P-lb" link show sl-exc >/dev/null 2>&1 || { echo "demo: sluice-dataplane did not start"; cat "$work/dataplane.log"; exit 1; }
  KIF=sl-exc
  ip -n "$P-lb" link set sl-exc up
  ip netns exec "$P-lb" ethtool -K sl-exc tx off >/dev/null 2>&1 || true
  # net_af_packet only taps the veth: keep the kernel from answering on it directly.
  ip netns exec "$P-lb" sysctl -qw "net.ipv4.conf.$P-lc.arp_ignore=8" net.ipv4.conf.all.rp_filter=1 \
    "net.ipv4.conf.$P-lc.rp_filter=1"
fi
ip -n "$P-lb" addr add 10.77.1.1/24 dev "$KIF"
ip -n "$P-lb" addr add 10.77.1.10/32 dev "$KIF" # the Gateway's address (VIP)
for i in 11 12 13 14 15; do ip -n "$P-be" addr add "10.77.0.$i/24" dev "$P-b"; done
ip -n "$P-be" link set "$P-b" up

# ---------------------------------------------------------------- backends
backend() { # namespace service address
  ip netns exec "$P-be" python3 "$ECHO" --listen "$3:8080" --namespace "$1" --pod "$2-7d4b9c-x2x$((RANDOM % 10))" \
    >"$work/echo-$2.log" 2>&1 &
  pids+=($!)
}
backend foo foo-auth 10.77.0.11
backend foo foo-home 10.77.0.12
backend foo foo-404 10.77.0.13
backend bar bar-v1 10.77.0.14
backend bar bar-v2 10.77.0.15

# ---------------------------------------------------------------- sluice
mkdir -p "$work/config" "$work/status"
cp examples/seed/seed-v1alpha1.yaml examples/seed/companion.yaml "$work/config/"
ip netns exec "$P-lb" "$L7" --dp-socket "$work/l7.sock" --stats-file "$work/l7-stats.json" \
  --access-log "$work/access.log" >"$work/l7.log" 2>&1 &
pids+=($!)
for _ in $(seq 50); do [ -S "$work/l7.sock" ] && break; sleep 0.1; done
DPS=(--dp-socket "$work/l7.sock")
[ -n "$DP" ] && DPS+=(--dp-socket "$work/dp.sock")
"$CP" --config-dir "$work/config" --status-dir "$work/status" "${DPS[@]}" \
  --address 10.77.1.10 >"$work/controlplane.log" 2>&1 &
pids+=($!)

# The client trusts the demo certificate (companion.yaml's Secret).
python3 - "$work/config/companion.yaml" >"$work/ca.pem" <<'PY'
import base64, re, sys
text = open(sys.argv[1]).read()
print(base64.b64decode(re.search(r"tls\.crt: (\S+)", text).group(1)).decode(), end="")
PY

gw_status=$work/status/Gateway/default/prod-web.yaml
for _ in $(seq 100); do
  grep -A1 'type: Programmed' "$gw_status" 2>/dev/null | grep -q '"True"' && break
  sleep 0.1
done
for _ in $(seq 50); do
  ip netns exec "$P-be" bash -c 'for i in 11 12 13 14 15; do (exec 3<>/dev/tcp/10.77.0.$i/8080) 2>/dev/null || exit 1; done' && break
  sleep 0.1
done

CURL=(ip netns exec "$P-cli" curl -sS --max-time 10 --cacert "$work/ca.pem"
      --resolve foo.example.com:443:10.77.1.10 --resolve bar.example.com:443:10.77.1.10)

pod_of() { sed -n 's/.*"pod": *"\([^"]*\)".*/\1/p' | head -1; }

show_status() {
  echo "== status written by sluice-controlplane"
  for obj in Gateway/default/prod-web HTTPRoute/foo/foo-route HTTPRoute/bar/bar-route; do
    f="$work/status/$obj.yaml"
    echo "  $obj:"
    awk '/^  - name: /{print "     listener " $3 ":"} /- type: /{t=$3} /^ +status: /{st=$2} /^ +reason: /{gsub(/"/,"",st); printf "       %s=%s(%s)\n", t, st, $2}' "$f"
    for c in Accepted ResolvedRefs Programmed; do
      case $obj in HTTPRoute/*) [ $c = Programmed ] && continue ;; esac
      if grep -A1 "type: $c" "$f" | grep -q '"True"'; then :; else wrong "$obj $c is not True"; fi
    done
  done
}

check_traffic() {
  echo "== HTTPS through sluice (curl in the client namespace -> 10.77.1.10:443)"
  local want url got
  for pair in "foo.example.com/login foo-auth" "foo.example.com/home foo-home" \
              "foo.example.com/anything-else foo-404"; do
    set -- $pair
    url=https://$1
    got=$("${CURL[@]}" "$url" | pod_of || true)
    if [ "${got%%-7d4b9c*}" = "$2" ]; then ok "$(printf '%-40s -> %s (pod %s)' "$url" "$2" "$got")"
    else wrong "$(printf '%-40s -> %s, want %s' "$url" "${got:-no answer}" "$2")"; fi
  done
  # The canary split: 1,000 requests (several per connection, as browsers do).
  local args=() i
  for i in $(seq 1000); do
    [ "$i" = 1 ] || args+=(--next)
    args+=(--max-time 20 --cacert "$work/ca.pem" --resolve bar.example.com:443:10.77.1.10 https://bar.example.com/)
  done
  ip netns exec "$P-cli" curl -sS "${args[@]}" >"$work/split.out" 2>&1 || true
  local v1 v2
  v1=$(grep -o '"pod": *"bar-v1' "$work/split.out" | wc -l)
  v2=$(grep -o '"pod": *"bar-v2' "$work/split.out" | wc -l)
  if [ $((v1 + v2)) = 1000 ] && [ "$v1" -ge 860 ] && [ "$v1" -le 940 ]; then
    ok "$(printf '%-40s -> bar-v1 %d, bar-v2 %d of 1000 (90/10 split)' https://bar.example.com/ "$v1" "$v2")"
  else
    wrong "https://bar.example.com/ split: bar-v1 $v1, bar-v2 $v2 of 1000 (want about 900/100)"
  fi
  args=()
  for i in $(seq 100); do
    [ "$i" = 1 ] || args+=(--next)
    args+=(--max-time 20 --cacert "$work/ca.pem" --resolve bar.example.com:443:10.77.1.10 -H "env: canary" https://bar.example.com/)
  done
  ip netns exec "$P-cli" curl -sS "${args[@]}" >"$work/canary.out" 2>&1 || true
  v2=$(grep -o '"pod": *"bar-v2' "$work/canary.out" | wc -l)
  if [ "$v2" = 100 ]; then ok "$(printf '%-40s -> bar-v2 100 of 100' 'https://bar.example.com/ (env: canary)')"
  else wrong "https://bar.example.com/ with env: canary: bar-v2 $v2 of 100 (want 100)"; fi
}

echo "== seed scenario (examples/seed: v1alpha1 manifests verbatim + companion.yaml)"
show_status
check_traffic

echo "== live counters (sluicectl stats)"
sleep 1.2
if [ -n "$DP" ]; then
  echo "  sluice-dataplane (DPDK worker, --stats-file $work/dp-stats.json):"
  "$CTL" stats --stats-file "$work/dp-stats.json" | sed 's/^/  /' | grep -E " rx | tx |to_host|from_host|l7_listener|arp_" || true
fi
echo "  sluice-l7 (--stats-file $work/l7-stats.json):"
"$CTL" stats --stats-file "$work/l7-stats.json" | sed 's/^/  /' | grep -E "requests|status_2|status_[45]xx|tls_handshakes|upstream_connects|upstream_reused" || true

echo "== the same scenario with the v1 API (examples/seed-v1/seed-v1.yaml)"
cp examples/seed-v1/seed-v1.yaml "$work/config/seed.yaml.tmp"
rm "$work/config/seed-v1alpha1.yaml"
mv "$work/config/seed.yaml.tmp" "$work/config/seed-v1.yaml"
sleep 0.5
for _ in $(seq 100); do
  grep -q "generation 2" "$work/l7.log" 2>/dev/null && break
  sleep 0.1
done
show_status
check_traffic

if [ $KEEP = 1 ]; then
  trap - EXIT
  cat <<EOT
== left running. Try:
  ip netns exec $P-cli curl -v --cacert $work/ca.pem --resolve bar.example.com:443:10.77.1.10 https://bar.example.com/
  $CTL stats --stats-file $work/l7-stats.json
  $CTL status --status-dir $work/status
  $CTL explain $work/config --gateway default/prod-web --sni bar.example.com --host bar.example.com --path /
  tail -f $work/access.log
  edit $work/config/*.yaml and watch $work/status change
When done: kill ${pids[*]}; for n in cli lb be; do ip netns del $P-\$n; done; rm -rf $work
(--keep output lists these; run tools/demo.sh again any time: it uses fresh names)
EOT
fi
if [ $fails -ne 0 ]; then
  echo "demo: $fails answer(s) differ from the seed text"
  echo "--- sluice-l7 log"; tail -20 "$work/l7.log"
  echo "--- controlplane log"; tail -20 "$work/controlplane.log"
  exit 1
fi
echo "demo: every answer matches the seed text"
