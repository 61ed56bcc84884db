// Unit tests of sluice-pktgen's DPDK-free parts: the profile parser, the payload stamp, the
// frame writer (checked with the dataplane's parser and a naive checksum), the flow cursor,
// the latency histogram, the destination table and the pcap reader.

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <set>
#include <string>
#include <tuple>
#include <unistd.h>
#include <vector>

#include "pcap_file.h"
#include "profile.h"
#include "report.h"
#include "stamp_fp.h"
#include "stats.h"

using namespace sluice;
using namespace sluice::pktgen;

namespace {

Addr16 v4(uint8_t a, uint8_t b, uint8_t c, uint8_t d) {
    Addr16 x{};
    x[12] = a;
    x[13] = b;
    x[14] = c;
    x[15] = d;
    return x;
}

Profile must_parse(const std::string& y) {
    auto p = parse_profile(y);
    EXPECT_TRUE(p.has_value()) << (p ? "" : p.error().message);
    return p ? *p : Profile{};
}

std::string parse_error(const std::string& y) {
    auto p = parse_profile(y);
    EXPECT_FALSE(p.has_value());
    return p ? "" : p.error().message;
}

// Deliberately naive one's-complement sum (not the production csum code).
uint32_t naive_sum(const uint8_t* p, size_t n, uint32_t s = 0) {
    for (size_t i = 0; i < n; ++i) {
        s += (i % 2 == 0) ? uint32_t{p[i]} << 8 : p[i];
    }
    while (s >> 16) {
        s = (s & 0xFFFF) + (s >> 16);
    }
    return s;
}

} // namespace

// ---------------------------------------------------------------------------------------
// Profile parser
// ---------------------------------------------------------------------------------------

TEST(Profile, FullExample) {
    const Profile p = must_parse(R"(
proto: udp
ip: 4
src: 10.1.0.0/30
dst: 10.0.0.100-10.0.0.101
sport: 1000-1001
dport: [53, 54]
flows: 20
imix: [[64, 7], [594, 4], [1518, 1]]
rate_pps: 250000
duration_s: 3
warmup_s: 0.5
drain_s: 0.2
src_mac: 02:00:00:00:00:01
dst_mac: 02:00:00:00:00:02
tx_port: 0
rx_port: 1
burst: 16
arp_reply_for: [10.0.0.11, 10.0.1.0/24, 10.0.2.1-10.0.2.3]
search: {min_pps: 1000, max_pps: 2000000, loss_threshold: 0.001, trial_s: 1, precision_pps: 5000}
sweep: [10, 50, 90]
)");
    EXPECT_EQ(p.proto, Proto::Udp);
    EXPECT_EQ(p.ip, 4);
    EXPECT_EQ(p.src.lo, v4(10, 1, 0, 0));
    EXPECT_EQ(p.src.hi, v4(10, 1, 0, 3));
    EXPECT_EQ(p.src.count, 4u);
    EXPECT_EQ(p.dst.count, 2u);
    EXPECT_EQ(p.sport.lo, 1000);
    EXPECT_EQ(p.sport.hi, 1001);
    EXPECT_EQ(p.dport.lo, 53);
    EXPECT_EQ(p.dport.hi, 54);
    EXPECT_EQ(p.flows, 20u);
    EXPECT_EQ(p.tuple_space(), 4u * 2 * 2 * 2);
    ASSERT_EQ(p.size_pattern.size(), 12u);
    EXPECT_EQ(std::count(p.size_pattern.begin(), p.size_pattern.end(), 64), 7);
    EXPECT_EQ(std::count(p.size_pattern.begin(), p.size_pattern.end(), 594), 4);
    EXPECT_EQ(std::count(p.size_pattern.begin(), p.size_pattern.end(), 1518), 1);
    EXPECT_NEAR(p.mean_frame(), (7 * 64 + 4 * 594 + 1518) / 12.0, 1e-9);
    EXPECT_EQ(p.rate_pps, 250000);
    EXPECT_EQ(p.duration_s, 3);
    EXPECT_EQ(p.warmup_s, 0.5);
    EXPECT_EQ(p.drain_s, 0.2);
    EXPECT_TRUE(p.src_mac_set);
    EXPECT_EQ(p.dst_mac, (Mac{2, 0, 0, 0, 0, 2}));
    EXPECT_EQ(p.rx_port, 1);
    EXPECT_EQ(p.burst, 16);
    ASSERT_EQ(p.arp_reply_for.size(), 3u);
    EXPECT_TRUE(p.arp_reply_for[1].contains(4, v4(10, 0, 1, 77)));
    EXPECT_FALSE(p.arp_reply_for[2].contains(4, v4(10, 0, 2, 4)));
    EXPECT_TRUE(p.has_search);
    EXPECT_EQ(p.search.max_pps, 2000000);
    EXPECT_EQ(p.search.loss_threshold, 0.001);
    EXPECT_EQ(p.sweep, (std::vector<double>{10, 50, 90}));
    EXPECT_TRUE(p.notes.empty());
}

TEST(Profile, ImixIsInterleaved) {
    const auto v = expand_imix({{64, 7}, {594, 4}, {1518, 1}});
    // Smooth weighted round robin: never more than two 64s in a row at these weights.
    int run = 0;
    int worst = 0;
    for (uint16_t s : v) {
        run = s == 64 ? run + 1 : 0;
        worst = std::max(worst, run);
    }
    EXPECT_LE(worst, 2);
}

