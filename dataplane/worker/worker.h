#pragma once

/// @file
/// A worker lcore: the run-to-completion burst loop over one port queue. Reads the service
/// table snapshot once per burst (H4), hands each frame to lb_process(), transmits in
/// bursts, reports a QSBR quiescent state once per iteration (H5) and sweeps expired flows
/// a few buckets at a time. Thread: worker (one lcore per Worker).

#include <array>
#include <atomic>
#include <cstdint>
#include <memory>

#include <rte_rcu_qsbr.h>

#include "lb_fp.h"
#include "snapshot.h"

namespace sluice::dp {

inline constexpr uint16_t kBurst = 32;
static_assert(kBurst <= 64, "hit masks are uint64_t");

struct WorkerConfig {
    uint16_t port = 0;
    uint16_t queue = 0;
    unsigned lcore = 0; ///< QSBR thread id
    int host_port = -1; ///< exception interface (a net_tap port) or -1: frames for the host
};

class Worker {
public:
    Worker(const WorkerConfig& cfg, rte_rcu_qsbr* qsbr, const Snapshot<ServiceTable>& services,
           LbContext& ctx) noexcept
        : cfg_(cfg)
        , qsbr_(qsbr)
        , services_(services)
        , ctx_(ctx) {}

    /// Runs until stop is set. Thread: the worker lcore.
    void run(const std::atomic<bool>& stop) noexcept;

    /// Counters as last published by the worker (about every 100 ms), readable from any
    /// thread without touching the worker's own cache lines. Thread: any.
    [[nodiscard]] uint64_t counter(size_t i) const noexcept {
        return published_[i].load(std::memory_order_relaxed);
    }
    [[nodiscard]] uint64_t drops(size_t i) const noexcept {
        return published_drops_[i].load(std::memory_order_relaxed);
    }

private:
    void publish_counters() noexcept;

    WorkerConfig cfg_;
    rte_rcu_qsbr* qsbr_;
    const Snapshot<ServiceTable>& services_;
    LbContext& ctx_;
    // Single writer (the worker), relaxed: statistics, nothing is published through them.
    alignas(64) std::array<std::atomic<uint64_t>, kLbCounterCount> published_{};
    alignas(64) std::array<std::atomic<uint64_t>, kDropReasonCount> published_drops_{};
};

} // namespace sluice::dp
