#include "report.h"

#include <sys/stat.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>

#include "stamp_fp.h"

namespace sluice::pktgen {

namespace {

std::string endpoint(uint8_t family, const Addr16& a, uint16_t port) {
    const std::string s = format_addr(family, a);
    return (family == 6 ? "[" + s + "]" : s) + ":" + std::to_string(port);
}

double rate(uint64_t n, double s) {
    return s > 0 ? static_cast<double>(n) / s : 0;
}

Json latency_json(const LatencyHistogram& h) {
    Json hist = Json::array();
    for (const auto& [lo, n] : h.log2_buckets()) {
        hist.push_back({{"from_ns", lo}, {"count", n}});
    }
    return {{"count", h.count()},          {"min", h.min()},           {"mean", h.mean()},
            {"p50", h.percentile(0.5)},    {"p90", h.percentile(0.9)}, {"p99", h.percentile(0.99)},
            {"p999", h.percentile(0.999)}, {"max", h.max()},           {"hist_log2", hist}};
}

Json destinations_json(const DestTable& d, uint64_t packets, size_t n) {
    Json top = Json::array();
    for (const DestTable::Entry& e : d.top(n)) {
        top.push_back(
            {{"dst", endpoint(e.family, e.addr, e.port)},
             {"proto", e.proto == dp::kProtoTcp ? "tcp" : "udp"},
             {"packets", e.packets},
             {"share",
              packets ? static_cast<double>(e.packets) / static_cast<double>(packets) : 0.0}});
    }
    return {{"distinct", d.distinct()}, {"overflow", d.overflow()}, {"top", top}};
}

// The per-stream section: each stream's tx (from the per-flow tx counts of its flow range),
// rx, loss, latency and destinations.
Json streams_json(const Profile& p, double offered_pps, double window_s, const TxTotals& tx,
                  const RxStats& rx, std::vector<StreamResult>& out) {
    Json arr = Json::array();
    for (size_t k = 0; k < p.streams.size() && k < rx.streams.size(); ++k) {
        const Stream& s = p.streams[k];
        const RxCounts& c = rx.streams[k];
        StreamResult sr;
        sr.name = s.name;
        sr.offered_pps = offered_pps * s.fraction;
        uint64_t seen = 0;
        for (uint32_t f = s.flow_base; f < s.flow_base + s.flows && f < rx.flow_rx.size(); ++f) {
            if (tx.flow_tx && f < tx.flow_tx->size()) {
                sr.tx += (*tx.flow_tx)[f];
            }
            seen += rx.flow_rx[f] ? 1 : 0;
        }
        sr.rx = c.packets;
        sr.tx_pps = rate(sr.tx, window_s);
        sr.rx_pps = rate(sr.rx, window_s);
        sr.lost = static_cast<int64_t>(sr.tx) - static_cast<int64_t>(sr.rx);
        sr.loss_ratio =
            sr.tx ? std::max(0.0, static_cast<double>(sr.lost) / static_cast<double>(sr.tx)) : 0;
        sr.p50_ns = c.latency.percentile(0.5);
        sr.p99_ns = c.latency.percentile(0.99);
        Json j;
        j["name"] = s.name;
        j["proto"] = proto_name(s.proto);
        j["fraction"] = s.fraction;
        j["offered_pps"] = sr.offered_pps;
        j["tx"] = {{"packets", sr.tx}, {"pps", sr.tx_pps}};
        j["rx"] = {{"packets", sr.rx},
                   {"bytes", c.bytes},
                   {"pps", sr.rx_pps},
                   {"mpps", sr.rx_pps / 1e6},
                   {"mbps", rate(c.bytes, window_s) * 8 / 1e6},
                   {"tunneled", c.tunneled}};
        j["lost"] = sr.lost;
        j["loss_ratio"] = sr.loss_ratio;
        j["reordered"] = c.reordered;
        j["duplicates"] = c.duplicates;
        j["latency_ns"] = latency_json(c.latency);
        j["flows"] = {{"configured", s.flows}, {"first", s.flow_base}, {"seen", seen}};
        j["destinations"] = destinations_json(c.dests, c.packets, 16);
        arr.push_back(std::move(j));
        out.push_back(std::move(sr));
    }
    return arr;
}

} // namespace

TrialResult summarize(const Profile& p, const std::string& label, double offered_pps,
                      double window_s, const TxTotals& tx, const RxStats& rx, bool replay) {
    TrialResult r;
    r.label = label;
    r.offered_pps = offered_pps;
    r.window_s = window_s;
    r.latency = rx.latency;
    const uint64_t rx_packets = rx.packets + (replay ? rx.unstamped : 0);
    const uint64_t rx_bytes = rx.bytes + (replay ? rx.unstamped_bytes : 0);
    r.tx_pps = rate(tx.packets, window_s);
    r.rx_pps = rate(rx_packets, window_s);
    r.lost = static_cast<int64_t>(tx.packets) - static_cast<int64_t>(rx_packets);
    r.loss_ratio = tx.packets ? static_cast<double>(r.lost) / static_cast<double>(tx.packets) : 0;
    if (r.loss_ratio < 0) {
        r.loss_ratio = 0; // duplicates from the device under test
    }
    Json& j = r.json;
    j["label"] = label;
    j["offered_pps"] = offered_pps;
    j["window_s"] = window_s;
    j["tx"] = {{"packets", tx.packets},
               {"bytes", tx.bytes},
               {"pps", r.tx_pps},
               {"mbps", rate(tx.bytes, window_s) * 8 / 1e6},
               {"ring_full", tx.refused},
               {"alloc_fail", tx.alloc_fail},
               {"pacing_behind", tx.behind},
               {"unsent", tx.unsent}};
    j["rx"] = {{"packets", rx_packets},
               {"bytes", rx_bytes},
               {"pps", r.rx_pps},
               {"mbps", rate(rx_bytes, window_s) * 8 / 1e6},
               {"stamped", rx.packets},
               {"tunneled", rx.tunneled},
               {"unstamped", rx.unstamped},
               {"outside_window", rx.outside_window},
               {"bad_flow", rx.bad_flow},
               {"arp_requests", rx.arp_requests},
               {"arp_replies_sent", rx.arp_replies},
               {"arp_ignored", rx.arp_ignored}};
    j["lost"] = r.lost;
    j["loss_ratio"] = r.loss_ratio;
    j["reordered"] = rx.reordered;
    j["duplicates"] = rx.duplicates;
    j["latency_ns"] = latency_json(rx.latency);
    // Per flow: summary over all flows, then the first per_flow_report flows one by one.
    uint64_t seen = 0;
    uint32_t mn = ~0u;
    uint32_t mx = 0;
    uint64_t sum = 0;
    for (uint32_t v : rx.flow_rx) {
        seen += v ? 1 : 0;
        mn = std::min(mn, v);
        mx = std::max(mx, v);
        sum += v;
    }
    Json per = Json::array();
    const uint32_t n_list =
        std::min<uint32_t>(p.per_flow_report, static_cast<uint32_t>(rx.flow_rx.size()));
    for (uint32_t f = 0; f < n_list; ++f) {
        // The flow's own stream (the profile's traffic for a single stream).
        const Stream* st = p.streams.empty() ? nullptr : &p.streams[p.stream_of(f)];
        const TrafficSpec& ts = st ? static_cast<const TrafficSpec&>(*st) : p;
        const FlowTuple t = FlowCursor::tuple_of(ts, f - (st ? st->flow_base : 0));
        Json e = {{"flow", f},
                  {"src", endpoint(ts.ip, t.src, t.sport)},
                  {"dst", endpoint(ts.ip, t.dst, t.dport)}};
        if (p.multi_stream && st) {
            e["stream"] = st->name;
        }
        if (tx.flow_tx && f < tx.flow_tx->size()) {
            e["tx"] = (*tx.flow_tx)[f];
        }
        e["rx"] = rx.flow_rx[f];
        per.push_back(e);
    }
    j["flows"] = {{"configured", rx.flow_rx.size()},
                  {"seen", seen},
                  {"rx_min", rx.flow_rx.empty() ? 0 : mn},
                  {"rx_max", mx},
                  {"rx_mean", rx.flow_rx.empty() ? 0.0
                                                 : static_cast<double>(sum) /
                                                       static_cast<double>(rx.flow_rx.size())},
                  {"per_flow", per}};
    j["destinations"] = destinations_json(rx.dests, rx.packets, 64);
    if (p.multi_stream) {
        j["streams"] = streams_json(p, offered_pps, window_s, tx, rx, r.streams);
    }
    return r;
}

std::string summary_line(const TrialResult& r) {
    char buf[256];
    std::snprintf(buf, sizeof buf,
                  "%s: offered %.3f Mpps, tx %.3f Mpps rx %.3f Mpps loss %.4f%% (%lld) p50 %.1f us "
                  "p99 %.1f us max %.1f us",
                  r.label.c_str(), r.offered_pps / 1e6, r.tx_pps / 1e6, r.rx_pps / 1e6,
                  100 * r.loss_ratio, static_cast<long long>(r.lost),
                  static_cast<double>(r.latency.percentile(0.5)) / 1e3,
                  static_cast<double>(r.latency.percentile(0.99)) / 1e3,
                  static_cast<double>(r.latency.max()) / 1e3);
    return buf;
}

std::vector<std::string> stream_lines(const TrialResult& r) {
    std::vector<std::string> out;
    for (const StreamResult& s : r.streams) {
        char buf[256];
        std::snprintf(buf, sizeof buf,
                      "%s [%s]: offered %.3f Mpps, tx %.3f Mpps rx %.3f Mpps loss %.4f%% (%lld) "
                      "p50 %.1f us p99 %.1f us",
                      r.label.c_str(), s.name.c_str(), s.offered_pps / 1e6, s.tx_pps / 1e6,
                      s.rx_pps / 1e6, 100 * s.loss_ratio, static_cast<long long>(s.lost),
                      static_cast<double>(s.p50_ns) / 1e3, static_cast<double>(s.p99_ns) / 1e3);
        out.emplace_back(buf);
    }
    return out;
}

Json profile_json(const Profile& p) {
    auto range = [&](const AddrRange& r) {
        return format_addr(r.family, r.lo) + "-" + format_addr(r.family, r.hi);
    };
    auto traffic = [&](const TrafficSpec& t, Json& j) {
        j["proto"] = proto_name(t.proto);
        j["ip"] = t.ip;
        j["src"] = range(t.src);
        j["dst"] = range(t.dst);
        j["sport"] = std::to_string(t.sport.lo) + "-" + std::to_string(t.sport.hi);
        j["dport"] = std::to_string(t.dport.lo) + "-" + std::to_string(t.dport.hi);
        j["flows"] = t.flows;
        if (t.imix.empty()) {
            j["size"] = t.size_pattern.empty() ? 0 : t.size_pattern[0];
        } else {
            Json m = Json::array();
            for (const auto& [sz, w] : t.imix) {
                m.push_back({sz, w});
            }
            j["imix"] = m;
        }
        j["mean_frame"] = t.mean_frame();
    };
    Json j;
    if (!p.multi_stream) {
        traffic(p, j);
    } else {
        Json arr = Json::array();
        for (const Stream& s : p.streams) {
            Json e;
            e["name"] = s.name;
            if (s.share >= 0) {
                e["share"] = s.share;
            }
            if (s.rate_pps >= 0) {
                e["rate_pps"] = s.rate_pps;
            }
            e["fraction"] = s.fraction;
            e["flow_first"] = s.flow_base;
            traffic(s, e);
            arr.push_back(std::move(e));
        }
        j["streams"] = arr;
        j["flows"] = p.total_flows();
        j["mean_frame"] = p.mix_mean_frame();
    }
    if (p.rate_pps >= 0) {
        j["rate_pps"] = p.rate_pps;
    }
    if (p.rate_percent >= 0) {
        j["rate_percent"] = p.rate_percent;
    }
    j["duration_s"] = p.duration_s;
    j["warmup_s"] = p.warmup_s;
    j["drain_s"] = p.drain_s;
    j["tx_port"] = p.tx_port;
    j["rx_port"] = p.rx_port;
    j["burst"] = p.burst;
    if (!p.pcap_replay.empty()) {
        j["pcap_replay"] = p.pcap_replay;
        j["replay_pps"] = p.replay_pps;
    }
    if (!p.arp_reply_for.empty()) {
        Json a = Json::array();
        for (const AddrRange& r : p.arp_reply_for) {
            a.push_back(range(r));
        }
        j["arp_reply_for"] = a;
    }
    if (p.has_search) {
        j["search"] = {{"min_pps", p.search.min_pps},
                       {"max_pps", p.search.max_pps},
                       {"loss_threshold", p.search.loss_threshold},
                       {"trial_s", p.search.trial_s},
                       {"precision_pps", p.search.precision_pps},
                       {"warmup_s", p.search.warmup_s}};
    }
    if (!p.sweep.empty()) {
        j["sweep"] = p.sweep;
    }
    if (!p.notes.empty()) {
        j["notes"] = p.notes;
    }
    return j;
}

Result<std::vector<std::string>> write_plots(const std::string& dir,
                                             const std::vector<const TrialResult*>& cdf_trials,
                                             const std::vector<TrialResult>& search,
                                             const std::vector<TrialResult>& sweep) {
    ::mkdir(dir.c_str(), 0755);
    std::vector<std::string> pngs;
    std::ostringstream gp;
    gp << "set terminal pngcairo size 900,560 noenhanced\nset grid\nset key left top\n";
    // Latency CDF.
    std::vector<std::string> curves;
    for (size_t i = 0; i < cdf_trials.size(); ++i) {
        const TrialResult& t = *cdf_trials[i];
        if (t.latency.count() == 0) {
            continue;
        }
        const std::string dat = dir + "/latency_cdf_" + std::to_string(i) + ".dat";
        std::ofstream f(dat);
        f << "# latency_us cumulative_fraction (" << t.label << ")\n";
        for (const auto& [ns, frac] : t.latency.cdf()) {
            f << static_cast<double>(ns) / 1e3 << " " << frac << "\n";
        }
        char title[160];
        std::snprintf(title, sizeof title, "%s (%.3f Mpps)", t.label.c_str(), t.tx_pps / 1e6);
        curves.push_back("'" + dat + "' using 1:2 with steps lw 2 title '" + title + "'");
    }
    if (!curves.empty()) {
        gp << "set output '" << dir << "/latency_cdf.png'\n"
           << "set title 'sluice-pktgen latency CDF'\nset logscale x\n"
           << "set xlabel 'latency (us, log scale)'\nset ylabel 'fraction of packets'\n"
           << "set yrange [0:1.02]\nset key right bottom\nplot ";
        for (size_t i = 0; i < curves.size(); ++i) {
            gp << (i ? ", " : "") << curves[i];
        }
        gp << "\nunset logscale x\nset yrange [*:*]\nset key left top\n";
        pngs.push_back(dir + "/latency_cdf.png");
    }
    if (!search.empty()) {
        const std::string dat = dir + "/rate_search.dat";
        std::ofstream f(dat);
        f << "# trial offered_mpps tx_mpps rx_mpps loss_percent passed\n";
        for (size_t i = 0; i < search.size(); ++i) {
            const TrialResult& t = search[i];
            f << i + 1 << " " << t.offered_pps / 1e6 << " " << t.tx_pps / 1e6 << " "
              << t.rx_pps / 1e6 << " " << 100 * t.loss_ratio << " " << (t.passed ? 1 : 0)
              << "\n";
        }
        gp << "set output '" << dir << "/rate_search.png'\n"
           << "set title 'zero-loss throughput search (binary search on the offered rate)'\n"
           << "set xlabel 'offered (Mpps)'\nset ylabel 'received (Mpps)'\n"
           << "set y2label 'loss (%)'\nset y2tics\nset ytics nomirror\n"
           << "set xrange [0:*]\nset yrange [0:*]\nset y2range [0:*]\n"
           << "plot '" << dat << "' using 2:4 with points pt 7 ps 1.5 title 'received',"
           << " '" << dat << "' using 2:3 with points pt 6 ps 1.5 title 'sent',"
           << " '" << dat << "' using 2:5 axes x1y2 with impulses lw 3 title 'loss %'\n"
           << "unset y2tics\nunset y2label\nset ytics mirror\nset xrange [*:*]\n"
           << "set yrange [*:*]\n";
        pngs.push_back(dir + "/rate_search.png");
    }
    if (!sweep.empty()) {
        const std::string dat = dir + "/latency_sweep.dat";
        std::ofstream f(dat);
        f << "# percent tx_mpps p50_us p99_us p999_us loss_percent\n";
        for (const TrialResult& t : sweep) {
            f << t.percent << " " << t.tx_pps / 1e6 << " "
              << static_cast<double>(t.latency.percentile(0.5)) / 1e3 << " "
              << static_cast<double>(t.latency.percentile(0.99)) / 1e3 << " "
              << static_cast<double>(t.latency.percentile(0.999)) / 1e3 << " "
              << 100 * t.loss_ratio << "\n";
        }
        gp << "set output '" << dir << "/latency_sweep.png'\n"
           << "set title 'latency under load'\nset xlabel 'load (% of the base rate)'\n"
           << "set ylabel 'latency (us, log scale)'\nset logscale y\nset xrange [0:100]\n"
           << "set yrange [*:*]\n"
           << "plot '" << dat << "' using 1:3 with linespoints lw 2 pt 7 title 'p50',"
           << " '" << dat << "' using 1:4 with linespoints lw 2 pt 7 title 'p99',"
           << " '" << dat << "' using 1:5 with linespoints lw 1 pt 6 title 'p99.9'\n";
        pngs.push_back(dir + "/latency_sweep.png");
    }
    if (pngs.empty()) {
        return pngs;
    }
    const std::string script = dir + "/plots.gp";
    {
        std::ofstream f(script);
        f << gp.str();
        if (!f) {
            return fail(Errc::Io, "cannot write " + script);
        }
    }
    const std::string cmd = "gnuplot '" + script + "' 2>'" + dir + "/gnuplot.log'";
    const int rc = std::system(cmd.c_str());
    if (rc != 0) {
        return fail(Errc::Io, "gnuplot failed (exit " + std::to_string(rc) + "; is gnuplot-nox "
                              "installed? see " + dir + "/gnuplot.log; data and " + script +
                              " are kept)");
    }
    return pngs;
}

} // namespace sluice::pktgen
