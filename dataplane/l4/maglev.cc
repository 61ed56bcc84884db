#include "maglev.h"

#include "mix.h"

#include <algorithm>

namespace sluice::dp {

namespace {

uint64_t mix(uint64_t x) noexcept { return splitmix64(x); }

} // namespace

uint64_t maglev_key(std::string_view name) noexcept {
    uint64_t h = 0xcbf29ce484222325ULL; // FNV-1a, then mixed
    for (char c : name) {
        h ^= static_cast<unsigned char>(c);
        h *= 0x100000001b3ULL;
    }
    return mix(h);
}

bool is_prime(uint32_t n) noexcept {
    if (n < 2) {
        return false;
    }
    for (uint32_t d = 2; static_cast<uint64_t>(d) * d <= n; ++d) {
        if (n % d == 0) {
            return false;
        }
    }
    return true;
}

MaglevTable MaglevTable::build(std::span<const MaglevBackend> backends, uint32_t size) {
    if (!is_prime(size)) {
        size = kMaglevDefaultSize;
    }
    MaglevTable t;
    t.slots_.assign(size, kMaglevNoBackend);
    t.m_ = fastmod_m(size);
    const size_t n = backends.size();
    uint32_t max_w = 0;
    for (const MaglevBackend& b : backends) {
        max_w = std::max(max_w, b.weight);
    }
    if (n == 0 || max_w == 0) {
        return t;
    }
    // Populate in key order, so the table depends on the set of backends, not on the
    // order a list happens to have.
    std::vector<uint32_t> order(n);
    for (uint32_t i = 0; i < n; ++i) {
        order[i] = i;
    }
    std::sort(order.begin(), order.end(), [&](uint32_t a, uint32_t b) {
        return backends[a].key < backends[b].key || (backends[a].key == backends[b].key && a < b);
    });
    std::vector<uint64_t> offset(n), skip(n), next(n, 0), credit(n, 0);
    for (size_t i = 0; i < n; ++i) {
        offset[i] = mix(backends[order[i]].key ^ 0x6d61676c65763031ULL) % size;
        skip[i] = mix(backends[order[i]].key ^ 0x736b697070657232ULL) % (size - 1) + 1;
    }
    // Weighted population: each round every backend earns `weight` credit and places one
    // entry per `max_w` credit, so shares follow the weights exactly while each backend
    // still walks its own permutation (which keeps the disruption minimal).
    uint32_t filled = 0;
    while (filled < size) {
        for (size_t i = 0; i < n && filled < size; ++i) {
            credit[i] += backends[order[i]].weight;
            while (credit[i] >= max_w && filled < size) {
                credit[i] -= max_w;
                uint64_t c = (offset[i] + next[i] * skip[i]) % size;
                while (t.slots_[c] != kMaglevNoBackend) {
                    ++next[i];
                    c = (offset[i] + next[i] * skip[i]) % size;
                }
                t.slots_[c] = order[i];
                ++next[i];
                ++filled;
            }
        }
    }
    return t;
}

double maglev_disruption(const MaglevTable& before, const MaglevTable& after,
                         std::span<const uint32_t> before_to_after, uint32_t removed) noexcept {
    if (before.size() != after.size() || before.size() == 0) {
        return 1.0;
    }
    uint64_t stayers = 0, moved = 0;
    for (uint32_t i = 0; i < before.size(); ++i) {
        const uint32_t b = before.slots()[i];
        if (b == removed || b == kMaglevNoBackend) {
            continue;
        }
        ++stayers;
        if (b >= before_to_after.size() || before_to_after[b] != after.slots()[i]) {
            ++moved;
        }
    }
    return stayers ? static_cast<double>(moved) / static_cast<double>(stayers) : 0.0;
}

} // namespace sluice::dp
