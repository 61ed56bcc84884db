// The L4 path on crafted frames: ARP/ICMP for our addresses, full-NAT both ways with valid
// checksums, flows keeping their backend across table changes, weights over 1,000 flows;
// DSR (IPIP, GUE) encapsulation decapsulated again and compared with the client's frame.

#include "lb_fp.h"

#include <map>
#include <atomic>
#include <memory>
#include <thread>
#include <tuple>

#include <gtest/gtest.h>

#include "../../tests/lib/packet_builder.h"

namespace sluice::dp {
namespace {

using test::Bytes;
using test::PacketBuilder;

constexpr Mac kClient = {0x02, 0, 0, 0, 0, 0x01};
constexpr Mac kOurs = {0x02, 0, 0, 0, 0, 0x02};
constexpr Mac kBackendA = {0x02, 0, 0, 0, 0, 0x0a};
constexpr Mac kBackendB = {0x02, 0, 0, 0, 0, 0x0b};

ir::Ir l4_ir(std::vector<std::pair<std::string, uint32_t>> backends,
            ir::FwdMode mode = ir::FwdMode::FullNat) {
    ir::Ir ir;
    ir::Listener l;
    l.name = "tcp";
    l.port = 80;
    l.protocol = ir::Protocol::TCP;
    l.fwd_mode = mode;
    ir::Rule r;
    for (size_t i = 0; i < backends.size(); ++i) {
        ir::BackendGroup g;
        g.ns = "ns";
        g.name = "svc" + std::to_string(i);
        g.endpoints.push_back({backends[i].first, 8080, true, true, false, g.name});
        ir.groups.push_back(g);
        r.backends.push_back({static_cast<uint32_t>(i), backends[i].second, 0, "", ir::kNone});
    }
    ir.rules.push_back(r);
    l.l4_rule = 0;
    ir.listeners.push_back(l);
    ir.gateways.push_back({"ns", "gw", {"10.0.0.100"}, {0}, {}});
    return ir;
}

struct Fixture {
    std::unique_ptr<ConnTrack> ct;
    std::unique_ptr<NeighborTable> nb = std::make_unique<NeighborTable>();
    std::unique_ptr<SnatPorts> ports =
        std::make_unique<SnatPorts>();
    LbContext ctx;
    ServiceTable table;
    uint32_t now = 1000;