TEST(Profile, Defaults_SizeRaisedForHeaders) {
    const Profile t = must_parse("proto: tcp\nsize: 64\nrate_pps: 1000\n");
    EXPECT_EQ(t.header_len(), 54u);
    EXPECT_EQ(t.min_frame(), 54u + 16 + 4);
    EXPECT_EQ(t.size_pattern, (std::vector<uint16_t>{74}));
    EXPECT_EQ(t.notes.size(), 1u);
    const Profile u = must_parse("proto: udp\nsize: 64\nrate_pps: 0\n");
    EXPECT_EQ(u.size_pattern, (std::vector<uint16_t>{64})); // 42 + 16 + 4 fits
    EXPECT_EQ(u.rate_pps, 0);
    const Profile v6 = must_parse("ip: 6\nproto: udp\nsize: 64\nrate_pps: 1\n");
    EXPECT_EQ(v6.size_pattern, (std::vector<uint16_t>{82}));
    EXPECT_EQ(v6.src.family, 6);
}

TEST(Profile, Ipv6Ranges) {
    const Profile p = must_parse(
        "ip: 6\nsrc: fd00::/120\ndst: 'fd01::1-fd01::3'\nflows: 600\nrate_pps: 1\nsize: 128\n");
    EXPECT_EQ(p.src.count, 256u);
    EXPECT_EQ(p.dst.count, 3u);
    EXPECT_EQ(format_addr(6, p.src.hi), "fd00::ff");
    auto big = parse_addr_range("fd00::/64");
    ASSERT_TRUE(big);
    EXPECT_EQ(big->count, uint64_t{1} << 32); // capped
}

TEST(Profile, SynFloodAndArpMac) {
    const Profile p = must_parse(
        "proto: syn\nsrc: 10.9.0.0/16\nsport: 1024-65535\nflows: 65536\nrate_pps: 1e6\n"
        "dst_mac: arp\n");
    EXPECT_EQ(p.proto, Proto::Syn);
    EXPECT_EQ(p.dst_mac_mode, Profile::DstMacMode::Arp);
    EXPECT_EQ(p.tuple_space(), 65536u); // random source ports do not add tuples
}

TEST(Profile, Errors) {
    EXPECT_NE(parse_error("rate_pps: 1\nfoo: 1\n").find("unknown key 'foo'"), std::string::npos);
    EXPECT_NE(parse_error("rate_pps: 1\nsize: 64\nimix: [[64,1]]\n").find("not both"),
              std::string::npos);
    EXPECT_NE(parse_error("rate_pps: 1\nrate_percent: 5\n").find("not both"), std::string::npos);
    EXPECT_NE(parse_error("size: 64\n").find("rate_pps"), std::string::npos);
    EXPECT_NE(parse_error("rate_pps: 1\nflows: 5\n").find("distinct 5-tuples"), std::string::npos);
    EXPECT_NE(parse_error("rate_pps: 1\nproto: icmp\n").find("proto"), std::string::npos);
    EXPECT_NE(parse_error("rate_pps: 1\nip: 6\nsrc: 10.0.0.1\n").find("IPv6"), std::string::npos);
    EXPECT_NE(parse_error("rate_pps: 1\nsrc_mac: 02:00\n").find("MAC"), std::string::npos);
    EXPECT_NE(parse_error("rate_pps: 1\nsize: 9000\n").find("outside"), std::string::npos);
    EXPECT_NE(parse_error("rate_pps: 1\nsport: 70000\n").find("sport"), std::string::npos);
    EXPECT_NE(parse_error("rate_pps: 1\nsport: 20-10\n").find("sport"), std::string::npos);
    EXPECT_NE(parse_error("rate_pps: 1\nsearch: {min_pps: 10, max_pps: 5}\n").find("min_pps"),
              std::string::npos);
    EXPECT_NE(parse_error("rate_pps: 1\nsearch: {speed: 1}\n").find("speed"), std::string::npos);
    EXPECT_NE(parse_error("rate_pps: [1\n").find("YAML"), std::string::npos);
    EXPECT_NE(parse_error("pcap_replay: x.pcap\n").find("replay_pps"), std::string::npos);
    EXPECT_NE(parse_error("rate_pps: 1\narp_reply_for: [fd00::1]\n").find("IPv4"),
              std::string::npos);
    EXPECT_NE(parse_error("ip: 6\nrate_pps: 1\ndst_mac: arp\n").find("ip: 4"), std::string::npos);
    EXPECT_FALSE(load_profile("/nonexistent/profile.yaml").has_value());
}

TEST(Profile, ShippedExamplesParse) {
    for (const char* f : {"ring_udp.yaml", "imix_udp.yaml", "tcp_v6.yaml", "syn_flood.yaml",
                          "l4_fullnat_udp.yaml", "l4_fullnat_tcp.yaml", "testpmd_io.yaml",
                          "search.yaml", "replay.yaml", "ring_mix.yaml",
                          "syn_with_established.yaml"}) {
        const std::string path = std::string(PKTGEN_PROFILES) + "/" + f;
        auto p = load_profile(path);
        EXPECT_TRUE(p.has_value()) << path << ": " << (p ? "" : p.error().message);
    }
}

// ---------------------------------------------------------------------------------------
// Streams (several traffic mixes in one run)
// ---------------------------------------------------------------------------------------

