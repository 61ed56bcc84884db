#!/usr/bin/env bash
# The README's first command: runs sluice on the embedded default, the seed scenario
# (examples/seed: the 2021 announcement's manifests verbatim + the companion objects).
#
# Today this runs the controlplane (the DPDK dataplane and L7 engine are issues 3-5): it
# starts sluice-controlplane on the seed, prints the status every object gets, and asks the
# compiled routing tables what each request of the announcement would hit. It exits non-zero
# when any answer differs from the seed text, and leaves nothing behind.
set -euo pipefail
cd "$(dirname "$0")/.."
KEEP=0
[ "${1:-}" = "--keep" ] && KEEP=1
bash tools/install-deps.sh >/dev/null
BUILD=${BUILD:-build}
[ -f "$BUILD/build.ninja" ] || meson setup "$BUILD" -Dbuildtype=debugoptimized >/dev/null
ninja -C "$BUILD" controlplane/sluice-controlplane tools/sluicectl >/dev/null

work=$(mktemp -d /tmp/sluice-demo.XXXXXX)
cp_pid=""
cleanup() {
  [ -n "$cp_pid" ] && kill "$cp_pid" 2>/dev/null && wait "$cp_pid" 2>/dev/null
  rm -rf "$work"
}
if [ $KEEP = 0 ]; then trap cleanup EXIT; fi

mkdir -p "$work/config" "$work/status"
cp examples/seed/*.yaml "$work/config/"
"$BUILD/controlplane/sluice-controlplane" --config-dir "$work/config" \
  --status-dir "$work/status" 2>"$work/controlplane.log" &
cp_pid=$!
for _ in $(seq 50); do
  [ -f "$work/status/Gateway/default/prod-web.yaml" ] && break
  sleep 0.1
done
ctl() { "$BUILD/tools/sluicectl" "$@"; }

echo "== status written by sluice-controlplane ($work/status)"
for obj in Gateway/default/prod-web HTTPRoute/foo/foo-route HTTPRoute/bar/bar-route; do
  f="$work/status/$obj.yaml"
  conds=$(awk '/^  - name: /{print "   listener " $3 ":"} /- type: /{t=$3} /^ +status: /{st=$2} /^ +reason: /{gsub(/"/,"",st); printf "     %s=%s(%s)\n", t, st, $2}' "$f")
  echo "  $obj:"; echo "$conds"
done

fails=0
check() { # description, expected backend pattern, explain args...
  local what=$1 want=$2; shift 2
  local out
  out=$(ctl explain "$work/config" --gateway default/prod-web "$@" 2>/dev/null)
  local got
  got=$(echo "$out" | awk '/^backends:/{b=1; next} b && /^  - /{print $2, $4, $5}' | tr '\n' ';')
  if echo "$got" | grep -qE "$want"; then
    printf '  ok    %-45s -> %s\n' "$what" "$got"
  else
    printf '  WRONG %-45s -> %s (want %s)\n' "$what" "$got" "$want"
    fails=$((fails + 1))
  fi
}
echo "== routing decisions (compiled tables, via sluicectl explain)"
check "https://foo.example.com/login" '^foo/foo-auth:8080' --sni foo.example.com --host foo.example.com --path /login
check "https://foo.example.com/home" '^foo/foo-home:8080' --sni foo.example.com --host foo.example.com --path /home
check "https://foo.example.com/anything-else" '^foo/foo-404:8080' --sni foo.example.com --host foo.example.com --path /anything-else
check "https://bar.example.com/ (split)" '^bar/bar-v1:8080 90 \(90%\),;bar/bar-v2:8080 10 \(10%\),;$' --sni bar.example.com --host bar.example.com --path /
check "https://bar.example.com/ env: canary" '^bar/bar-v2:8080 1 \(100%\),;$' --sni bar.example.com --host bar.example.com --path / --header env=canary

if [ $KEEP = 1 ]; then
  cat <<EOT
== left running (pid $cp_pid). Try:
  $BUILD/tools/sluicectl status --status-dir $work/status
  $BUILD/tools/sluicectl explain $work/config --gateway default/prod-web --sni bar.example.com --host bar.example.com --path /
  edit $work/config/*.yaml and watch $work/status change; kill $cp_pid && rm -rf $work when done
EOT
fi
if [ $fails -ne 0 ]; then
  echo "demo: $fails answer(s) differ from the seed text"
  exit 1
fi
echo "demo: every answer matches the seed text"
