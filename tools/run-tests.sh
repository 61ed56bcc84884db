#!/usr/bin/env bash
# The README's test command: installs dependencies, configures, builds and runs every suite.
# Ends with the meson test summary and one line "N passed, M failed" so an empty run is visible.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/install-deps.sh
BUILD=${BUILD:-build}
if [ -f "$BUILD/build.ninja" ]; then
  meson setup --reconfigure "$BUILD" >/dev/null
else
  meson setup "$BUILD" -Dbuildtype=debugoptimized
fi
ninja -C "$BUILD"
rc=0
meson test -C "$BUILD" --print-errorlogs --num-processes 2 || rc=$?
# Bounded fuzzing of the manifest loader (libFuzzer needs clang: separate build dir).
if [ "${SLUICE_SKIP_FUZZ:-0}" != 1 ]; then
  FUZZ=${BUILD}-fuzz
  if [ ! -f "$FUZZ/build.ninja" ]; then
    CXX=clang++ meson setup "$FUZZ" -Dfuzz=enabled -Dtests=disabled -Dperf=disabled \
      -Ddataplane=disabled -Dbuildtype=debugoptimized >/dev/null
  fi
  ninja -C "$FUZZ" tests/fuzz/loader_fuzz >/dev/null
  mkdir -p "$FUZZ/corpus"
  cp -n tests/fuzz/corpus/* "$FUZZ/corpus/" 2>/dev/null || true
  if "$FUZZ/tests/fuzz/loader_fuzz" -max_total_time="${SLUICE_FUZZ_SECONDS:-60}" \
       -rss_limit_mb=2048 -max_len=65536 -print_final_stats=1 "$FUZZ/corpus" \
       tests/fuzz/corpus >"$FUZZ/fuzz.log" 2>&1; then
    echo "fuzz: loader_fuzz ran ${SLUICE_FUZZ_SECONDS:-60}s without a crash ($(grep -c . "$FUZZ/corpus"/* 2>/dev/null | wc -l) corpus files)"
    echo '{"name":"loader_fuzz","result":"OK"}' > "$FUZZ/fuzz-result.json"
  else
    tail -40 "$FUZZ/fuzz.log"
    echo "fuzz: loader_fuzz FAILED"
    echo '{"name":"loader_fuzz","result":"FAIL"}' > "$FUZZ/fuzz-result.json"
    rc=1
  fi
fi
python3 tools/test_summary.py "$BUILD/meson-logs/testlog.json" ${FUZZ:+"$FUZZ/fuzz-result.json"} || rc=1
exit $rc
