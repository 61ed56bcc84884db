// The L4 path on crafted frames: ARP/ICMP for our addresses, full-NAT both ways with valid
// checksums, flows keeping their backend across table changes, weights over 1,000 flows.

#include "lb_fp.h"

#include <map>
#include <memory>

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

ir::Ir l4_ir(std::vector<std::pair<std::string, uint32_t>> backends) {
    ir::Ir ir;
    ir::Listener l;
    l.name = "tcp";
    l.port = 80;
    l.protocol = ir::Protocol::TCP;
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
    std::unique_ptr<std::array<std::array<ConnEntry*, 65536>, 4>> ports =
        std::make_unique<std::array<std::array<ConnEntry*, 65536>, 4>>();
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

} // namespace
} // namespace sluice::dp
