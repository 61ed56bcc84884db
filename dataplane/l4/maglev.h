#pragma once

/// @file
/// Maglev consistent hashing (Eisenbud et al., NSDI 2016) with weights. The lookup table is
/// a pure function of the backends' keys, weights and the table size, so every sluice node
/// given the same IR builds the same table and a fleet behind ECMP needs no shared state.
/// build() runs on dp-control (allocates); lookup is a single array read on workers.
/// Thread: build() any (control path); Table::pick() any, no allocation.

#include <cstdint>
#include <span>
#include <string_view>
#include <vector>

#include "prefetch.h"

namespace sluice::dp {

inline constexpr uint32_t kMaglevDefaultSize = 65537; ///< prime, ~100x a large backend set
inline constexpr uint32_t kMaglevNoBackend = 0xFFFFFFFFu;

struct MaglevBackend {
    uint64_t key = 0;    ///< stable identity (see maglev_key()); equal on every node
    uint32_t weight = 1; ///< 0 = never chosen
};

/// Stable 64-bit identity of a backend from its name (e.g. "ns/svc:port 10.0.0.1:8080").
[[nodiscard]] uint64_t maglev_key(std::string_view name) noexcept;

/// True when n is prime (table sizes must be prime so every skip visits every slot).
[[nodiscard]] bool is_prime(uint32_t n) noexcept;

class MaglevTable {
public:
    /// Builds the table: entry i holds the index (into `backends`) that owns slot i, or
    /// kMaglevNoBackend when no backend has weight. `size` must be prime; else the build
    /// falls back to kMaglevDefaultSize (callers validate user input before).
    static MaglevTable build(std::span<const MaglevBackend> backends,
                             uint32_t size = kMaglevDefaultSize);

    /// Backend index for a flow hash: slots()[flow_hash % size()], the remainder computed
    /// without a division (fastmod()). Thread: any; no allocation.
    [[nodiscard]] uint32_t pick(uint64_t flow_hash) const noexcept {
        return slots_.empty() ? kMaglevNoBackend : slots_[fastmod(flow_hash, m_, size())];
    }

    /// Prefetches the slot pick(flow_hash) reads (a burst's earlier stage, for a flow that
    /// is likely new: the table, 256 KiB at the default size, is rarely all in L2).
    void prefetch(uint64_t flow_hash) const noexcept {
        if (!slots_.empty()) {
            prefetch_read(&slots_[fastmod(flow_hash, m_, size())]);
        }
    }

    __extension__ using U128 = unsigned __int128;
    /// The reciprocal fastmod() needs for divisor d (> 0): ceil(2^128 / d).
    [[nodiscard]] static constexpr U128 fastmod_m(uint64_t d) noexcept {
        return ~U128{0} / d + 1;
    }
    /// a % d exactly, for every 64-bit a and d > 0, with m = fastmod_m(d): Lemire, Kaser and
    /// Kurz, "Faster remainder by direct computation" (2019), Theorem 1 with F = 128 bits.
    /// Three multiplies instead of a 64-bit DIV (35-90 cycles, which was half of a new
    /// flow's Maglev step); the result, and so every node's choice, is unchanged.
    [[nodiscard]] static constexpr uint64_t fastmod(uint64_t a, U128 m, uint64_t d) noexcept {
        const U128 low = m * a; // mod 2^128
        const U128 bottom = (static_cast<U128>(static_cast<uint64_t>(low)) * d) >> 64;
        const U128 top = static_cast<U128>(static_cast<uint64_t>(low >> 64)) * d;
        return static_cast<uint64_t>((bottom + top) >> 64);
    }
    [[nodiscard]] std::span<const uint32_t> slots() const noexcept { return slots_; }
    [[nodiscard]] uint32_t size() const noexcept { return static_cast<uint32_t>(slots_.size()); }

private:
    std::vector<uint32_t> slots_;
    U128 m_ = 0; ///< fastmod_m(size()), set with slots_
};

/// Fraction of slots whose owner differs between two tables of equal size, counting only
/// slots that `before` did not give to `removed` (the flows that did not have to move).
[[nodiscard]] double maglev_disruption(const MaglevTable& before, const MaglevTable& after,
                                       std::span<const uint32_t> before_to_after,
                                       uint32_t removed) noexcept;

} // namespace sluice::dp
