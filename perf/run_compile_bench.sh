#!/usr/bin/env bash
# Builds and runs the compile benchmark (10,000 HTTPRoutes by default).
#   perf/run_compile_bench.sh [compile_bench args...]   e.g. --routes 20000 --runs 7
# BUILD selects the build directory (default: build); JOBS the ninja parallelism (default 1).
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
if [ ! -f "$BUILD/build.ninja" ]; then
  meson setup "$BUILD" -Dbuildtype=debugoptimized
fi
# perf/ is picked up at configure time: reconfigure a build dir set up before it existed.
if ! ninja -C "$BUILD" -t targets all 2>/dev/null | grep -q '^perf/compile_bench:'; then
  meson setup --reconfigure "$BUILD" >/dev/null
fi
ninja -C "$BUILD" -j"${JOBS:-1}" perf/compile_bench
mkdir -p perf/results
has_out=0
for a in "$@"; do
  if [ "$a" = --out ]; then has_out=1; fi
done
if [ "$has_out" = 1 ]; then
  exec "$BUILD/perf/compile_bench" "$@"
fi
exec "$BUILD/perf/compile_bench" --out "perf/results/compile-$(date -u +%Y-%m-%d).json" "$@"
