#pragma once

/// @file
/// An mbuf as the L4 path's LbFrame and back: the worker's receive loop and l4_bench use
/// these, so the frame the benchmark measures is shaped exactly as the worker shapes it.
/// Thread: the worker owning the mbuf.

#include <cstdint>

#include <rte_mbuf.h>

#include "lb_fp.h"

namespace sluice::dp {

/// The LbFrame of a single-segment mbuf: its data, the tailroom after it, the headroom
/// before it (DSR encapsulates into that).
[[nodiscard]] inline LbFrame lb_frame_of(rte_mbuf* m) noexcept {
    const uint32_t len = rte_pktmbuf_data_len(m);
    return {rte_pktmbuf_mtod(m, uint8_t*), len, len + rte_pktmbuf_tailroom(m),
            rte_pktmbuf_headroom(m)};
}

/// Gives a frame lb_burst_run() sent (LbAction::Tx) back to its mbuf: DSR encapsulation
/// lowered the headroom, so the frame starts earlier, and its length may have changed.
inline void lb_frame_to_mbuf(rte_mbuf* m, const LbFrame& f) noexcept {
    m->data_off = static_cast<uint16_t>(m->data_off - (rte_pktmbuf_headroom(m) - f.headroom));
    m->data_len = static_cast<uint16_t>(f.len);
    m->pkt_len = f.len;
}

} // namespace sluice::dp
