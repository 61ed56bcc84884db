// Packet layer tests: table-driven parse fixtures (Katran style), every DropReason, every
// prefix of valid frames, NAT checksums against from-scratch recomputation, encapsulation
// round trips, and the responders. Frames are parsed from exact-size heap copies so a
// sanitized build catches any read past the end.

#include "packet_fp.h"

#include <gtest/gtest.h>

#include <cstring>
#include <memory>
#include <array>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "tests/lib/packet_builder.h"

namespace {

using namespace sluice::dp;
using sluice::test::addr;
using sluice::test::Bytes;
using sluice::test::kBackendMac;
using sluice::test::kClientMac;
using sluice::test::kSluiceMac;
using sluice::test::PacketBuilder;
using sluice::test::ref_pseudo;
using sluice::test::ref_sum;

constexpr const char* kClient4 = "192.0.2.10";
constexpr const char* kVip4 = "198.51.100.1";
constexpr const char* kSnat4 = "10.0.0.1";
constexpr const char* kBackend4 = "10.0.1.7";
constexpr const char* kClient6 = "2001:db8:c::10";
constexpr const char* kVip6 = "2001:db8:f::1";
constexpr const char* kSnat6 = "fd00::1";
constexpr const char* kBackend6 = "fd00:1::7";

/// Parses the first n bytes of b from an exact-size heap copy.
Verdict parse_exact(const Bytes& b, size_t n, PacketMeta& m, ParseOptions o = {}) {
    auto copy = std::make_unique<uint8_t[]>(n == 0 ? 1 : n);
    if (n != 0) {
        std::memcpy(copy.get(), b.data(), n);
    }
    return parse_packet(copy.get(), static_cast<uint32_t>(n), m, o);
}
Verdict parse(const Bytes& b, PacketMeta& m, ParseOptions o = {}) {
    return parse_exact(b, b.size(), m, o);
}

PacketBuilder tcp4() {
    return PacketBuilder().ipv4(kClient4, kVip4).tcp(40000, 80).payload(10);
}
PacketBuilder tcp6() {
    return PacketBuilder().ipv6(kClient6, kVip6).tcp(40000, 443).payload(10);
}
PacketBuilder udp4() {
    return PacketBuilder().ipv4(kClient4, kVip4).udp(5353, 53).payload(21);
}
PacketBuilder udp6() {
    return PacketBuilder().ipv6(kClient6, kVip6).udp(5353, 53).payload(21);
}

/// True when the IPv4 header checksum of the datagram at frame[l3] verifies (reference code).
bool ipv4_csum_ok(const Bytes& f, size_t l3) {
    const size_t ihl = (f[l3] & 0x0F) * 4u;
    return ref_sum(f.data() + l3, ihl) == 0xFFFF;
}

/// True when the TCP/UDP/ICMPv6 checksum of an unfragmented datagram verifies.
bool l4_csum_ok(const Bytes& f, const PacketMeta& m) {
    const uint8_t* ip = f.data() + m.l3_off;
    const size_t end = m.l3_off + m.l3_len;
    const size_t len = end - m.l4_off;
    uint32_t ps = 0;
    if (m.family == 4) {
        ps = m.proto == kProtoIcmp ? 0 : ref_pseudo(ip + 12, ip + 16, 4, uint32_t(len), m.proto);
    } else {
        ps = ref_pseudo(ip + 8, ip + 24, 16, uint32_t(len), m.proto);
    }
    return ref_sum(f.data() + m.l4_off, len, ps) == 0xFFFF;
}

// ---------------------------------------------------------------------------------------
// Parse: good frames
// ---------------------------------------------------------------------------------------

struct GoodCase {
    const char* description;
    PacketBuilder input;
    Verdict verdict;
    uint8_t family;
    uint8_t proto;
    uint16_t src_port;
    uint16_t dst_port;
    std::vector<uint16_t> vlans;
    uint16_t l4_off; ///< 0: not checked
};

TEST(PacketParse, GoodFrames) {
    // clang-format off
    const std::vector<GoodCase> cases = {
        {"tcp4", tcp4(), Verdict::Forward, 4, kProtoTcp, 40000, 80, {}, 34},
        {"tcp4 vlan", tcp4().vlan(100), Verdict::Forward, 4, kProtoTcp, 40000, 80, {100}, 38},
        {"tcp4 qinq", tcp4().vlan(7, kEtherTypeQinQ).vlan(100), Verdict::Forward, 4, kProtoTcp,
         40000, 80, {7, 100}, 42},
        {"tcp4 options", tcp4().ipv4_options({0x94, 0x04, 0, 0}).tcp(1, 2, kTcpSyn, {2, 4, 5, 180}),
         Verdict::Forward, 4, kProtoTcp, 1, 2, {}, 38},
        {"tcp4 padded", PacketBuilder().ipv4(kClient4, kVip4).tcp(1, 2).pad_to(60),
         Verdict::Forward, 4, kProtoTcp, 1, 2, {}, 34},
        {"udp4", udp4(), Verdict::Forward, 4, kProtoUdp, 5353, 53, {}, 34},
        {"udp4 csum 0", udp4().udp(5353, 53, true), Verdict::Forward, 4, kProtoUdp, 5353, 53, {},
         34},
        {"udp4 vlan", udp4().vlan(4094), Verdict::Forward, 4, kProtoUdp, 5353, 53, {4094}, 38},
        {"tcp6", tcp6(), Verdict::Forward, 6, kProtoTcp, 40000, 443, {}, 54},
        {"tcp6 vlan", tcp6().vlan(5), Verdict::Forward, 6, kProtoTcp, 40000, 443, {5}, 58},
        {"udp6", udp6(), Verdict::Forward, 6, kProtoUdp, 5353, 53, {}, 54},
        {"udp6 qinq", udp6().vlan(1, kEtherTypeQinQOld).vlan(2), Verdict::Forward, 6, kProtoUdp,
         5353, 53, {1, 2}, 62},
        {"tcp6 hbh+dst+rt", tcp6().ext(kProtoHopByHop).ext(kProtoDstOpts, 16).ext(kProtoRouting),
         Verdict::Forward, 6, kProtoTcp, 40000, 443, {}, 54 + 32},
        {"udp6 ah", udp6().ext(kProtoAh, 24), Verdict::Forward, 6, kProtoUdp, 5353, 53, {},
         54 + 24},
        {"tcp6 8 ext headers",
         tcp6().ext(60).ext(60).ext(60).ext(60).ext(60).ext(60).ext(60).ext(60), Verdict::Forward,
         6, kProtoTcp, 40000, 443, {}, 54 + 64},
        {"tcp6 atomic fragment", tcp6().fragment(0, false, 1000), Verdict::Forward, 6, kProtoTcp,
         40000, 443, {}, 62},
        {"icmp4 echo", PacketBuilder().ipv4(kClient4, kVip4).icmp(8, 0, 0x12340001).payload(56),
         Verdict::IcmpEcho, 4, kProtoIcmp, 0x1234, 0, {}, 34},
        {"icmp4 echo vlan",
         PacketBuilder().vlan(9).ipv4(kClient4, kVip4).icmp(8, 0, 0x00070002).payload(8),
         Verdict::IcmpEcho, 4, kProtoIcmp, 7, 0, {9}, 38},
        {"icmp6 echo", PacketBuilder().ipv6(kClient6, kVip6).icmp(128, 0, 0xBEEF0001).payload(8),
         Verdict::IcmpEcho, 6, kProtoIcmpv6, 0xBEEF, 0, {}, 54},
        {"icmp6 echo vlan", PacketBuilder().vlan(3).ipv6(kClient6, kVip6).icmp(128, 0, 0x00010001),
         Verdict::IcmpEcho, 6, kProtoIcmpv6, 1, 0, {3}, 58},
        {"arp request", PacketBuilder().eth(kClientMac, {0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF})
         .arp(1, kClientMac, kClient4, {}, kVip4).pad_to(60), Verdict::Arp, 0, 0, 0, 0, {}, 42},
        {"tcp4 first fragment", tcp4().payload(100).fragment(0, true, 48), Verdict::Fragment, 4,
         kProtoTcp, 40000, 80, {}, 34},
        {"tcp4 non-first fragment", tcp4().payload(100).fragment(48, false, 72), Verdict::Fragment,
         4, kProtoTcp, 0, 0, {}, 34},
        {"udp4 middle fragment", udp4().payload(100).fragment(16, true, 16), Verdict::Fragment, 4,
         kProtoUdp, 0, 0, {}, 34},
        {"icmp4 echo fragment",
         PacketBuilder().ipv4(kClient4, kVip4).icmp(8, 0, 1).payload(100).fragment(0, true, 64),
         Verdict::Fragment, 4, kProtoIcmp, 0, 0, {}, 34},
        {"gre4 fragment",
         PacketBuilder().ipv4(kClient4, kVip4).raw(47).payload(40).fragment(0, true, 16),
         Verdict::Fragment, 4, 47, 0, 0, {}, 34},
        {"udp6 first fragment", udp6().payload(100).fragment(0, true, 16), Verdict::Fragment, 6,
         kProtoUdp, 5353, 53, {}, 62},
        {"udp6 non-first fragment", udp6().payload(100).fragment(16, false, 100), Verdict::Fragment,
         6, kProtoUdp, 0, 0, {}, 62},
        {"tcp6 dst+fragment", tcp6().payload(100).ext(kProtoDstOpts).fragment(0, true, 40),
         Verdict::Fragment, 6, kProtoTcp, 40000, 443, {}, 70},
    };
    // clang-format on
    for (const GoodCase& c : cases) {
        SCOPED_TRACE(c.description);
        const Bytes f = c.input.build();
        PacketMeta m;
        EXPECT_EQ(parse(f, m, {.verify_ipv4_checksum = true, .verify_l4_checksum = true}),
                  c.verdict);
        EXPECT_EQ(m.verdict, c.verdict);
        EXPECT_EQ(m.drop, DropReason::None);
        EXPECT_EQ(m.family, c.family);
        EXPECT_EQ(m.proto, c.proto);
        EXPECT_EQ(m.key.src_port, c.src_port);
        EXPECT_EQ(m.key.dst_port, c.dst_port);
        ASSERT_EQ(m.vlan_count, c.vlans.size());
        for (size_t i = 0; i < c.vlans.size(); ++i) {
            EXPECT_EQ(m.vlan[i], c.vlans[i]);
        }
        EXPECT_EQ(m.l2_len, 14 + 4 * c.vlans.size());
        EXPECT_EQ(m.l3_off, m.l2_len);
        if (c.l4_off != 0) {
            EXPECT_EQ(m.l4_off, c.l4_off);
        }
        EXPECT_LE(m.l4_off, m.payload_off);
        EXPECT_LE(size_t{m.l3_off} + m.l3_len, f.size());
        if (c.family != 0) {
            EXPECT_EQ(m.key.family, c.family);
        }
    }
}

TEST(PacketParse, FieldsOfTcp4) {
    const Bytes f = PacketBuilder()
                        .vlan(42)
                        .ipv4(kClient4, kVip4, 17)
                        .ip_id(0x77)
                        .tcp(1234, 80, kTcpSyn | kTcpAck, {1, 1, 1, 1})
                        .payload(5)
                        .build();
    PacketMeta m;
    ASSERT_EQ(parse(f, m), Verdict::Forward);
    EXPECT_EQ(m.key.src, addr(kClient4));
    EXPECT_EQ(m.key.dst, addr(kVip4));
    EXPECT_EQ(m.key.proto, kProtoTcp);
    EXPECT_EQ(m.ethertype, kEtherTypeIpv4);
    EXPECT_EQ(m.ttl, 17);
    EXPECT_EQ(m.tcp_flags, kTcpSyn | kTcpAck);
    EXPECT_EQ(m.l3_len, 20 + 24 + 5);
    EXPECT_EQ(m.payload_off, 18 + 20 + 24);
    EXPECT_EQ(m.frag_id, 0x77u);
    EXPECT_FALSE(m.is_fragment);
}

TEST(PacketParse, FragmentInfo) {
    PacketMeta m;
    ASSERT_EQ(parse(tcp4().payload(200).fragment(0, true, 64, 0x99).build(), m), Verdict::Fragment);
    EXPECT_TRUE(m.is_fragment);
    EXPECT_TRUE(m.frag_first);
    EXPECT_TRUE(m.frag_more);
    EXPECT_EQ(m.frag_offset, 0);
    EXPECT_EQ(m.frag_id, 0x99u);
    EXPECT_EQ(m.tcp_flags, kTcpSyn);

    ASSERT_EQ(parse(udp6().payload(200).fragment(64, false, 200, 0xABCDEF01).build(), m),
              Verdict::Fragment);
    EXPECT_TRUE(m.is_fragment);
    EXPECT_FALSE(m.frag_first);
    EXPECT_FALSE(m.frag_more);
    EXPECT_EQ(m.frag_offset, 64);
    EXPECT_EQ(m.frag_id, 0xABCDEF01u);
    EXPECT_EQ(m.key.src, addr(kClient6));
    EXPECT_EQ(m.key.src_port, 0);
}

TEST(PacketParse, ArpFields) {
    const Bytes f = PacketBuilder().arp(1, kClientMac, kClient4, {}, kVip4).build();
    PacketMeta m;
    ASSERT_EQ(parse(f, m), Verdict::Arp);
    EXPECT_EQ(m.arp_op, 1);
    EXPECT_EQ(m.key.src, addr(kClient4));
    EXPECT_EQ(m.key.dst, addr(kVip4));
}

// ---------------------------------------------------------------------------------------
// ICMP errors follow the flow
// ---------------------------------------------------------------------------------------

TEST(PacketParse, IcmpErrorCarriesFlowKey) {
    struct Case {
        const char* description;
        PacketBuilder input;
        PacketKey expected;
    };
    // Errors about packets VIP -> client: the key must be the client -> VIP flow.
    const Bytes reply4 =
        PacketBuilder().ipv4(kVip4, kClient4).tcp(80, 40000, kTcpAck).payload(1400).build_l3();
    const Bytes reply4_short(reply4.begin(), reply4.begin() + 28); // IP + 8 bytes (RFC 792)
    const Bytes reply6 =
        PacketBuilder().ipv6(kVip6, kClient6).udp(53, 5353).payload(1400).build_l3();
    const Bytes reply6_cut(reply6.begin(), reply6.begin() + 1232);
    const Bytes reply6_ext =
        PacketBuilder().ipv6(kVip6, kClient6).ext(kProtoDstOpts).tcp(443, 40000).build_l3();
    const Bytes echo4 = PacketBuilder().ipv4(kVip4, kClient4).icmp(8, 0, 0x55550001).build_l3();
    const Bytes frag4 = PacketBuilder()
                            .ipv4(kVip4, kClient4)
                            .udp(53, 5353)
                            .payload(100)
                            .fragment(48, false, 60)
                            .build_l3();
    const auto key = [](const char* s, const char* d, uint16_t sp, uint16_t dp, uint8_t proto) {
        PacketKey k;
        k.src = addr(s);
        k.dst = addr(d);
        k.src_port = sp;
        k.dst_port = dp;
        k.proto = proto;
        k.family = sluice::test::is_v6(s) ? 6 : 4;
        return k;
    };
    // clang-format off
    const std::vector<Case> cases = {
        {"v4 frag needed, tcp",
         PacketBuilder().ipv4("203.0.113.1", kVip4).icmp(3, 4, 1400).payload(reply4_short),
         key(kClient4, kVip4, 40000, 80, kProtoTcp)},
        {"v4 time exceeded, whole tcp quote, vlan",
         PacketBuilder().vlan(3).ipv4("203.0.113.1", kVip4).icmp(11, 0).payload(reply4),
         key(kClient4, kVip4, 40000, 80, kProtoTcp)},
        {"v4 unreachable about an echo",
         PacketBuilder().ipv4("203.0.113.1", kVip4).icmp(3, 1).payload(echo4),
         key(kClient4, kVip4, 0x5555, 0, kProtoIcmp)},
        {"v4 unreachable about a non-first fragment",
         PacketBuilder().ipv4("203.0.113.1", kVip4).icmp(3, 1).payload(frag4),
         key(kClient4, kVip4, 0, 0, kProtoUdp)},
        {"v6 packet too big, udp",
         PacketBuilder().ipv6("2001:db8::ff", kVip6).icmp(2, 0, 1280).payload(reply6_cut),
         key(kClient6, kVip6, 5353, 53, kProtoUdp)},
        {"v6 unreachable, inner ext header",
         PacketBuilder().ipv6("2001:db8::ff", kVip6).icmp(1, 4).payload(reply6_ext),
         key(kClient6, kVip6, 40000, 443, kProtoTcp)},
    };
    // clang-format on
    for (const Case& c : cases) {
        SCOPED_TRACE(c.description);
        const Bytes f = c.input.build();
        PacketMeta m;
        ASSERT_EQ(parse(f, m, {.verify_ipv4_checksum = true, .verify_l4_checksum = true}),
                  Verdict::IcmpError);
        EXPECT_EQ(m.key, c.expected);
        EXPECT_EQ(m.proto, c.expected.family == 4 ? kProtoIcmp : kProtoIcmpv6);
        EXPECT_EQ(m.inner_l3_off, m.l4_off + 8);
        EXPECT_GT(m.inner_l4_off, m.inner_l3_off);
    }
}

// ---------------------------------------------------------------------------------------
// Parse: every drop reason
// ---------------------------------------------------------------------------------------

struct DropCase {
    const char* description;
    Bytes input;
    DropReason reason;
    ParseOptions options = {};
};

Bytes with(Bytes b, size_t off, uint8_t v) {
    b.at(off) = v;
    return b;
}

/// Rewrites the IPv4 header checksum after a deliberate corruption of other fields.
Bytes fix_ip4(Bytes b, size_t l3 = 14) {
    b[l3 + 10] = b[l3 + 11] = 0;
    const uint16_t c = sluice::test::ref_checksum(b.data() + l3, (b[l3] & 0x0F) * 4u);
    sluice::test::set16(b, l3 + 10, c);
    return b;
}

TEST(PacketParse, EveryDropReason) {
    const Bytes t4 = tcp4().build();
    const Bytes u4 = udp4().build();
    const Bytes t4v = tcp4().vlan(3).build();
    Bytes nine_ext;
    {
        PacketBuilder b = tcp6();
        for (int i = 0; i < 9; ++i) {
            b.ext(kProtoDstOpts);
        }
        nine_ext = b.build();
    }
    Bytes ns_target(16, 0);
    ns_target[0] = 0x20;
    // clang-format off
    const std::vector<DropCase> cases = {
        {"runt", Bytes(10, 0), DropReason::Truncated},
        {"ipv4 cut in header", Bytes(t4.begin(), t4.begin() + 30), DropReason::Truncated},
        {"ipv4 total length past buffer", fix_ip4(with(t4, 17, 200)), DropReason::Truncated},
        {"vlan tag cut", Bytes(t4v.begin(), t4v.begin() + 16), DropReason::Truncated},
        {"ipv4 version 6", with(t4, 14, 0x65), DropReason::BadVersion},
        {"ipv6 version 4", with(tcp6().build(), 14, 0x40), DropReason::BadVersion},
        {"ipv4 ihl 4", fix_ip4(with(t4, 14, 0x44)), DropReason::BadIhl},
        {"ipv4 total length < ihl", fix_ip4(with(with(t4, 16, 0), 17, 19)), DropReason::BadLength},
        {"udp length > datagram", with(u4, 14 + 20 + 5, 200), DropReason::BadLength},
        {"udp length < 8", with(u4, 14 + 20 + 5, 7), DropReason::BadLength},
        {"ipv4 header checksum", with(t4, 14 + 10, 0x12), DropReason::BadChecksum},
        {"tcp checksum (verify on)",
         with(t4, 14 + 20 + 16, 0x12),
         DropReason::BadChecksum,
         {.verify_ipv4_checksum = true, .verify_l4_checksum = true}},
        {"udp6 checksum (verify on)",
         with(udp6().build(), 14 + 40 + 8, 0xEE),
         DropReason::BadChecksum,
         {.verify_ipv4_checksum = true, .verify_l4_checksum = true}},
        {"icmp6 checksum (verify on)",
         with(PacketBuilder().ipv6(kClient6, kVip6).icmp(128, 0, 1).build(), 14 + 40 + 2, 0),
         DropReason::BadChecksum,
         {.verify_ipv4_checksum = true, .verify_l4_checksum = true}},
        {"udp6 zero checksum", udp6().udp(1, 2, true).build(), DropReason::BadChecksum},
        {"tcp data offset 4", with(t4, 14 + 20 + 12, 0x40), DropReason::BadTcpOffset},
        {"tcp data offset past datagram", with(t4, 14 + 20 + 12, 0xF0), DropReason::BadTcpOffset},
        {"tcp cut below 20",
         PacketBuilder().ipv4(kClient4, kVip4).raw(kProtoTcp).payload(12).build(),
         DropReason::Truncated},
        {"arp htype 6",
         with(PacketBuilder().arp(1, kClientMac, kClient4, {}, kVip4).build(), 15, 6),
         DropReason::BadArp},
        {"arp opcode 9",
         with(PacketBuilder().arp(1, kClientMac, kClient4, {}, kVip4).build(), 21, 9),
         DropReason::BadArp},
        {"icmp error with junk inside",
         PacketBuilder().ipv4("203.0.113.1", kVip4).icmp(3, 1).payload(10).build(),
         DropReason::BadIcmpError},
        {"icmp error with 4 bytes of tcp", PacketBuilder().ipv4("203.0.113.1", kVip4).icmp(11, 0)
         .payload([] { Bytes in = tcp4().build_l3(); in.resize(24); return in; }()).build(),
         DropReason::BadIcmpError},
        {"ns hop limit 64", PacketBuilder().ipv6(kClient6, "ff02::1:ff00:1", 64).icmp(135, 0)
         .payload(ns_target).build(), DropReason::BadNd},
        {"ns too short",
         PacketBuilder().ipv6(kClient6, "ff02::1:ff00:1", 255).icmp(135, 0).payload(8).build(),
         DropReason::BadNd},
        {"nine ipv6 extension headers", nine_ext, DropReason::TooManyExtHeaders},
        {"ipv6 ext header past datagram", with(tcp6().ext(kProtoDstOpts).build(), 14 + 40 + 1, 5),
         DropReason::Truncated},
        {"three vlan tags", tcp4().vlan(1, kEtherTypeQinQ).vlan(2).vlan(3).build(),
         DropReason::TooManyVlanTags},
        {"lldp", PacketBuilder().ethertype(0x88CC).payload(40).build(), DropReason::Unsupported},
        {"gre", PacketBuilder().ipv4(kClient4, kVip4).raw(47).payload(20).build(),
         DropReason::UnsupportedProto},
        {"ipv6 no next header", PacketBuilder().ipv6(kClient6, kVip6).raw(kProtoNoNext).build(),
         DropReason::UnsupportedProto},
        {"icmpv6 over ipv4",
         PacketBuilder().ipv4(kClient4, kVip4).raw(kProtoIcmpv6).payload(8).build(),
         DropReason::UnsupportedProto},
        {"icmp echo reply", PacketBuilder().ipv4(kClient4, kVip4).icmp(0, 0).build(),
         DropReason::UnsupportedIcmp},
        {"icmpv6 router advert",
         PacketBuilder().ipv6(kClient6, kVip6, 255).icmp(134, 0).payload(8).build(),
         DropReason::UnsupportedIcmp},
        {"icmp cut", PacketBuilder().ipv4(kClient4, kVip4).raw(kProtoIcmp).payload(4).build(),
         DropReason::Truncated},
    };
    // clang-format on
    std::set<DropReason> seen;
    for (const DropCase& c : cases) {
        SCOPED_TRACE(c.description);
        PacketMeta m;
        EXPECT_EQ(parse(c.input, m, c.options), Verdict::Drop);
        EXPECT_EQ(m.drop, c.reason) << drop_reason_name(m.drop);
        seen.insert(c.reason);
    }
    // Every reason the parser can produce has a fixture (TtlExceeded and NoHeadroom come
    // from the rewrite and encapsulation paths and are tested there).
    for (size_t i = 1; i < kDropReasonCount; ++i) {
        const auto r = static_cast<DropReason>(i);
        if (r == DropReason::TtlExceeded || r == DropReason::NoHeadroom) {
            continue;
        }
        EXPECT_TRUE(seen.count(r)) << "no fixture for " << drop_reason_name(r);
    }
}

TEST(PacketParse, ChecksumVerificationCanBeOff) {
    PacketMeta m;
    EXPECT_EQ(parse(with(tcp4().build(), 14 + 10, 0x12), m, {.verify_ipv4_checksum = false}),
              Verdict::Forward);
    EXPECT_EQ(parse(with(tcp4().build(), 14 + 20 + 16, 0x12), m), Verdict::Forward);
}

TEST(PacketParse, DropReasonNamesAreDistinct) {
    std::set<std::string_view> names;
    for (size_t i = 0; i < kDropReasonCount; ++i) {
        const std::string_view n = drop_reason_name(static_cast<DropReason>(i));
        EXPECT_FALSE(n.empty());
        EXPECT_NE(n, "invalid");
        names.insert(n);
    }
    EXPECT_EQ(names.size(), kDropReasonCount);
    EXPECT_EQ(drop_reason_name(DropReason::Count), "invalid");
}

// Every prefix of a valid frame is a truncated frame: the parser must say so and never
// read past the prefix (exact-size heap copies; run the sanitized build to prove it).
TEST(PacketParse, EveryPrefixIsTruncated) {
    const Bytes reply = PacketBuilder().ipv4(kVip4, kClient4).tcp(80, 1).payload(20).build_l3();
    const Bytes reply6 =
        PacketBuilder().ipv6(kVip6, kClient6).ext(60).udp(53, 1).payload(20).build_l3();
    Bytes ns_body(16, 0x20);
    ns_body.insert(ns_body.end(), {1, 1, 2, 0, 0, 0, 0, 1});
    // clang-format off
    const std::vector<std::pair<const char*, Bytes>> frames = {
        {"tcp4 qinq options", tcp4().vlan(1, kEtherTypeQinQ).vlan(2)
         .ipv4_options({1, 1, 1, 1, 0x94, 4, 0, 0}).tcp(1, 2, kTcpSyn, {2, 4, 5, 180}).payload(30)
         .build()},
        {"tcp4", tcp4().build()},
        {"udp4 vlan", udp4().vlan(10).build()},
        {"tcp6 ext", tcp6().ext(0).ext(43, 24).ext(60).build()},
        {"udp6 fragment", udp6().payload(100).fragment(0, true, 40).build()},
        {"icmp4 error",
         PacketBuilder().ipv4("203.0.113.1", kVip4).icmp(3, 4).payload(reply).build()},
        {"icmp6 error",
         PacketBuilder().ipv6("2001:db8::1", kVip6).icmp(1, 0).payload(reply6).build()},
        {"icmp6 ns", PacketBuilder().ipv6(kClient6, "ff02::1:ff00:1", 255).icmp(135, 0)
         .payload(ns_body).build()},
        {"arp", PacketBuilder().arp(1, kClientMac, kClient4, {}, kVip4).build()},
    };
    // clang-format on
    for (const auto& [name, f] : frames) {
        SCOPED_TRACE(name);
        PacketMeta m;
        ASSERT_NE(parse(f, m, {.verify_ipv4_checksum = true, .verify_l4_checksum = true}),
                  Verdict::Drop)
            << drop_reason_name(m.drop);
        for (size_t n = 0; n < f.size(); ++n) {
            EXPECT_EQ(parse_exact(f, n, m), Verdict::Drop) << "prefix " << n;
            EXPECT_EQ(m.drop, DropReason::Truncated)
                << "prefix " << n << " " << drop_reason_name(m.drop);
        }
    }
}

// The straight-line IPv4 parse (ParseOptions::fast_ipv4) and the general one give the same
// PacketMeta, byte for byte, for valid frames of every shape and for every single-byte
// mutation and every prefix of them, under every checksum option.
TEST(PacketParse, FastIpv4ParseAgreesWithTheGeneralOne) {
    // clang-format off
    const std::vector<std::pair<const char*, Bytes>> frames = {
        {"tcp4", tcp4().build()},
        {"tcp4 syn options", tcp4().tcp(1, 2, kTcpSyn, {2, 4, 5, 180, 1, 3, 3, 7}).payload(0).build()},
        {"tcp4 padded", [] { // a 54-byte frame padded to Ethernet's 60
            Bytes f = PacketBuilder().ipv4(kClient4, kVip4).tcp(40000, 80, kTcpAck).payload(0).build();
            f.resize(60, 0);
            return f; }()},
        {"udp4", udp4().build()},
        {"udp4 empty", PacketBuilder().ipv4(kClient4, kVip4).udp(1, 2).payload(0).build()},
        {"tcp4 ip options", tcp4().ipv4_options({1, 1, 1, 0}).build()},
        {"tcp4 fragment", tcp4().payload(100).fragment(0, true, 40).build()},
        {"udp4 vlan", udp4().vlan(10).build()},
        {"icmp4", PacketBuilder().ipv4(kClient4, kVip4).icmp(8, 0).payload(8).build()},
    };
    // clang-format on
    const ParseOptions options[] = {{}, {.verify_ipv4_checksum = false},
                                    {.verify_ipv4_checksum = true, .verify_l4_checksum = true}};
    PacketMeta base;
    ASSERT_TRUE(pkt_detail::parse_ipv4_fast(frames[0].second.data(),
                                            static_cast<uint32_t>(frames[0].second.size()), base,
                                            {}))
        << "the common frame takes the fast parse";
    size_t compared = 0;
    auto agree = [&](const Bytes& f, size_t n, const char* what, size_t at) {
        for (const ParseOptions& o : options) {
            PacketMeta fast, general;
            std::memset(static_cast<void*>(&fast), 0xA5, sizeof fast);
            std::memset(static_cast<void*>(&general), 0x5A, sizeof general);
            ParseOptions g = o;
            g.fast_ipv4 = false;
            const Verdict vf = parse_exact(f, n, fast, o);
            const Verdict vg = parse_exact(f, n, general, g);
            ASSERT_EQ(vf, vg) << what << " " << at;
            ASSERT_EQ(std::memcmp(&fast, &general, sizeof fast), 0) << what << " " << at;
            ++compared;
        }
    };
    for (const auto& [name, f] : frames) {
        SCOPED_TRACE(name);
        for (size_t n = 0; n <= f.size(); ++n) {
            agree(f, n, "prefix", n);
        }
        for (size_t i = 0; i < std::min<size_t>(f.size(), 80); ++i) {
            const uint8_t o = f[i];
            for (const uint8_t v : {uint8_t{0}, uint8_t{1}, uint8_t{0xFF}, uint8_t(o ^ 1),
                                    uint8_t(o ^ 0x10), uint8_t(o ^ 0x80), uint8_t(o + 4),
                                    uint8_t(o - 4), uint8_t{0x45}, uint8_t{0x46}, uint8_t{0x06},
                                    uint8_t{0x11}, uint8_t{0x08}, uint8_t{0x50}, uint8_t{0x20}}) {
                Bytes g = f;
                g[i] = v;
                agree(g, g.size(), "byte", i);
            }
        }
    }
    EXPECT_GT(compared, 10000u);
}

// ---------------------------------------------------------------------------------------
// Checksum helpers against the reference implementation
// ---------------------------------------------------------------------------------------

// fold64 (the fast fold) against four plain folds: edge values and 2^20 random sums.
TEST(PacketChecksum, Fold64MatchesPlainFolding) {
    auto plain = [](uint64_t s) {
        for (int i = 0; i < 2; ++i) {
            s = (s & 0xFFFFFFFFu) + (s >> 32);
        }
        for (int i = 0; i < 2; ++i) {
            s = (s & 0xFFFFu) + (s >> 16);
        }
        return static_cast<uint16_t>(s);
    };
    std::vector<uint64_t> v = {0, 1, 0xFFFF, 0x10000, 0x1FFFE, 0xFFFFFFFF, 0x100000000ULL,
                               0xFFFFFFFFFFFFFFFFULL, 0xFFFF0000FFFF0000ULL, 0x00010000FFFFFFFFULL,
                               0xFFFFFFFF00000001ULL, 0x8000000080000000ULL};
    std::mt19937_64 rng(7);
    for (int i = 0; i < (1 << 20); ++i) {
        const uint64_t r = rng();
        v.push_back(i % 3 == 0 ? r : i % 3 == 1 ? (r & 0x3FFFFFFFFULL) : (r | 0xFFFF0000FFFF0000ULL));
    }
    for (const uint64_t s : v) {
        ASSERT_EQ(pkt_detail::fold64(s), plain(s)) << std::hex << s;
    }
}

// The 20-byte header check (64-bit words with carries) against the reference 16-bit sum:
// random headers, headers of 0xFF bytes (every add carries), and each made valid.
TEST(PacketChecksum, Ipv4HeaderCheckMatchesTheReference) {
    std::mt19937_64 rng(5);
    for (int i = 0; i < 300000; ++i) {
        uint8_t h[20];
        for (uint8_t& x : h) {
            const uint64_t r = rng();
            x = static_cast<uint8_t>(i % 3 == 0 ? r : i % 3 == 1 ? (r | 0xF0) : 0xFF ^ (r & r >> 8 & 1));
        }
        h[0] = 0x45;
        auto ref_ok = [&h] { return sluice::test::ref_checksum(h, 20) == 0; };
        ASSERT_EQ(pkt_detail::ipv4_header_sum_ok(h, 20), ref_ok()) << i;
        h[10] = h[11] = 0;
        const uint16_t c = sluice::test::ref_checksum(h, 20);
        h[10] = static_cast<uint8_t>(c >> 8);
        h[11] = static_cast<uint8_t>(c);
        ASSERT_TRUE(ref_ok()) << i;
        ASSERT_TRUE(pkt_detail::ipv4_header_sum_ok(h, 20)) << i;
        h[rng() % 20] ^= static_cast<uint8_t>(1 + rng() % 255); // (one byte changed: caught)
        ASSERT_EQ(pkt_detail::ipv4_header_sum_ok(h, 20), ref_ok()) << i;
    }
}

TEST(PacketChecksum, FullAndIncremental) {
    std::mt19937 rng(7);
    for (size_t len = 0; len < 200; ++len) {
        Bytes b(len);
        for (uint8_t& x : b) {
            x = static_cast<uint8_t>(rng());
        }
        EXPECT_EQ(inet_checksum(b.data(), b.size()), sluice::test::ref_checksum(b.data(), len));
        if (len < 20 || len % 2 != 0) {
            continue;
        }
        // Store the checksum in bytes 0..1, change a 16-bit, a 32-bit and a 16-byte field,
        // update incrementally, and verify the result sums to 0xFFFF.
        b[0] = b[1] = 0;
        uint16_t c = inet_checksum(b.data(), len);
        sluice::test::set16(b, 0, c);
        const size_t f16 = 2 + 2 * (rng() % ((len - 4) / 2));
        const uint16_t o16 = load_be16(&b[f16]);
        const auto n16 = static_cast<uint16_t>(rng());
        store_be16(&b[f16], n16);
        c = csum_update16(c, o16, n16);
        const size_t f32 = 2 + 2 * (rng() % ((len - 6) / 2));
        const uint32_t o32 = load_be32(&b[f32]);
        const auto n32 = static_cast<uint32_t>(rng());
        store_be32(&b[f32], n32);
        c = csum_update32(c, o32, n32);
        if (len >= 18) {
            uint8_t old_a[16];
            uint8_t new_a[16];
            std::memcpy(old_a, &b[2], 16);
            for (uint8_t& x : new_a) {
                x = static_cast<uint8_t>(rng());
            }
            std::memcpy(&b[2], new_a, 16);
            c = csum_update_addr16(c, old_a, new_a);
        }
        sluice::test::set16(b, 0, c);
        EXPECT_EQ(ref_sum(b.data(), len), 0xFFFFu) << "len " << len;
    }
}

// csum_diff_bytes() sums words of 32 bits and folds once; its result is the word-by-word
// RFC 1624 accumulation's (one fold per 16-bit word) in one's complement: the same value,
// or 0xFFFF where that is 0 (both zero), for every length it is used with.
TEST(Checksum, DiffOfByteFieldsEqualsTheWordByWordSum) {
    std::mt19937 rng(1624);
    auto mod = [](uint32_t v) { return v % 0xFFFFu; }; // 0 and 0xFFFF: one residue
    for (int i = 0; i < 200'000; ++i) {
        const size_t len = std::array<size_t, 4>{2, 4, 6, 16}[static_cast<size_t>(i) % 4];
        uint8_t a[16], b[16];
        for (size_t k = 0; k < len; ++k) {
            a[k] = static_cast<uint8_t>(rng());
            b[k] = i % 7 == 0 ? a[k] : static_cast<uint8_t>(rng()); // some fields unchanged
        }
        const auto acc = static_cast<uint32_t>(rng() & 0xFFFF);
        uint32_t ref = acc;
        for (size_t k = 0; k + 2 <= len; k += 2) {
            ref = csum_diff16(ref, load_be16(a + k), load_be16(b + k));
        }
        const uint32_t got = csum_diff_bytes(acc, a, b, len);
        ASSERT_LE(got, 0xFFFFu);
        ASSERT_EQ(mod(got), mod(ref)) << "len " << len << " case " << i;
    }
}

// ---------------------------------------------------------------------------------------
// Full NAT
// ---------------------------------------------------------------------------------------

struct NatCase {
    const char* description;
    PacketBuilder input;
    PacketBuilder expected; ///< built from scratch: reference checksums
    const char* src;
    uint16_t sport;
    const char* dst;
    uint16_t dport;
};

TEST(PacketNat, RewriteMatchesFromScratchBuild) {
    // clang-format off
    const std::vector<NatCase> cases = {
        {"tcp4", tcp4(), PacketBuilder().ipv4(kSnat4, kBackend4, 63).tcp(61000, 8080).payload(10),
         kSnat4, 61000, kBackend4, 8080},
        {"tcp4 vlan options",
         tcp4().vlan(5).ipv4_options({1, 1, 1, 0}).tcp(1, 80, kTcpAck, {1, 1}).payload(333),
         PacketBuilder().vlan(5).ipv4(kSnat4, kBackend4, 63).ipv4_options({1, 1, 1, 0})
         .tcp(2, 8080, kTcpAck, {1, 1}).payload(333), kSnat4, 2, kBackend4, 8080},
        {"udp4", udp4(), PacketBuilder().ipv4(kSnat4, kBackend4, 63).udp(1000, 5353).payload(21),
         kSnat4, 1000, kBackend4, 5353},
        {"udp4 checksum 0 stays 0", udp4().udp(5353, 53, true),
         PacketBuilder().ipv4(kSnat4, kBackend4, 63).udp(1000, 5353, true).payload(21), kSnat4,
         1000, kBackend4, 5353},
        {"tcp6", tcp6(), PacketBuilder().ipv6(kSnat6, kBackend6, 63).tcp(61000, 8443).payload(10),
         kSnat6, 61000, kBackend6, 8443},
        {"udp6 qinq", udp6().vlan(1, kEtherTypeQinQ).vlan(2), PacketBuilder()
         .vlan(1, kEtherTypeQinQ).vlan(2).ipv6(kSnat6, kBackend6, 63).udp(9, 10).payload(21),
         kSnat6, 9, kBackend6, 10},
        {"tcp6 ext headers", tcp6().ext(0).ext(60),
         PacketBuilder().ipv6(kSnat6, kBackend6, 63).ext(0).ext(60).tcp(3, 4).payload(10), kSnat6,
         3, kBackend6, 4},
        {"tcp4 first fragment", tcp4().payload(100).fragment(0, true, 48),
         PacketBuilder().ipv4(kSnat4, kBackend4, 63).tcp(5, 6).payload(100).fragment(0, true, 48),
         kSnat4, 5, kBackend4, 6},
        {"tcp4 non-first fragment", tcp4().payload(100).fragment(48, false, 72),
         PacketBuilder().ipv4(kSnat4, kBackend4, 63).tcp(5, 6).payload(100).fragment(48, false, 72),
         kSnat4, 5, kBackend4, 6},
        {"udp6 first fragment", udp6().payload(100).fragment(0, true, 40),
         PacketBuilder().ipv6(kSnat6, kBackend6, 63).udp(7, 8).payload(100).fragment(0, true, 40),
         kSnat6, 7, kBackend6, 8},
    };
    // clang-format on
    for (const NatCase& c : cases) {
        SCOPED_TRACE(c.description);
        Bytes f = c.input.build();
        PacketMeta m;
        ASSERT_NE(parse(f, m), Verdict::Drop);
        ASSERT_TRUE(dnat_snat(m, f, addr(c.src), c.sport, addr(c.dst), c.dport));
        EXPECT_EQ(f, c.expected.build());
        EXPECT_EQ(m.key.src, addr(c.src));
        EXPECT_EQ(m.key.dst, addr(c.dst));
        EXPECT_EQ(m.ttl, 63);
        // And the result parses with every checksum verified.
        PacketMeta again;
        EXPECT_EQ(parse(f, again, {.verify_ipv4_checksum = true, .verify_l4_checksum = true}),
                  m.verdict);
    }
}

TEST(PacketNat, RandomRewritesKeepChecksumsValid) {
    std::mt19937 rng(11);
    const std::vector<Bytes> inputs = {tcp4().payload(77).build(), udp4().payload(3).build(),
                                       tcp6().payload(91).build(), udp6().build()};
    for (int i = 0; i < 2000; ++i) {
        Bytes f = inputs[i % inputs.size()];
        PacketMeta m;
        ASSERT_EQ(parse(f, m), Verdict::Forward);
        Addr16 s{};
        Addr16 d{};
        for (size_t k = m.family == 4 ? 12 : 0; k < 16; ++k) {
            s[k] = static_cast<uint8_t>(rng());
            d[k] = static_cast<uint8_t>(rng());
        }
        const auto sp = static_cast<uint16_t>(rng());
        const auto dp = static_cast<uint16_t>(rng());
        ASSERT_TRUE(dnat_snat(m, f, s, sp, d, dp));
        if (m.family == 4) {
            EXPECT_TRUE(ipv4_csum_ok(f, m.l3_off));
        }
        EXPECT_TRUE(l4_csum_ok(f, m)) << i;
        if (m.proto == kProtoUdp) {
            EXPECT_NE(load_be16(&f[m.l4_off + 6]), 0) << i; // 0 would mean "no checksum"
        }
    }
}

TEST(PacketNat, UdpChecksumThatComputesToZeroIsSentAsFfff) {
    // With destination port p the checksum is ~(S + p), S the sum of everything else. The
    // builder's checksum for port 0 is ~S; using it as the port makes the sum 0xFFFF and
    // the computed checksum 0, which UDP must send as 0xFFFF.
    const Bytes probe =
        PacketBuilder().ipv4(kSnat4, kBackend4, 63).udp(1000, 0).payload(21).build();
    const uint16_t port = sluice::test::get16(probe, 14 + 20 + 6);
    Bytes f = udp4().build();
    PacketMeta m;
    ASSERT_EQ(parse(f, m), Verdict::Forward);
    ASSERT_TRUE(dnat_snat(m, f, addr(kSnat4), 1000, addr(kBackend4), port));
    EXPECT_EQ(load_be16(&f[14 + 20 + 6]), 0xFFFF);
    EXPECT_TRUE(l4_csum_ok(f, m));
}

TEST(PacketNat, TtlOneAsksForTimeExceeded) {
    for (Bytes f :
         {tcp4().ipv4(kClient4, kVip4, 1).build(), tcp6().ipv6(kClient6, kVip6, 1).build(),
          tcp4().ipv4(kClient4, kVip4, 0).build()}) {
        const Bytes before = f;
        PacketMeta m;
        ASSERT_EQ(parse(f, m), Verdict::Forward);
        const Addr16 snat = m.family == 4 ? addr(kSnat4) : addr(kSnat6);
        EXPECT_FALSE(dnat_snat(m, f, snat, 1, snat, 2));
        EXPECT_EQ(m.verdict, Verdict::TtlExceeded);
        EXPECT_EQ(m.drop, DropReason::TtlExceeded);
        EXPECT_EQ(f, before);
    }
}

TEST(PacketNat, RefusesWhatItCannotRewrite) {
    PacketMeta m;
    Bytes echo = PacketBuilder().ipv4(kClient4, kVip4).icmp(8, 0).build();
    ASSERT_EQ(parse(echo, m), Verdict::IcmpEcho);
    EXPECT_FALSE(dnat_snat(m, echo, addr(kSnat4), 1, addr(kBackend4), 2));
    Bytes f = tcp4().build();
    ASSERT_EQ(parse(f, m), Verdict::Forward);
    Bytes shorter(f.begin(), f.begin() + 40);
    EXPECT_FALSE(dnat_snat(m, shorter, addr(kSnat4), 1, addr(kBackend4), 2));
}

TEST(PacketNat, SetMacs) {
    Bytes f = tcp4().build();
    ASSERT_TRUE(set_macs(f, kSluiceMac, kBackendMac));
    EXPECT_TRUE(std::equal(kBackendMac.begin(), kBackendMac.end(), f.begin()));
    EXPECT_TRUE(std::equal(kSluiceMac.begin(), kSluiceMac.end(), f.begin() + 6));
    ASSERT_TRUE(swap_macs(f));
    EXPECT_TRUE(std::equal(kSluiceMac.begin(), kSluiceMac.end(), f.begin()));
    Bytes tiny(11);
    EXPECT_FALSE(set_macs(tiny, kSluiceMac, kBackendMac));
}

// ---------------------------------------------------------------------------------------
// DSR encapsulation
// ---------------------------------------------------------------------------------------

struct Decapped {
    Bytes frame;
    uint8_t outer_family = 0;
    uint8_t proto = 0; ///< outer IP protocol
};

/// Test-side decapsulation: checks the outer headers and returns the inner frame.
Decapped decap(const uint8_t* f, size_t len, size_t l2, bool gue, const EncapParams& p,
               uint8_t inner_family) {
    Decapped d;
    const uint16_t et = static_cast<uint16_t>((f[l2 - 2] << 8) | f[l2 - 1]);
    const uint8_t* o = f + l2;
    size_t ol = 0;
    if (et == kEtherTypeIpv4) {
        d.outer_family = 4;
        ol = 20;
        EXPECT_EQ(o[0], 0x45);
        EXPECT_EQ(ref_sum(o, 20), 0xFFFFu);
        EXPECT_EQ(size_t((o[2] << 8) | o[3]), len - l2);
        EXPECT_EQ(o[8], p.ttl);
        d.proto = o[9];
        EXPECT_TRUE(std::equal(o + 12, o + 16, p.src.begin() + 12));
        EXPECT_TRUE(std::equal(o + 16, o + 20, p.dst.begin() + 12));
    } else {
        EXPECT_EQ(et, kEtherTypeIpv6);
        d.outer_family = 6;
        ol = 40;
        EXPECT_EQ(o[0] >> 4, 6);
        EXPECT_EQ(size_t((o[4] << 8) | o[5]), len - l2 - 40);
        d.proto = o[6];
        EXPECT_EQ(o[7], p.ttl);
        EXPECT_TRUE(std::equal(o + 8, o + 24, p.src.begin()));
        EXPECT_TRUE(std::equal(o + 24, o + 40, p.dst.begin()));
    }
    const uint8_t inner_proto = inner_family == 4 ? kProtoIpip : kProtoIpv6;
    if (gue) {
        EXPECT_EQ(d.proto, kProtoUdp);
        const uint8_t* u = o + ol;
        EXPECT_EQ((u[2] << 8) | u[3], p.gue_port);
        EXPECT_EQ(size_t((u[4] << 8) | u[5]), len - l2 - ol);
        EXPECT_GE((u[0] << 8) | u[1], 0xC000);
        if (d.outer_family == 4) {
            EXPECT_EQ((u[6] << 8) | u[7], 0);
        } else {
            const uint32_t ps = ref_pseudo(o + 8, o + 24, 16, uint32_t(len - l2 - ol), 17);
            EXPECT_EQ(ref_sum(u, len - l2 - ol, ps), 0xFFFFu);
        }
        EXPECT_EQ(u[8], 0); // GUE version 0, no options
        EXPECT_EQ(u[9], inner_proto);
        ol += 12;
    } else {
        EXPECT_EQ(d.proto, inner_proto);
    }
    d.frame.assign(f, f + l2);
    d.frame.insert(d.frame.end(), f + l2 + ol, f + len);
    d.frame[l2 - 2] = inner_family == 4 ? 0x08 : 0x86;
    d.frame[l2 - 1] = inner_family == 4 ? 0x00 : 0xDD;
    return d;
}

// The straight-line IPv4-in-IPv4 encapsulation writes exactly the bytes of the general one
// (whole buffer compared: headroom, new headers, inner datagram), for frames it takes and
// frames it must leave to the general code, at every headroom from too small to plenty.
TEST(PacketEncap, FastIpipAgreesWithTheGeneralOne) {
    // clang-format off
    const std::vector<PacketBuilder> inners = {
        tcp4(), tcp4().tos(0xB8).payload(500), udp4().df(), udp4().vlan(12),
        tcp4().ipv4_options({1, 1, 1, 0}), udp4().payload(200).fragment(64, false, 200),
        PacketBuilder().ipv4(kClient4, kVip4).tcp(1, 2).pad_to(60), tcp6(),
        PacketBuilder().ipv4(kClient4, kVip4).icmp(8, 0, 1).payload(30),
    };
    // clang-format on
    uint32_t taken = 0, in_place = 0;
    for (const PacketBuilder& b : inners) {
        const Bytes orig = b.build();
        PacketMeta m;
        ASSERT_NE(parse_exact(orig, orig.size(), m), Verdict::Drop);
        for (const uint8_t ttl : {uint8_t{64}, uint8_t{1}, uint8_t{255}}) {
            EncapParams p;
            p.family = 4;
            p.ttl = ttl;
            p.src = addr(kSnat4);
            p.dst = addr("203.0.113.254");
            for (uint32_t headroom = 0; headroom <= 40; headroom += 2) {
                Bytes fast(headroom, 0xEE), general(headroom, 0xEE);
                fast.insert(fast.end(), orig.begin(), orig.end());
                general.insert(general.end(), orig.begin(), orig.end());
                uint32_t lf = 7, lg = 7;
                const int32_t of = pkt_detail::encap(fast, headroom, m, p, false, lf, true);
                const int32_t og = pkt_detail::encap(general, headroom, m, p, false, lg, false);
                ASSERT_EQ(of, og) << "headroom " << headroom;
                ASSERT_EQ(lf, lg);
                ASSERT_EQ(fast, general) << "headroom " << headroom;
                int32_t off = 0;
                uint32_t len = 0;
                Bytes probe(headroom, 0xEE);
                probe.insert(probe.end(), orig.begin(), orig.end());
                const bool fits = pkt_detail::encap_ipip4_fast(probe, headroom, m, p, off, len);
                taken += fits ? 1 : 0;
                if (fits && ttl == kEncapTtl) {
                    // ipip4_in_place() (the L4 lanes', TTL kEncapTtl): the same frame, with
                    // the MACs moved by hand (its callers write them).
                    Bytes lane(headroom, 0xEE);
                    lane.insert(lane.end(), orig.begin(), orig.end());
                    std::memmove(lane.data() + headroom - kIpv4HdrLen, lane.data() + headroom, 12);
                    pkt_detail::ipip4_in_place(lane.data() + headroom, m.l3_len,
                                               p.src.data() + 12, p.dst.data() + 12);
                    const size_t n = kEthHdrLen + kIpv4HdrLen + m.l3_len;
                    ASSERT_EQ(n, lg);
                    ASSERT_TRUE(std::equal(general.begin() + og, general.begin() + og + lg,
                                           lane.begin() + (headroom - kIpv4HdrLen)))
                        << "headroom " << headroom;
                    ++in_place;
                }
            }
        }
    }
    EXPECT_GT(taken, 0u) << "the fast encapsulation never ran";
    EXPECT_GT(in_place, 5u) << "ipip4_in_place was compared on too few frames";
}

// GUE over IPv4 in place (the L4 lanes' and dsr_forward()'s) against encap() with GUE: the
// same bytes at every headroom it accepts, for the inner shapes it is given (untagged IPv4
// datagrams, options, fragments, padding), with encap()'s source port (from the key hash).
TEST(PacketEncap, GueInPlaceAgreesWithTheGeneralOne) {
    // clang-format off
    const std::vector<PacketBuilder> inners = {
        tcp4(), tcp4().tos(0xB8).payload(500), udp4().df(), udp4(),
        tcp4().ipv4_options({1, 1, 1, 0}), udp4().payload(200).fragment(64, false, 200),
        PacketBuilder().ipv4(kClient4, kVip4).tcp(1, 2).pad_to(60),
        PacketBuilder().ipv4(kClient4, kVip4).icmp(8, 0, 1).payload(30),
    };
    // clang-format on
    uint32_t compared = 0;
    for (const PacketBuilder& b : inners) {
        const Bytes orig = b.build();
        PacketMeta m;
        ASSERT_NE(parse_exact(orig, orig.size(), m), Verdict::Drop);
        ASSERT_EQ(m.family, 4);
        ASSERT_EQ(m.l3_off, kEthHdrLen);
        EncapParams p;
        p.family = 4;
        p.src = addr(kSnat4);
        p.dst = addr("203.0.113.254");
        for (uint32_t headroom = 0; headroom <= 48; headroom += 2) {
            Bytes general(headroom, 0xEE);
            general.insert(general.end(), orig.begin(), orig.end());
            uint32_t lg = 7;
            const int32_t og = pkt_detail::encap(general, headroom, m, p, /*gue=*/true, lg);
            if (headroom < pkt_detail::kGue4Overhead) {
                EXPECT_LT(og, 0) << "headroom " << headroom;
                continue;
            }
            ASSERT_GE(og, 0) << "headroom " << headroom;
            Bytes lane(headroom, 0xEE);
            lane.insert(lane.end(), orig.begin(), orig.end());
            const uint32_t at = headroom - pkt_detail::kGue4Overhead;
            std::memmove(lane.data() + at, lane.data() + headroom, 12); // the MACs, by hand
            pkt_detail::gue4_in_place(lane.data() + headroom, m.l3_len, p.src.data() + 12,
                                      p.dst.data() + 12, gue_source_port(packet_key_hash(m.key)));
            const size_t n = kEthHdrLen + pkt_detail::kGue4Overhead + m.l3_len;
            ASSERT_EQ(n, lg);
            ASSERT_EQ(static_cast<uint32_t>(og), at);
            ASSERT_TRUE(std::equal(general.begin() + og, general.begin() + og + lg,
                                   lane.begin() + at))
                << "headroom " << headroom;
            ++compared;
        }
    }
    EXPECT_GT(compared, 50u);
}

// packet_key_hash_v4() (from registers) is packet_key_hash() of the same IPv4 key.
TEST(PacketKeyHash, V4FromWordsIsTheSameFunction) {
    std::mt19937_64 rng(17);
    for (int i = 0; i < 100000; ++i) {
        const uint64_t r = rng(), q = rng();
        PacketKey k;
        k.family = 4;
        k.proto = static_cast<uint8_t>(q);
        k.src_port = static_cast<uint16_t>(q >> 8);
        k.dst_port = static_cast<uint16_t>(q >> 24);
        const auto src = static_cast<uint32_t>(r), dst = static_cast<uint32_t>(r >> 32);
        std::memcpy(k.src.data() + 12, &src, 4);
        std::memcpy(k.dst.data() + 12, &dst, 4);
        ASSERT_EQ(packet_key_hash_v4(src, dst, k.src_port, k.dst_port, k.proto),
                  packet_key_hash(k))
            << i;
    }
}

TEST(PacketEncap, RoundTrip) {
    // clang-format off
    const std::vector<std::pair<const char*, PacketBuilder>> inners = {
        {"tcp4", tcp4().tos(0xB8).payload(500)},
        {"udp4 vlan df", udp4().vlan(12).df()},
        {"tcp6 qinq", tcp6().vlan(1, kEtherTypeQinQ).vlan(2).tos(0x2E)},
        {"icmp4 echo", PacketBuilder().ipv4(kClient4, kVip4).icmp(8, 0, 1).payload(30)},
        {"udp4 fragment", udp4().payload(200).fragment(64, false, 200)},
        {"tcp4 padded", PacketBuilder().ipv4(kClient4, kVip4).tcp(1, 2).pad_to(60)},
    };
    // clang-format on
    constexpr uint32_t kHeadroom = 128;
    for (const auto& [name, inner_b] : inners) {
        for (const uint8_t outer : {uint8_t{4}, uint8_t{6}}) {
            for (const bool gue : {false, true}) {
                SCOPED_TRACE(std::string(name) + (outer == 4 ? " outer4" : " outer6") +
                             (gue ? " gue" : " ipip"));
                const Bytes orig = inner_b.build();
                Bytes buf(kHeadroom, 0xEE);
                buf.insert(buf.end(), orig.begin(), orig.end());
                PacketMeta m;
                ASSERT_NE(parse_exact(orig, orig.size(), m), Verdict::Drop);
                const Bytes unpadded(orig.begin(), orig.begin() + m.l3_off + m.l3_len);
                EncapParams p;
                p.family = outer;
                p.src = outer == 4 ? addr(kSnat4) : addr(kSnat6);
                p.dst = outer == 4 ? addr(kBackend4) : addr(kBackend6);
                uint32_t len = 0;
                const int32_t off = gue ? encap_gue(buf, kHeadroom, m, p, len)
                                        : encap_ipip(buf, kHeadroom, m, p, len);
                ASSERT_GE(off, 0);
                EXPECT_EQ(uint32_t(off), kHeadroom - encap_overhead(outer, gue));
                EXPECT_EQ(len, unpadded.size() + encap_overhead(outer, gue));
                const Decapped d = decap(buf.data() + off, len, m.l3_off, gue, p, m.family);
                EXPECT_EQ(d.frame, unpadded);
                // DSCP/ECN are carried to the outer header.
                const uint8_t* oh = buf.data() + off + m.l3_off;
                const uint8_t* ih = unpadded.data() + m.l3_off;
                const uint8_t in_tos = m.family == 4 ? ih[1] : uint8_t((ih[0] << 4) | (ih[1] >> 4));
                const uint8_t out_tos = outer == 4 ? oh[1] : uint8_t((oh[0] << 4) | (oh[1] >> 4));
                EXPECT_EQ(in_tos, out_tos);
                if (outer == 4) {
                    EXPECT_EQ(csum_fold(csum_add(0, oh, kIpv4HdrLen)), 0xFFFF)
                        << "outer IPv4 header checksum";
                }
                // GUE over IPv6 must parse with its UDP checksum verified.
                PacketMeta om;
                const Bytes out(buf.begin() + off, buf.begin() + off + len);
                if (gue) {
                    ASSERT_EQ(
                        parse(out, om, {.verify_ipv4_checksum = true, .verify_l4_checksum = true}),
                        Verdict::Forward);
                    EXPECT_EQ(om.key.dst_port, kGueDefaultPort);
                }
            }
        }
    }
}

// The IPv4 rewrite sums its checksum deltas in machine byte order: over many random
// packets, ports and addresses (random checksum values hit the 0x0000/0xFFFF edges), the
// rewritten TCP and UDP checksums and the header checksum must verify.
TEST(PacketRewrite, RandomIpv4RewritesKeepEveryChecksumValid) {
    uint64_t x = 0x1234567887654321ULL;
    auto rnd = [&x] {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        return x;
    };
    auto ip = [&](uint64_t r) {
        return std::to_string(1 + r % 223) + "." + std::to_string((r >> 8) % 256) + "." +
               std::to_string((r >> 16) % 256) + "." + std::to_string((r >> 24) % 256);
    };
    for (int i = 0; i < 20000; ++i) {
        const bool tcp = (rnd() & 1) != 0;
        Bytes payload(rnd() % 40);
        for (auto& b : payload) {
            b = static_cast<uint8_t>(rnd());
        }
        PacketBuilder pb;
        pb.ipv4(ip(rnd()), ip(rnd()), static_cast<uint8_t>(2 + rnd() % 250));
        if (tcp) {
            pb.tcp(static_cast<uint16_t>(rnd()), static_cast<uint16_t>(rnd()), 0x18);
        } else {
            pb.udp(static_cast<uint16_t>(rnd()), static_cast<uint16_t>(rnd()));
        }
        Bytes f = pb.payload(payload).build();
        PacketMeta m;
        const ParseOptions verify{.verify_ipv4_checksum = true, .verify_l4_checksum = true};
        ASSERT_EQ(parse(f, m, verify), Verdict::Forward) << i;
        ASSERT_TRUE(dnat_snat(m, f, addr(ip(rnd())), static_cast<uint16_t>(rnd()),
                              addr(ip(rnd())), static_cast<uint16_t>(rnd())));
        PacketMeta again;
        ASSERT_EQ(parse(f, again, verify), Verdict::Forward) << "case " << i << (tcp ? " tcp" : " udp");
        if (!tcp) {
            EXPECT_NE(load_be16(f.data() + 14 + 20 + 6), 0) << "a UDP checksum stays present";
        }
    }
}

TEST(PacketEncap, NeedsHeadroomAndAnIpPacket) {
    const Bytes orig = tcp4().build();
    PacketMeta m;
    ASSERT_EQ(parse(orig, m), Verdict::Forward);
    EncapParams p;
    p.src = addr(kSnat4);
    p.dst = addr(kBackend4);
    uint32_t len = 0;
    for (uint32_t headroom = 0; headroom < encap_overhead(4, true); ++headroom) {
        Bytes buf(headroom, 0);
        buf.insert(buf.end(), orig.begin(), orig.end());
        const Bytes before = buf;
        EXPECT_EQ(encap_gue(buf, headroom, m, p, len), -1);
        EXPECT_EQ(buf, before);
        if (headroom >= encap_overhead(4, false)) {
            EXPECT_GE(encap_ipip(buf, headroom, m, p, len), 0);
        } else {
            EXPECT_EQ(encap_ipip(buf, headroom, m, p, len), -1);
        }
    }
    Bytes arp = PacketBuilder().arp(1, kClientMac, kClient4, {}, kVip4).build();
    ASSERT_EQ(parse(arp, m), Verdict::Arp);
    Bytes buf(64, 0);
    buf.insert(buf.end(), arp.begin(), arp.end());
    EXPECT_EQ(encap_ipip(buf, 64, m, p, len), -1);
    // Meta that claims more bytes than the buffer has.
    ASSERT_EQ(parse(orig, m), Verdict::Forward);
    Bytes cut(64, 0);
    cut.insert(cut.end(), orig.begin(), orig.end() - 1);
    EXPECT_EQ(encap_ipip(cut, 64, m, p, len), -1);
}

TEST(PacketEncap, GueSourcePortFollowsTheFlow) {
    EncapParams p;
    p.src = addr(kSnat4);
    p.dst = addr(kBackend4);
    const auto sport = [&](const PacketBuilder& b, uint16_t fixed) {
        const Bytes f = b.build();
        PacketMeta m;
        EXPECT_EQ(parse(f, m), Verdict::Forward);
        Bytes buf(64, 0);
        buf.insert(buf.end(), f.begin(), f.end());
        EncapParams q = p;
        q.udp_src_port = fixed;
        uint32_t len = 0;
        const int32_t off = encap_gue(buf, 64, m, q, len);
        EXPECT_GE(off, 0);
        return sluice::test::get16(buf, size_t(off) + 14 + 20);
    };
    EXPECT_EQ(sport(tcp4(), 0), sport(tcp4().payload(99), 0));
    EXPECT_NE(sport(tcp4(), 0), sport(tcp4().tcp(40001, 80), 0));
    EXPECT_EQ(sport(tcp4(), 4242), 4242);
}

// ---------------------------------------------------------------------------------------
// Responders
// ---------------------------------------------------------------------------------------

TEST(PacketRespond, EchoReply) {
    struct Case {
        const char* description;
        PacketBuilder request;
        PacketBuilder reply;
    };
    // clang-format off
    const std::vector<Case> cases = {
        {"v4", PacketBuilder().ipv4(kClient4, kVip4, 50).icmp(8, 0, 0x12340005).payload(56),
         PacketBuilder().eth(kSluiceMac, kClientMac).ipv4(kVip4, kClient4, 64)
         .icmp(0, 0, 0x12340005).payload(56)},
        {"v4 vlan", PacketBuilder().vlan(7).ipv4(kClient4, kVip4, 3).icmp(8, 0, 1).payload(1),
         PacketBuilder().eth(kSluiceMac, kClientMac).vlan(7).ipv4(kVip4, kClient4, 64)
         .icmp(0, 0, 1).payload(1)},
        {"v6", PacketBuilder().ipv6(kClient6, kVip6, 50).icmp(128, 0, 0xAB).payload(40),
         PacketBuilder().eth(kSluiceMac, kClientMac).ipv6(kVip6, kClient6, 64).icmp(129, 0, 0xAB)
         .payload(40)},
        {"v6 vlan", PacketBuilder().vlan(8).ipv6(kClient6, kVip6, 255).icmp(128, 0, 7),
         PacketBuilder().eth(kSluiceMac, kClientMac).vlan(8).ipv6(kVip6, kClient6, 64)
         .icmp(129, 0, 7)},
    };
    // clang-format on
    for (const Case& c : cases) {
        SCOPED_TRACE(c.description);
        Bytes f = c.request.build();
        PacketMeta m;
        ASSERT_EQ(parse(f, m), Verdict::IcmpEcho);
        ASSERT_TRUE(make_icmp_echo_reply(m, f));
        EXPECT_EQ(f, c.reply.build());
        EXPECT_EQ(m.key.dst, m.family == 4 ? addr(kClient4) : addr(kClient6));
    }
    Bytes t = tcp4().build();
    PacketMeta m;
    ASSERT_EQ(parse(t, m), Verdict::Forward);
    EXPECT_FALSE(make_icmp_echo_reply(m, t));
}

TEST(PacketRespond, ArpReply) {
    const Mac bcast = {0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF};
    Bytes f = PacketBuilder()
                  .eth(kClientMac, bcast)
                  .vlan(4)
                  .arp(1, kClientMac, kClient4, {}, kVip4)
                  .pad_to(64)
                  .build();
    PacketMeta m;
    ASSERT_EQ(parse(f, m), Verdict::Arp);
    ASSERT_TRUE(make_arp_reply(m, f, kSluiceMac));
    EXPECT_EQ(f, PacketBuilder()
                     .eth(kSluiceMac, kClientMac)
                     .vlan(4)
                     .arp(2, kSluiceMac, kVip4, kClientMac, kClient4)
                     .pad_to(64)
                     .build());
    EXPECT_EQ(m.arp_op, 2);
    // A reply is not answered.
    ASSERT_EQ(parse(f, m), Verdict::Arp);
    EXPECT_FALSE(make_arp_reply(m, f, kSluiceMac));
}

TEST(PacketRespond, NeighborAdvert) {
    const Addr16 target = addr(kVip6);
    Bytes body(target.begin(), target.end());
    body.insert(body.end(), {1, 1});
    body.insert(body.end(), kClientMac.begin(), kClientMac.end());
    const Mac mcast = {0x33, 0x33, 0xFF, 0x00, 0x00, 0x01};
    for (const bool dad : {false, true}) {
        SCOPED_TRACE(dad ? "dad" : "solicited");
        const char* src = dad ? "::" : kClient6;
        const Bytes ns = PacketBuilder()
                             .eth(kClientMac, mcast)
                             .vlan(6)
                             .ipv6(src, "ff02::1:ff00:1", 255)
                             .icmp(135, 0)
                             .payload(body)
                             .build();
        PacketMeta m;
        ASSERT_EQ(parse(ns, m, {.verify_ipv4_checksum = true, .verify_l4_checksum = true}),
                  Verdict::NeighborSolicit);
        EXPECT_EQ(m.key.dst, target);
        Bytes out(200, 0);
        const uint32_t n = build_neighbor_advert(out, ns, m, kSluiceMac);
        ASSERT_GT(n, 0u);
        out.resize(n);
        Bytes na_body(target.begin(), target.end());
        na_body.insert(na_body.end(), {2, 1});
        na_body.insert(na_body.end(), kSluiceMac.begin(), kSluiceMac.end());
        const Mac all_nodes = {0x33, 0x33, 0, 0, 0, 1};
        const Bytes expected = PacketBuilder()
                                   .eth(kSluiceMac, dad ? all_nodes : kClientMac)
                                   .vlan(6)
                                   .ipv6(kVip6, dad ? "ff02::1" : kClient6, 255)
                                   .icmp(136, 0, dad ? 0x20000000 : 0x60000000)
                                   .payload(na_body)
                                   .build();
        EXPECT_EQ(out, expected);
        Bytes small(n - 1);
        EXPECT_EQ(build_neighbor_advert(small, ns, m, kSluiceMac), 0u);
    }
}

TEST(PacketRespond, TimeExceeded) {
    struct Case {
        const char* description;
        PacketBuilder input;
        const char* our;
        size_t quote; ///< bytes of the original datagram quoted
    };
    // clang-format off
    const std::vector<Case> cases = {
        {"v4 vlan", tcp4().vlan(3).ipv4(kClient4, kVip4, 1).payload(100), "10.9.9.9", 140},
        {"v4 big", tcp4().ipv4(kClient4, kVip4, 1).payload(1400), "10.9.9.9", 548},
        {"v6", udp6().ipv6(kClient6, kVip6, 1).payload(2000), "fd00::9", 1232},
    };
    // clang-format on
    for (const Case& c : cases) {
        SCOPED_TRACE(c.description);
        Bytes f = c.input.build();
        PacketMeta m;
        ASSERT_EQ(parse(f, m), Verdict::Forward);
        const Addr16 our = addr(c.our);
        ASSERT_FALSE(dnat_snat(m, f, our, 1, our, 2));
        ASSERT_EQ(m.verdict, Verdict::TtlExceeded);
        Bytes out(2000, 0);
        const uint32_t n = build_icmp_time_exceeded(out, f, m, our);
        ASSERT_GT(n, 0u);
        out.resize(n);
        EXPECT_TRUE(std::equal(out.begin(), out.begin() + 6, f.begin() + 6));
        EXPECT_TRUE(std::equal(out.begin() + 6, out.begin() + 12, f.begin()));
        PacketMeta em;
        ASSERT_EQ(parse(out, em, {.verify_ipv4_checksum = true, .verify_l4_checksum = true}),
                  Verdict::IcmpError);
        EXPECT_EQ(em.icmp_type, m.family == 4 ? 11 : 3);
        EXPECT_EQ(em.icmp_code, 0);
        EXPECT_EQ(em.vlan_count, m.vlan_count);
        // The error follows the original flow: swapped inner key == the reply direction.
        EXPECT_EQ(em.key.src, m.key.dst);
        EXPECT_EQ(em.key.dst, m.key.src);
        EXPECT_EQ(em.key.src_port, m.key.dst_port);
        const uint8_t* eip = out.data() + em.l3_off;
        const size_t alen = m.family == 4 ? 4 : 16;
        const Addr16 client = m.family == 4 ? addr(kClient4) : addr(kClient6);
        EXPECT_TRUE(std::equal(client.end() - static_cast<long>(alen), client.end(),
                               eip + (m.family == 4 ? 16 : 24)));
        EXPECT_EQ(n - em.inner_l3_off, c.quote);
        EXPECT_TRUE(std::equal(out.begin() + em.inner_l3_off, out.end(), f.begin() + m.l3_off));
        EXPECT_LE(n - m.l3_off, m.family == 4 ? 576u : 1280u);
    }
    // No errors about errors or about non-first fragments.
    Bytes err =
        PacketBuilder().ipv4("203.0.113.1", kVip4, 1).icmp(3, 1).payload(tcp4().build_l3()).build();
    PacketMeta m;
    ASSERT_EQ(parse(err, m), Verdict::IcmpError);
    Bytes out(2000);
    EXPECT_EQ(build_icmp_time_exceeded(out, err, m, addr("10.9.9.9")), 0u);
    Bytes frag = tcp4().ipv4(kClient4, kVip4, 1).payload(100).fragment(48, false, 72).build();
    ASSERT_EQ(parse(frag, m), Verdict::Fragment);
    EXPECT_EQ(build_icmp_time_exceeded(out, frag, m, addr("10.9.9.9")), 0u);
}

// ---------------------------------------------------------------------------------------
// Robustness: mutated frames through every entry point (meaningful under ASan/UBSan)
// ---------------------------------------------------------------------------------------

TEST(PacketRobustness, MutatedFramesNeverBreakAnything) {
    std::mt19937 rng(3);
    const Bytes err4 =
        PacketBuilder().ipv4("203.0.113.1", kVip4).icmp(3, 4).payload(tcp4().build_l3()).build();
    const std::vector<Bytes> seeds = {
        tcp4().vlan(1).build(),
        udp6().ext(0).ext(60).build(),
        err4,
        PacketBuilder().arp(1, kClientMac, kClient4, {}, kVip4).build(),
        udp4().payload(80).fragment(0, true, 40).build(),
        PacketBuilder().ipv6(kClient6, kVip6).icmp(128, 0, 1).build()};
    size_t parsed = 0;
    for (int i = 0; i < 20000; ++i) {
        Bytes f = seeds[i % seeds.size()];
        const int flips = 1 + int(rng() % 4);
        for (int k = 0; k < flips; ++k) {
            f[rng() % f.size()] = static_cast<uint8_t>(rng());
        }
        f.resize(rng() % (f.size() + 1));
        PacketMeta m;
        const Verdict v =
            parse_exact(f, f.size(), m,
                        {.verify_ipv4_checksum = (i & 1) != 0, .verify_l4_checksum = (i & 2) != 0});
        if (v == Verdict::Drop) {
            continue;
        }
        ++parsed;
        Bytes c = f;
        PacketMeta mc = m;
        (void)dnat_snat(mc, c, addr(kSnat6), 1, addr(kBackend6), 2);
        c = f;
        mc = m;
        (void)make_icmp_echo_reply(mc, c);
        c = f;
        mc = m;
        (void)make_arp_reply(mc, c, kSluiceMac);
        Bytes out(1600);
        (void)build_neighbor_advert(out, f, m, kSluiceMac);
        (void)build_icmp_time_exceeded(out, f, m, addr(kSnat6));
        Bytes buf(64, 0);
        buf.insert(buf.end(), f.begin(), f.end());
        uint32_t len = 0;
        EncapParams p;
        p.family = (i & 4) ? 6 : 4;
        (void)encap_gue(buf, 64, m, p, len);
    }
    EXPECT_GT(parsed, 100u);
}

} // namespace