    explicit Fixture(const ir::Ir& ir) {
        ConnTrackConfig c;
        c.capacity = 1 << 14;
        c.seed = 7;
        ct = std::move(*ConnTrack::create(c));
        ctx.ct = ct.get();
        ctx.neighbors = nb.get();
        ctx.ports = ports.get();
        ctx.our_mac = kOurs;
        uint8_t fam = 0;
        EXPECT_TRUE(parse_addr("10.0.0.99", fam, ctx.snat[0].second));
        ctx.snat[0].first = fam;
        ctx.index_snat();
        table = std::move(*build_service_table(ir, {}));
    }
    LbAction run(Bytes& f, uint32_t& len) {
        f.resize(std::max<size_t>(f.size(), 128));
        return lb_process(ctx, table, f, len, now);
    }
    uint64_t counter(LbCounter c) const { return ctx.counters[static_cast<size_t>(c)]; }
    void learn(const std::string& ip, const Mac& mac) {
        Bytes f = PacketBuilder().eth(mac, {0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
                      .arp(2, mac, ip, kOurs, "10.0.0.99").pad_to(60).build();
        uint32_t len = static_cast<uint32_t>(f.size());
        (void)run(f, len);
    }
};

Bytes syn(uint16_t sport, uint8_t flags = 0x02) {
    return PacketBuilder().eth(kClient, kOurs).ipv4("10.0.0.2", "10.0.0.100").tcp(sport, 80, flags)
        .build();
}

std::string ip4(const Bytes& f, size_t off) {
    return std::to_string(f[off]) + "." + std::to_string(f[off + 1]) + "." +
           std::to_string(f[off + 2]) + "." + std::to_string(f[off + 3]);
}

bool checksums_ok(const Bytes& f, uint32_t len) {
    const size_t ihl = (f[14] & 0xF) * 4;
    if (test::ref_checksum(f.data() + 14, ihl) != 0) {
        return false;
    }
    const uint32_t l4len = test::get16(f, 16) - static_cast<uint32_t>(ihl);
    (void)len;
    return test::ref_checksum(f.data() + 14 + ihl, l4len,
                              test::ref_pseudo(f.data() + 26, f.data() + 30, 4, l4len, f[23])) == 0;
}

TEST(Lb, AnswersArpAndPingForItsAddresses) {
    Fixture fx(l4_ir({{"10.0.1.1", 1}}));
    for (const char* ip : {"10.0.0.100", "10.0.0.99"}) {
        Bytes f = PacketBuilder().eth(kClient, {0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
                      .arp(1, kClient, "10.0.0.2", {}, ip).pad_to(60).build();
        uint32_t len = static_cast<uint32_t>(f.size());
        ASSERT_EQ(fx.run(f, len), LbAction::Tx) << ip;
        EXPECT_EQ(test::get16(f, 20), 2) << "ARP reply";
        EXPECT_TRUE(std::equal(kOurs.begin(), kOurs.end(), f.begin() + 22));
    }
    Bytes other = PacketBuilder().eth(kClient, {0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
                      .arp(1, kClient, "10.0.0.2", {}, "10.0.0.7").pad_to(60).build();
    uint32_t len = static_cast<uint32_t>(other.size());
    EXPECT_EQ(fx.run(other, len), LbAction::Drop);
    Bytes ping = PacketBuilder().eth(kClient, kOurs).ipv4("10.0.0.2", "10.0.0.100").icmp(8, 0, 0x12340001)
                     .build();
    len = static_cast<uint32_t>(ping.size());
    ASSERT_EQ(fx.run(ping, len), LbAction::Tx);
    EXPECT_EQ(ping[34], 0) << "echo reply";
}

TEST(Lb, FullNatBothWaysWithValidChecksums) {
    Fixture fx(l4_ir({{"10.0.1.1", 1}}));
    // Unknown next hop: the SYN becomes an ARP request for the backend.
    Bytes f = syn(40000);
    uint32_t len = static_cast<uint32_t>(f.size());
    ASSERT_EQ(fx.run(f, len), LbAction::Tx);
    EXPECT_EQ(test::get16(f, 12), 0x0806);
    EXPECT_EQ(ip4(f, 38), "10.0.1.1");
    fx.learn("10.0.1.1", kBackendA);

    f = syn(40000);
    len = static_cast<uint32_t>(f.size());
    ASSERT_EQ(fx.run(f, len), LbAction::Tx);
    EXPECT_EQ(ip4(f, 26), "10.0.0.99") << "SNAT source";
    EXPECT_EQ(ip4(f, 30), "10.0.1.1") << "DNAT destination";
    EXPECT_EQ(test::get16(f, 36), 8080);
    EXPECT_TRUE(std::equal(kBackendA.begin(), kBackendA.end(), f.begin()));
    EXPECT_TRUE(checksums_ok(f, len));
    const uint16_t snat_port = test::get16(f, 34);

    // The backend's SYN-ACK to the SNAT address goes back to the client from the VIP.
    Bytes back = PacketBuilder().eth(kBackendA, kOurs).ipv4("10.0.1.1", "10.0.0.99")
                     .tcp(8080, snat_port, 0x12).build();
    len = static_cast<uint32_t>(back.size());
    ASSERT_EQ(fx.run(back, len), LbAction::Tx);
    EXPECT_EQ(ip4(back, 26), "10.0.0.100");
    EXPECT_EQ(ip4(back, 30), "10.0.0.2");
    EXPECT_EQ(test::get16(back, 34), 80);
    EXPECT_EQ(test::get16(back, 36), 40000);
    EXPECT_TRUE(std::equal(kClient.begin(), kClient.end(), back.begin()));
    EXPECT_TRUE(checksums_ok(back, len));

    // Unknown return traffic is dropped, never forwarded.
    Bytes stray = PacketBuilder().eth(kBackendA, kOurs).ipv4("10.0.1.1", "10.0.0.99")
                      .tcp(8080, static_cast<uint16_t>(snat_port + 1), 0x12).build();
    len = static_cast<uint32_t>(stray.size());
    EXPECT_EQ(fx.run(stray, len), LbAction::Drop);
    // A mid-flow packet of an unknown flow is not load balanced.
    f = syn(41000, 0x10);
    len = static_cast<uint32_t>(f.size());
    EXPECT_EQ(fx.run(f, len), LbAction::Drop);
}

TEST(Lb, ASpoofedSynCannotRedirectABackendsTraffic) {
    Fixture fx(l4_ir({{"10.0.1.1", 1}}));
    fx.learn("10.0.1.1", kBackendA);
    // An attacker's SYN to the VIP with the backend's address as source, from its own MAC.
    constexpr Mac kAttacker = {0x02, 0, 0, 0, 0, 0x66};
    Bytes spoof = PacketBuilder().eth(kAttacker, kOurs).ipv4("10.0.1.1", "10.0.0.100")
                      .tcp(4242, 80, 0x02).build();
    uint32_t len = static_cast<uint32_t>(spoof.size());
    EXPECT_EQ(fx.run(spoof, len), LbAction::Tx) << "a new flow like any other";
    const auto mac = fx.nb->find(4, to_table_addr(4, test::addr("10.0.1.1")));
    ASSERT_TRUE(mac.has_value());
    EXPECT_EQ(*mac, kBackendA) << "the backend's MAC is not replaced by a flow's source";
    // A SYN refused by the half-open budget leaves nothing behind in the neighbour table.
    fx.ctx.ct = nullptr;
    ConnTrackConfig c;
    c.capacity = 1 << 10;
    c.half_open_max = 1;
    auto small = std::move(*ConnTrack::create(c));
    fx.ctx.ct = small.get();
    Bytes first = syn(5000);
    len = static_cast<uint32_t>(first.size());
    EXPECT_EQ(fx.run(first, len), LbAction::Tx);
    Bytes refused = PacketBuilder().eth(kAttacker, kOurs).ipv4("10.0.0.77", "10.0.0.100")
                        .tcp(5001, 80, 0x02).build();
    len = static_cast<uint32_t>(refused.size());
    EXPECT_EQ(fx.run(refused, len), LbAction::Drop) << "half-open budget spent";
    EXPECT_FALSE(fx.nb->find(4, to_table_addr(4, test::addr("10.0.0.77"))).has_value());
    fx.ctx.ct = fx.ct.get();
}

// Full-NAT answers go back to the MAC each flow came from (PeerMacs), not to a per-client
// neighbour entry: thousands of clients behind one router take one peer slot and no
// neighbour slots, and past PeerMacs' capacity the neighbour table takes over.
TEST(Lb, AnswersReachClientsBehindARouterWithoutNeighbourEntries) {
    Fixture fx(l4_ir({{"10.0.1.1", 1}}));
    fx.learn("10.0.1.1", kBackendA);
    constexpr Mac kRouter = {0x02, 0, 0, 0, 0, 0x42};
    auto round_trip = [&](const std::string& client, const Mac& from) {
        Bytes f = PacketBuilder().eth(from, kOurs).ipv4(client, "10.0.0.100").tcp(1234, 80, 0x02)
                      .build();
        uint32_t len = static_cast<uint32_t>(f.size());
        if (fx.run(f, len) != LbAction::Tx || ip4(f, 30) != "10.0.1.1") {
            return std::string("no forward");
        }
        Bytes back = PacketBuilder().eth(kBackendA, kOurs).ipv4("10.0.1.1", "10.0.0.99")
                         .tcp(8080, test::get16(f, 34), 0x12).build();
        len = static_cast<uint32_t>(back.size());
        if (fx.run(back, len) != LbAction::Tx || ip4(back, 30) != client) {
            return std::string("no answer");
        }
        return std::equal(from.begin(), from.end(), back.begin()) ? std::string("ok")
                                                                  : std::string("wrong MAC");
    };
    for (int i = 0; i < 2000; ++i) {
        const std::string client =
            "10.8." + std::to_string(i / 250) + "." + std::to_string(1 + i % 250);
        ASSERT_EQ(round_trip(client, kRouter), "ok") << client;
    }
    EXPECT_EQ(fx.ctx.peers.count, 1u);
    EXPECT_FALSE(fx.nb->find(4, to_table_addr(4, test::addr("10.8.0.1"))).has_value())
        << "clients take no neighbour slots";
    // PeerMacs full (255 other next hops): the client is learned as a neighbour instead.
    for (uint32_t i = fx.ctx.peers.count; i < PeerMacs::kMax; ++i) {
        const uint8_t other[6] = {0x02, 0x77, 0, 0, static_cast<uint8_t>(i >> 8), static_cast<uint8_t>(i)};
        ASSERT_NE(fx.ctx.peers.intern(other), 0);
    }
    constexpr Mac kOnLink = {0x02, 0, 0, 0, 0, 0x43};
    EXPECT_EQ(round_trip("10.9.0.1", kOnLink), "ok");
    EXPECT_TRUE(fx.nb->find(4, to_table_addr(4, test::addr("10.9.0.1"))).has_value());
    EXPECT_EQ(round_trip("10.8.0.7", kRouter), "ok") << "known peers still match";
}

std::string backend_of(Fixture& fx, uint16_t sport, uint8_t flags = 0x02) {
    Bytes f = syn(sport, flags);
    uint32_t len = static_cast<uint32_t>(f.size());
    if (fx.run(f, len) != LbAction::Tx || test::get16(f, 12) != 0x0800) {
        return "dropped";
    }
    return ip4(f, 30);
}

TEST(Lb, EstablishedFlowsKeepTheirBackendAcrossTableChanges) {
    Fixture fx(l4_ir({{"10.0.1.1", 1}, {"10.0.1.2", 1}}));
    fx.learn("10.0.1.1", kBackendA);
    fx.learn("10.0.1.2", kBackendB);
    fx.learn("10.0.1.3", kBackendB);
    std::map<uint16_t, std::string> first;
    for (uint16_t p = 20000; p < 20200; ++p) {
        first[p] = backend_of(fx, p);
        ASSERT_NE(first[p], "dropped");
    }
    // A third backend joins: the Maglev table changes, established flows do not move.
    fx.table = std::move(*build_service_table(l4_ir({{"10.0.1.1", 1}, {"10.0.1.2", 1}, {"10.0.1.3", 1}}), {}));
    int moved_new = 0;
    for (auto& [p, be] : first) {
        EXPECT_EQ(backend_of(fx, p, 0x10), be) << "established flow moved";
    }
    for (uint16_t p = 30000; p < 30300; ++p) {
        moved_new += backend_of(fx, p) == "10.0.1.3" ? 1 : 0;
    }
    EXPECT_GT(moved_new, 50) << "new flows use the new backend";
    // Backend 10.0.1.1 removed: its flows end, the others continue.
    fx.table = std::move(*build_service_table(l4_ir({{"10.0.1.2", 1}, {"10.0.1.3", 1}}), {}));
    for (auto& [p, be] : first) {
        EXPECT_EQ(backend_of(fx, p, 0x10), be == "10.0.1.1" ? "dropped" : be);
    }
}

TEST(Lb, ASynReusingAClosedFlowsPortIsANewFlowOnTheSameBackend) {
    Fixture fx(l4_ir({{"10.0.1.1", 1}, {"10.0.1.2", 1}}));
    fx.learn("10.0.1.1", kBackendA);
    fx.learn("10.0.1.2", kBackendB);
    const std::string be = backend_of(fx, 40000);           // SYN: new flow
    ASSERT_NE(be, "dropped");
    EXPECT_EQ(backend_of(fx, 40000, 0x10), be);              // ACK: established
    EXPECT_EQ(backend_of(fx, 40000, 0x11), be);              // FIN|ACK: closing
    EXPECT_EQ(fx.counter(LbCounter::NewFlows), 1u);
    // The client reuses its port at once (the server closed first, so no TIME_WAIT here).
    EXPECT_EQ(backend_of(fx, 40000), be);
    EXPECT_EQ(fx.counter(LbCounter::NewFlows), 2u) << "a reopened 4-tuple is a new flow";
    EXPECT_EQ(backend_of(fx, 40000), be);                    // its SYN retransmitted: not new
    EXPECT_EQ(fx.counter(LbCounter::NewFlows), 2u);
}

TEST(Lb, SnatPortExhaustionRefusesNewFlowsAndRecovers) {
    Fixture fx(l4_ir({{"10.0.1.1", 1}}));
    fx.learn("10.0.1.1", kBackendA);
    fx.ctx.port_lo = 2000;
    fx.ctx.port_hi = 2007; // 8 SNAT ports
    for (uint16_t p = 0; p < 8; ++p) {
        EXPECT_EQ(backend_of(fx, static_cast<uint16_t>(30000 + p)), "10.0.1.1");
    }
    // The ports are held by live flows: refused (and in this millisecond without a search).
    for (uint16_t p = 8; p < 12; ++p) {
        EXPECT_EQ(backend_of(fx, static_cast<uint16_t>(30000 + p)), "dropped");
    }
    EXPECT_EQ(fx.counter(LbCounter::NoSnatPort), 4u);
    EXPECT_EQ(backend_of(fx, 30000, 0x10), "10.0.1.1") << "established flows keep forwarding";
    // The half-open flows time out (5 s): a later SYN searches again and finds a port.
    fx.now += 6000;
    EXPECT_EQ(backend_of(fx, 30020), "10.0.1.1");
    EXPECT_EQ(fx.counter(LbCounter::NoSnatPort), 4u);
}

TEST(Lb, WeightsHoldOverAThousandFlows) {
    Fixture fx(l4_ir({{"10.0.1.1", 3}, {"10.0.1.2", 1}, {"10.0.1.3", 0}}));
    fx.learn("10.0.1.1", kBackendA);
    fx.learn("10.0.1.2", kBackendB);
    fx.learn("10.0.1.3", kBackendB);
    std::map<std::string, int> n;
    for (uint16_t p = 10000; p < 11000; ++p) {
        ++n[backend_of(fx, p)];
    }
    EXPECT_NEAR(n["10.0.1.1"] / 1000.0, 0.75, 0.05);
    EXPECT_NEAR(n["10.0.1.2"] / 1000.0, 0.25, 0.05);
    EXPECT_EQ(n["10.0.1.3"], 0) << "weight 0 gets nothing";
    EXPECT_EQ(n["dropped"], 0);
}

TEST(Lb, GarbageIsCountedNotForwarded) {
    Fixture fx(l4_ir({{"10.0.1.1", 1}}));
    Bytes junk(40, 0xAB);
    uint32_t len = 40;
    EXPECT_EQ(fx.run(junk, len), LbAction::Drop);
    Bytes truncated = syn(1234);
    truncated.resize(30);
    len = 30;
    EXPECT_EQ(fx.run(truncated, len), LbAction::Drop);
    EXPECT_EQ(fx.counter(LbCounter::ParseDrop), 2u);
    Bytes wrong_port = PacketBuilder().eth(kClient, kOurs).ipv4("10.0.0.2", "10.0.0.100").tcp(1, 81)
                           .build();
    len = static_cast<uint32_t>(wrong_port.size());
    EXPECT_EQ(fx.run(wrong_port, len), LbAction::Drop);
    EXPECT_EQ(fx.counter(LbCounter::NoService), 1u);
}

// ---------------------------------------------------------------------------------------
// DSR
// ---------------------------------------------------------------------------------------

constexpr uint32_t kHeadroom = 128; // RTE_PKTMBUF_HEADROOM

/// Runs a frame through lb_process in an mbuf-like buffer (headroom + frame + tailroom) and
/// returns the frame it left there (empty on Drop).
Bytes run_dsr(Fixture& fx, const Bytes& in, uint32_t headroom = kHeadroom) {
    Bytes buf(headroom + std::max<size_t>(in.size(), 128) + 64, 0xEE);
    std::copy(in.begin(), in.end(), buf.begin() + headroom);
    uint32_t len = static_cast<uint32_t>(in.size());
    uint32_t hr = headroom;
    const std::span<uint8_t> frame(buf.data() + headroom, buf.size() - headroom);
    if (lb_process(fx.ctx, fx.table, frame, len, fx.now, &hr) != LbAction::Tx) {
        return {};
    }
    EXPECT_LE(hr, headroom);
    return Bytes(buf.begin() + hr, buf.begin() + hr + len);
}

/// Checks the outer headers of a DSR frame and returns the inner IP datagram.
Bytes decap_checked(const Bytes& f, bool gue, const std::string& backend) {
    EXPECT_TRUE(std::equal(kBackendA.begin(), kBackendA.end(), f.begin())) << "dst MAC";
    EXPECT_TRUE(std::equal(kOurs.begin(), kOurs.end(), f.begin() + 6)) << "src MAC";
    EXPECT_EQ(test::get16(f, 12), 0x0800);
    EXPECT_EQ(f[14], 0x45);
    EXPECT_EQ(test::ref_checksum(f.data() + 14, 20), 0) << "outer IPv4 header checksum";
    EXPECT_EQ(test::get16(f, 16), f.size() - 14) << "outer total length";
    EXPECT_EQ(ip4(f, 26), "10.0.0.99") << "tunnel source = the SNAT address";
    EXPECT_EQ(ip4(f, 30), backend) << "tunnel destination = the endpoint";
    size_t inner = 34;
    if (gue) {
        EXPECT_EQ(f[23], kProtoUdp);
        EXPECT_EQ(test::get16(f, 36), kGueDefaultPort);
        EXPECT_EQ(test::get16(f, 38), f.size() - 34) << "UDP length";
        EXPECT_EQ(test::get16(f, 40), 0) << "IPv4 GUE: no UDP checksum";
        EXPECT_EQ(f[42], 0) << "GUE version 0, no options";
        EXPECT_EQ(f[43], kProtoIpip) << "GUE protocol: IPv4 inside";
        inner = 46;
    } else {
        EXPECT_EQ(f[23], kProtoIpip);
    }
    return Bytes(f.begin() + static_cast<std::ptrdiff_t>(std::min(inner, f.size())), f.end());
}

TEST(LbDsr, IpipAndGueCarryTheClientsPacketUnchanged) {
    for (const bool gue : {false, true}) {
        SCOPED_TRACE(gue ? "gue" : "ipip");
        Fixture fx(l4_ir({{"10.0.1.1", 1}}, gue ? ir::FwdMode::DsrGue : ir::FwdMode::DsrIpip));
        fx.learn("10.0.1.1", kBackendA);
        const Bytes in = PacketBuilder().eth(kClient, kOurs).ipv4("10.0.0.2", "10.0.0.100")
                             .tcp(40000, 80, 0x02).payload(100).build();
        const Bytes out = run_dsr(fx, in);
        ASSERT_FALSE(out.empty());
        EXPECT_EQ(out.size(), in.size() + encap_overhead(4, gue));
        const Bytes inner = decap_checked(out, gue, "10.0.1.1");
        EXPECT_EQ(inner, Bytes(in.begin() + 14, in.end()))
            << "the inner datagram is the client's, addresses, ports and checksums untouched";
        EXPECT_TRUE(checksums_ok(in, static_cast<uint32_t>(in.size())));
        EXPECT_EQ(fx.counter(LbCounter::NewFlows), 1u);
        EXPECT_EQ(fx.ct->stats().entries, 1u) << "the flow is tracked";
        for (const ConnEntry* p : (*fx.ports)[0]) {
            ASSERT_EQ(p, nullptr) << "DSR flows take no SNAT port";
        }
        // The client's next packet (ACK) follows the entry.
        const Bytes ack = PacketBuilder().eth(kClient, kOurs).ipv4("10.0.0.2", "10.0.0.100")
                              .tcp(40000, 80, 0x10).build();
        ASSERT_FALSE(run_dsr(fx, ack).empty());
        EXPECT_EQ(fx.counter(LbCounter::Established), 1u);
        EXPECT_EQ(fx.counter(LbCounter::ReturnPackets), 0u);
    }
}

TEST(LbDsr, UdpAndPaddedFramesAreEncapsulatedWithoutThePadding) {
    ir::Ir ir = l4_ir({{"10.0.1.1", 1}}, ir::FwdMode::DsrGue);
    ir.listeners[0].protocol = ir::Protocol::UDP;
    Fixture fx(ir);
    fx.learn("10.0.1.1", kBackendA);
    const Bytes in = PacketBuilder().eth(kClient, kOurs).ipv4("10.0.0.2", "10.0.0.100")
                         .udp(5000, 80).payload(4).pad_to(60).build();
    const Bytes out = run_dsr(fx, in);
    ASSERT_FALSE(out.empty());
    const Bytes inner = decap_checked(out, true, "10.0.1.1");
    const size_t ip_len = test::get16(in, 16);
    EXPECT_EQ(inner, Bytes(in.begin() + 14, in.begin() + 14 + static_cast<std::ptrdiff_t>(ip_len)));
}

TEST(LbDsr, NeedsHeadroomAndResolvesTheBackendFirst) {
    Fixture fx(l4_ir({{"10.0.1.1", 1}}, ir::FwdMode::DsrIpip));
    Bytes f = syn(40000);
    // Unknown next hop: an ARP request for the backend from the tunnel source.
    Bytes out = run_dsr(fx, f);
    ASSERT_FALSE(out.empty());
    EXPECT_EQ(test::get16(out, 12), 0x0806);
    EXPECT_EQ(ip4(out, 28), "10.0.0.99");
    EXPECT_EQ(ip4(out, 38), "10.0.1.1");
    fx.learn("10.0.1.1", kBackendA);
    // No headroom (old API): dropped and counted, never sent half-built.
    uint32_t len = static_cast<uint32_t>(f.size());
    EXPECT_EQ(fx.run(f, len), LbAction::Drop);
    EXPECT_EQ(fx.ctx.drops[static_cast<size_t>(DropReason::NoHeadroom)], 1u);
    EXPECT_TRUE(run_dsr(fx, syn(40000), 10).empty());
    EXPECT_FALSE(run_dsr(fx, syn(40000), 20).empty()) << "exactly the IPIP overhead is enough";
}

std::string dsr_backend_of(Fixture& fx, uint16_t sport, uint8_t flags = 0x02) {
    const Bytes out = run_dsr(fx, syn(sport, flags));
    if (out.size() < 34 || test::get16(out, 12) != 0x0800 || out[23] != kProtoIpip) {
        return "dropped";
    }
    return ip4(out, 30);
}

TEST(LbDsr, EstablishedFlowsKeepTheirBackendAcrossTableChanges) {
    const auto dsr = ir::FwdMode::DsrIpip;
    Fixture fx(l4_ir({{"10.0.1.1", 1}, {"10.0.1.2", 1}}, dsr));
    fx.learn("10.0.1.1", kBackendA);
    fx.learn("10.0.1.2", kBackendB);
    fx.learn("10.0.1.3", kBackendB);
    std::map<uint16_t, std::string> first;
    for (uint16_t p = 20000; p < 20200; ++p) {
        first[p] = dsr_backend_of(fx, p);
        ASSERT_NE(first[p], "dropped");
    }
    fx.table = std::move(*build_service_table(
        l4_ir({{"10.0.1.1", 1}, {"10.0.1.2", 1}, {"10.0.1.3", 1}}, dsr), {}));
    for (auto& [p, be] : first) {
        EXPECT_EQ(dsr_backend_of(fx, p, 0x10), be) << "established flow moved";
    }
    int to_new = 0;
    for (uint16_t p = 30000; p < 30300; ++p) {
        to_new += dsr_backend_of(fx, p) == "10.0.1.3" ? 1 : 0;
    }
    EXPECT_GT(to_new, 50) << "new flows use the new backend";
    // A backend removed: its flows end, the others continue.
    fx.table = std::move(*build_service_table(l4_ir({{"10.0.1.2", 1}, {"10.0.1.3", 1}}, dsr), {}));
    for (auto& [p, be] : first) {
        EXPECT_EQ(dsr_backend_of(fx, p, 0x10), be == "10.0.1.1" ? "dropped" : be);
    }
    // Unlike full-NAT, a mid-flow packet of an unknown flow (our restart) is resumed by
    // its Maglev pick: DSR needs no state for the way back.
    EXPECT_NE(dsr_backend_of(fx, 50000, 0x10), "dropped");
}

// Two sluice nodes behind an ECMP router: the router's hash moves a flow to the other node
// (a node added or lost, a link down). With the same IR both nodes pick the same backend
// for every flow (Maglev from the flow hash, identical on every node), so a DSR flow whose
// packets switch node mid-flow keeps its backend on the node that never saw its SYN, and a
// table change applied on both keeps the other backends' flows where they are. The nodes
// differ in what is local to each: their conntrack tables' seeds.
TEST(LbDsr, EcmpPeersAgreeOnEveryFlowsBackend) {
    const auto dsr = ir::FwdMode::DsrIpip;
    const ir::Ir three = l4_ir({{"10.0.1.1", 1}, {"10.0.1.2", 2}, {"10.0.1.3", 1}}, dsr);
    Fixture a(three), b(three);
    ConnTrackConfig c;
    c.capacity = 1 << 14;
    c.seed = 12345; // b's table places flows elsewhere
    b.ct = std::move(*ConnTrack::create(c));
    b.ctx.ct = b.ct.get();
    for (Fixture* fx : {&a, &b}) {
        fx->learn("10.0.1.1", kBackendA);
        fx->learn("10.0.1.2", kBackendB);
        fx->learn("10.0.1.3", kBackendB);
    }
    std::map<uint16_t, std::string> on_a;
    std::map<std::string, int> share;
    for (uint16_t p = 20000; p < 21000; ++p) {
        on_a[p] = dsr_backend_of(a, p);
        ASSERT_NE(on_a[p], "dropped");
        ++share[on_a[p]];
    }
    EXPECT_EQ(share.size(), 3u) << "every backend takes flows";
    EXPECT_GT(share["10.0.1.2"], share["10.0.1.1"]) << "weights honoured";
    // Mid-flow ACKs of a's flows arrive at b, which has no state for them.
    for (auto& [p, be] : on_a) {
        ASSERT_EQ(dsr_backend_of(b, p, 0x10), be) << "source port " << p;
    }
    EXPECT_EQ(b.counter(LbCounter::NewFlows) + b.counter(LbCounter::StatelessFallback) +
                  b.counter(LbCounter::Established),
              on_a.size())
        << "b handled each of them";
    // The same change on both nodes (a backend removed): flows of the other backends keep
    // theirs on either node (b tracks them since their first ACK: DSR resumes an unknown
    // flow by its Maglev pick).
    const ir::Ir two = l4_ir({{"10.0.1.1", 1}, {"10.0.1.2", 2}}, dsr);
    a.table = std::move(*build_service_table(two, {}));
    b.table = std::move(*build_service_table(two, {}));
    for (auto& [p, be] : on_a) {
        if (be == "10.0.1.3") {
            continue;
        }
        EXPECT_EQ(dsr_backend_of(a, p, 0x10), be) << "source port " << p;
        EXPECT_EQ(dsr_backend_of(b, p, 0x10), be) << "source port " << p;
    }
}

// ---------------------------------------------------------------------------------------
// Issue 3 protocol coverage: IPv6, neighbour discovery, ICMP errors, fragments, TTL.
// Every checksum is recomputed from scratch with the naive reference sum.
// ---------------------------------------------------------------------------------------

struct Fam {
    uint8_t family;
    const char* client;
    const char* vip;
    const char* snat;
    const char* backend;
};
constexpr Fam kV4 = {4, "10.0.0.2", "10.0.0.100", "10.0.0.99", "10.0.1.1"};
constexpr Fam kV6 = {6, "fd00::2", "fd00::100", "fd00::99", "fd00:1::1"};
constexpr Fam kFams[] = {kV4, kV6};

/// One dual-stack Gateway (10.0.0.100, fd00::100), one listener on port 80 of `proto`, one
/// backend (port 8080).
ir::Ir dual_ir(ir::Protocol proto, const std::string& backend) {
    ir::Ir ir = l4_ir({{backend, 1}});
    ir.listeners[0].protocol = proto;
    ir.gateways[0].addresses = {"10.0.0.100", "fd00::100"};
    return ir;
}

std::unique_ptr<Fixture> dual_fixture(ir::Protocol proto, const Fam& f) {
    auto fx = std::make_unique<Fixture>(dual_ir(proto, f.backend));
    uint8_t fam = 0;
    EXPECT_TRUE(parse_addr("fd00::99", fam, fx->ctx.snat[1].second));
    fx->ctx.snat[1].first = fam;
    fx->ctx.index_snat();
    return fx;
}

Bytes na_frame(const std::string& target, const Mac& mac, const std::string& dst) {
    const Addr16 t = test::addr(target);
    Bytes body(t.begin(), t.end());
    body.insert(body.end(), {2, 1});
    body.insert(body.end(), mac.begin(), mac.end());
    return PacketBuilder().eth(mac, kOurs).ipv6(target, dst, 255).icmp(136, 0, 0x60000000)
        .payload(body).build();
}

/// Teaches the fixture a neighbour: ARP reply (IPv4) or neighbour advertisement (IPv6).
void learn_nb(Fixture& fx, const Fam& f, const std::string& ip, const Mac& mac) {
    if (f.family == 4) {
        fx.learn(ip, mac);
        return;
    }
    Bytes na = na_frame(ip, mac, f.snat);
    uint32_t len = static_cast<uint32_t>(na.size());
    EXPECT_EQ(fx.run(na, len), LbAction::Drop) << "an advert is learned, not forwarded";
}

PacketBuilder ip_of(const Fam& f, PacketBuilder b, const std::string& s, const std::string& d,
                    uint8_t ttl = 64) {
    return f.family == 4 ? b.ipv4(s, d, ttl) : b.ipv6(s, d, ttl);
}

PacketBuilder from_client(const Fam& f, uint8_t ttl = 64) {
    return ip_of(f, PacketBuilder().eth(kClient, kOurs), f.client, f.vip, ttl);
}

/// An IP header in a frame (no extension headers), read with plain offsets.
struct IpView {
    uint8_t family = 0;
    size_t off = 0, l4 = 0;
    uint32_t l4_len = 0; ///< from the header's length field
    uint8_t proto = 0, ttl = 0;
    const uint8_t* src = nullptr;
    const uint8_t* dst = nullptr;
    size_t alen = 0;
};

IpView view(const Bytes& f, size_t off) {
    IpView v;
    v.off = off;
    if ((f[off] >> 4) == 4) {
        const size_t ihl = (f[off] & 0xF) * 4u;
        v = {4, off, off + ihl, static_cast<uint32_t>(test::get16(f, off + 2) - ihl),
             f[off + 9], f[off + 8], &f[off + 12], &f[off + 16], 4};
    } else {
        v = {6, off, off + 40, test::get16(f, off + 4), f[off + 6], f[off + 7], &f[off + 8],
             &f[off + 24], 16};
    }
    return v;
}

bool addr_is(const uint8_t* p, const IpView& v, const std::string& text) {
    const Addr16 a = test::addr(text);
    return std::equal(p, p + v.alen, a.begin() + (v.family == 4 ? 12 : 0));
}

/// IPv4 header checksum (true for IPv6) and the L4 checksum over `len` bytes (default: the
/// whole L4 datagram), from scratch.
bool ip_ok(const Bytes& f, const IpView& v) {
    return v.family == 6 || test::ref_checksum(&f[v.off], v.l4 - v.off) == 0;
}
bool l4_ok(const Bytes& f, const IpView& v) {
    const uint32_t s = v.proto == kProtoIcmp
                           ? 0
                           : test::ref_pseudo(v.src, v.dst, v.alen, v.l4_len, v.proto);
    return v.l4 + v.l4_len <= f.size() && test::ref_checksum(&f[v.l4], v.l4_len, s) == 0;
}

TEST(LbV6, FullNatBothWaysWithNeighbourDiscovery) {
    auto fxp = dual_fixture(ir::Protocol::TCP, kV6);
    Fixture& fx = *fxp;
    // A next-hop miss for an IPv6 backend: the SYN becomes a neighbour solicitation.
    Bytes f = from_client(kV6).tcp(40000, 80).build();
    uint32_t len = static_cast<uint32_t>(f.size());
    ASSERT_EQ(fx.run(f, len), LbAction::Tx);
    f.resize(len);
    PacketMeta m;
    ASSERT_EQ(parse_packet(f, m), Verdict::NeighborSolicit);
    EXPECT_EQ(m.key.dst, test::addr("fd00:1::1")) << "target";
    EXPECT_EQ(m.key.src, test::addr("fd00::99")) << "from the SNAT address";
    IpView v = view(f, 14);
    EXPECT_TRUE(addr_is(v.dst, v, "ff02::1:ff00:1")) << "solicited-node multicast";
    EXPECT_EQ(Bytes(f.begin(), f.begin() + 6), (Bytes{0x33, 0x33, 0xff, 0, 0, 1}));
    EXPECT_TRUE(l4_ok(f, v));
    Mac sll{};
    ASSERT_TRUE(nd_link_layer_option(f, m, 1, sll));
    EXPECT_EQ(sll, kOurs);
    EXPECT_EQ(fx.counter(LbCounter::NdSolicits), 1u);
    EXPECT_EQ(fx.counter(LbCounter::NewFlows), 1u) << "the flow exists; the retransmit uses it";

    learn_nb(fx, kV6, "fd00:1::1", kBackendA);
    EXPECT_EQ(fx.counter(LbCounter::NdLearned), 1u);
    f = from_client(kV6).tcp(40000, 80).build();
    len = static_cast<uint32_t>(f.size());
    ASSERT_EQ(fx.run(f, len), LbAction::Tx);
    v = view(f, 14);
    EXPECT_TRUE(addr_is(v.src, v, "fd00::99")) << "SNAT source";
    EXPECT_TRUE(addr_is(v.dst, v, "fd00:1::1")) << "DNAT destination";
    EXPECT_EQ(v.ttl, 63);
    EXPECT_EQ(test::get16(f, v.l4 + 2), 8080);
    EXPECT_TRUE(l4_ok(f, v));
    EXPECT_TRUE(std::equal(kBackendA.begin(), kBackendA.end(), f.begin()));
    const uint16_t snat_port = test::get16(f, v.l4);

    Bytes back = PacketBuilder().eth(kBackendA, kOurs).ipv6("fd00:1::1", "fd00::99")
                     .tcp(8080, snat_port, 0x12).build();
    len = static_cast<uint32_t>(back.size());
    ASSERT_EQ(fx.run(back, len), LbAction::Tx);
    v = view(back, 14);
    EXPECT_TRUE(addr_is(v.src, v, "fd00::100"));
    EXPECT_TRUE(addr_is(v.dst, v, "fd00::2"));
    EXPECT_EQ(test::get16(back, v.l4), 80);
    EXPECT_EQ(test::get16(back, v.l4 + 2), 40000);
    EXPECT_TRUE(l4_ok(back, v));
    EXPECT_TRUE(std::equal(kClient.begin(), kClient.end(), back.begin())) << "learned MAC";
}

TEST(LbV6, NeighbourSolicitationsForOurAddressesAreAnswered) {
    struct Case {
        const char* target;
        bool answered;
    };
    for (const Case c : {Case{"fd00::100", true}, Case{"fd00::99", true}, Case{"fd00::7", false}}) {
        auto fxp = dual_fixture(ir::Protocol::TCP, kV6);
        Fixture& fx = *fxp;
        const Addr16 t = test::addr(c.target);
        Bytes body(t.begin(), t.end());
        body.insert(body.end(), {1, 1});
        body.insert(body.end(), kClient.begin(), kClient.end());
        const std::string sn = "ff02::1:ff00:" + std::string(c.target).substr(6);
        Bytes ns = PacketBuilder().eth(kClient, {0x33, 0x33, 0xff, 0, 0, t[15]})
                       .ipv6("fd00::2", sn, 255).icmp(135, 0, 0).payload(body).build();
        uint32_t len = static_cast<uint32_t>(ns.size());
        const LbAction a = fx.run(ns, len);
        const std::optional<Mac> learned = fx.nb->find(6, to_table_addr(6, test::addr("fd00::2")));
        ASSERT_TRUE(learned.has_value()) << "the solicitor is learned from its option";
        EXPECT_EQ(*learned, kClient);
        if (!c.answered) {
            EXPECT_EQ(a, LbAction::Drop) << c.target;
            continue;
        }
        ASSERT_EQ(a, LbAction::Tx) << c.target;
        ns.resize(len);
        EXPECT_EQ(len, 14u + 40 + 32);
        EXPECT_TRUE(std::equal(kClient.begin(), kClient.end(), ns.begin())) << "to the solicitor";
        EXPECT_TRUE(std::equal(kOurs.begin(), kOurs.end(), ns.begin() + 6));
        const IpView v = view(ns, 14);
        EXPECT_EQ(v.proto, kProtoIcmpv6);
        EXPECT_EQ(v.ttl, 255);
        EXPECT_TRUE(addr_is(v.src, v, c.target));
        EXPECT_TRUE(addr_is(v.dst, v, "fd00::2"));
        EXPECT_TRUE(l4_ok(ns, v)) << "ICMPv6 checksum";
        EXPECT_EQ(ns[v.l4], 136);
        EXPECT_EQ(ns[v.l4 + 4], 0x60) << "solicited + override";
        EXPECT_TRUE(std::equal(t.begin(), t.end(), ns.begin() + v.l4 + 8));
        EXPECT_EQ(ns[v.l4 + 24], 2) << "target link-layer option";
        EXPECT_TRUE(std::equal(kOurs.begin(), kOurs.end(), ns.begin() + v.l4 + 26));
        EXPECT_EQ(fx.counter(LbCounter::NdAdverts), 1u);
    }
}

TEST(LbV6, PingToTheVipIsAnswered) {
    auto fxp = dual_fixture(ir::Protocol::TCP, kV6);
    Bytes ping = from_client(kV6).icmp(128, 0, 0x12340001).payload(16).build();
    uint32_t len = static_cast<uint32_t>(ping.size());
    ASSERT_EQ(fxp->run(ping, len), LbAction::Tx);
    const IpView v = view(ping, 14);
    EXPECT_EQ(ping[v.l4], 129);
    EXPECT_TRUE(addr_is(v.src, v, "fd00::100"));
    EXPECT_TRUE(l4_ok(ping, v));
}

/// Opens a flow client -> VIP:80 (TCP or UDP) and returns the frame sent to the backend.
Bytes open_flow(Fixture& fx, const Fam& f, bool udp, uint16_t cport) {
    learn_nb(fx, f, f.backend, kBackendA);
    PacketBuilder b = from_client(f);
    if (udp) {
        b.udp(cport, 80).payload(40);
    } else {
        b.tcp(cport, 80).payload(40);
    }
    Bytes out = b.build();
    uint32_t len = static_cast<uint32_t>(out.size());
    EXPECT_EQ(fx.run(out, len), LbAction::Tx);
    out.resize(len);
    return out;
}

TEST(LbIcmpError, FromTheBackendReachesTheClientTranslated) {
    struct Case {
        Fam f;
        bool udp;
        uint8_t type, code; ///< port unreachable / fragmentation needed / packet too big
        uint32_t rest;      ///< MTU field
        bool whole;         ///< quote the whole datagram, else IP header + 8 bytes
    };
    const Case cases[] = {
        {kV4, true, 3, 3, 0, true},        {kV6, true, 1, 4, 0, true},
        {kV4, false, 3, 3, 0, true},       {kV6, false, 1, 4, 0, true},
        {kV4, false, 3, 4, 1400, false},   {kV6, false, 2, 0, 1280, false},
        {kV4, true, 3, 4, 1400, false},
    };
    for (const Case& c : cases) {
        SCOPED_TRACE(std::string(c.f.client) + (c.udp ? " udp" : " tcp") + " type " +
                     std::to_string(c.type) + "/" + std::to_string(c.code));
        auto fxp = dual_fixture(c.udp ? ir::Protocol::UDP : ir::Protocol::TCP, c.f);
        Fixture& fx = *fxp;
        learn_nb(fx, c.f, c.f.client, kClient);
        Bytes client_pkt = ip_of(c.f, PacketBuilder().eth(kClient, kOurs), c.f.client, c.f.vip)
                               .udp(5000, 80).build();
        Bytes fwd = open_flow(fx, c.f, c.udp, 5000);
        const IpView fv = view(fwd, 14);
        Bytes quote(fwd.begin() + 14, fwd.begin() + static_cast<long>(
                                                      c.whole ? fwd.size() : fv.l4 + 8));
        Bytes err = ip_of(c.f, PacketBuilder().eth(kBackendA, kOurs), c.f.backend, c.f.snat)
                        .icmp(c.type, c.code, c.rest).payload(quote).build();
        uint32_t len = static_cast<uint32_t>(err.size());
        ASSERT_EQ(fx.run(err, len), LbAction::Tx);
        err.resize(len);
        EXPECT_EQ(fx.counter(LbCounter::IcmpErrorsToClient), 1u);
        EXPECT_TRUE(std::equal(kClient.begin(), kClient.end(), err.begin()));
        const IpView o = view(err, 14);
        EXPECT_TRUE(addr_is(o.src, o, c.f.vip)) << "outer source = the VIP";
        EXPECT_TRUE(addr_is(o.dst, o, c.f.client)) << "outer destination = the client";
        EXPECT_EQ(o.ttl, 63);
        EXPECT_TRUE(ip_ok(err, o)) << "outer IPv4 header checksum";
        EXPECT_TRUE(l4_ok(err, o)) << "ICMP checksum (ICMPv6: with the pseudo-header)";
        EXPECT_EQ(err[o.l4], c.type);
        EXPECT_EQ(test::get16(err, o.l4 + 6), c.rest) << "MTU kept";
        // The embedded datagram reads as the client sent it.
        const IpView in = view(err, o.l4 + 8);
        EXPECT_TRUE(addr_is(in.src, in, c.f.client));
        EXPECT_TRUE(addr_is(in.dst, in, c.f.vip));
        EXPECT_EQ(test::get16(err, in.l4), 5000);
        EXPECT_EQ(test::get16(err, in.l4 + 2), 80);
        EXPECT_TRUE(ip_ok(err, in)) << "embedded IPv4 header checksum";
        if (c.whole) {
            EXPECT_TRUE(l4_ok(err, in)) << "embedded TCP/UDP checksum";
        } else if (c.udp) {
            // Only 8 bytes quoted: the UDP checksum is there and must be the client's.
            Bytes orig = ip_of(c.f, PacketBuilder().eth(kClient, kOurs), c.f.client, c.f.vip)
                             .udp(5000, 80).payload(40).build();
            EXPECT_EQ(test::get16(err, in.l4 + 6), test::get16(orig, view(orig, 14).l4 + 6));
        }
        PacketMeta m;
        ASSERT_EQ(parse_packet(err, m), Verdict::IcmpError);
        // The key reads like the flow's answer (VIP -> client), the error being about it.
        EXPECT_EQ(m.key.src, test::addr(c.f.vip));
        EXPECT_EQ(m.key.dst, test::addr(c.f.client));
        EXPECT_EQ(m.key.dst_port, 5000);
        (void)client_pkt;
    }
}

TEST(LbIcmpError, FromTheClientSideReachesTheBackendTranslated) {
    for (const Fam& f : kFams) {
        SCOPED_TRACE(f.client);
        auto fxp = dual_fixture(ir::Protocol::UDP, f);
        Fixture& fx = *fxp;
        Bytes fwd = open_flow(fx, f, true, 6000);
        const uint16_t sport = test::get16(fwd, view(fwd, 14).l4);
        // The client says port unreachable about the VIP's answer VIP:80 -> client:6000.
        Bytes answer = ip_of(f, PacketBuilder(), f.vip, f.client).udp(80, 6000).payload(12)
                           .build_l3();
        Bytes err = ip_of(f, PacketBuilder().eth(kClient, kOurs), f.client, f.vip)
                        .icmp(f.family == 4 ? 3 : 1, f.family == 4 ? 3 : 4).payload(answer)
                        .build();
        uint32_t len = static_cast<uint32_t>(err.size());
        ASSERT_EQ(fx.run(err, len), LbAction::Tx);
        err.resize(len);
        EXPECT_EQ(fx.counter(LbCounter::IcmpErrorsToBackend), 1u);
        EXPECT_TRUE(std::equal(kBackendA.begin(), kBackendA.end(), err.begin()));
        const IpView o = view(err, 14);
        EXPECT_TRUE(addr_is(o.src, o, f.snat));
        EXPECT_TRUE(addr_is(o.dst, o, f.backend));
        EXPECT_TRUE(ip_ok(err, o));
        EXPECT_TRUE(l4_ok(err, o));
        const IpView in = view(err, o.l4 + 8);
        EXPECT_TRUE(addr_is(in.src, in, f.backend)) << "as the backend sent it";
        EXPECT_TRUE(addr_is(in.dst, in, f.snat));
        EXPECT_EQ(test::get16(err, in.l4), 8080);
        EXPECT_EQ(test::get16(err, in.l4 + 2), sport);
        EXPECT_TRUE(ip_ok(err, in));
        EXPECT_TRUE(l4_ok(err, in));

        // An error about no flow we know is dropped and counted.
        Bytes stray = ip_of(f, PacketBuilder(), f.vip, f.client).udp(80, 6001).build_l3();
        Bytes err2 = ip_of(f, PacketBuilder().eth(kClient, kOurs), f.client, f.vip)
                         .icmp(f.family == 4 ? 3 : 1, 3).payload(stray).build();
        len = static_cast<uint32_t>(err2.size());
        EXPECT_EQ(fx.run(err2, len), LbAction::Drop);
        EXPECT_EQ(fx.counter(LbCounter::IcmpErrorNoFlow), 1u);
        // A spoofed error claiming to come from another backend port is not forwarded.
        Bytes quote(fwd.begin() + 14, fwd.end());
        test::set16(quote, view(fwd, 14).l4 - 14 + 2, 9999);
        Bytes spoof = ip_of(f, PacketBuilder().eth(kBackendA, kOurs), f.backend, f.snat)
                          .icmp(f.family == 4 ? 3 : 1, 3).payload(quote).build();
        len = static_cast<uint32_t>(spoof.size());
        EXPECT_EQ(fx.run(spoof, len), LbAction::Drop);
        EXPECT_EQ(fx.counter(LbCounter::IcmpErrorNoFlow), 2u);
    }
}

TEST(LbFragments, LaterFragmentsFollowTheFirstOnesTranslation) {
    for (const Fam& f : kFams) {
        SCOPED_TRACE(f.client);
        auto fxp = dual_fixture(ir::Protocol::UDP, f);
        Fixture& fx = *fxp;
        learn_nb(fx, f, f.backend, kBackendA);
        learn_nb(fx, f, f.client, kClient);
        auto frag = [&](const std::string& s, const std::string& d, uint16_t sp, uint16_t dp,
                        uint16_t off, bool more, size_t keep, uint32_t id, const Mac& from) {
            return ip_of(f, PacketBuilder().eth(from, kOurs), s, d).udp(sp, dp).payload(100)
                .fragment(off, more, keep, id).build();
        };
        // Parts of a 108-byte UDP datagram: [0,48) with the header, [48,80), [80,108).
        auto part = [&](uint16_t off, bool more, size_t keep, uint32_t id = 0x4242) {
            return frag(f.client, f.vip, 7000, 80, off, more, keep, id, kClient);
        };
        // Out of order: a later fragment before the first is dropped and counted.
        Bytes early = part(80, false, 28);
        uint32_t len = static_cast<uint32_t>(early.size());
        EXPECT_EQ(fx.run(early, len), LbAction::Drop);
        EXPECT_EQ(fx.counter(LbCounter::FragNoState), 1u);

        Bytes reassembled;
        uint16_t sport = 0;
        for (const auto& [off, more, keep] :
             {std::tuple<uint16_t, bool, size_t>{0, true, 48}, {48, true, 32}, {80, false, 28}}) {
            Bytes p = part(off, more, keep);
            len = static_cast<uint32_t>(p.size());
            ASSERT_EQ(fx.run(p, len), LbAction::Tx) << "offset " << off;
            p.resize(len);
            const IpView v = view(p, 14);
            EXPECT_TRUE(addr_is(v.src, v, f.snat));
            EXPECT_TRUE(addr_is(v.dst, v, f.backend));
            EXPECT_TRUE(ip_ok(p, v));
            EXPECT_TRUE(std::equal(kBackendA.begin(), kBackendA.end(), p.begin()));
            const size_t data = v.l4 + (f.family == 6 ? 8 : 0); // after the fragment header
            const size_t end = v.off + (f.family == 4 ? test::get16(p, v.off + 2)
                                                       : 40 + test::get16(p, v.off + 4));
            reassembled.insert(reassembled.end(), p.begin() + static_cast<long>(data),
                               p.begin() + static_cast<long>(end));
            if (off == 0) {
                sport = test::get16(p, data);
                EXPECT_EQ(test::get16(p, data + 2), 8080);
            }
        }
        EXPECT_EQ(fx.counter(LbCounter::FragFirst), 1u);
        EXPECT_EQ(fx.counter(LbCounter::FragTranslated), 2u);
        // The backend reassembles a datagram whose UDP checksum holds for the new addresses.
        ASSERT_EQ(reassembled.size(), 108u);
        const Addr16 s = test::addr(f.snat), d = test::addr(f.backend);
        const size_t ao = f.family == 4 ? 12 : 0, al = f.family == 4 ? 4 : 16;
        EXPECT_EQ(test::ref_checksum(reassembled.data(), 108,
                                     test::ref_pseudo(s.data() + ao, d.data() + ao, al, 108, 17)),
                  0);
        // The answer, fragmented too, goes back to the client from the VIP.
        for (const auto& [off, more, keep] :
             {std::tuple<uint16_t, bool, size_t>{0, true, 48}, {48, false, 60}}) {
            Bytes p = frag(f.backend, f.snat, 8080, sport, off, more, keep, 0x77, kBackendA);
            len = static_cast<uint32_t>(p.size());
            ASSERT_EQ(fx.run(p, len), LbAction::Tx) << "answer offset " << off;
            const IpView v = view(p, 14);
            EXPECT_TRUE(addr_is(v.src, v, f.vip));
            EXPECT_TRUE(addr_is(v.dst, v, f.client));
            EXPECT_TRUE(ip_ok(p, v));
        }
        EXPECT_EQ(fx.counter(LbCounter::FragTranslated), 3u);
        // Another datagram's id, and a remembered one after the 2 s timeout: no state.
        Bytes other = part(48, true, 32, 0x4343);
        len = static_cast<uint32_t>(other.size());
        EXPECT_EQ(fx.run(other, len), LbAction::Drop);
        fx.now += FragTable::kTimeoutMs + 1;
        Bytes late = part(48, true, 32);
        len = static_cast<uint32_t>(late.size());
        EXPECT_EQ(fx.run(late, len), LbAction::Drop);
        EXPECT_EQ(fx.counter(LbCounter::FragNoState), 3u);
        // Fragments of other protocols (a big ping) are dropped and counted, not silently.
        Bytes ping = ip_of(f, PacketBuilder().eth(kClient, kOurs), f.client, f.vip)
                         .icmp(f.family == 4 ? 8 : 128, 0, 1).payload(100)
                         .fragment(0, true, 48).build();
        len = static_cast<uint32_t>(ping.size());
        EXPECT_EQ(fx.run(ping, len), LbAction::Drop);
        EXPECT_EQ(fx.counter(LbCounter::FragUnsupported), 1u);
    }
}

TEST(LbTtl, HopLimitOneIsAnsweredWithTimeExceeded) {
    for (const Fam& f : kFams) {
        SCOPED_TRACE(f.client);
        auto fxp = dual_fixture(ir::Protocol::TCP, f);
        Fixture& fx = *fxp;
        learn_nb(fx, f, f.backend, kBackendA);
        Bytes syn1 = ip_of(f, PacketBuilder().eth(kClient, kOurs), f.client, f.vip, 1)
                         .tcp(9000, 80).build();
        const Bytes orig = syn1;
        uint32_t len = static_cast<uint32_t>(syn1.size());
        ASSERT_EQ(fx.run(syn1, len), LbAction::Tx);
        syn1.resize(len);
        EXPECT_EQ(fx.counter(LbCounter::TimeExceeded), 1u);
        EXPECT_EQ(fx.counter(LbCounter::NewFlows), 0u) << "no state for an expiring packet";
        EXPECT_TRUE(std::equal(kClient.begin(), kClient.end(), syn1.begin()));
        const IpView v = view(syn1, 14);
        EXPECT_TRUE(addr_is(v.src, v, f.vip)) << "from the VIP";
        EXPECT_TRUE(addr_is(v.dst, v, f.client));
        EXPECT_TRUE(ip_ok(syn1, v));
        EXPECT_TRUE(l4_ok(syn1, v));
        EXPECT_EQ(syn1[v.l4], f.family == 4 ? 11 : 3);
        EXPECT_TRUE(std::equal(orig.begin() + 14, orig.end(), syn1.begin() + v.l4 + 8))
            << "quotes the original datagram";

        // TTL 2 is forwarded with TTL 1.
        Bytes syn2 = ip_of(f, PacketBuilder().eth(kClient, kOurs), f.client, f.vip, 2)
                         .tcp(9000, 80).build();
        len = static_cast<uint32_t>(syn2.size());
        ASSERT_EQ(fx.run(syn2, len), LbAction::Tx);
        EXPECT_EQ(view(syn2, 14).ttl, 1);
        EXPECT_TRUE(ip_ok(syn2, view(syn2, 14)));
        // Return traffic with TTL 1: time exceeded from the SNAT address.
        const uint16_t sport = test::get16(syn2, view(syn2, 14).l4);
        Bytes back = ip_of(f, PacketBuilder().eth(kBackendA, kOurs), f.backend, f.snat, 1)
                         .tcp(8080, sport, 0x12).build();
        len = static_cast<uint32_t>(back.size());
        ASSERT_EQ(fx.run(back, len), LbAction::Tx);
        const IpView b = view(back, 14);
        EXPECT_TRUE(addr_is(b.src, b, f.snat));
        EXPECT_TRUE(addr_is(b.dst, b, f.backend));
        EXPECT_TRUE(l4_ok(back, b));
        EXPECT_EQ(fx.counter(LbCounter::TimeExceeded), 2u);
        // An ICMP error with TTL 1 is never answered with an error.
        Bytes answer = ip_of(f, PacketBuilder(), f.vip, f.client).tcp(80, 9000, 0x12).build_l3();
        Bytes err = ip_of(f, PacketBuilder().eth(kClient, kOurs), f.client, f.vip, 1)
                        .icmp(f.family == 4 ? 3 : 1, 3).payload(answer).build();
        len = static_cast<uint32_t>(err.size());
        EXPECT_EQ(fx.run(err, len), LbAction::Drop);
        EXPECT_EQ(fx.counter(LbCounter::TtlDrop), 1u);
    }
}

// ---- Several workers: flow ownership (lb_owner) ----------------------------------------

uint16_t owner_of(Fixture& fx, const Bytes& f) {
    auto burst = std::make_unique<LbBurst>();
    Bytes copy = f;
    const LbFrame lf{copy.data(), static_cast<uint32_t>(copy.size()),
                     static_cast<uint32_t>(copy.size()), 0};
    lb_burst_parse(fx.ctx, *burst, &lf, 0, 1);
    const uint16_t o = lb_burst_owner(fx.ctx, *burst, 0, fx.now); // as the worker asks
    PacketMeta m2;
    (void)parse_packet(f, m2);
    EXPECT_EQ(o, lb_owner(fx.ctx, m2, 0, fx.now)) << "with or without the burst's hash";
    return o;
}

TEST(LbWorkers, EveryPacketOfAFlowBothWaysHasOneOwner) {
    for (const Fam& f : kFams) {
        SCOPED_TRACE(f.client);
        for (const bool udp : {false, true}) {
            auto fxp = dual_fixture(udp ? ir::Protocol::UDP : ir::Protocol::TCP, f);
            Fixture& fx = *fxp;
            learn_nb(fx, f, f.backend, kBackendA);
            learn_nb(fx, f, f.client, kClient);
            fx.ctx.workers = 3;
            std::array<int, 3> per_owner{};
            for (uint16_t cport = 20000; cport < 20300; ++cport) {
                PacketBuilder b = from_client(f);
                Bytes out = (udp ? b.udp(cport, 80) : b.tcp(cport, 80, 0x02)).payload(20).build();
                const uint16_t owner = owner_of(fx, out);
                ASSERT_LT(owner, 3);
                ++per_owner[owner];
                fx.ctx.worker = owner; // the owner handles it
                uint32_t len = static_cast<uint32_t>(out.size());
                ASSERT_EQ(fx.run(out, len), LbAction::Tx);
                out.resize(len);
                const IpView v = view(out, 14);
                const uint16_t snat_port = test::get16(out, v.l4);
                EXPECT_EQ(snat_port % 3, owner) << "the owner takes SNAT ports of its own class";
                // The backend's answer to the SNAT address belongs to the same worker.
                PacketBuilder rb = ip_of(f, PacketBuilder().eth(kBackendA, kOurs), f.backend, f.snat);
                Bytes back = (udp ? rb.udp(8080, snat_port) : rb.tcp(8080, snat_port, 0x12)).build();
                fx.ctx.worker = 0;
                EXPECT_EQ(owner_of(fx, back), owner) << "return traffic of port " << snat_port;
                // ICMP errors about the flow, from either side, too.
                Bytes quote(out.begin() + 14, out.begin() + static_cast<long>(v.l4 + 8));
                Bytes err_be = ip_of(f, PacketBuilder().eth(kBackendA, kOurs), f.backend, f.snat)
                                   .icmp(f.family == 4 ? 3 : 1, f.family == 4 ? 3 : 4, 0)
                                   .payload(quote).build();
                EXPECT_EQ(owner_of(fx, err_be), owner) << "error from the backend";
                PacketBuilder ab = ip_of(f, PacketBuilder(), f.vip, f.client);
                Bytes answer = (udp ? ab.udp(80, cport) : ab.tcp(80, cport, 0x12)).payload(12).build_l3();
                Bytes err_cl = from_client(f).icmp(f.family == 4 ? 3 : 1, f.family == 4 ? 3 : 4, 0)
                                   .payload(answer).build();
                EXPECT_EQ(owner_of(fx, err_cl), owner) << "error from the client";
            }
            for (int n : per_owner) {
                EXPECT_GT(n, 60) << "300 flows spread over 3 workers";
            }
        }
    }
}

TEST(LbWorkers, LaterFragmentsGoWhereTheirFirstFragmentWent) {
    for (const Fam& f : kFams) {
        SCOPED_TRACE(f.client);
        auto fxp = dual_fixture(ir::Protocol::UDP, f);
        Fixture& fx = *fxp;
        fx.ctx.workers = 4;
        fx.ctx.worker = 1; // the receiving worker
        std::array<int, 4> per_owner{};
        for (uint32_t id = 1; id <= 100; ++id) {
            const auto cport = static_cast<uint16_t>(30000 + id);
            const uint16_t whole = owner_of(fx, from_client(f).udp(cport, 80).payload(100).build());
            Bytes first = from_client(f).udp(cport, 80).payload(100).fragment(0, true, 48, id).build();
            Bytes later = from_client(f).udp(cport, 80).payload(100).fragment(48, false, 60, id).build();
            EXPECT_EQ(owner_of(fx, first), whole) << "a first fragment goes with its flow";
            EXPECT_EQ(owner_of(fx, later), whole) << "a later fragment follows its first";
            ++per_owner[whole];
        }
        for (int n : per_owner) {
            EXPECT_GT(n, 5);
        }
        Bytes stray = from_client(f).udp(1, 80).payload(100).fragment(48, false, 60, 999).build();
        EXPECT_EQ(owner_of(fx, stray), 1) << "no first fragment seen: stays (FragNoState there)";
        Bytes arp = PacketBuilder().eth(kClient, {0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
                        .arp(1, kClient, "10.0.0.2", {}, "10.0.0.99").pad_to(60).build();
        EXPECT_EQ(owner_of(fx, arp), 1) << "ARP is answered where it arrives";
    }
}

TEST(LbWorkers, OneWorkerOwnsEverything) {
    Fixture fx(l4_ir({{"10.0.1.1", 1}}));
    for (uint16_t p = 1000; p < 1100; ++p) {
        EXPECT_EQ(owner_of(fx, syn(p)), 0);
    }
}

TEST(NeighborTableTest, ConcurrentLearnersAndReadersNeverSeeATornMac) {
    auto nb = std::make_unique<NeighborTable>();
    Addr shared{};
    shared[0] = 10;
    shared[3] = 1;
    const Mac a = {0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa};
    const Mac b = {0xbb, 0xbb, 0xbb, 0xbb, 0xbb, 0xbb};
    std::atomic<bool> stop{false}, reading{false};
    std::atomic<uint64_t> torn{0}, found{0};
    // Two learners flip the shared address's MAC and learn addresses of their own. They start
    // once the reader runs (on 2 cores the reader thread may otherwise be scheduled only
    // after the learners are done), and the reader looks at least once after they end.
    auto learner = [&](uint8_t base, const Mac& mine) {
        while (!reading.load()) {
            std::this_thread::yield();
        }
        for (uint32_t i = 0; i < 200000; ++i) {
            nb->learn(4, shared, (i & 1) ? a : b);
            Addr own{};
            own[0] = base;
            own[2] = static_cast<uint8_t>(i >> 8);
            own[3] = static_cast<uint8_t>(i);
            if (i < 2000) {
                nb->learn(4, own, mine);
            }
        }
    };
    std::thread reader([&] {
        reading = true;
        bool last = false;
        do {
            last = stop.load();
            if (const auto m = nb->find(4, shared)) {
                ++found;
                torn += (*m != a && *m != b) ? 1 : 0;
            }
        } while (!last);
    });
    std::thread l1(learner, 20, a), l2(learner, 30, b);
    l1.join();
    l2.join();
    stop = true;
    reader.join();
    EXPECT_EQ(torn.load(), 0u);
    EXPECT_GT(found.load(), 0u);
    for (uint32_t i = 0; i < 2000; ++i) {
        for (const auto& [base, mac] : {std::pair<uint8_t, Mac>{20, a}, {30, b}}) {
            Addr own{};
            own[0] = base;
            own[2] = static_cast<uint8_t>(i >> 8);
            own[3] = static_cast<uint8_t>(i);
            const auto got = nb->find(4, own);
            ASSERT_TRUE(got.has_value()) << int(base) << "." << i;
            EXPECT_EQ(*got, mac);
        }
    }
}

TEST(LbCounters, EveryCounterHasAName) {
    for (size_t i = 0; i < kLbCounterCount; ++i) {
        EXPECT_STRNE(lb_counter_name(static_cast<LbCounter>(i)), "invalid");
    }
    EXPECT_STREQ(lb_counter_name(LbCounter::FragNoState), "frag_no_state");
}


// ---- the burst API against the one-frame API ------------------------------------------

/// A frame in a buffer with headroom and tailroom, as an mbuf holds it.
struct Held {
    static constexpr uint32_t kRoom = 64;
    Bytes buf;
    uint32_t len = 0;
    uint32_t headroom = kRoom;
    explicit Held(const Bytes& f) : buf(kRoom + std::max<size_t>(f.size(), 128) + 64, 0xEE) {
        std::copy(f.begin(), f.end(), buf.begin() + kRoom);
        len = static_cast<uint32_t>(f.size());
    }
    /// The frame as it leaves (its start moved by DSR's encapsulation).
    [[nodiscard]] Bytes out() const {
        return Bytes(buf.begin() + headroom, buf.begin() + headroom + len);
    }
};

/// Frames of every kind the L4 path handles, with one flow's frames spread over bursts so
/// that a burst holds a flow's first packet and its next ones together.
std::vector<Bytes> mixed_frames(uint16_t base_port, const std::vector<uint16_t>& snat_ports) {
    std::vector<Bytes> v;
    const Mac bcast = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
    for (uint16_t i = 0; i < 40; ++i) {
        const auto sp = static_cast<uint16_t>(base_port + i);
        v.push_back(syn(sp));
        if (i % 3 == 0) {
            v.push_back(syn(sp, 0x10)); // the ACK right behind its SYN, often in its burst
        }
        if (i % 7 == 0) {
            v.push_back(PacketBuilder().eth(kClient, kOurs).ipv4("10.0.0.2", "10.0.0.100")
                            .udp(sp, 80).payload(8).build()); // no UDP listener: to the host
        }
    }
    for (uint16_t i = 0; i < 40; ++i) {
        v.push_back(syn(static_cast<uint16_t>(base_port + i), i % 5 == 0 ? 0x11 : 0x10));
        if (i % 4 == 1) {
            // Established ACKs with a traffic class and DF, or an IP ID without DF, and data:
            // what DSR's outer header copies (TOS), sets (DF) or keeps (the ID, RFC 6864).
            v.push_back(PacketBuilder().eth(kClient, kOurs).ipv4("10.0.0.2", "10.0.0.100")
                            .tos(static_cast<uint8_t>(0xb8 + i)).df(i % 8 == 1)
                            .ip_id(static_cast<uint16_t>(0x1234 * i))
                            .tcp(static_cast<uint16_t>(base_port + i), 80, 0x10)
                            .payload(i).build());
        }
    }
    for (const uint16_t p : snat_ports) { // the backends' answers, and one to a free port
        v.push_back(PacketBuilder().eth(kBackendA, kOurs).ipv4("10.0.1.1", "10.0.0.99")
                        .tcp(8080, p, 0x12).build());
        // Then an ACK (stage 2's return lane when the flow is established), and for two
        // flows established by now (the fourth and fifth SYN's: ACKed, never FINed by the
        // client) a FIN, and one with TTL 1 and a UDP datagram: the lane must leave those
        // to the general path.
        v.push_back(PacketBuilder().eth(kBackendA, kOurs).ipv4("10.0.1.1", "10.0.0.99")
                        .tcp(8080, p, 0x10).build());
        if (p == static_cast<uint16_t>(snat_ports.front() + 4)) {
            v.push_back(PacketBuilder().eth(kBackendA, kOurs).ipv4("10.0.1.1", "10.0.0.99")
                            .tcp(8080, p, 0x11).build());
            v.push_back(PacketBuilder().eth(kBackendA, kOurs).ipv4("10.0.1.1", "10.0.0.99")
                            .tcp(8080, p, 0x10).build());
        }
        if (p == static_cast<uint16_t>(snat_ports.front() + 3)) {
            v.push_back(PacketBuilder().eth(kBackendA, kOurs).ipv4("10.0.1.1", "10.0.0.99", 1)
                            .tcp(8080, p, 0x10).build());
            v.push_back(PacketBuilder().eth(kBackendA, kOurs).ipv4("10.0.1.1", "10.0.0.99")
                            .udp(8080, p).payload(8).build());
        }
    }
    v.push_back(PacketBuilder().eth(kBackendA, kOurs).ipv4("10.0.1.1", "10.0.0.99")
                    .tcp(8080, 7, 0x12).build());
    v.push_back(PacketBuilder().eth(kClient, bcast).arp(1, kClient, "10.0.0.2", {}, "10.0.0.100")
                    .pad_to(60).build());
    v.push_back(PacketBuilder().eth(kClient, kOurs).ipv4("10.0.0.2", "10.0.0.100")
                    .icmp(8, 0, 0x12340001).payload(16).build());
    v.push_back(PacketBuilder().eth(kClient, kOurs).ipv4("10.0.0.2", "10.0.0.100", 1)
                    .tcp(base_port, 80, 0x10).build()); // TTL 1
    // TTL 1 and an RST on flows established in the first round (ACKed, never FINed): the
    // established lane of lb_burst_run() must leave them to the general path.
    v.push_back(PacketBuilder().eth(kClient, kOurs).ipv4("10.0.0.2", "10.0.0.100", 1)
                    .tcp(static_cast<uint16_t>(base_port + 3), 80, 0x10).build());
    v.push_back(syn(static_cast<uint16_t>(base_port + 6), 0x14));
    v.push_back(syn(static_cast<uint16_t>(base_port + 6), 0x10)); // after the RST: closing
    v.push_back(PacketBuilder().eth(kClient, kOurs).ipv4("10.0.0.2", "10.0.0.100")
                    .fragment(0, true, 48)
                    .tcp(static_cast<uint16_t>(base_port + 100), 80)
                    .payload(40)
                    .build());
    // The same flow unfragmented right behind: it finds the entry the fragment made.
    v.push_back(syn(static_cast<uint16_t>(base_port + 100), 0x10));
    v.push_back(PacketBuilder().eth(kClient, kOurs).ipv4("10.0.0.2", "10.0.0.7")
                    .tcp(base_port, 80).build()); // not ours
    Bytes cut = syn(base_port);
    cut.resize(30); // truncated
    v.push_back(cut);
    v.push_back(Bytes(14, 0xAB)); // garbage
    return v;
}

/// Runs `frames` through fixture `a` one by one (lb_process) and through fixture `b` in
/// bursts of `burst` (lb_burst_parse + lb_burst_run) and expects the same actions, frames
/// and counters. Returns a's SNAT ports (for the backends' answers).
std::vector<uint16_t> expect_burst_equals_single(Fixture& a, Fixture& b,
                                                 const std::vector<Bytes>& frames, uint16_t burst) {
    std::vector<uint16_t> snat_ports;
    for (size_t at = 0; at < frames.size(); at += burst) {
        const auto n = static_cast<uint16_t>(std::min<size_t>(burst, frames.size() - at));
        std::vector<Held> one, many;
        LbFrame lf[LbBurst::kMax];
        LbAction act[LbBurst::kMax];
        for (uint16_t i = 0; i < n; ++i) {
            one.emplace_back(frames[at + i]);
            many.emplace_back(frames[at + i]);
        }
        for (uint16_t i = 0; i < n; ++i) {
            Held& h = many[i];
            lf[i] = {h.buf.data() + h.headroom, h.len,
                     static_cast<uint32_t>(h.buf.size()) - h.headroom, h.headroom};
        }
        auto burst_state = std::make_unique<LbBurst>();
        lb_burst_parse(b.ctx, *burst_state, lf, 0, n);
        lb_burst_run(b.ctx, b.table, *burst_state, lf, n, b.now, act);
        for (uint16_t i = 0; i < n; ++i) {
            Held& h = one[i];
            const std::span<uint8_t> buf(h.buf.data() + h.headroom, h.buf.size() - h.headroom);
            const LbAction want = lb_process(a.ctx, a.table, buf, h.len, a.now, &h.headroom);
            many[i].len = lf[i].len;
            many[i].headroom = lf[i].headroom;
            SCOPED_TRACE("frame " + std::to_string(at + i));
            EXPECT_EQ(act[i], want);
            EXPECT_EQ(many[i].out(), h.out());
            // (Full-NAT only: a DSR frame's outer source is that address too, and its
            // protocol IPIP or UDP.)
            if (want == LbAction::Tx && h.len >= 38 &&
                test::get16(h.buf, h.headroom + 12) == 0x0800 && h.out()[23] == 6 &&
                ip4(h.out(), 26) == "10.0.0.99") {
                snat_ports.push_back(test::get16(h.out(), 34));
            }
        }
    }
    for (size_t c = 0; c < kLbCounterCount; ++c) {
        EXPECT_EQ(b.ctx.counters[c], a.ctx.counters[c])
            << lb_counter_name(static_cast<LbCounter>(c));
    }
    for (size_t d = 0; d < kDropReasonCount; ++d) {
        EXPECT_EQ(b.ctx.drops[d], a.ctx.drops[d]) << "drop reason " << d;
    }
    EXPECT_EQ(b.ct->stats().entries, a.ct->stats().entries);
    return snat_ports;
}

// Stage 2 rebuilds the PacketMeta of a frame of stage 1's IPv4 lane from its stage-1
// state (lb_detail::lite_meta): it must be parse_packet()'s, byte for byte.
TEST(LbBurstApi, LaneFramesGetTheParsersMeta) {
    Fixture fx(l4_ir({{"10.0.1.1", 1}}, ir::FwdMode::FullNat));
    const std::vector<Bytes> frames = {
        syn(40000, 0x10),
        syn(40001, 0x18),
        PacketBuilder().eth(kClient, kOurs).ipv4("10.0.0.2", "10.0.0.100")
            .tcp(40002, 80, 0x10, Bytes(12, 0x01)).payload(5).build(), // TCP options, data
        PacketBuilder().eth(kClient, kOurs).ipv4("10.0.0.2", "10.0.0.100")
            .udp(40003, 80).payload(17).build(),
        PacketBuilder().eth(kBackendA, kOurs).ipv4("10.0.1.1", "10.0.0.99")
            .tcp(8080, 1024, 0x10).build(), // return traffic
    };
    for (const Bytes& b : frames) {
        Bytes copy = b;
        const LbFrame lf{copy.data(), static_cast<uint32_t>(copy.size()),
                         static_cast<uint32_t>(copy.size()), 0};
        auto burst = std::make_unique<LbBurst>();
        lb_burst_parse(fx.ctx, *burst, &lf, 0, 1);
        ASSERT_TRUE(burst->pre[0].lite);
        PacketMeta got, want;
        std::memset(static_cast<void*>(&got), 0xA5, sizeof(got)); // no field left unwritten
        lb_detail::lite_meta(lf, burst->pre[0], got);
        (void)parse_packet(b, want);
        EXPECT_EQ(std::memcmp(&got, &want, sizeof(got)), 0);
    }
}

TEST(LbBurstApi, HandlesEveryKindOfFrameAsTheOneFrameApiDoes) {
    for (const ir::FwdMode mode :
         {ir::FwdMode::FullNat, ir::FwdMode::DsrIpip, ir::FwdMode::DsrGue}) {
        for (const uint16_t burst : {uint16_t{1}, uint16_t{7}, uint16_t{32}, uint16_t{64}}) {
            SCOPED_TRACE("mode " + std::to_string(static_cast<int>(mode)) + ", burst " +
                         std::to_string(burst));
            Fixture a(l4_ir({{"10.0.1.1", 1}, {"10.0.1.2", 1}}, mode));
            Fixture b(l4_ir({{"10.0.1.1", 1}, {"10.0.1.2", 1}}, mode));
            for (Fixture* fx : {&a, &b}) {
                fx->learn("10.0.1.1", kBackendA);
                fx->learn("10.0.1.2", kBackendB);
            }
            // First round: new flows (their SNAT ports are then answered in the second).
            const std::vector<uint16_t> ports =
                expect_burst_equals_single(a, b, mixed_frames(40000, {}), burst);
            if (mode == ir::FwdMode::FullNat) {
                EXPECT_GE(ports.size(), 40u) << "every SYN was forwarded with a SNAT port";
            }
            a.now += 10;
            b.now += 10;
            (void)expect_burst_equals_single(a, b, mixed_frames(40000, ports), burst);
            EXPECT_GT(a.counter(LbCounter::Established), 40u);
            // Past the closing timeout: the flows a FIN or RST closed (in either direction)
            // are gone and their clients' SYNs start new flows, so a TCP state the burst
            // path kept differently from the one-frame path shows in the frames.
            a.now += 10001;
            b.now += 10001;
            (void)expect_burst_equals_single(a, b, mixed_frames(40000, ports), burst);
        }
    }
}

} // namespace
} // namespace sluice::dp
