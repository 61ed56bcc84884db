#!/usr/bin/env bash
# The L4 fast-path benchmark (perf/l4_bench) at 2,000, 60,000 and 1,000,000 tracked flows, on
# 2 MiB hugepages as ../shared/PLATFORM.md asks of fast-path benchmarks (io-forward on
# net_null runs ~60 Mpps there, ~45 with --no-huge). Each invocation prints, beside sluice's
# figures, the io-forward baseline of the same run.
#
#   perf/l4_bench.sh [--build DIR] [--no-huge] [--seconds S] [--flows "N ..."] [--tag TAG]
#
# Writes perf/results/l4-<date>-<flows>-<tag>.json (tag: the commit, by default). Hugepages
# are mounted privately for the run; nr_hugepages is restored and the mount removed on exit.
# Needs root for the hugepages (else use --no-huge).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
BUILD=$ROOT/build
HUGE=1
SECONDS_PER_RUN=2
FLOWS="2000 60000 1000000"
TAG=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo local)
while [ $# -gt 0 ]; do
  case "$1" in
    --build) BUILD=$2; shift ;;
    --no-huge) HUGE=0 ;;
    --seconds) SECONDS_PER_RUN=$2; shift ;;
    --flows) FLOWS=$2; shift ;;
    --tag) TAG=$2; shift ;;
    *) echo "usage: $0 [--build DIR] [--no-huge] [--seconds S] [--flows \"N ...\"] [--tag TAG]" >&2; exit 2 ;;
  esac
  shift
done
BIN=$BUILD/perf/l4_bench
[ -x "$BIN" ] || { echo "l4_bench.sh: $BIN missing (ninja -C $BUILD perf/l4_bench)" >&2; exit 1; }

# shellcheck source=perf/hugepages.sh
. "$HERE/hugepages.sh"
W=$(mktemp -d /tmp/l4bench.XXXXXX)
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  huge_release
  rm -rf "$W"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if [ "$HUGE" = 1 ]; then
  # EAL -m 512, the established run's conntrack (2M slots, 128 MiB) and the SYN runs' (the
  # same, one at a time) come from the pool: 512 + 2 x 128 MiB + slack.
  huge_reserve 512 450 "$W/huge"
  MEM=(-m 512 --huge-dir "$HUGE_MNT")
else
  MEM=(--no-huge -m 1024)
fi

mkdir -p "$ROOT/perf/results"
for f in $FLOWS; do
  out=$ROOT/perf/results/l4-$(date +%F)-$f-$TAG.json
  "$BIN" --flows "$f" --seconds "$SECONDS_PER_RUN" --out "$out" -- -l 0 "${MEM[@]}" --no-pci \
    --vdev=net_null0,size=64 --file-prefix "l4bench$$" --log-level=lib.eal:warning
  echo "  -> $out"
done
