#include "profile.h"

#include <arpa/inet.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <numeric>
#include <set>
#include <sstream>

#include <yaml-cpp/yaml.h>

#include "stamp_fp.h"

namespace sluice::pktgen {

namespace {

__extension__ typedef unsigned __int128 U128;

U128 to_u128(const Addr16& a) {
    U128 v = 0;
    for (uint8_t b : a) {
        v = (v << 8) | b;
    }
    return v;
}

Addr16 from_u128(U128 v) {
    Addr16 a{};
    for (int i = 15; i >= 0; --i) {
        a[static_cast<size_t>(i)] = static_cast<uint8_t>(v & 0xFF);
        v >>= 8;
    }
    return a;
}

std::string trim(std::string_view s) {
    size_t b = 0;
    size_t e = s.size();
    while (b < e && (s[b] == ' ' || s[b] == '\t')) {
        ++b;
    }
    while (e > b && (s[e - 1] == ' ' || s[e - 1] == '\t')) {
        --e;
    }
    return std::string(s.substr(b, e - b));
}

bool parse_one_addr(const std::string& text, uint8_t& family, Addr16& out) {
    out = {};
    if (text.find(':') != std::string::npos) {
        family = 6;
        return inet_pton(AF_INET6, text.c_str(), out.data()) == 1;
    }
    family = 4;
    return inet_pton(AF_INET, text.c_str(), out.data() + 12) == 1;
}

Result<double> number(const YAML::Node& n, const std::string& key, double lo, double hi) {
    double v = 0;
    try {
        v = n.as<double>();
    } catch (const YAML::Exception&) {
        return fail(Errc::Invalid, key + ": not a number");
    }
    if (!std::isfinite(v) || v < lo || v > hi) {
        std::ostringstream os;
        os << key << ": " << v << " is outside [" << lo << ", " << hi << "]";
        return fail(Errc::Invalid, os.str());
    }
    return v;
}

Result<std::string> text(const YAML::Node& n, const std::string& key) {
    if (!n.IsScalar()) {
        return fail(Errc::Invalid, key + ": expected a scalar");
    }
    return n.Scalar();
}

Result<PortRange> port_node(const YAML::Node& n, const std::string& key) {
    if (n.IsSequence()) {
        if (n.size() != 2) {
            return fail(Errc::Invalid, key + ": a list must be [first, last]");
        }
        auto a = number(n[0], key, 0, 65535);
        auto b = number(n[1], key, 0, 65535);
        if (!a || !b) {
            return fail(Errc::Invalid, key + ": ports are 0..65535");
        }
        return parse_port_range(std::to_string(static_cast<int>(*a)) + "-" +
                                std::to_string(static_cast<int>(*b)));
    }
    auto t = text(n, key);
    if (!t) {
        return tl::unexpected(t.error());
    }
    auto r = parse_port_range(*t);
    if (!r) {
        return fail(Errc::Invalid, key + ": " + r.error().message);
    }
    return r;
}

Result<AddrRange> addr_node(const YAML::Node& n, const std::string& key) {
    auto t = text(n, key);
    if (!t) {
        return tl::unexpected(t.error());
    }
    auto r = parse_addr_range(*t);
    if (!r) {
        return fail(Errc::Invalid, key + ": " + r.error().message);
    }
    return r;
}

#define PKTGEN_TRY(var, expr)                                                                    \
    auto var = (expr);                                                                           \
    if (!var) {                                                                                  \
        return tl::unexpected(var.error());                                                      \
    }

// The keys of one stream's traffic: at the top level of a profile without `streams:`, in
// each entry of `streams:` otherwise.
const std::set<std::string> kTrafficKeys = {"proto", "ip",   "src",  "dst",     "sport", "dport",
                                            "flows", "size", "imix", "src_mac", "ttl",   "seed"};

/// Parses the traffic keys of mapping `m` (other keys are the caller's). `replay`: frame
/// sizes are not raised (a replay sends the file's frames). `default_seed` is the seed when
/// `m` gives none. Adjustments are appended to `notes`.
Result<TrafficSpec> parse_traffic(const YAML::Node& m, bool replay, uint64_t default_seed,
                                  std::vector<std::string>& notes) {
    TrafficSpec p;
    p.seed = default_seed;
    if (m["proto"]) {
        PKTGEN_TRY(t, text(m["proto"], "proto"));
        if (*t == "udp") {
            p.proto = Proto::Udp;
        } else if (*t == "tcp") {
            p.proto = Proto::Tcp;
        } else if (*t == "syn") {
            p.proto = Proto::Syn;
        } else {
            return fail(Errc::Invalid, "proto: udp, tcp or syn, not '" + *t + "'");
        }
    }
    bool ip_given = false;
    if (m["ip"]) {
        PKTGEN_TRY(v, number(m["ip"], "ip", 4, 6));
        if (*v != 4 && *v != 6) {
            return fail(Errc::Invalid, "ip: 4 or 6");
        }
        p.ip = static_cast<uint8_t>(*v);
        ip_given = true;
    }
    if (m["src"]) {
        PKTGEN_TRY(r, addr_node(m["src"], "src"));
        p.src = *r;
    } else {
        p.src = *parse_addr_range(p.ip == 6 ? "fd00::1" : "10.1.0.1");
    }
    if (m["dst"]) {
        PKTGEN_TRY(r, addr_node(m["dst"], "dst"));
        p.dst = *r;
    } else {
        p.dst = *parse_addr_range(p.ip == 6 ? "fd00::100" : "10.0.0.100");
    }
    if (!ip_given) {
        p.ip = p.src.family;
    }
    if (p.src.family != p.ip || p.dst.family != p.ip) {
        return fail(Errc::Invalid, "src and dst must be IPv" + std::to_string(p.ip) +
                                       " addresses (ip: " + std::to_string(p.ip) + ")");
    }
    if (m["sport"]) {
        PKTGEN_TRY(r, port_node(m["sport"], "sport"));
        p.sport = *r;
    }
    if (m["dport"]) {
        PKTGEN_TRY(r, port_node(m["dport"], "dport"));
        p.dport = *r;
    }
    if (m["flows"]) {
        PKTGEN_TRY(v, number(m["flows"], "flows", 1, kMaxFlows));
        p.flows = static_cast<uint32_t>(*v);
    }
    if (p.flows > p.tuple_space()) {
        return fail(Errc::Invalid, "flows: " + std::to_string(p.flows) +
                                       " distinct 5-tuples asked, the src/dst/sport/dport "
                                       "ranges give only " +
                                       std::to_string(p.tuple_space()));
    }
    if (m["size"] && m["imix"]) {
        return fail(Errc::Invalid, "give size or imix, not both");
    }
    if (m["size"]) {
        PKTGEN_TRY(v, number(m["size"], "size", kMinFrame, kMaxFrame));
        p.size_pattern = {static_cast<uint16_t>(*v)};
    }
    if (m["imix"]) {
        const YAML::Node& mix = m["imix"];
        if (!mix.IsSequence() || mix.size() == 0) {
            return fail(Errc::Invalid, "imix: a list of [size, weight] pairs");
        }
        uint64_t total = 0;
        for (const auto& e : mix) {
            if (!e.IsSequence() || e.size() != 2) {
                return fail(Errc::Invalid, "imix: each entry is [size, weight]");
            }
            PKTGEN_TRY(sz, number(e[0], "imix size", kMinFrame, kMaxFrame));
            PKTGEN_TRY(w, number(e[1], "imix weight", 1, 1000));
            p.imix.emplace_back(static_cast<uint16_t>(*sz), static_cast<uint32_t>(*w));
            total += static_cast<uint64_t>(*w);
        }
        if (total > 10000) {
            return fail(Errc::Invalid, "imix: weights add up to more than 10000");
        }
        p.size_pattern = expand_imix(p.imix);
    }
    if (!replay) {
        const uint32_t min = p.min_frame();
        bool raised = false;
        for (uint16_t& sz : p.size_pattern) {
            if (sz < min) {
                sz = static_cast<uint16_t>(min);
                raised = true;
            }
        }
        if (raised) {
            notes.push_back("frame sizes below " + std::to_string(min) + " bytes raised to " +
                            std::to_string(min) + " (headers + the 16-byte stamp + FCS)");
        }
    }
    if (m["src_mac"]) {
        PKTGEN_TRY(t, text(m["src_mac"], "src_mac"));
        PKTGEN_TRY(mac, parse_mac(*t));
        p.src_mac = *mac;
        p.src_mac_set = true;
    }
    if (m["ttl"]) {
        PKTGEN_TRY(v, number(m["ttl"], "ttl", 1, 255));
        p.ttl = static_cast<uint8_t>(*v);
    }
    if (m["seed"]) {
        PKTGEN_TRY(v, number(m["seed"], "seed", 0, 1e18));
        p.seed = static_cast<uint64_t>(*v);
    }
    return p;
}

/// Integer send-order weights for positive `values` (shares or rates): the values
/// themselves when they are whole numbers adding up to at most kMaxMixWeight, otherwise
/// scaled to that total (at least 1 each); then divided by their gcd, so that the send
/// order is as short as it can be (50/50 -> 1/1).
std::vector<uint32_t> mix_weights(const std::vector<double>& values) {
    double sum = 0;
    bool whole = true;
    for (double v : values) {
        sum += v;
        whole = whole && v == std::floor(v);
    }
    std::vector<uint32_t> w;
    for (double v : values) {
        const double x = whole && sum <= kMaxMixWeight ? v : std::round(v / sum * kMaxMixWeight);
        w.push_back(std::max<uint32_t>(1, static_cast<uint32_t>(x)));
    }
    uint32_t g = 0;
    for (uint32_t x : w) {
        g = std::gcd(g, x);
    }
    for (uint32_t& x : w) {
        x /= g;
    }
    return w;
}

/// Parses `streams:` into p.streams, p.stream_pattern and (streams with their own rate)
/// p.rate_pps. The caller has checked that no traffic key sits at the top level.
Result<bool> parse_streams(const YAML::Node& list, const YAML::Node& root, Profile& p) {
    if (!list.IsSequence() || list.size() == 0) {
        return fail(Errc::Invalid, "streams: a non-empty list of mappings (see "
                                   "tools/pktgen/README.md)");
    }
    if (list.size() > kMaxStreams) {
        return fail(Errc::LimitExceeded, "streams: " + std::to_string(list.size()) +
                                             " streams, at most " + std::to_string(kMaxStreams));
    }
    static const std::set<std::string> kStreamOnly = {"name", "share", "rate_pps"};
    std::set<std::string> names;
    uint64_t flows = 0;
    size_t with_rate = 0;
    for (size_t i = 0; i < list.size(); ++i) {
        const YAML::Node& m = list[i];
        std::string where = "streams[" + std::to_string(i) + "]";
        if (!m.IsMap()) {
            return fail(Errc::Invalid, where + ": a mapping of stream keys");
        }
        for (const auto& kv : m) {
            const std::string k = kv.first.as<std::string>();
            if (!kTrafficKeys.count(k) && !kStreamOnly.count(k)) {
                return fail(Errc::Invalid, where + ": unknown key '" + k +
                                               "' (a stream takes the per-stream keys, name, "
                                               "share or rate_pps; see tools/pktgen/README.md)");
            }
        }
        Stream s;
        s.name = "stream" + std::to_string(i);
        if (m["name"]) {
            PKTGEN_TRY(t, text(m["name"], where + ".name"));
            if (t->empty()) {
                return fail(Errc::Invalid, where + ".name: empty");
            }
            s.name = *t;
        }
        where += " (" + s.name + ")";
        if (!names.insert(s.name).second) {
            return fail(Errc::Invalid, where + ": name '" + s.name + "' used twice");
        }
        std::vector<std::string> notes;
        auto t = parse_traffic(m, false, i + 1, notes);
        if (!t) {
            return fail(t.error().code, where + ": " + t.error().message);
        }
        for (const std::string& n : notes) {
            p.notes.push_back(where + ": " + n);
        }
        static_cast<TrafficSpec&>(s) = std::move(*t);
        if (m["share"] && m["rate_pps"]) {
            return fail(Errc::Invalid, where + ": give share or rate_pps, not both");
        }
        if (m["share"]) {
            PKTGEN_TRY(v, number(m["share"], where + ".share", 0, 1e9));
            if (*v <= 0) {
                return fail(Errc::Invalid, where + ".share: must be above 0 (a stream that "
                                                   "sends nothing: leave it out)");
            }
            s.share = *v;
        }
        if (m["rate_pps"]) {
            PKTGEN_TRY(v, number(m["rate_pps"], where + ".rate_pps", 0, 1e10));
            if (*v <= 0) {
                return fail(Errc::Invalid,
                            where + ".rate_pps: must be above 0 (for as fast as possible, give "
                                    "the top-level rate_pps: 0 and shares)");
            }
            s.rate_pps = *v;
            ++with_rate;
        }
        s.flow_base = static_cast<uint32_t>(flows);
        flows += s.flows;
        p.streams.push_back(std::move(s));
    }
    if (flows > kMaxFlows) {
        return fail(Errc::LimitExceeded,
                    "streams: " + std::to_string(flows) +
                        " flows in all; the stamp's 24-bit flow index allows " +
                        std::to_string(kMaxFlows) + " (each stream owns a range of it)");
    }
    if (with_rate != 0 && with_rate != p.streams.size()) {
        return fail(Errc::Invalid, "streams: give every stream a share (of the top-level rate) "
                                   "or every stream its own rate_pps, not a mix");
    }
    std::vector<double> values;
    double rate_sum = 0;
    for (const Stream& s : p.streams) {
        values.push_back(with_rate ? s.rate_pps : (s.share > 0 ? s.share : 1.0));
        rate_sum += with_rate ? s.rate_pps : 0;
    }
    if (with_rate) {
        if (root["rate_pps"] || root["rate_percent"]) {
            return fail(Errc::Invalid, "streams give their own rate_pps: no top-level rate_pps "
                                       "or rate_percent (the total is their sum)");
        }
        p.rate_pps = rate_sum;
    }
    const std::vector<uint32_t> w = mix_weights(values);
    uint64_t total = 0;
    std::vector<std::pair<uint16_t, uint32_t>> mix;
    for (size_t i = 0; i < w.size(); ++i) {
        mix.emplace_back(static_cast<uint16_t>(i), w[i]);
        total += w[i];
    }
    for (size_t i = 0; i < w.size(); ++i) {
        p.streams[i].weight = w[i];
        p.streams[i].fraction = static_cast<double>(w[i]) / static_cast<double>(total);
    }
    p.stream_pattern = expand_imix(mix);
    return true;
}

Result<Profile> parse_root(const YAML::Node& root) {
    if (!root.IsMap()) {
        return fail(Errc::Invalid, "a profile is a YAML mapping");
    }
    static const std::set<std::string> kKeys = {
        "rate_pps",        "rate_percent",  "duration_s",  "warmup_s", "drain_s",
        "dst_mac",         "tx_port",       "rx_port",     "burst",    "pcap_replay",
        "replay_pps",      "arp_reply_for", "arp_mac",     "search",   "sweep",
        "per_flow_report", "name",          "description", "streams"};
    for (const auto& kv : root) {
        const std::string k = kv.first.as<std::string>();
        if (!kKeys.count(k) && !kTrafficKeys.count(k)) {
            return fail(Errc::Invalid, "unknown key '" + k + "' (see tools/pktgen/README.md)");
        }
    }
    Profile p;
    const bool replay = static_cast<bool>(root["pcap_replay"]);
    if (replay) {
        PKTGEN_TRY(t, text(root["pcap_replay"], "pcap_replay"));
        p.pcap_replay = *t;
    }
    if (const YAML::Node& list = root["streams"]) {
        if (replay) {
            return fail(Errc::Invalid, "pcap_replay sends the file's frames: no streams");
        }
        for (const auto& kv : root) {
            const std::string k = kv.first.as<std::string>();
            if (kTrafficKeys.count(k)) {
                return fail(Errc::Invalid, "'" + k +
                                               "' is a per-stream key: with streams:, "
                                               "give it in each stream");
            }
        }
        PKTGEN_TRY(ok, parse_streams(list, root, p));
        p.multi_stream = true;
    } else {
        PKTGEN_TRY(t, parse_traffic(root, replay, 1, p.notes));
        Stream s;
        static_cast<TrafficSpec&>(s) = std::move(*t);
        s.name = "stream0";
        p.streams.push_back(std::move(s));
    }
    static_cast<TrafficSpec&>(p) = p.streams.front();
    if (root["rate_pps"] && root["rate_percent"]) {
        return fail(Errc::Invalid, "give rate_pps or rate_percent, not both");
    }
    if (root["rate_pps"]) {
        PKTGEN_TRY(v, number(root["rate_pps"], "rate_pps", 0, 1e10));
        p.rate_pps = *v;
    }
    if (root["rate_percent"]) {
        PKTGEN_TRY(v, number(root["rate_percent"], "rate_percent", 0.0001, 100));
        p.rate_percent = *v;
    }
    if (root["replay_pps"]) {
        PKTGEN_TRY(v, number(root["replay_pps"], "replay_pps", 0, 1e10));
        p.replay_pps = *v;
    }
    if (replay && p.replay_pps < 0 && p.rate_pps < 0) {
        return fail(Errc::Invalid, "pcap_replay needs replay_pps (0 = as fast as possible)");
    }
    if (!replay && p.rate_pps < 0 && p.rate_percent < 0 && !root["search"]) {
        return fail(Errc::Invalid, "give rate_pps (0 = as fast as possible) or rate_percent");
    }
    if (root["duration_s"]) {
        PKTGEN_TRY(v, number(root["duration_s"], "duration_s", 0.01, 86400));
        p.duration_s = *v;
    }
    if (root["warmup_s"]) {
        PKTGEN_TRY(v, number(root["warmup_s"], "warmup_s", 0, 3600));
        p.warmup_s = *v;
    }
    if (root["drain_s"]) {
        PKTGEN_TRY(v, number(root["drain_s"], "drain_s", 0, 60));
        p.drain_s = *v;
    }
    if (root["dst_mac"]) {
        PKTGEN_TRY(t, text(root["dst_mac"], "dst_mac"));
        if (*t == "arp") {
            if (p.ip != 4) {
                return fail(Errc::Invalid, std::string("dst_mac: arp needs ip: 4 (no neighbour "
                                                       "discovery)") +
                                               (p.multi_stream ? " in the first stream" : ""));
            }
            p.dst_mac_mode = Profile::DstMacMode::Arp;
        } else {
            PKTGEN_TRY(m, parse_mac(*t));
            p.dst_mac = *m;
        }
    }
    if (root["arp_mac"]) {
        PKTGEN_TRY(t, text(root["arp_mac"], "arp_mac"));
        PKTGEN_TRY(m, parse_mac(*t));
        p.arp_mac = *m;
        p.arp_mac_set = true;
    }
    for (const char* k : {"tx_port", "rx_port"}) {
        if (root[k]) {
            PKTGEN_TRY(v, number(root[k], k, 0, 1023));
            (std::string(k) == "tx_port" ? p.tx_port : p.rx_port) = static_cast<uint16_t>(*v);
        }
    }
    if (root["burst"]) {
        PKTGEN_TRY(v, number(root["burst"], "burst", 1, kMaxBurst));
        p.burst = static_cast<uint16_t>(*v);
    }
    if (root["per_flow_report"]) {
        PKTGEN_TRY(v, number(root["per_flow_report"], "per_flow_report", 0, 65536));
        p.per_flow_report = static_cast<uint32_t>(*v);
    }
    if (const YAML::Node& a = root["arp_reply_for"]) {
        if (!a.IsSequence()) {
            return fail(Errc::Invalid, "arp_reply_for: a list of IPv4 addresses or ranges");
        }
        for (const auto& e : a) {
            PKTGEN_TRY(r, addr_node(e, "arp_reply_for"));
            if (r->family != 4) {
                return fail(Errc::Invalid, "arp_reply_for: IPv4 only (ARP)");
            }
            p.arp_reply_for.push_back(*r);
        }
    }
    if (const YAML::Node& s = root["search"]) {
        if (!s.IsMap()) {
            return fail(Errc::Invalid, "search: a mapping");
        }
        static const std::set<std::string> kSearchKeys = {
            "min_pps", "max_pps", "loss_threshold", "trial_s", "precision_pps", "warmup_s"};
        for (const auto& kv : s) {
            if (!kSearchKeys.count(kv.first.as<std::string>())) {
                return fail(Errc::Invalid, "search: unknown key '" + kv.first.as<std::string>() + "'");
            }
        }
        SearchSpec& ss = p.search;
        if (s["min_pps"]) {
            PKTGEN_TRY(v, number(s["min_pps"], "search.min_pps", 1, 1e10));
            ss.min_pps = *v;
        }
        if (s["max_pps"]) {
            PKTGEN_TRY(v, number(s["max_pps"], "search.max_pps", 1, 1e10));
            ss.max_pps = *v;
        }
        if (s["loss_threshold"]) {
            PKTGEN_TRY(v, number(s["loss_threshold"], "search.loss_threshold", 0, 1));
            ss.loss_threshold = *v;
        }
        if (s["trial_s"]) {
            PKTGEN_TRY(v, number(s["trial_s"], "search.trial_s", 0.01, 3600));
            ss.trial_s = *v;
        }
        if (s["precision_pps"]) {
            PKTGEN_TRY(v, number(s["precision_pps"], "search.precision_pps", 1, 1e10));
            ss.precision_pps = *v;
        }
        if (s["warmup_s"]) {
            PKTGEN_TRY(v, number(s["warmup_s"], "search.warmup_s", 0, 3600));
            ss.warmup_s = *v;
        }
        if (ss.min_pps >= ss.max_pps) {
            return fail(Errc::Invalid, "search: min_pps must be below max_pps");
        }
        p.has_search = true;
    }
    if (const YAML::Node& s = root["sweep"]) {
        if (!s.IsSequence()) {
            return fail(Errc::Invalid, "sweep: a list of percentages");
        }
        for (const auto& e : s) {
            PKTGEN_TRY(v, number(e, "sweep", 0.01, 1000));
            p.sweep.push_back(*v);
        }
    }
#undef PKTGEN_TRY
    return p;
}

} // namespace

Addr16 AddrRange::at(uint64_t k) const noexcept {
    return from_u128(to_u128(lo) + k);
}

bool AddrRange::contains(uint8_t fam, const Addr16& a) const noexcept {
    if (fam != family) {
        return false;
    }
    const U128 v = to_u128(a);
    return v >= to_u128(lo) && v <= to_u128(hi);
}

uint32_t TrafficSpec::header_len() const noexcept {
    return 14 + (ip == 6 ? 40u : 20u) + (proto == Proto::Udp ? 8u : 20u);
}

uint32_t TrafficSpec::min_frame() const noexcept {
    return std::max<uint32_t>(kMinFrame, header_len() + kStampLen + 4);
}

double TrafficSpec::mean_frame() const noexcept {
    double s = 0;
    for (uint16_t v : size_pattern) {
        s += v;
    }
    return size_pattern.empty() ? 0 : s / static_cast<double>(size_pattern.size());
}

uint64_t TrafficSpec::tuple_space() const noexcept {
    const double d = static_cast<double>(src.count) * static_cast<double>(dst.count) *
                     static_cast<double>(proto == Proto::Syn ? 1 : sport.count()) *
                     static_cast<double>(dport.count());
    return d > 9.2e18 ? (uint64_t{1} << 63) : static_cast<uint64_t>(d);
}

uint32_t Profile::total_flows() const noexcept {
    uint64_t n = 0;
    for (const Stream& s : streams) {
        n += s.flows;
    }
    return streams.empty() ? flows : static_cast<uint32_t>(n);
}

double Profile::mix_mean_frame() const noexcept {
    if (streams.size() <= 1) {
        return mean_frame();
    }
    double m = 0;
    for (const Stream& s : streams) {
        m += s.fraction * s.mean_frame();
    }
    return m;
}

size_t Profile::stream_of(uint32_t flow) const noexcept {
    size_t k = 0;
    while (k + 1 < streams.size() && flow >= streams[k + 1].flow_base) {
        ++k;
    }
    return k;
}

Result<AddrRange> parse_addr_range(std::string_view in) {
    const std::string t = trim(in);
    AddrRange r;
    if (const size_t slash = t.find('/'); slash != std::string::npos) {
        if (!parse_one_addr(t.substr(0, slash), r.family, r.lo)) {
            return fail(Errc::Invalid, "'" + t + "' is not an address/prefix");
        }
        int len = -1;
        try {
            len = std::stoi(t.substr(slash + 1));
        } catch (...) {
            len = -1;
        }
        const int bits = r.family == 4 ? 32 : 128;
        if (len < 0 || len > bits) {
            return fail(Errc::Invalid, "'" + t + "': bad prefix length");
        }
        const int host_bits = bits - len;
        const U128 host_mask = host_bits >= 128 ? ~U128{0} : ((U128{1} << host_bits) - 1);
        const U128 base = to_u128(r.lo) & ~host_mask;
        r.lo = from_u128(base);
        r.hi = from_u128(base | host_mask);
        if (r.family == 4) { // keep the IPv4 layout (bytes 0..11 zero)
            std::fill(r.lo.begin(), r.lo.begin() + 12, 0);
            std::fill(r.hi.begin(), r.hi.begin() + 12, 0);
        }
    } else if (const size_t dash = t.find('-'); dash != std::string::npos) {
        uint8_t f2 = 0;
        if (!parse_one_addr(trim(t.substr(0, dash)), r.family, r.lo) ||
            !parse_one_addr(trim(t.substr(dash + 1)), f2, r.hi) || f2 != r.family) {
            return fail(Errc::Invalid, "'" + t + "' is not first-last of one family");
        }
        if (to_u128(r.hi) < to_u128(r.lo)) {
            return fail(Errc::Invalid, "'" + t + "': last is below first");
        }
    } else {
        if (!parse_one_addr(t, r.family, r.lo)) {
            return fail(Errc::Invalid, "'" + t + "' is not an IP address");
        }
        r.hi = r.lo;
    }
    const U128 n = to_u128(r.hi) - to_u128(r.lo);
    r.count = n >= (U128{1} << 32) ? (uint64_t{1} << 32) : static_cast<uint64_t>(n) + 1;
    return r;
}

Result<PortRange> parse_port_range(std::string_view in) {
    const std::string t = trim(in);
    auto one = [](const std::string& s, uint16_t& out) {
        if (s.empty() || s.size() > 5 || s.find_first_not_of("0123456789") != std::string::npos) {
            return false;
        }
        const unsigned long v = std::stoul(s);
        if (v > 65535) {
            return false;
        }
        out = static_cast<uint16_t>(v);
        return true;
    };
    PortRange r;
    const size_t dash = t.find('-');
    if (dash == std::string::npos) {
        if (!one(t, r.lo)) {
            return fail(Errc::Invalid, "'" + t + "' is not a port");
        }
        r.hi = r.lo;
        return r;
    }
    if (!one(trim(t.substr(0, dash)), r.lo) || !one(trim(t.substr(dash + 1)), r.hi) ||
        r.hi < r.lo) {
        return fail(Errc::Invalid, "'" + t + "' is not a port range first-last");
    }
    return r;
}

Result<Mac> parse_mac(std::string_view in) {
    const std::string t = trim(in);
    Mac m{};
    unsigned v[6];
    char extra = 0;
    if (std::sscanf(t.c_str(), "%2x:%2x:%2x:%2x:%2x:%2x%c", &v[0], &v[1], &v[2], &v[3], &v[4],
                    &v[5], &extra) != 6) {
        return fail(Errc::Invalid, "'" + t + "' is not a MAC address (aa:bb:cc:dd:ee:ff)");
    }
    for (size_t i = 0; i < 6; ++i) {
        m[i] = static_cast<uint8_t>(v[i]);
    }
    return m;
}

std::string format_addr(uint8_t family, const Addr16& a) {
    char buf[INET6_ADDRSTRLEN] = {};
    if (family == 4) {
        inet_ntop(AF_INET, a.data() + 12, buf, sizeof buf);
    } else {
        inet_ntop(AF_INET6, a.data(), buf, sizeof buf);
    }
    return buf;
}

std::string format_mac(const Mac& m) {
    char buf[18];
    std::snprintf(buf, sizeof buf, "%02x:%02x:%02x:%02x:%02x:%02x", m[0], m[1], m[2], m[3], m[4],
                  m[5]);
    return buf;
}

const char* proto_name(Proto p) noexcept {
    switch (p) {
    case Proto::Udp:
        return "udp";
    case Proto::Tcp:
        return "tcp";
    case Proto::Syn:
        return "syn";
    }
    return "?";
}

std::vector<uint16_t> expand_imix(const std::vector<std::pair<uint16_t, uint32_t>>& mix) {
    uint64_t total = 0;
    for (const auto& e : mix) {
        total += e.second;
    }
    std::vector<int64_t> current(mix.size(), 0);
    std::vector<uint16_t> out;
    out.reserve(total);
    for (uint64_t n = 0; n < total; ++n) {
        size_t best = 0;
        for (size_t i = 0; i < mix.size(); ++i) {
            current[i] += mix[i].second;
            if (current[i] > current[best]) {
                best = i;
            }
        }
        current[best] -= static_cast<int64_t>(total);
        out.push_back(mix[best].first);
    }
    return out;
}

Result<Profile> parse_profile(std::string_view yaml_text) {
    try {
        return parse_root(YAML::Load(std::string(yaml_text)));
    } catch (const YAML::Exception& e) {
        return fail(Errc::Invalid, std::string("YAML: ") + e.what());
    }
}

Result<Profile> load_profile(const std::string& path) {
    std::ifstream f(path);
    if (!f) {
        return fail(Errc::NotFound, "cannot open profile " + path);
    }
    std::stringstream ss;
    ss << f.rdbuf();
    auto p = parse_profile(ss.str());
    if (!p) {
        return fail(p.error().code, path + ": " + p.error().message);
    }
    return p;
}

} // namespace sluice::pktgen