const char* const kTwoStreams = R"(
rate_pps: 0
dst_mac: arp
arp_reply_for: [10.0.0.11-10.0.0.14]
streams:
  - name: established
    proto: udp
    src: 10.1.0.0/16
    dst: 10.0.0.100
    sport: 1024-1087
    dport: 53
    flows: 1000
    size: 64
    src_mac: 02:00:00:00:01:01
    share: 30
  - name: syn
    proto: syn
    src: 10.1.0.0/16
    dst: 10.0.0.101
    sport: 1024-65535
    dport: 80
    flows: 500
    size: 64
    share: 70
)";

TEST(Streams, ParseSharesFlowRangesAndSendOrder) {
    const Profile p = must_parse(kTwoStreams);
    EXPECT_TRUE(p.multi_stream);
    ASSERT_EQ(p.streams.size(), 2u);
    const Stream& e = p.streams[0];
    const Stream& s = p.streams[1];
    EXPECT_EQ(e.name, "established");
    EXPECT_EQ(e.proto, Proto::Udp);
    EXPECT_EQ(e.flows, 1000u);
    EXPECT_EQ(e.flow_base, 0u);
    EXPECT_TRUE(e.src_mac_set);
    EXPECT_EQ(s.proto, Proto::Syn);
    EXPECT_EQ(s.flow_base, 1000u);
    EXPECT_FALSE(s.src_mac_set);
    EXPECT_EQ(s.seed, 2u);                                  // streams default to different seeds
    EXPECT_EQ(s.size_pattern, (std::vector<uint16_t>{74})); // raised for TCP + stamp
    ASSERT_EQ(p.notes.size(), 1u);
    EXPECT_NE(p.notes[0].find("streams[1] (syn)"), std::string::npos) << p.notes[0];
    EXPECT_EQ(p.total_flows(), 1500u);
    EXPECT_EQ(p.stream_of(0), 0u);
    EXPECT_EQ(p.stream_of(999), 0u);
    EXPECT_EQ(p.stream_of(1000), 1u);
    EXPECT_EQ(p.stream_of(1499), 1u);
    // The profile's own traffic fields are the first stream's (ARP resolution uses them).
    EXPECT_EQ(p.dst.lo, v4(10, 0, 0, 100));
    EXPECT_EQ(p.flows, 1000u);
    EXPECT_EQ(p.dst_mac_mode, Profile::DstMacMode::Arp);
    EXPECT_EQ(p.rate_pps, 0);
    EXPECT_EQ(e.weight, 3u); // 30/70 reduced by the gcd
    EXPECT_EQ(s.weight, 7u);
    EXPECT_DOUBLE_EQ(e.fraction, 0.3);
    EXPECT_DOUBLE_EQ(p.mix_mean_frame(), 0.3 * 64 + 0.7 * 74);
    ASSERT_EQ(p.stream_pattern.size(), 10u);
    EXPECT_EQ(std::count(p.stream_pattern.begin(), p.stream_pattern.end(), 0), 3);
    // Interleaved packet by packet: no run of the minority stream, at most 3 of the other.
    int run = 0;
    int worst = 0;
    for (size_t i = 0; i < 2 * p.stream_pattern.size(); ++i) {
        const uint16_t k = p.stream_pattern[i % p.stream_pattern.size()];
        EXPECT_LT(k, 2u);
        if (k == 0) {
            EXPECT_NE(p.stream_pattern[(i + 1) % p.stream_pattern.size()], 0u) << i;
        }
        run = k == 1 ? run + 1 : 0;
        worst = std::max(worst, run);
    }
    EXPECT_LE(worst, 3);
}

TEST(Streams, SingleStreamProfileIsOneStream) {
    const Profile p = must_parse("rate_pps: 1\nflows: 4\nsport: 1-4\nseed: 9\nttl: 3\n");
    EXPECT_FALSE(p.multi_stream);
    ASSERT_EQ(p.streams.size(), 1u);
    EXPECT_EQ(p.streams[0].flows, 4u);
    EXPECT_EQ(p.streams[0].flow_base, 0u);
    EXPECT_EQ(p.streams[0].seed, 9u);
    EXPECT_EQ(p.streams[0].ttl, 3u);
    EXPECT_EQ(p.seed, 9u);
    EXPECT_EQ(p.stream_pattern, (std::vector<uint16_t>{0}));
    EXPECT_EQ(p.total_flows(), 4u);
    EXPECT_EQ(p.stream_of(3), 0u);
    EXPECT_DOUBLE_EQ(p.mix_mean_frame(), p.mean_frame());
}

TEST(Streams, OwnRatesFractionalSharesAndDefaults) {
    // Every stream with its own rate: the total is their sum, the weights their ratio.
    const Profile r = must_parse("streams:\n"
                                 "  - {name: a, rate_pps: 100000}\n"
                                 "  - {name: b, rate_pps: 300000, proto: tcp}\n");
    EXPECT_EQ(r.rate_pps, 400000);
    EXPECT_EQ(r.streams[0].weight, 1u);
    EXPECT_EQ(r.streams[1].weight, 3u);
    EXPECT_DOUBLE_EQ(r.streams[1].fraction, 0.75);
    EXPECT_EQ(r.stream_pattern.size(), 4u);
    // Fractional shares are scaled to whole weights.
    const Profile f = must_parse("rate_pps: 1000\nstreams:\n"
                                 "  - {share: 0.25}\n  - {share: 0.75, dport: 54}\n");
    EXPECT_EQ(f.streams[0].weight, 1u);
    EXPECT_EQ(f.streams[1].weight, 3u);
    EXPECT_EQ(f.streams[0].name, "stream0");
    EXPECT_EQ(f.streams[1].name, "stream1");
    // No share and no rate: equal shares.
    const Profile d = must_parse("rate_pps: 1000\nstreams: [{dport: 1}, {dport: 2}, {dport: 3}]\n");
    EXPECT_EQ(d.stream_pattern, (std::vector<uint16_t>{0, 1, 2}));
    // A share far below the others still gets its turn (1 in kMaxMixWeight).
    const Profile tiny = must_parse("rate_pps: 1\nstreams: [{share: 1e-9}, {share: 1}]\n");
    EXPECT_EQ(tiny.streams[0].weight, 1u);
    EXPECT_EQ(tiny.streams[1].weight, kMaxMixWeight);
    EXPECT_EQ(tiny.stream_pattern.size(), kMaxMixWeight + 1);
}

