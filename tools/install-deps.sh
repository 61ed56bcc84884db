#!/usr/bin/env bash
# Installs every build and test dependency of sluice from Debian 12 packages.
# Idempotent: packages already present are left alone; safe to run repeatedly.
set -euo pipefail
pkgs=(
  # build
  g++ clang meson ninja-build pkg-config cmake
  # libraries (see docs/dependencies.md for why each one is here)
  libyaml-cpp-dev libexpected-dev libboost-program-options-dev libre2-dev
  nlohmann-json3-dev libcurl4-openssl-dev libssl-dev libnghttp2-dev
  libgtest-dev libgmock-dev libbenchmark-dev
  dpdk-dev libdpdk-dev libipsec-mb-dev libbpf-dev
  # fuzzing (libFuzzer runtime for clang 14)
  libclang-rt-14-dev
  # test tools
  iproute2 curl socat openssl python3 ethtool util-linux
  # HTTP/2 and gRPC clients of the L7 tests (h2load; gRPC client/servers; raw HTTP/2 frames)
  nghttp2-client python3-grpcio python3-h2
  # tests/deploy/check_deploy.py (structural check of the deploy/ manifests)
  python3-yaml
  # L7 peers for perf/l7_bench.sh (started by hand there; none auto-starts here)
  haproxy nginx-light wrk
  # sluice-pktgen --plot (PNG charts; perf/pktgen_l4_bench.sh)
  gnuplot-nox
  # the Linux kernel L4 baseline of perf/pktgen_l4_bench.sh (nftables DNAT + SNAT)
  nftables
)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  echo "install-deps: installing ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
echo "install-deps: all dependencies present"
