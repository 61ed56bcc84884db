#pragma once

/// @file
/// A worker lcore: the run-to-completion burst loop over its port queues. Reads the service
/// table snapshot once per burst (H4), hands each frame to lb_process(), transmits in
/// bursts, reports a QSBR quiescent state once per iteration (H5) and sweeps expired flows
/// a few buckets at a time. Thread: worker (one lcore per Worker).
///
/// Flow affinity with several workers: every frame of a flow, both directions, is handled
/// by the worker that owns it (lb_owner: the client -> VIP flow's hash; full-NAT return
/// traffic by its SNAT port, which the owner chose with port % workers == its index). A
/// worker polls its own receive queue (RSS or the kernel's fan-out spread frames over the
/// queues; a single-queue port is polled by worker 0 alone), hands frames it does not own
/// to their owner through a single-producer single-consumer ring, and takes what the
/// others hand it from its rings. Each worker transmits on its own queue of every port.

#include <array>
#include <atomic>
#include <cstdint>
#include <memory>
#include <vector>

#include <rte_rcu_qsbr.h>

struct rte_mbuf;
struct rte_ring;

#include "lb_fp.h"
#include "snapshot.h"

namespace sluice::dp {

inline constexpr uint16_t kBurst = 32;
static_assert(kBurst <= 64, "hit masks are uint64_t");
/// Worker lcores per dataplane (rings between every pair: kMaxWorkers^2 at most).
inline constexpr size_t kMaxWorkers = 16;

struct WorkerConfig {
    uint16_t port = 0;
    int rx_queue = 0;   ///< the port's receive queue this worker polls, or -1 (none)
    uint16_t tx_queue = 0;
    unsigned lcore = 0; ///< QSBR thread id
    int host_port = -1; ///< exception interface (a net_tap port) or -1: frames for the host
    uint16_t host_queue = 0; ///< this worker's queue pair on the exception interface
    /// Rings to the other workers (index = worker; own index unused) and from them; empty
    /// with one worker. Single producer, single consumer each.
    std::vector<rte_ring*> to;
    std::vector<rte_ring*> from;
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
    /// After stage 1 (several workers): frames of pkts[0, n) owned by another worker go to
    /// its ring; the rest stay, compacted with their frames[] and burst_ state. Returns how
    /// many stay.
    uint16_t dispatch(rte_mbuf** pkts, LbFrame* frames, uint16_t n, uint32_t now) noexcept;

    WorkerConfig cfg_;
    rte_rcu_qsbr* qsbr_;
    const Snapshot<ServiceTable>& services_;
    LbContext& ctx_;
    LbBurst burst_; ///< the current burst's per-frame state between the stages
    // Single writer (the worker), relaxed: statistics, nothing is published through them.
    alignas(64) std::array<std::atomic<uint64_t>, kLbCounterCount> published_{};
    alignas(64) std::array<std::atomic<uint64_t>, kDropReasonCount> published_drops_{};
};

} // namespace sluice::dp
