// Conntrack micro-benchmark: a plain program (no Google Benchmark). Prints lookups/s for
// hits at N tracked flows (single lookups and bursts of 32 with prefetch), inserts/s into
// an empty table, and the same lookup loop over a std::unordered_map of the same keys in
// the same run, with the ratio. One thread; numbers are for comparison within a run.
//
// Usage: conntrack_bench [flows (default 1000000)] [capacity (default: flows)] [rounds]

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <unordered_map>
#include <vector>

#include "conntrack_fp.h"

namespace {

using namespace sluice::dp;
using Clock = std::chrono::steady_clock;

constexpr uint32_t kBurst = 32;

struct KeyHash {
    size_t operator()(const FlowKey& k) const noexcept { return flow_hash(k); }
};

double seconds_since(Clock::time_point t0) {
    return std::chrono::duration<double>(Clock::now() - t0).count();
}

std::vector<FlowKey> make_keys(uint32_t n) {
    std::vector<FlowKey> keys(n);
    std::mt19937_64 rng(42);
    for (uint32_t i = 0; i < n; ++i) {
        FlowKey& k = keys[i];
        k.family = (i % 4 == 0) ? 6 : 4;
        k.proto = (i % 8 == 0) ? ct_wire::kUdp : ct_wire::kTcp;
        const uint64_t r = rng();
        std::memcpy(k.src.data(), &r, 4);
        if (k.family == 6) {
            const uint64_t r2 = rng();
            std::memcpy(k.src.data() + 8, &r2, 8);
        }
        k.dst[0] = 10;
        k.dst[3] = static_cast<uint8_t>(i % 16);
        k.src_port = static_cast<uint16_t>(r >> 48);
        k.dst_port = 443;
    }
    return keys;
}

} // namespace

int main(int argc, char** argv) {
    const uint32_t flows =
        argc > 1 ? static_cast<uint32_t>(std::strtoul(argv[1], nullptr, 0)) : 1'000'000;
    const uint32_t capacity =
        argc > 2 ? static_cast<uint32_t>(std::strtoul(argv[2], nullptr, 0)) : flows;
    const int rounds = argc > 3 ? std::atoi(argv[3]) : 3;

    const std::vector<FlowKey> keys = make_keys(flows);
    auto created = ConnTrack::create({.capacity = capacity, .seed = 7});
    if (!created) {
        std::fprintf(stderr, "create: %s\n", created.error().message.c_str());
        return 1;
    }
    ConnTrack& t = **created;

    // Inserts into the empty table.
    auto t0 = Clock::now();
    std::vector<FlowKey> tracked;
    tracked.reserve(flows);
    for (uint32_t i = 0; i < flows; ++i) {
        const ConnValue v{.service = 1, .backend = i};
        if (t.insert(keys[i], flow_hash(keys[i]), 0, v, false).status == InsertStatus::Inserted) {
            tracked.push_back(keys[i]);
        }
    }
    const double ins_s = seconds_since(t0);
    std::printf("table: capacity %u (%zu MiB, %zu B/slot), %u flows offered, %zu tracked "
                "(%.2f%% Full)\n",
                t.capacity(), t.memory_bytes() >> 20, sizeof(ConnEntry), flows, tracked.size(),
                100.0 * (flows - tracked.size()) / flows);
    std::printf("insert:            %8.2f Minserts/s\n", flows / ins_s / 1e6);

    // Lookups in random order, so the table (64 MiB at 1M) is not cache resident.
    std::vector<FlowKey> order = tracked;
    std::shuffle(order.begin(), order.end(), std::mt19937_64(1));
    const size_t n = order.size();

    double best_single = 0, best_bulk = 0, best_map = 0;
    uint64_t sink = 0;
    for (int r = 0; r < rounds; ++r) {
        t0 = Clock::now();
        for (size_t i = 0; i < n; ++i) {
            ConnEntry* e = t.lookup(order[i], flow_hash(order[i]), 1);
            sink += e != nullptr ? e->value.backend : 0;
        }
        best_single = std::max(best_single, n / seconds_since(t0) / 1e6);

        // The worker's staged shape: hash + prefetch a burst, then lookup_bulk.
        t0 = Clock::now();
        uint64_t hashes[kBurst];
        ConnEntry* out[kBurst];
        size_t hits = 0;
        for (size_t i = 0; i < n; i += kBurst) {
            const size_t m = std::min<size_t>(kBurst, n - i);
            for (size_t j = 0; j < m; ++j) {
                hashes[j] = flow_hash(order[i + j]);
                t.prefetch(hashes[j]);
            }
            const uint64_t mask = t.lookup_bulk({order.data() + i, m}, {hashes, m}, 1, {out, m});
            hits += static_cast<size_t>(std::popcount(mask));
            sink += out[0] != nullptr ? out[0]->value.backend : 0;
        }
        best_bulk = std::max(best_bulk, n / seconds_since(t0) / 1e6);
        if (hits != n) {
            std::fprintf(stderr, "bulk hits %zu != %zu\n", hits, n);
            return 1;
        }
    }

    {
        std::unordered_map<FlowKey, ConnValue, KeyHash> map;
        map.reserve(tracked.size());
        for (size_t i = 0; i < tracked.size(); ++i) {
            map.emplace(tracked[i], ConnValue{.service = 1, .backend = static_cast<uint32_t>(i)});
        }
        for (int r = 0; r < rounds; ++r) {
            t0 = Clock::now();
            for (size_t i = 0; i < n; ++i) {
                auto it = map.find(order[i]);
                sink += it != map.end() ? it->second.backend : 0;
            }
            best_map = std::max(best_map, n / seconds_since(t0) / 1e6);
        }
    }

    std::printf("lookup (hit):      %8.2f Mlookups/s\n", best_single);
    std::printf("lookup_bulk (hit): %8.2f Mlookups/s  (bursts of %u, prefetched)\n", best_bulk,
                kBurst);
    std::printf("unordered_map:     %8.2f Mlookups/s  (same keys, same hash)\n", best_map);
    std::printf("ratio vs map:      single %.2fx, bulk %.2fx\n", best_single / best_map,
                best_bulk / best_map);
    std::printf("(checksum %llu)\n", static_cast<unsigned long long>(sink));
    return 0;
}
