// mem_line_probe: what one random 64-byte line per packet costs on this machine, the way the
// L4 path touches its conntrack entries (prefetched a burst of 32 ahead, then read and
// written among ~100 cycles of other work per "packet"), beside the same loop over a 1 MiB
// region (in cache) in the same invocation. Rows: one line per packet; two lines on the same
// 4 KiB page; two lines on different pages of one 2 MiB page; two lines anywhere. Quoted in
// docs/adr/0015-l4-established-lanes.md (twelfth-session addendum). Not part of the build:
//
//   g++ -O2 -std=c++20 -o /tmp/mem_line_probe perf/mem_line_probe.cc
//   echo 200 | sudo tee /proc/sys/vm/nr_hugepages
//   sudo /tmp/mem_line_probe
//   echo 0 | sudo tee /proc/sys/vm/nr_hugepages
//
// Needs 128 free 2 MiB hugepages (MAP_HUGETLB; it says so and exits 1 otherwise).

#include <sys/mman.h>
#include <x86intrin.h>

#include <cstdint>
#include <cstdio>
#include <cstring>

namespace {

uint64_t g_rng = 88172645463325252ull;
uint64_t next_random() {
    g_rng ^= g_rng << 13;
    g_rng ^= g_rng >> 7;
    g_rng ^= g_rng << 17;
    return g_rng;
}

constexpr int kBurst = 32;
constexpr int kWork = 30; // dependent multiply-adds per packet (~100 cycles)
constexpr long kBursts = 300000;

/// Cycles per packet: each packet reads and writes line a and line b (b == a: one line).
/// `mode`: 0 one line, 1 b on a's 4 KiB page, 2 b on a's 2 MiB page but another 4 KiB page,
/// 3 b anywhere. `region`: bytes the lines are drawn from.
double run(uint8_t* base, size_t region, int mode, uint64_t& sink) {
    const size_t mask = region / 64 - 1;
    uint64_t ia[kBurst], ib[kBurst], acc = 1;
    const uint64_t t0 = __rdtsc();
    for (long it = 0; it < kBursts; ++it) {
        for (int i = 0; i < kBurst; ++i) {
            ia[i] = (next_random() & mask) * 64;
            switch (mode) {
            case 0: ib[i] = ia[i]; break;
            case 1: ib[i] = (ia[i] & ~size_t{4095}) | ((ia[i] + 2048) & 4095); break;
            case 2:
                ib[i] = (ia[i] & ~size_t{0x1FFFFF}) | ((ia[i] + 0x100000 + 4096) & 0x1FFFFF);
                break;
            default: ib[i] = (next_random() & mask) * 64; break;
            }
            __builtin_prefetch(base + ia[i], 1);
            __builtin_prefetch(base + ib[i], 1);
        }
        for (int i = 0; i < kBurst; ++i) {
            for (int k = 0; k < kWork; ++k) {
                acc = acc * 0x9e3779b97f4a7c15ull + static_cast<uint64_t>(k);
            }
            base[ia[i] + 8] = static_cast<uint8_t>(base[ia[i] + 8] + acc);
            base[ib[i] + 16] = static_cast<uint8_t>(base[ib[i] + 16] + acc);
        }
    }
    sink += acc;
    return static_cast<double>(__rdtsc() - t0) / static_cast<double>(kBursts * kBurst);
}

} // namespace

int main() {
    constexpr size_t kBytes = size_t{256} << 20;
    void* p = mmap(nullptr, kBytes, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_HUGETLB, -1, 0);
    if (p == MAP_FAILED) {
        std::perror("mem_line_probe: mmap of 256 MiB on 2 MiB hugepages");
        return 1;
    }
    std::memset(p, 1, kBytes);
    auto* base = static_cast<uint8_t*>(p);
    uint64_t sink = 0;
    const char* names[] = {"one line", "two lines, one 4 KiB page", "two lines, one 2 MiB page",
                           "two lines anywhere"};
    std::printf("mem_line_probe: cycles per packet (TSC), %d dependent multiply-adds each, "
                "lines prefetched a burst of %d ahead\n", kWork, kBurst);
    for (int mode = 0; mode < 4; ++mode) {
        const double cached = run(base, size_t{1} << 20, mode, sink);
        const double dram = run(base, kBytes, mode, sink);
        std::printf("  %-28s 1 MiB region %6.1f   256 MiB region %6.1f   extra %5.1f\n",
                    names[mode], cached, dram, dram - cached);
    }
    munmap(p, kBytes);
    return sink == 42 ? 2 : 0;
}
