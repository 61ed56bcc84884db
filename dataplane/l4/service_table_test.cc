#include "service_table.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>


namespace sluice::dp {
namespace {

/// The IR of tests/golden/l4-tls in miniature: TCP 5432, UDP 53, TLS passthrough 443.
ir::Ir l4_ir() {
    ir::Ir ir;
    auto listener = [&](const char* name, uint16_t port, ir::Protocol p, uint32_t group) {
        ir::Listener l;
        l.name = name;
        l.port = port;
        l.protocol = p;
        ir::Rule r;
        r.backends.push_back({group, 1, 0, "", ir::kNone});
        const auto idx = static_cast<uint32_t>(ir.rules.size());
        ir.rules.push_back(r);
        if (p == ir::Protocol::TLS) {
            l.sni_routes.push_back({"*.example.com", idx});
        } else {
            l.l4_rule = idx;
        }
        ir.listeners.push_back(l);
    };
    for (int i = 0; i < 3; ++i) {
        ir::BackendGroup g;
        g.ns = "net";
        g.name = "svc" + std::to_string(i);
        ir.groups.push_back(g);
    }
    listener("tcp", 5432, ir::Protocol::TCP, 0);
    listener("udp", 53, ir::Protocol::UDP, 1);
    listener("pass", 443, ir::Protocol::TLS, 2);
    ir.gateways.push_back({"net", "l4", {"192.0.2.10"}, {0, 1, 2}, {}});
    return ir;
}

TEST(ServiceTable, L4ListenersOnGatewayAddresses) {
    ir::Ir ir = l4_ir();
    // Give the backends endpoints, as EndpointSlices would.
    for (ir::BackendGroup& g : ir.groups) {
        g.endpoints.push_back({"10.0.0.1", 5432, true, true, false, "a"});
        g.endpoints.push_back({"10.0.0.2", 5432, true, true, false, "b"});
        g.endpoints.push_back({"10.0.0.3", 5432, false, false, true, "draining"});
    }
    auto t = build_service_table(ir, {});
    ASSERT_TRUE(t) << t.error().message;
    uint8_t fam = 0;
    Addr vip{};
    ASSERT_TRUE(parse_addr("192.0.2.10", fam, vip));
    EXPECT_TRUE(t->is_vip(fam, vip));
    const L4Service* tcp = t->find(4, vip, 6, 5432);
    ASSERT_NE(tcp, nullptr);
    EXPECT_FALSE(tcp->to_l7);
    EXPECT_EQ(tcp->n_endpoints, 3u);
    // The draining endpoint gets no new flows; the two ready ones share them evenly.
    int hits[3] = {0, 0, 0};
    for (uint32_t s : tcp->maglev.slots()) {
        ++hits[s];
    }
    EXPECT_EQ(hits[2], 0);
    EXPECT_NEAR(hits[0], hits[1], tcp->maglev.size() * 0.02);
    EXPECT_NE(t->find(4, vip, 17, 53), nullptr);
    EXPECT_EQ(t->find(4, vip, 6, 53), nullptr) << "UDP listener must not answer TCP";
    const L4Service* tls = t->find(4, vip, 6, 443);
    ASSERT_NE(tls, nullptr);
    EXPECT_TRUE(tls->to_l7);
    Addr other = vip;
    other[3] = 11;
    EXPECT_EQ(t->find(4, other, 6, 5432), nullptr);
}

// Many VIPs of both families, addresses that differ in any byte: each (address, protocol,
// port) finds its own service through the open-addressing slots, and near misses find none.
TEST(ServiceTable, ManyVipsEachFindTheirOwnService) {
    ir::Ir ir = l4_ir();
    ir.gateways.clear();
    std::vector<std::string> addrs;
    for (int i = 0; i < 600; ++i) {
        addrs.push_back(i % 2 ? "2001:db8:" + std::to_string(i % 7) + "::" + std::to_string(i)
                              : "10." + std::to_string(i % 5) + "." + std::to_string(i / 256) +
                                    "." + std::to_string(i % 256));
    }
    for (size_t i = 0; i < addrs.size(); i += 3) {
        ir.gateways.push_back({"net", "g" + std::to_string(i),
                               {addrs[i], addrs[i + 1], addrs[i + 2]}, {0, 1}, {}});
    }
    auto t = build_service_table(ir, {});
    ASSERT_TRUE(t) << t.error().message;
    for (const std::string& a : addrs) {
        SCOPED_TRACE(a);
        uint8_t fam = 0;
        Addr vip{};
        ASSERT_TRUE(parse_addr(a, fam, vip));
        const L4Service* tcp = t->find(fam, vip, 6, 5432);
        ASSERT_NE(tcp, nullptr);
        EXPECT_EQ(tcp->vip, vip);
        EXPECT_EQ(tcp->family, fam);
        EXPECT_EQ(tcp->proto, 6);
        EXPECT_EQ(tcp->port, 5432);
        const L4Service* udp = t->find(fam, vip, 17, 53);
        ASSERT_NE(udp, nullptr);
        EXPECT_EQ(udp->vip, vip);
        EXPECT_EQ(udp->proto, 17);
        EXPECT_EQ(t->find(fam, vip, 17, 5432), nullptr);
        EXPECT_EQ(t->find(fam, vip, 6, 5433), nullptr);
        EXPECT_EQ(t->find(fam == 4 ? 6 : 4, vip, 6, 5432), nullptr);
        Addr near = vip;
        near[fam == 4 ? 3 : 15] ^= 0x80;
        EXPECT_EQ(t->find(fam, near, 6, 5432), nullptr);
    }
}

TEST(ServiceTable, InvalidBackendShareIsRejectedNotDropped) {
    ir::Ir ir;
    ir::Listener l;
    l.port = 9000;
    l.protocol = ir::Protocol::TCP;
    ir::Rule r;
    r.backends.push_back({0, 1, 0, "", ir::kNone});
    r.backends.push_back({ir::kNone, 1, 500, "gone", ir::kNone});
    ir.rules.push_back(r);
    l.l4_rule = 0;
    ir.listeners.push_back(l);
    ir::BackendGroup g;
    g.endpoints.push_back({"2001:db8::5", 80, true, true, false, "x"});
    ir.groups.push_back(g);
    ir.gateways.push_back({"ns", "gw", {"2001:db8::1"}, {0}, {}});
    auto t = build_service_table(ir, {});
    ASSERT_TRUE(t);
    uint8_t fam = 0;
    Addr vip{};
    ASSERT_TRUE(parse_addr("2001:db8::1", fam, vip));
    const L4Service* s = t->find(6, vip, 6, 9000);
    ASSERT_NE(s, nullptr);
    ASSERT_EQ(s->n_endpoints, 2u);
    int reject = 0;
    for (uint32_t slot : s->maglev.slots()) {
        reject += t->endpoints[s->first_endpoint + slot].reject ? 1 : 0;
    }
    EXPECT_NEAR(reject / double(s->maglev.size()), 0.5, 0.01);
}

TEST(ServiceTable, BadAddressesAreRefused) {
    ir::Ir ir;
    ir.gateways.push_back({"ns", "gw", {"not-an-ip"}, {}, {}});
    auto t = build_service_table(ir, {});
    ASSERT_FALSE(t);
    EXPECT_NE(t.error().message.find("not-an-ip"), std::string::npos);
}

} // namespace
} // namespace sluice::dp

namespace sluice::dp {
namespace {

TEST(ServiceTable, FullNatUsesOnlyEndpointsOfTheVipsFamily) {
    ir::Ir ir;
    ir::Listener l;
    l.port = 80;
    l.protocol = ir::Protocol::TCP;
    ir::Rule r;
    r.backends.push_back({0, 1, 0, "", ir::kNone});
    ir.rules.push_back(r);
    l.l4_rule = 0;
    ir.listeners.push_back(l);
    ir::BackendGroup g;
    g.endpoints.push_back({"10.0.0.5", 80, true, true, false, "v4"});
    g.endpoints.push_back({"2001:db8::5", 80, true, true, false, "v6"});
    ir.groups.push_back(g);
    ir.gateways.push_back({"ns", "gw", {"192.0.2.1", "2001:db8::1"}, {0}, {}});
    auto t = build_service_table(ir, {});
    ASSERT_TRUE(t);
    for (const L4Service& s : t->services) {
        ASSERT_EQ(s.n_endpoints, 1u);
        EXPECT_EQ(t->endpoints[s.first_endpoint].family, s.family);
    }
}

} // namespace
} // namespace sluice::dp
