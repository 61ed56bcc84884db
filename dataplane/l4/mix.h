#pragma once

/// @file
/// splitmix64's finalizer: a fixed, well-mixed 64-bit hash step shared by Maglev (backend
/// permutations) and conntrack (seeds). Fixed forever: Maglev tables must agree between
/// nodes of different versions, so changing it is an IR format change. Thread: any.

#include <cstdint>

namespace sluice::dp {

[[nodiscard]] constexpr uint64_t splitmix64(uint64_t x) noexcept {
    x += 0x9e3779b97f4a7c15ULL;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}

} // namespace sluice::dp
