#pragma once

/// @file
/// Immutable fast-path tables (services, Maglev rings, routes) handed from the dp-control
/// thread to worker lcores with DPDK QSBR RCU: build aside, publish with one pointer store,
/// free the old table after a grace period. Workers read one pointer per burst and report a
/// quiescent state once per loop iteration (STYLE H4, H5).

#include <atomic>
#include <memory>

#include <rte_rcu_qsbr.h>

namespace sluice::dp {

/// Single-writer, many-reader handle to an immutable, fully built table.
///
/// Thread: publish() -- dp-control only; blocks for one grace period.
///         read()    -- any registered worker lcore; wait-free.
/// Lifetime: a pointer from read() stays valid until the reading lcore's next
///         rte_rcu_qsbr_quiescent(). Flow state stores ids + generation, never this pointer.
template <typename T>
class Snapshot {
public:
    explicit Snapshot(rte_rcu_qsbr* qsbr) noexcept
        : qsbr_(qsbr) {}
    Snapshot(const Snapshot&) = delete;
    Snapshot& operator=(const Snapshot&) = delete;
    ~Snapshot() { delete current_.load(std::memory_order_relaxed); }

    [[nodiscard]] const T* read() const noexcept {
        // Acquire pairs with publish()'s release: every store that built the table is
        // visible to loads made through the returned pointer.
        return current_.load(std::memory_order_acquire);
    }

    void publish(std::unique_ptr<const T> next) noexcept {
        const T* old = current_.exchange(next.release(), std::memory_order_acq_rel);
        // Grace period: every online reader reports a quiescent state after the exchange,
        // so none still holds `old`. start()+check(wait) are header-inline, so sanitizers
        // see the synchronisation (rte_rcu_qsbr_synchronize lives in the uninstrumented
        // library).
        const uint64_t token = rte_rcu_qsbr_start(qsbr_);
        rte_rcu_qsbr_check(qsbr_, token, true);
        delete old;
    }

private:
    static_assert(std::atomic<const T*>::is_always_lock_free);
    std::atomic<const T*> current_{nullptr};
    rte_rcu_qsbr* const qsbr_;
};

} // namespace sluice::dp
