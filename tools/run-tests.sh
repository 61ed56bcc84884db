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
# Bounded fuzzing (libFuzzer needs clang: separate build dir): the manifest loader + compiler,
# the IR decoder, the packet path and the whole L4 decision. Each run is one more result line
# in the summary.
if [ "${SLUICE_SKIP_FUZZ:-0}" != 1 ]; then
  FUZZ=${BUILD}-fuzz
  if [ ! -f "$FUZZ/build.ninja" ]; then
    CXX=clang++ meson setup "$FUZZ" -Dfuzz=enabled -Dtests=disabled -Dperf=disabled \
      -Ddataplane=disabled -Dbuildtype=debugoptimized >/dev/null
  fi
  : > "$FUZZ/fuzz-result.json"
  for spec in loader_fuzz:corpus:${SLUICE_FUZZ_SECONDS:-30} ir_decode_fuzz:corpus-ir:15 \
              packet_fuzz:corpus-packet:30 lb_fuzz:corpus-lb:30 http_parser_fuzz:corpus-http:20 \
              client_hello_fuzz:corpus-hello:15 records_fuzz:corpus-records:15; do
    IFS=: read -r target seeds secs <<<"$spec"
    [ -f "tests/fuzz/$target.cc" ] || continue
    if ! ninja -C "$FUZZ" "tests/fuzz/$target" > "$FUZZ/$target.build.log" 2>&1; then
      # A target that does not build (clang warns where g++ did not) fails visibly here
      # instead of ending the whole run under set -e without a summary.
      tail -30 "$FUZZ/$target.build.log"
      echo "fuzz: $target FAILED to build"
      echo "{\"name\":\"$target\",\"result\":\"FAIL\"}" >> "$FUZZ/fuzz-result.json"
      rc=1
      continue
    fi
    mkdir -p "$FUZZ/$target-corpus"
    if "$FUZZ/tests/fuzz/$target" -max_total_time="$secs" -rss_limit_mb=2048 -max_len=65536 \
         -print_final_stats=1 "$FUZZ/$target-corpus" $( [ -d "tests/fuzz/$seeds" ] && echo "tests/fuzz/$seeds" ) \
         >"$FUZZ/$target.log" 2>&1; then
      echo "fuzz: $target ran ${secs}s without a crash"
      echo "{\"name\":\"$target\",\"result\":\"OK\"}" >> "$FUZZ/fuzz-result.json"
    else
      tail -40 "$FUZZ/$target.log"
      echo "fuzz: $target FAILED (crash input in $FUZZ)"
      echo "{\"name\":\"$target\",\"result\":\"FAIL\"}" >> "$FUZZ/fuzz-result.json"
      rc=1
    fi
  done
fi
# The L7 engine's end-to-end suite again on an ASan + UBSan build: a memory error, undefined
# behaviour or a leak at exit fails it (the test scans the engine's output).
if [ "${SLUICE_SKIP_ASAN:-0}" != 1 ]; then
  ASAN=${BUILD}-asan
  if [ ! -f "$ASAN/build.ninja" ]; then
    meson setup "$ASAN" -Dbuildtype=debug -Db_sanitize=address,undefined -Db_lundef=false \
      -Dtests=enabled -Dperf=disabled -Dfuzz=disabled >/dev/null
  fi
  ninja -C "$ASAN" dataplane/sluice-l7 >/dev/null
  : > "$ASAN/asan-result.json"
  # The packet path's unit tests too: they parse every prefix of valid frames from
  # exact-size heap copies, so a read one byte past a frame fails them here.
  for t in packet_test conntrack_test lb_test; do
    if ninja -C "$ASAN" "dataplane/l4/$t" >"$ASAN/$t.build.log" 2>&1 &&
       ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
         "$ASAN/dataplane/l4/$t" --gtest_brief=1 >"$ASAN/$t.log" 2>&1; then
      echo "asan: $t passed on the sanitizer build"
      echo "{\"name\":\"${t}_asan\",\"result\":\"OK\"}" >> "$ASAN/asan-result.json"
    else
      tail -40 "$ASAN/$t.build.log" "$ASAN/$t.log" 2>/dev/null
      echo "asan: $t FAILED on the sanitizer build"
      echo "{\"name\":\"${t}_asan\",\"result\":\"FAIL\"}" >> "$ASAN/asan-result.json"
      rc=1
    fi
  done
  for t in l7_http l7_h2 l7_tls_imb; do
    trc=0
    SLUICE_CP="$(pwd)/$BUILD/controlplane/sluice-controlplane" ASAN_OPTIONS=detect_leaks=1 \
      UBSAN_OPTIONS=print_stacktrace=1 \
      python3 "tests/integration/${t}_test.py" "$ASAN" >"$ASAN/$t.log" 2>&1 || trc=$?
    if [ "$trc" = 0 ]; then
      echo "asan: $t passed on the sanitizer build"
      echo "{\"name\":\"${t}_asan\",\"result\":\"OK\"}" >> "$ASAN/asan-result.json"
    elif [ "$trc" = 77 ]; then
      echo "asan: $t skipped on the sanitizer build ($(tail -1 "$ASAN/$t.log"))"
      echo "{\"name\":\"${t}_asan\",\"result\":\"SKIP\"}" >> "$ASAN/asan-result.json"
    else
      tail -60 "$ASAN/$t.log"
      echo "asan: $t FAILED on the sanitizer build"
      echo "{\"name\":\"${t}_asan\",\"result\":\"FAIL\"}" >> "$ASAN/asan-result.json"
      rc=1
    fi
  done
fi
python3 tools/test_summary.py "$BUILD/meson-logs/testlog.json" ${FUZZ:+"$FUZZ/fuzz-result.json"} \
  ${ASAN:+"$ASAN/asan-result.json"} || rc=1
exit $rc
