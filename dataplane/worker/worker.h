#pragma once

/// @file
/// A worker lcore: the run-to-completion burst loop over one port queue. Reads the service
/// table snapshot once per burst (H4), hands each frame to lb_process(), transmits in
/// bursts, reports a QSBR quiescent state once per iteration (H5) and sweeps expired flows
/// a few buckets at a time. Thread: worker (one lcore per Worker).

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

private:
    WorkerConfig cfg_;
    rte_rcu_qsbr* qsbr_;
    const Snapshot<ServiceTable>& services_;
    LbContext& ctx_;
};

} // namespace sluice::dp