TEST(Streams, Errors) {
    auto has = [](const std::string& y, const char* what) {
        const std::string e = parse_error(y);
        EXPECT_NE(e.find(what), std::string::npos) << "error '" << e << "' lacks '" << what << "'";
    };
    has("rate_pps: 1\nstreams: [{share: 1, color: red}]\n", "streams[0]: unknown key 'color'");
    has("rate_pps: 1\nstreams: [{share: 1}, {share: 0}]\n",
        "streams[1] (stream1).share: must be above 0");
    has("rate_pps: 1\nstreams: [{share: -2}]\n", "outside");
    has("rate_pps: 1\nstreams: [{share: 1, rate_pps: 5}]\n", "share or rate_pps, not both");
    has("rate_pps: 1\nstreams: [{share: 1}, {rate_pps: 5}]\n", "not a mix");
    has("streams: [{rate_pps: 0}]\n", "rate_pps: must be above 0");
    has("rate_pps: 1\nstreams: [{rate_pps: 5}]\n", "no top-level rate_pps");
    has("rate_percent: 5\nstreams: [{rate_pps: 5}]\n", "no top-level rate_pps");
    has("rate_pps: 1\nproto: udp\nstreams: [{share: 1}]\n", "'proto' is a per-stream key");
    has("rate_pps: 1\nsize: 64\nstreams: [{share: 1}]\n", "'size' is a per-stream key");
    has("rate_pps: 1\nstreams: [{name: x}, {name: x}]\n", "used twice");
    has("rate_pps: 1\nstreams: []\n", "non-empty list");
    has("rate_pps: 1\nstreams: {share: 1}\n", "non-empty list");
    has("rate_pps: 1\nstreams: [5]\n", "streams[0]: a mapping");
    has("rate_pps: 1\nstreams: [{name: ''}]\n", "empty");
    has("pcap_replay: x.pcap\nreplay_pps: 1\nstreams: [{share: 1}]\n", "no streams");
    has("streams: [{share: 1}]\n", "give rate_pps");
    has("rate_pps: 1\nstreams: [{share: 1, proto: icmp}]\n", "streams[0] (stream0): proto");
    has("rate_pps: 1\nstreams: [{share: 1, flows: 5}]\n", "distinct 5-tuples");
    has("rate_pps: 1\ndst_mac: arp\nstreams: [{ip: 6}, {ip: 4}]\n", "in the first stream");
    // Flow ranges are disjoint parts of the stamp's 24-bit flow index.
    has("rate_pps: 1\nstreams:\n"
        "  - {src: 10.0.0.0/8, flows: 16000000}\n"
        "  - {src: 10.0.0.0/8, flows: 1000000}\n",
        "16777216");
    std::string many = "rate_pps: 1\nstreams:\n";
    for (size_t i = 0; i <= kMaxStreams; ++i) {
        many += "  - {dport: " + std::to_string(i + 1) + "}\n";
    }
    has(many, "at most 16");
}

// The generator's send loop on plain memory: streams take turns by the send order, each
// walks its own flows, stamps carry flow_base + the stream's flow index, and the receive
// side finds the stream again from the stamp alone.
TEST(Streams, InterleavedFramesAreAttributedToTheirStream) {
    const Profile p = must_parse(kTwoStreams);
    std::vector<FlowCursor> cursors;
    std::vector<FrameSpec> specs;
    for (const Stream& s : p.streams) {
        cursors.emplace_back(s);
        specs.push_back(make_frame_spec(s, {2, 0, 0, 0, 0, 1}, {2, 0, 0, 0, 0, 2}));
    }
    std::vector<uint64_t> sent(2, 0);
    std::vector<uint64_t> got(2, 0);
    size_t mix = 0;
    for (int i = 0; i < 1000; ++i) {
        const uint16_t k = p.stream_pattern[mix];
        mix = mix + 1 == p.stream_pattern.size() ? 0 : mix + 1;
        const Stream& s = p.streams[k];
        FlowCursor& c = cursors[k];
        const uint32_t flow = s.flow_base + c.flow();
        std::vector<uint8_t> f(s.size_pattern[0] - 4, 0);
        write_frame(f.data(), static_cast<uint32_t>(f.size()), specs[k], c.tuple(),
                    Stamp{flow, 0, 1}, s.proto == Proto::Syn ? dp::kTcpSyn : 0);
        c.advance();
        ++sent[k];
        dp::PacketMeta m;
        Stamp st;
        ASSERT_EQ(classify_rx(f.data(), static_cast<uint32_t>(f.size()), m, st), RxKind::Stamped);
        ASSERT_LT(st.flow, p.total_flows());
        const size_t owner = p.stream_of(st.flow);
        EXPECT_EQ(owner, k);
        EXPECT_EQ(m.proto, s.proto == Proto::Udp ? dp::kProtoUdp : dp::kProtoTcp);
        EXPECT_EQ(m.key.dst_port, s.dport.lo);
        ++got[owner];
    }
    EXPECT_EQ(sent[0], 300u);
    EXPECT_EQ(sent[1], 700u);
    EXPECT_EQ(got, sent);
}

