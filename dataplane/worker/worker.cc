#include "worker.h"

#include <rte_cycles.h>
#include <rte_ethdev.h>
#include <rte_mbuf.h>
#include <rte_ring.h>

#include "lb_mbuf.h"

namespace sluice::dp {

void Worker::publish_counters() noexcept {
    for (size_t i = 0; i < kLbCounterCount; ++i) {
        published_[i].store(ctx_.counters[i], std::memory_order_relaxed);
    }
    for (size_t i = 0; i < kDropReasonCount; ++i) {
        published_drops_[i].store(ctx_.drops[i], std::memory_order_relaxed);
    }
}

namespace {

/// Frames for lb_burst_*: multi-segment mbufs (not on this path yet) are freed, the rest
/// compacted into pkts[] / frames[] from index `at`. Returns the new count.
uint16_t take_frames(rte_mbuf** pkts, LbFrame* frames, uint16_t at, uint16_t n) noexcept {
    uint16_t keep = at;
    for (uint16_t i = at; i < at + n; ++i) {
        rte_mbuf* m = pkts[i];
        if (m->nb_segs != 1) {
            rte_pktmbuf_free(m);
            continue;
        }
        frames[keep] = lb_frame_of(m);
        pkts[keep++] = m;
    }
    return keep;
}

} // namespace

uint16_t Worker::dispatch(rte_mbuf** pkts, LbFrame* frames, uint16_t n, uint32_t now) noexcept {
    const uint16_t self = ctx_.worker;
    const size_t workers = cfg_.to.size();
    // Frames per destination worker, in arrival order (their order within a flow is kept:
    // one ring per pair of workers, drained in order).
    rte_mbuf* out[kMaxWorkers][kBurst];
    uint16_t nout[kMaxWorkers] = {};
    uint16_t keep = 0;
    for (uint16_t i = 0; i < n; ++i) {
        const uint16_t owner = lb_burst_owner(ctx_, burst_, i, now);
        if (owner != self && owner < workers) {
            out[owner][nout[owner]++] = pkts[i];
            continue;
        }
        if (keep != i) {
            burst_.move(i, keep);
            frames[keep] = frames[i];
            pkts[keep] = pkts[i];
        }
        ++keep;
    }
    for (size_t w = 0; w < workers; ++w) {
        if (nout[w] == 0) {
            continue;
        }
        const unsigned sent = rte_ring_sp_enqueue_burst(cfg_.to[w], reinterpret_cast<void**>(out[w]),
                                                        nout[w], nullptr);
        ctx_.counters[static_cast<size_t>(LbCounter::Redirected)] += sent;
        for (unsigned i = sent; i < nout[w]; ++i) {
            rte_pktmbuf_free(out[w][i]); // the owner is behind: drop, as a full rx queue would
            ctx_.count(LbCounter::RedirectDrops);
        }
    }
    return keep;
}

void Worker::run(const std::atomic<bool>& stop) noexcept {
    rte_rcu_qsbr_thread_register(qsbr_, cfg_.lcore);
    rte_rcu_qsbr_thread_online(qsbr_, cfg_.lcore);
    const uint64_t hz_ms = rte_get_tsc_hz() / 1000;
    const bool several = cfg_.to.size() > 1;
    uint32_t last_publish = 0;
    rte_mbuf* tx[kBurst];
    rte_mbuf* host[kBurst];
    while (!stop.load(std::memory_order_relaxed)) {
        rte_mbuf* pkts[kBurst];
        LbFrame frames[kBurst];
        LbAction actions[kBurst];
        const auto now = static_cast<uint32_t>(rte_get_tsc_cycles() / hz_ms);
        uint16_t n = cfg_.rx_queue >= 0
                         ? rte_eth_rx_burst(cfg_.port, static_cast<uint16_t>(cfg_.rx_queue), pkts, kBurst)
                         : 0;
        // Stage 1 (lb_burst_parse): parse and hash every flow of the burst and prefetch its
        // conntrack buckets' signature lines (with several workers, frames of other
        // workers' flows leave for their rings here); stages 1b, 1c and 2 (lb_burst_run):
        // prefetch the matching entries (or a new flow's insert slot), look the services
        // up, then handle the frames. The burst's misses overlap (STYLE H3).
        n = take_frames(pkts, frames, 0, n);
        lb_burst_parse(ctx_, burst_, frames, 0, n);
        if (several) {
            n = dispatch(pkts, frames, n, now);
            for (size_t w = 0; w < cfg_.from.size() && n < kBurst; ++w) {
                if (cfg_.from[w] == nullptr) {
                    continue;
                }
                const uint16_t got = static_cast<uint16_t>(rte_ring_sc_dequeue_burst(
                    cfg_.from[w], reinterpret_cast<void**>(pkts + n), kBurst - n, nullptr));
                ctx_.counters[static_cast<size_t>(LbCounter::FromWorkers)] += got;
                const uint16_t total = take_frames(pkts, frames, n, got);
                lb_burst_parse(ctx_, burst_, frames, n, static_cast<uint16_t>(total - n));
                n = total;
            }
        }
        if (n > 0) {
            const ServiceTable* table = services_.read(); // one snapshot per burst
            if (table == nullptr) {
                rte_pktmbuf_free_bulk(pkts, n); // no tables yet
                n = 0;
            } else {
                lb_burst_run(ctx_, *table, burst_, frames, n, now, actions);
            }
            uint16_t ntx = 0, nhost = 0;
            for (uint16_t i = 0; i < n; ++i) {
                rte_mbuf* m = pkts[i];
                const LbAction a = actions[i];
                if (a == LbAction::Tx) {
                    lb_frame_to_mbuf(m, frames[i]);
                    tx[ntx++] = m;
                } else if (a == LbAction::Host && cfg_.host_port >= 0) {
                    host[nhost++] = m; // unchanged: the kernel gets the frame as received
                } else {
                    rte_pktmbuf_free(m);
                }
            }
            const uint16_t sent = ntx ? rte_eth_tx_burst(cfg_.port, cfg_.tx_queue, tx, ntx) : 0;
            for (uint16_t i = sent; i < ntx; ++i) {
                rte_pktmbuf_free(tx[i]);
            }
            if (nhost) {
                const uint16_t hs = rte_eth_tx_burst(static_cast<uint16_t>(cfg_.host_port),
                                                     cfg_.host_queue, host, nhost);
                for (uint16_t i = hs; i < nhost; ++i) {
                    rte_pktmbuf_free(host[i]);
                }
            }
        }
        if (cfg_.host_port >= 0) {
            // What the kernel sends (sluice-l7's answers and backend connections, management
            // traffic, its ARP/ND) leaves through the port as it is.
            const uint16_t hn = rte_eth_rx_burst(static_cast<uint16_t>(cfg_.host_port),
                                                 cfg_.host_queue, host, kBurst);
            if (hn) {
                ctx_.counters[static_cast<size_t>(LbCounter::FromHost)] += hn;
                const uint16_t hs = rte_eth_tx_burst(cfg_.port, cfg_.tx_queue, host, hn);
                for (uint16_t i = hs; i < hn; ++i) {
                    rte_pktmbuf_free(host[i]);
                }
            }
        }
        ctx_.ct->sweep(now, 8);
        if (now - last_publish >= 100) { // ms: the stats exporter reads these
            publish_counters();
            last_publish = now;
        }
        rte_rcu_qsbr_quiescent(qsbr_, cfg_.lcore);
    }
    publish_counters();
    rte_rcu_qsbr_thread_offline(qsbr_, cfg_.lcore);
    rte_rcu_qsbr_thread_unregister(qsbr_, cfg_.lcore);
}

} // namespace sluice::dp
