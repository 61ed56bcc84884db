#pragma once

/// @file
/// Receive-side statistics of sluice-pktgen, on plain memory (no DPDK): the latency
/// histogram (log2 buckets split into 16 linear sub-buckets, about 6% resolution, for
/// percentiles; reported as plain log2 buckets), the per-destination counter (fixed-size
/// open addressing: no allocation per packet) and the per-trial receive counters.
/// Thread: the rx lcore writes; the main thread reads after the trial (or, for the live
/// progress line, reads the same lcore's values when it is that lcore).

#include <array>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "profile.h"

namespace sluice::pktgen {

class LatencyHistogram {
public:
    static constexpr uint32_t kSubBits = 4;
    static constexpr uint32_t kSub = 1u << kSubBits;
    static constexpr uint32_t kBuckets = kSub + (64 - kSubBits) * kSub;

    /// Records one latency in ns. Thread: the owning lcore; no allocation.
    void add(uint64_t ns) noexcept {
        ++counts_[index(ns)];
        ++count_;
        sum_ += ns;
        min_ = ns < min_ ? ns : min_;
        max_ = ns > max_ ? ns : max_;
    }
    void merge(const LatencyHistogram& o) noexcept;
    void clear() noexcept { *this = LatencyHistogram{}; }

    [[nodiscard]] uint64_t count() const noexcept { return count_; }
    [[nodiscard]] uint64_t max() const noexcept { return max_; }
    [[nodiscard]] uint64_t min() const noexcept { return count_ ? min_ : 0; }
    [[nodiscard]] double mean() const noexcept {
        return count_ ? static_cast<double>(sum_) / static_cast<double>(count_) : 0;
    }
    /// The q-quantile (0 < q <= 1): the upper edge of the bucket holding that rank, capped
    /// at the maximum seen. 0 when empty.
    [[nodiscard]] uint64_t percentile(double q) const noexcept;
    /// Non-empty log2 buckets: {lower edge ns (0, 1, 2, 4, ...), count}; the bucket
    /// starting at 2^k holds [2^k, 2^(k+1)).
    [[nodiscard]] std::vector<std::pair<uint64_t, uint64_t>> log2_buckets() const;
    /// The CDF at every non-empty fine bucket: {upper edge ns, cumulative fraction}.
    [[nodiscard]] std::vector<std::pair<uint64_t, double>> cdf() const;

    [[nodiscard]] static uint32_t index(uint64_t v) noexcept {
        if (v < kSub) {
            return static_cast<uint32_t>(v);
        }
        const auto k = static_cast<uint32_t>(63 - __builtin_clzll(v)); // >= kSubBits
        const auto sub = static_cast<uint32_t>((v >> (k - kSubBits)) & (kSub - 1));
        return kSub + (k - kSubBits) * kSub + sub;
    }
    /// Smallest value of bucket i; upper_edge(i) is the largest.
    [[nodiscard]] static uint64_t lower_edge(uint32_t i) noexcept;
    [[nodiscard]] static uint64_t upper_edge(uint32_t i) noexcept;

private:
    std::array<uint64_t, kBuckets> counts_{};
    uint64_t count_ = 0;
    uint64_t sum_ = 0;
    uint64_t min_ = ~uint64_t{0};
    uint64_t max_ = 0;
};

/// Packets per destination address:port as received (after a load balancer rewrote them).
/// Fixed capacity; destinations beyond it are counted in `overflow`.
class DestTable {
public:
    static constexpr uint32_t kSlots = 4096;
    static constexpr uint32_t kProbe = 32;
    struct Entry {
        uint8_t family = 0; ///< 0 = empty
        uint8_t proto = 0;
        uint16_t port = 0;
        Addr16 addr{};
        uint64_t packets = 0;
    };

    /// Counts one packet. Thread: the owning lcore; no allocation.
    void add(uint8_t family, uint8_t proto, const Addr16& addr, uint16_t port) noexcept {
        add_n(family, proto, addr, port, 1);
    }
    /// Adds another table's counts (a stream's into the totals). Thread: the owning lcore;
    /// no allocation.
    void merge(const DestTable& o) noexcept;
    void clear() noexcept;
    [[nodiscard]] uint64_t overflow() const noexcept { return overflow_; }
    [[nodiscard]] uint32_t distinct() const noexcept { return used_; }
    /// The `n` busiest destinations, most packets first. Thread: any (after the run).
    [[nodiscard]] std::vector<Entry> top(size_t n) const;

private:
    void add_n(uint8_t family, uint8_t proto, const Addr16& addr, uint16_t port,
               uint64_t n) noexcept;

    std::vector<Entry> slots_ = std::vector<Entry>(kSlots);
    uint64_t overflow_ = 0;
    uint32_t used_ = 0;
};

/// Receive counters of stamped packets from the measured window: those of one stream, and
/// (as the base of RxStats) those of the whole trial.
struct RxCounts {
    uint64_t packets = 0;    ///< stamped packets sent inside the measured window
    uint64_t bytes = 0;      ///< their frame bytes, FCS included
    uint64_t tunneled = 0;   ///< of `packets`: arrived DSR-encapsulated (IPIP/GUE)
    uint64_t reordered = 0;  ///< sequence went backwards within a flow
    uint64_t duplicates = 0; ///< same sequence number twice in a row
    LatencyHistogram latency;
    DestTable dests;

    /// Adds `o`'s counts to these. Thread: the owning lcore; no allocation.
    void add(const RxCounts& o) noexcept;
    /// Zeroes the counts (keeps the destination table's memory). Thread: the owning lcore.
    void clear() noexcept;
};

/// Receive counters of one trial. Per-flow and per-stream arrays are sized once, before
/// the trial. With several streams the rx lcore counts a stamped packet in its stream's
/// entry of `streams` only, and fold_streams() adds them up into the totals after the trial
/// (one latency and destination update per packet, not two).
struct RxStats : RxCounts {
    uint64_t unstamped = 0; ///< non-ARP frames without our stamp (pcap replay counts these)
    uint64_t unstamped_bytes = 0;
    uint64_t outside_window = 0; ///< stamped, sent during warm-up or a previous trial
    uint64_t bad_flow = 0;       ///< stamp with a flow index beyond the profile's
    uint64_t arp_requests = 0;
    uint64_t arp_replies = 0; ///< answers sent for arp_reply_for addresses
    uint64_t arp_ignored = 0; ///< requests for other addresses
    uint64_t first_rx_tsc = 0;
    uint64_t last_rx_tsc = 0;
    std::vector<uint32_t> flow_rx;       ///< packets per flow (stamp flow index)
    std::vector<uint32_t> flow_next_seq; ///< last sequence seen + 1 (0 = none yet)
    std::vector<RxCounts> streams;       ///< per stream; empty for a single-stream profile

    /// Zeroes everything for a trial of `flows` flows and `nstreams` per-stream entries
    /// (0: no per-stream counting). Thread: main, between trials (allocates once).
    void reset(uint32_t flows, size_t nstreams = 0);
    /// Adds every stream's counts into the totals: once, after the trial's drain.
    /// Thread: the rx lcore (or main after it), no allocation.
    void fold_streams() noexcept;
};

} // namespace sluice::pktgen