TEST(Streams, RxStatsFoldAndReport) {
    const Profile p = must_parse(kTwoStreams);
    RxStats rx;
    rx.reset(p.total_flows(), p.streams.size());
    ASSERT_EQ(rx.streams.size(), 2u);
    rx.streams[0].packets = 290;
    rx.streams[0].latency.add(1000);
    rx.streams[0].dests.add(4, 17, v4(10, 0, 0, 11), 5353);
    rx.streams[1].packets = 700;
    rx.streams[1].tunneled = 700;
    rx.streams[1].latency.add(4000);
    rx.streams[1].dests.add(4, 6, v4(10, 0, 0, 12), 80);
    rx.streams[1].dests.add(4, 6, v4(10, 0, 0, 12), 80);
    rx.streams[1].dests.add(4, 17, v4(10, 0, 0, 11), 5353); // the same entry as stream 0's
    rx.flow_rx[0] = 290;
    rx.flow_rx[1000] = 700;
    rx.fold_streams();
    EXPECT_EQ(rx.packets, 990u);
    EXPECT_EQ(rx.tunneled, 700u);
    EXPECT_EQ(rx.latency.count(), 2u);
    EXPECT_EQ(rx.dests.distinct(), 2u);
    EXPECT_EQ(rx.dests.top(1)[0].packets, 2u);
    std::vector<uint32_t> ftx(p.total_flows(), 0);
    ftx[0] = 300;
    ftx[1000] = 700;
    TxTotals tx;
    tx.packets = 1000;
    tx.flow_tx = &ftx;
    const TrialResult r = summarize(p, "run", 0, 2.0, tx, rx, false);
    EXPECT_EQ(r.json["rx"]["packets"], 990);
    EXPECT_EQ(r.json["lost"], 10);
    ASSERT_EQ(r.streams.size(), 2u);
    const Json& js = r.json["streams"];
    ASSERT_EQ(js.size(), 2u);
    EXPECT_EQ(js[0]["name"], "established");
    EXPECT_EQ(js[0]["tx"]["packets"], 300);
    EXPECT_EQ(js[0]["rx"]["packets"], 290);
    EXPECT_EQ(js[0]["lost"], 10);
    EXPECT_EQ(js[0]["flows"]["seen"], 1);
    EXPECT_EQ(js[0]["latency_ns"]["p50"], 1000);
    EXPECT_EQ(js[0]["destinations"]["top"][0]["dst"], "10.0.0.11:5353");
    EXPECT_EQ(js[1]["name"], "syn");
    EXPECT_EQ(js[1]["proto"], "syn");
    EXPECT_EQ(js[1]["tx"]["packets"], 700);
    EXPECT_EQ(js[1]["rx"]["tunneled"], 700);
    EXPECT_EQ(js[1]["loss_ratio"], 0.0);
    EXPECT_EQ(js[1]["destinations"]["top"][0]["dst"], "10.0.0.12:80");
    EXPECT_DOUBLE_EQ(js[1]["rx"]["pps"].get<double>(), 350.0);
    EXPECT_EQ(r.json["flows"]["per_flow"][0]["stream"], "established");
    EXPECT_EQ(r.json["flows"]["per_flow"][0]["dst"], "10.0.0.100:53");
    const auto lines = stream_lines(r);
    ASSERT_EQ(lines.size(), 2u);
    EXPECT_NE(lines[0].find("run [established]"), std::string::npos);
    EXPECT_NE(lines[0].find("loss 3.3333%"), std::string::npos) << lines[0];
    // A single-stream profile has no per-stream section.
    const Profile one = must_parse("rate_pps: 1\n");
    RxStats r1;
    r1.reset(1);
    EXPECT_FALSE(summarize(one, "run", 1, 1, TxTotals{}, r1, false).json.contains("streams"));
    const Json pj = profile_json(p);
    ASSERT_EQ(pj["streams"].size(), 2u);
    EXPECT_EQ(pj["streams"][1]["flow_first"], 1000);
    EXPECT_EQ(pj["flows"], 1500);
}

// ---------------------------------------------------------------------------------------
// Stamp
// ---------------------------------------------------------------------------------------

