#pragma once

/// @file
/// sluice-pktgen results: one trial's figures summarised from the tx and rx counters, the
/// JSON document (schema in tools/pktgen/README.md) and the gnuplot charts (--plot).
/// Thread: main thread, after the trials (allocates freely).

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "profile.h"
#include "stats.h"

namespace sluice::pktgen {

using Json = nlohmann::ordered_json;

/// What the tx side counted in a trial's measured window.
struct TxTotals {
    uint64_t packets = 0;
    uint64_t bytes = 0; ///< frame bytes with FCS
    uint64_t refused = 0;    ///< tx_burst calls that left packets (ring full; retried)
    uint64_t alloc_fail = 0; ///< mbuf pool empty
    uint64_t behind = 0;     ///< pacing fell over 100 ms behind (that deficit dropped)
    uint64_t unsent = 0;     ///< built but never accepted by the port (freed at the end)
    const std::vector<uint32_t>* flow_tx = nullptr; ///< per flow, in the window
};

/// One stream's figures in a trial (multi-stream profiles).
struct StreamResult {
    std::string name;
    double offered_pps = 0; ///< its share of the trial's offered rate (0 = as fast as possible)
    uint64_t tx = 0;        ///< sent in the window
    uint64_t rx = 0;        ///< received from the window
    double tx_pps = 0;
    double rx_pps = 0;
    int64_t lost = 0;
    double loss_ratio = 0;
    uint64_t p50_ns = 0;
    uint64_t p99_ns = 0;
};

struct TrialResult {
    std::string label;
    double offered_pps = 0; ///< 0 = as fast as possible
    double percent = 0;     ///< sweep: share of the base rate
    double window_s = 0;
    double tx_pps = 0;
    double rx_pps = 0;
    int64_t lost = 0;
    double loss_ratio = 0;
    bool passed = false; ///< search: loss_ratio <= threshold
    LatencyHistogram latency;
    std::vector<StreamResult> streams; ///< empty unless the profile has `streams:`
    Json json;
};

/// Summarises one trial. `replay`: unstamped frames count as received. With several
/// streams, `rx.streams` holds each stream's counts (folded into the totals already) and
/// the JSON gets a `streams` section beside the totals.
[[nodiscard]] TrialResult summarize(const Profile& p, const std::string& label,
                                    double offered_pps, double window_s, const TxTotals& tx,
                                    const RxStats& rx, bool replay);

/// The one-line human summary of a trial (also the progress line's format).
[[nodiscard]] std::string summary_line(const TrialResult& r);
/// One line per stream of a multi-stream trial ("label [name]: ..."); empty otherwise.
[[nodiscard]] std::vector<std::string> stream_lines(const TrialResult& r);

/// The profile as the generator used it (after defaults and adjustments).
[[nodiscard]] Json profile_json(const Profile& p);

/// Writes gnuplot data + scripts into `dir` and runs gnuplot: latency_cdf.png (every trial
/// that has latencies), rate_search.png (offered vs received, loss) and latency_sweep.png
/// (p50/p99 per load). @return the PNG files written, or the reason it failed.
[[nodiscard]] Result<std::vector<std::string>> write_plots(
    const std::string& dir, const std::vector<const TrialResult*>& cdf_trials,
    const std::vector<TrialResult>& search, const std::vector<TrialResult>& sweep);

} // namespace sluice::pktgen
