#pragma once

/// @file
/// splitmix64's finalizer: a fixed, well-mixed 64-bit hash step shared by Maglev (backend
/// permutations) and conntrack (seeds). Fixed forever: Maglev tables must agree between
/// nodes of different versions, so changing it is an IR format change. Thread: any.

#include <cstdint>
#include <cstring>

namespace sluice::dp {

[[nodiscard]] constexpr uint64_t splitmix64(uint64_t x) noexcept {
    x += 0x9e3779b97f4a7c15ULL;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}

/// Folds a 16-byte address into `seed` (hash-table keys of per-process tables: VIP lookup,
/// neighbours, endpoint ids; not part of any wire format).
[[nodiscard]] inline uint64_t mix_addr16(uint64_t seed, const uint8_t* a) noexcept {
    uint64_t h = seed;
    for (size_t i = 0; i < 16; i += 8) {
        uint64_t w;
        std::memcpy(&w, a + i, 8);
        h = (h ^ w) * 0xff51afd7ed558ccdULL;
        h ^= h >> 33;
    }
    return h;
}

} // namespace sluice::dp