TEST(Stamp, RoundTrip) {
    uint8_t buf[kStampLen];
    const Stamp in{0xABCDEF, 0xDEADBEEF, 0x1234'5678'9ABC'DEF0ull};
    encode_stamp(buf, in);
    EXPECT_EQ(buf[0], 0x5C);
    EXPECT_EQ(buf[3], 0xAB);
    Stamp out;
    ASSERT_TRUE(decode_stamp(buf, sizeof buf, out));
    EXPECT_EQ(out.flow, in.flow);
    EXPECT_EQ(out.seq, in.seq);
    EXPECT_EQ(out.tsc, in.tsc & kTsc48Mask);
    EXPECT_EQ(widen_tsc48(out.tsc, in.tsc + 1000), in.tsc);
    EXPECT_FALSE(decode_stamp(buf, kStampLen - 1, out));
    buf[1] ^= 1;
    EXPECT_FALSE(decode_stamp(buf, sizeof buf, out));
}

TEST(Stamp, WidenAcrossWrap) {
    const uint64_t sent = (uint64_t{5} << 48) - 10; // just before a 48-bit wrap
    const uint64_t now = (uint64_t{5} << 48) + 20;  // just after
    EXPECT_EQ(widen_tsc48(sent & kTsc48Mask, now), sent);
    EXPECT_EQ(widen_tsc48(100, 50), 100u); // early in the TSC's life: no underflow
}

// ---------------------------------------------------------------------------------------
// Frames
// ---------------------------------------------------------------------------------------

struct FrameCase {
    const char* name;
    const char* yaml;
    uint8_t flags;
};

class FrameTest : public ::testing::TestWithParam<FrameCase> {};

TEST_P(FrameTest, ParsesWithGoodChecksumsAndStamp) {
    const FrameCase& c = GetParam();
    const Profile p = must_parse(c.yaml);
    const Mac sm{2, 0, 0, 0, 0, 1};
    const Mac dm{2, 0, 0, 0, 0, 2};
    const FrameSpec spec = make_frame_spec(p, sm, dm);
    FlowCursor cur(p);
    for (uint16_t size : p.size_pattern) {
        std::vector<uint8_t> f(size - 4, 0);
        const FlowTuple t = cur.tuple();
        write_frame(f.data(), static_cast<uint32_t>(f.size()), spec, t,
                    Stamp{cur.flow(), 7, 0x0000'1111'2222'3333ull}, c.flags);
        dp::PacketMeta m;
        dp::ParseOptions opt;
        opt.verify_l4_checksum = true;
        ASSERT_EQ(dp::parse_packet(f.data(), static_cast<uint32_t>(f.size()), m, opt),
                  dp::Verdict::Forward)
            << c.name << " size " << size << " drop " << dp::drop_reason_name(m.drop);
        EXPECT_EQ(m.key.src, t.src);
        EXPECT_EQ(m.key.dst, t.dst);
        EXPECT_EQ(m.key.src_port, t.sport);
        EXPECT_EQ(m.key.dst_port, t.dport);
        EXPECT_EQ(m.l3_len + 14u, f.size());
        EXPECT_EQ(std::memcmp(f.data(), dm.data(), 6), 0);
        // Independent checksum check: pseudo-header + L4 segment sums to 0xFFFF.
        const uint32_t l4_len = static_cast<uint32_t>(f.size()) - m.l4_off;
        const size_t alen = p.ip == 4 ? 4 : 16;
        const uint8_t* src = f.data() + m.l3_off + (p.ip == 4 ? 12 : 8);
        const uint8_t* dst = src + alen;
        const bool udp4_zero = m.proto == dp::kProtoUdp && p.ip == 4;
        if (!udp4_zero) {
            uint32_t s = naive_sum(src, alen);
            s = naive_sum(dst, alen, s);
            s += l4_len + m.proto;
            s = naive_sum(f.data() + m.l4_off, l4_len, s);
            EXPECT_EQ(s, 0xFFFFu) << c.name;
        }
        if (p.ip == 4) {
            EXPECT_EQ(naive_sum(f.data() + 14, 20), 0xFFFFu);
        }
        if (m.proto == dp::kProtoTcp) {
            EXPECT_EQ(m.tcp_flags, c.flags);
        }
        Stamp s;
        dp::PacketMeta m2;
        ASSERT_EQ(classify_rx(f.data(), static_cast<uint32_t>(f.size()), m2, s), RxKind::Stamped);
        EXPECT_EQ(s.flow, cur.flow());
        EXPECT_EQ(s.seq, 7u);
        EXPECT_EQ(s.tsc, 0x0000'1111'2222'3333ull);
        cur.advance();
    }
}

INSTANTIATE_TEST_SUITE_P(
    Pktgen, FrameTest,
    ::testing::Values(
        FrameCase{"udp4", "rate_pps: 1\nimix: [[64,1],[594,1],[1518,1]]\nflows: 1\n", 0},
        FrameCase{"tcp4_syn", "proto: tcp\nrate_pps: 1\nimix: [[64,1],[1518,1]]\n", dp::kTcpSyn},
        FrameCase{"tcp4_ack", "proto: tcp\nrate_pps: 1\nsize: 100\n", dp::kTcpAck | dp::kTcpPsh},
        FrameCase{"udp6", "ip: 6\nrate_pps: 1\nimix: [[64,1],[1518,1]]\n", 0},
        FrameCase{"tcp6", "ip: 6\nproto: tcp\nrate_pps: 1\nsize: 200\n", dp::kTcpAck}),
    [](const auto& info) { return std::string(info.param.name); });

TEST(Frames, NotStampedOrArp) {
    std::vector<uint8_t> arp(60, 0);
    std::memset(arp.data(), 0xff, 6);
    dp::store_be16(arp.data() + 12, dp::kEtherTypeArp);
    uint8_t* a = arp.data() + 14;
    dp::store_be16(a, 1);
    dp::store_be16(a + 2, 0x0800);
    a[4] = 6;
    a[5] = 4;
    dp::store_be16(a + 6, 1);
    a[24] = 10;
    a[27] = 11;
    dp::PacketMeta m;
    Stamp s;
    EXPECT_EQ(classify_rx(arp.data(), 60, m, s), RxKind::ArpRequest);
    EXPECT_EQ(m.key.dst, v4(10, 0, 0, 11));
    // A UDP frame whose payload lacks the magic.
    const Profile p = must_parse("rate_pps: 1\n");
    std::vector<uint8_t> f(60, 0);
    write_frame(f.data(), 60, make_frame_spec(p, {}, {}), FlowCursor(p).tuple(), Stamp{}, 0);
    f[42] = 0;
    EXPECT_EQ(classify_rx(f.data(), 60, m, s), RxKind::Other);
}

// sluice's DSR modes send the client's packet encapsulated to the backend: the receive side
// reads the inner stamp and reports the outer destination (the backend).
TEST(Frames, DsrEncapsulationsAreLookedThrough) {
    for (const bool gue : {false, true}) {
        for (const char* y : {"rate_pps: 1\ndport: 53\n", "ip: 6\nproto: tcp\nrate_pps: 1\n"}) {
            const Profile p = must_parse(y);
            const FlowTuple t = FlowCursor(p).tuple();
            const uint32_t len = p.min_frame() - 4;
            constexpr uint32_t kHead = 128;
            std::vector<uint8_t> buf(kHead + 256, 0);
            write_frame(buf.data() + kHead, len, make_frame_spec(p, {}, {}), t,
                        Stamp{0, 42, 0x1234}, dp::kTcpAck);
            dp::PacketMeta m;
            ASSERT_EQ(dp::parse_packet(buf.data() + kHead, len, m), dp::Verdict::Forward);
            dp::EncapParams ep;
            ep.family = 4;
            ep.src = v4(10, 0, 0, 99);
            ep.dst = v4(10, 0, 0, 12);
            uint32_t frame_len = 0;
            const int32_t off = gue ? dp::encap_gue(buf, kHead, m, ep, frame_len)
                                    : dp::encap_ipip(buf, kHead, m, ep, frame_len);
            ASSERT_GT(off, 0);
            dp::PacketMeta rm;
            Stamp s;
            bool tunneled = false;
            ASSERT_EQ(classify_rx(buf.data() + off, frame_len, rm, s, &tunneled), RxKind::Stamped)
                << (gue ? "gue " : "ipip ") << y;
            EXPECT_TRUE(tunneled);
            EXPECT_EQ(s.seq, 42u);
            EXPECT_EQ(rm.key.dst, v4(10, 0, 0, 12)); // the backend, not the VIP
            EXPECT_EQ(rm.family, 4);
            EXPECT_EQ(rm.key.dst_port, t.dport);
            EXPECT_EQ(rm.proto, p.proto == Proto::Udp ? dp::kProtoUdp : dp::kProtoTcp);
        }
    }
}

TEST(FlowCursor, WalksEveryTupleOnceThenWraps) {
    const Profile p = must_parse(
        "rate_pps: 1\nsrc: 10.1.0.250-10.1.1.5\nsport: 7-9\ndport: 80-81\ndst: 10.0.0.1-10.0.0.2\n"
        "flows: 60\n");
    FlowCursor c(p);
    std::set<std::tuple<Addr16, Addr16, uint16_t, uint16_t>> seen;
    for (uint32_t i = 0; i < 2 * p.flows; ++i) {
        ASSERT_EQ(c.flow(), i % p.flows);
        const FlowTuple t = c.tuple();
        const FlowTuple u = FlowCursor::tuple_of(p, c.flow());
        ASSERT_EQ(t.src, u.src) << i;
        ASSERT_EQ(t.dst, u.dst) << i;
        ASSERT_EQ(t.sport, u.sport) << i;
        ASSERT_EQ(t.dport, u.dport) << i;
        ASSERT_TRUE(p.src.contains(4, t.src));
        seen.insert({t.src, t.dst, t.sport, t.dport});
        c.advance();
    }
    EXPECT_EQ(seen.size(), 60u);
    EXPECT_EQ(FlowCursor::tuple_of(p, 3).src, v4(10, 1, 0, 251)); // 3 sports per address
    EXPECT_EQ(FlowCursor::tuple_of(p, 18).src, v4(10, 1, 1, 0));  // carries into the 3rd byte
}

TEST(FlowCursor, SynRandomPortsInRange) {
    const Profile p = must_parse("proto: syn\nrate_pps: 1\nsport: 1000-1999\n");
    FlowCursor c(p);
    std::set<uint16_t> ports;
    for (int i = 0; i < 2000; ++i) {
        const uint16_t sp = c.tuple().sport;
        ASSERT_GE(sp, 1000);
        ASSERT_LE(sp, 1999);
        ports.insert(sp);
        c.advance();
    }
    EXPECT_GT(ports.size(), 700u);
}

// ---------------------------------------------------------------------------------------
// Statistics
// ---------------------------------------------------------------------------------------

TEST(Histogram, BucketsAndPercentiles) {
    for (uint64_t v : {0ull, 1ull, 15ull, 16ull, 17ull, 1000ull, 123456789ull, ~0ull >> 1}) {
        const uint32_t i = LatencyHistogram::index(v);
        ASSERT_LT(i, LatencyHistogram::kBuckets);
        EXPECT_LE(LatencyHistogram::lower_edge(i), v);
        EXPECT_GE(LatencyHistogram::upper_edge(i), v);
    }
    LatencyHistogram h;
    for (uint64_t v = 1; v <= 100000; ++v) {
        h.add(v);
    }
    EXPECT_EQ(h.count(), 100000u);
    EXPECT_EQ(h.max(), 100000u);
    EXPECT_EQ(h.min(), 1u);
    for (double q : {0.5, 0.9, 0.99, 0.999}) {
        const double want = q * 100000;
        EXPECT_NEAR(static_cast<double>(h.percentile(q)), want, want * 0.0625) << q;
    }
    EXPECT_EQ(h.percentile(1.0), 100000u);
    uint64_t total = 0;
    uint64_t prev = 0;
    for (const auto& [lo, n] : h.log2_buckets()) {
        EXPECT_TRUE(lo == 0 || (lo & (lo - 1)) == 0) << lo; // powers of two
        EXPECT_GE(lo, prev);
        prev = lo;
        total += n;
    }
    EXPECT_EQ(total, h.count());
    EXPECT_EQ(h.log2_buckets().front(), (std::pair<uint64_t, uint64_t>{1, 1}));
    const auto cdf = h.cdf();
    EXPECT_DOUBLE_EQ(cdf.back().second, 1.0);
    EXPECT_EQ(LatencyHistogram{}.percentile(0.99), 0u);
}

TEST(DestTable, CountsAndTop) {
    DestTable d;
    for (int i = 0; i < 300; ++i) {
        d.add(4, 17, v4(10, 0, 0, static_cast<uint8_t>(11 + i % 3)), static_cast<uint16_t>(5353));
    }
    d.add(4, 17, v4(10, 0, 0, 11), 5353);
    d.add(4, 6, v4(10, 0, 0, 11), 5353); // other protocol, other entry
    EXPECT_EQ(d.distinct(), 4u);
    const auto top = d.top(2);
    ASSERT_EQ(top.size(), 2u);
    EXPECT_EQ(top[0].addr, v4(10, 0, 0, 11));
    EXPECT_EQ(top[0].packets, 101u);
    EXPECT_EQ(top[1].packets, 100u);
    for (uint32_t i = 0; i < 2 * DestTable::kSlots; ++i) {
        d.add(6, 17, Addr16{0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
                            static_cast<uint8_t>(i >> 8), static_cast<uint8_t>(i)}, 1);
    }
    EXPECT_GT(d.overflow(), 0u);
    EXPECT_LE(d.distinct(), DestTable::kSlots);
}

TEST(Report, SummaryJsonHasTheFigures) {
    const Profile p = must_parse("rate_pps: 1\nsport: 1-4\nflows: 4\nper_flow_report: 2\n");
    RxStats rx;
    rx.reset(4);
    rx.packets = 90;
    rx.flow_rx = {30, 30, 30, 0};
    rx.latency.add(1000);
    rx.dests.add(4, 17, v4(10, 0, 0, 11), 5353);
    std::vector<uint32_t> ftx = {25, 25, 25, 25};
    TxTotals tx;
    tx.packets = 100;
    tx.flow_tx = &ftx;
    const TrialResult r = summarize(p, "run", 100, 1.0, tx, rx, false);
    EXPECT_EQ(r.lost, 10);
    EXPECT_DOUBLE_EQ(r.loss_ratio, 0.1);
    EXPECT_EQ(r.json["flows"]["seen"], 3);
    EXPECT_EQ(r.json["flows"]["per_flow"].size(), 2u);
    EXPECT_EQ(r.json["flows"]["per_flow"][1]["src"], "10.1.0.1:2");
    EXPECT_EQ(r.json["destinations"]["top"][0]["dst"], "10.0.0.11:5353");
    EXPECT_EQ(r.json["latency_ns"]["p99"], 1000);
    EXPECT_NE(summary_line(r).find("loss 10.0000%"), std::string::npos);
}

// ---------------------------------------------------------------------------------------
// pcap
// ---------------------------------------------------------------------------------------

TEST(Pcap, WriteReadRoundTripAndErrors) {
    char tmpl[] = "/tmp/pktgen_test_XXXXXX";
    const int fd = mkstemp(tmpl);
    ASSERT_GE(fd, 0);
    close(fd);
    const std::string path = tmpl;
    PcapFrames frames = {std::vector<uint8_t>(60, 1), std::vector<uint8_t>(1514, 2),
                         std::vector<uint8_t>(10, 3) /* too short: skipped */,
                         std::vector<uint8_t>(3000, 4) /* truncated to max_frame */};
    ASSERT_TRUE(write_pcap(path, frames));
    auto r = read_pcap(path, 100, 2000);
    ASSERT_TRUE(r) << r.error().message;
    ASSERT_EQ(r->size(), 3u);
    EXPECT_EQ((*r)[0], frames[0]);
    EXPECT_EQ((*r)[1], frames[1]);
    EXPECT_EQ((*r)[2].size(), 2000u);
    EXPECT_EQ(read_pcap(path, 1)->size(), 1u);
    // Byte-swapped header (a big-endian writer) reads the same.
    {
        FILE* f = std::fopen(path.c_str(), "wb");
        const uint8_t gh[24] = {0xa1, 0xb2, 0xc3, 0xd4, 0, 2, 0, 4, 0, 0, 0, 0,
                                0,    0,    0,    0,    0, 0, 0xff, 0xff, 0, 0, 0, 1};
        const uint8_t rh[16] = {0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 60, 0, 0, 0, 60};
        std::fwrite(gh, 1, sizeof gh, f);
        std::fwrite(rh, 1, sizeof rh, f);
        std::fwrite(frames[0].data(), 1, 60, f);
        std::fclose(f);
    }
    auto be = read_pcap(path);
    ASSERT_TRUE(be) << be.error().message;
    EXPECT_EQ(be->size(), 1u);
    {
        FILE* f = std::fopen(path.c_str(), "wb");
        std::fputs("this is not a pcap file at all", f);
        std::fclose(f);
    }
    EXPECT_NE(read_pcap(path).error().message.find("magic"), std::string::npos);
    std::remove(path.c_str());
    EXPECT_FALSE(read_pcap("/nonexistent.pcap").has_value());
}
