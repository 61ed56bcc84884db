// Out-of-line responders of the L4 packet layer (see packet_fp.h): echo reply, ARP reply,
// neighbour advertisement, ICMP time exceeded. Worker-callable: no allocation, no throw.

#include "packet_fp.h"

#include <algorithm>

namespace sluice::dp {

namespace {

constexpr uint32_t kIcmpv4QuoteLimit = 576;  // RFC 1812 4.3.2.3: whole reply <= 576
constexpr uint32_t kIcmpv6QuoteLimit = 1280; // RFC 4443 2.4(c): whole reply <= min MTU

constexpr Addr16 kAllNodes = {0xFF, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01};

bool frame_holds(const PacketMeta& m, size_t frame_size) noexcept {
    return m.l3_off >= kEthHdrLen && size_t{m.l3_off} + m.l3_len <= frame_size;
}

bool is_unspecified(const uint8_t* a) noexcept {
    return std::all_of(a, a + 16, [](uint8_t b) { return b == 0; });
}

} // namespace

bool make_icmp_echo_reply(PacketMeta& m, std::span<uint8_t> frame) noexcept {
    if (m.verdict != Verdict::IcmpEcho || !frame_holds(m, frame.size()) ||
        size_t{m.l4_off} + kIcmpHdrLen > size_t{m.l3_off} + m.l3_len) {
        return false;
    }
    uint8_t* ip = frame.data() + m.l3_off;
    uint8_t* icmp = frame.data() + m.l4_off;
    const uint16_t old_type = load_be16(icmp);
    if (m.family == 4) {
        if (icmp[0] != 8) {
            return false;
        }
        // Swapping the addresses permutes the summed words: only the TTL changes the sum.
        uint8_t tmp[4];
        std::memcpy(tmp, ip + 12, 4);
        std::memmove(ip + 12, ip + 16, 4);
        std::memcpy(ip + 16, tmp, 4);
        const uint16_t old_ttl = load_be16(ip + 8);
        ip[8] = kReplyTtl;
        store_be16(ip + 10, csum_update16(load_be16(ip + 10), old_ttl, load_be16(ip + 8)));
        icmp[0] = 0;
    } else {
        if (icmp[0] != 128) {
            return false;
        }
        uint8_t tmp[16];
        std::memcpy(tmp, ip + 8, 16);
        std::memmove(ip + 8, ip + 24, 16);
        std::memcpy(ip + 24, tmp, 16);
        ip[7] = kReplyTtl;
        icmp[0] = 129;
    }
    store_be16(icmp + 2, csum_update16(load_be16(icmp + 2), old_type, load_be16(icmp)));
    (void)swap_macs(frame);
    std::swap(m.key.src, m.key.dst);
    m.ttl = kReplyTtl;
    m.icmp_type = icmp[0];
    return true;
}

bool make_arp_reply(PacketMeta& m, std::span<uint8_t> frame, const Mac& our_mac) noexcept {
    if (m.verdict != Verdict::Arp || m.arp_op != 1 || m.l3_off < kEthHdrLen ||
        size_t{m.l3_off} + kArpLen > frame.size()) {
        return false;
    }
    uint8_t* a = frame.data() + m.l3_off;
    uint8_t requester_mac[6];
    uint8_t requester_ip[4];
    uint8_t asked_ip[4];
    std::memcpy(requester_mac, a + 8, 6);
    std::memcpy(requester_ip, a + 14, 4);
    std::memcpy(asked_ip, a + 24, 4);
    store_be16(a + 6, 2);
    std::memcpy(a + 8, our_mac.data(), 6);
    std::memcpy(a + 14, asked_ip, 4);
    std::memcpy(a + 18, requester_mac, 6);
    std::memcpy(a + 24, requester_ip, 4);
    std::memcpy(frame.data(), requester_mac, 6);
    std::memcpy(frame.data() + 6, our_mac.data(), 6);
    m.arp_op = 2;
    std::swap(m.key.src, m.key.dst);
    return true;
}

uint32_t build_neighbor_advert(std::span<uint8_t> out, std::span<const uint8_t> ns_frame,
                               const PacketMeta& m, const Mac& our_mac) noexcept {
    constexpr uint32_t kNaLen = 32; // header 8 + target 16 + target link-layer option 8
    if (m.verdict != Verdict::NeighborSolicit || m.family != 6 ||
        !frame_holds(m, ns_frame.size()) || size_t{m.l4_off} + 24 > size_t{m.l3_off} + m.l3_len) {
        return 0;
    }
    const uint32_t l2 = m.l3_off;
    const uint32_t total = l2 + kIpv6HdrLen + kNaLen;
    if (out.size() < total) {
        return 0;
    }
    const uint8_t* ns_ip = ns_frame.data() + m.l3_off;
    const uint8_t* target = ns_frame.data() + m.l4_off + 8;
    const bool dad = is_unspecified(ns_ip + 8);
    uint8_t* o = out.data();
    std::memmove(o + 12, ns_frame.data() + 12, l2 - 12); // VLAN tags + ethertype
    std::memmove(o, ns_frame.data() + 6, 6);             // to the solicitor's MAC
    std::memcpy(o + 6, our_mac.data(), 6);
    if (dad) {
        const uint8_t all_nodes_mac[6] = {0x33, 0x33, 0, 0, 0, 1};
        std::memcpy(o, all_nodes_mac, 6);
    }
    uint8_t* ip = o + l2;
    uint8_t* icmp = ip + kIpv6HdrLen;
    // Read the target and solicitor before writing: out may alias ns_frame.
    uint8_t tgt[16];
    uint8_t dst[16];
    std::memcpy(tgt, target, 16);
    std::memcpy(dst, dad ? kAllNodes.data() : ns_ip + 8, 16);
    store_be32(ip, 6u << 28);
    store_be16(ip + 4, kNaLen);
    ip[6] = kProtoIcmpv6;
    ip[7] = 255; // RFC 4861 7.1.2
    std::memcpy(ip + 8, tgt, 16);
    std::memcpy(ip + 24, dst, 16);
    icmp[0] = 136;
    icmp[1] = 0;
    store_be16(icmp + 2, 0);
    icmp[4] = dad ? 0x20 : 0x60; // S (solicited) unless DAD, O (override)
    icmp[5] = icmp[6] = icmp[7] = 0;
    std::memcpy(icmp + 8, tgt, 16);
    icmp[24] = 2; // target link-layer address option, 1 x 8 octets
    icmp[25] = 1;
    std::memcpy(icmp + 26, our_mac.data(), 6);
    const uint32_t s =
        csum_add(csum_pseudo(6, ip + 8, ip + 24, kNaLen, kProtoIcmpv6), icmp, kNaLen);
    store_be16(icmp + 2, static_cast<uint16_t>(~csum_fold(s)));
    return total;
}

uint32_t build_icmp_time_exceeded(std::span<uint8_t> out, std::span<const uint8_t> frame,
                                  const PacketMeta& m, const Addr16& our_addr) noexcept {
    if ((m.family != 4 && m.family != 6) || !frame_holds(m, frame.size())) {
        return 0;
    }
    if (m.is_fragment && !m.frag_first) {
        return 0;
    }
    const bool icmp_error =
        m.verdict == Verdict::IcmpError ||
        (m.proto == (m.family == 4 ? kProtoIcmp : kProtoIcmpv6) &&
         size_t{m.l4_off} < frame.size() &&
         (m.family == 4 ? (frame[m.l4_off] != 0 && frame[m.l4_off] != 8) : frame[m.l4_off] < 128));
    if (icmp_error) {
        return 0; // never answer an error with an error
    }
    const uint32_t l2 = m.l3_off;
    const uint32_t ip_len = m.family == 4 ? kIpv4HdrLen : kIpv6HdrLen;
    const uint32_t limit =
        (m.family == 4 ? kIcmpv4QuoteLimit : kIcmpv6QuoteLimit) - ip_len - kIcmpHdrLen;
    const uint32_t quote = std::min<uint32_t>(m.l3_len, limit);
    const uint32_t total = l2 + ip_len + kIcmpHdrLen + quote;
    if (out.size() < total ||
        (out.data() < frame.data() + frame.size() && frame.data() < out.data() + out.size())) {
        return 0; // too small, or overlapping the original (the quote would be clobbered)
    }
    const uint8_t* orig = frame.data() + l2;
    uint8_t* o = out.data();
    std::memcpy(o, frame.data() + 6, 6);
    std::memcpy(o + 6, frame.data(), 6);
    std::memcpy(o + 12, frame.data() + 12, l2 - 12);
    uint8_t* ip = o + l2;
    uint8_t* icmp = ip + ip_len;
    const uint32_t icmp_len = kIcmpHdrLen + quote;
    if (m.family == 4) {
        ip[0] = 0x45;
        ip[1] = 0;
        store_be16(ip + 2, static_cast<uint16_t>(ip_len + icmp_len));
        store_be16(ip + 4, 0);
        store_be16(ip + 6, 0x4000);
        ip[8] = kReplyTtl;
        ip[9] = kProtoIcmp;
        store_be16(ip + 10, 0);
        std::memcpy(ip + 12, our_addr.data() + 12, 4);
        std::memcpy(ip + 16, orig + 12, 4);
        store_be16(ip + 10, inet_checksum(ip, kIpv4HdrLen));
        icmp[0] = 11;
    } else {
        store_be32(ip, 6u << 28);
        store_be16(ip + 4, static_cast<uint16_t>(icmp_len));
        ip[6] = kProtoIcmpv6;
        ip[7] = kReplyTtl;
        std::memcpy(ip + 8, our_addr.data(), 16);
        std::memcpy(ip + 24, orig + 8, 16);
        icmp[0] = 3;
    }
    icmp[1] = 0; // TTL exceeded in transit
    store_be16(icmp + 2, 0);
    store_be32(icmp + 4, 0);
    std::memcpy(icmp + kIcmpHdrLen, orig, quote);
    uint32_t s = m.family == 6 ? csum_pseudo(6, ip + 8, ip + 24, icmp_len, kProtoIcmpv6) : 0;
    s = csum_add(s, icmp, icmp_len);
    store_be16(icmp + 2, static_cast<uint16_t>(~csum_fold(s)));
    return total;
}

bool nat_icmp_error(PacketMeta& m, std::span<uint8_t> frame, const IcmpErrorNat& t) noexcept {
    if (m.verdict != Verdict::IcmpError || (m.family != 4 && m.family != 6) ||
        !frame_holds(m, frame.size()) || m.is_fragment) {
        return false;
    }
    if (m.key.proto != kProtoTcp && m.key.proto != kProtoUdp) {
        return false;
    }
    const bool v4 = m.family == 4;
    const uint32_t end = uint32_t{m.l3_off} + m.l3_len;
    const uint32_t ip_min = v4 ? kIpv4HdrLen : kIpv6HdrLen;
    if (m.inner_l3_off != m.l4_off + kIcmpHdrLen || m.inner_l3_off + ip_min > end ||
        m.inner_l4_off < m.inner_l3_off + ip_min || m.inner_l4_off > end) {
        return false; // meta does not describe this frame
    }
    if (m.ttl <= 1) {
        m.drop = DropReason::TtlExceeded;
        return false;
    }
    uint8_t* ip = frame.data() + m.l3_off;
    uint8_t* icmp = frame.data() + m.l4_off;
    uint8_t* in = frame.data() + m.inner_l3_off;
    const size_t alen = v4 ? 4 : 16;
    const size_t aoff = v4 ? 12 : 0;
    uint8_t* in_src = in + (v4 ? 12 : 8);
    uint8_t* in_dst = in + (v4 ? 16 : 24);

    // Are the embedded ports quoted? Not for a non-first fragment, nor if cut short.
    bool ports = m.inner_l4_off + 8u <= end;
    if (v4) {
        ports = ports && (load_be16(in + 6) & 0x1FFF) == 0;
    } else {
        pkt_detail::V6Chain c;
        ports = ports && pkt_detail::walk_v6_chain(frame.data(), m.inner_l3_off + kIpv6HdrLen,
                                                   end, in[6], c) == DropReason::None &&
                c.l4_off == m.inner_l4_off && (!c.frag || c.first);
    }

    // Everything below the ICMP header is summed by the ICMP checksum: collect the
    // difference of every word that changes there (all at even offsets from the header).
    const uint8_t* n_isrc = t.inner_src.data() + aoff;
    const uint8_t* n_idst = t.inner_dst.data() + aoff;
    uint32_t in_addr_diff = csum_diff_bytes(0, in_src, n_isrc, alen);
    in_addr_diff = csum_diff_bytes(in_addr_diff, in_dst, n_idst, alen);
    uint32_t icmp_diff = in_addr_diff;
    if (ports) {
        uint8_t* l4 = frame.data() + m.inner_l4_off;
        uint32_t port_diff = csum_diff16(0, load_be16(l4), t.inner_src_port);
        port_diff = csum_diff16(port_diff, load_be16(l4 + 2), t.inner_dst_port);
        const uint32_t csum_at = m.key.proto == kProtoTcp ? 16 : 6;
        if (m.inner_l4_off + csum_at + 2 <= end) {
            uint8_t* cp = l4 + csum_at;
            const uint16_t old_c = load_be16(cp);
            if (m.key.proto == kProtoTcp || old_c != 0) {
                uint16_t c = csum_apply(old_c, csum_fold(in_addr_diff + port_diff));
                if (m.key.proto == kProtoUdp && c == 0) {
                    c = 0xFFFF;
                }
                store_be16(cp, c);
                icmp_diff = csum_diff16(icmp_diff, old_c, c);
            }
        }
        icmp_diff = csum_fold(icmp_diff + port_diff);
        store_be16(l4, t.inner_src_port);
        store_be16(l4 + 2, t.inner_dst_port);
    }
    if (v4) {
        const uint16_t old_c = load_be16(in + 10);
        const uint16_t c = csum_apply(old_c, in_addr_diff);
        store_be16(in + 10, c);
        icmp_diff = csum_diff16(icmp_diff, old_c, c);
    }
    std::memcpy(in_src, n_isrc, alen);
    std::memcpy(in_dst, n_idst, alen);

    // Outer header: addresses (the ICMPv6 pseudo-header) and TTL / hop limit.
    uint8_t* o_src = ip + (v4 ? 12 : 8);
    uint8_t* o_dst = ip + (v4 ? 16 : 24);
    const uint8_t* n_osrc = t.outer_src.data() + aoff;
    const uint8_t* n_odst = t.outer_dst.data() + aoff;
    uint32_t out_addr_diff = csum_diff_bytes(0, o_src, n_osrc, alen);
    out_addr_diff = csum_diff_bytes(out_addr_diff, o_dst, n_odst, alen);
    if (v4) {
        const uint16_t old_w = load_be16(ip + 8);
        ip[8] = static_cast<uint8_t>(ip[8] - 1);
        const uint32_t d = csum_diff16(out_addr_diff, old_w, load_be16(ip + 8));
        store_be16(ip + 10, csum_apply(load_be16(ip + 10), d));
        m.ttl = ip[8];
    } else {
        ip[7] = static_cast<uint8_t>(ip[7] - 1);
        m.ttl = ip[7];
        icmp_diff = csum_fold(icmp_diff + out_addr_diff);
    }
    store_be16(icmp + 2, csum_apply(load_be16(icmp + 2), icmp_diff));
    std::memcpy(o_src, n_osrc, alen);
    std::memcpy(o_dst, n_odst, alen);

    // meta.key reads like a packet of the flow from the peer (see PacketMeta::key).
    m.key.src = t.inner_dst;
    m.key.dst = t.inner_src;
    if (ports) {
        m.key.src_port = t.inner_dst_port;
        m.key.dst_port = t.inner_src_port;
    }
    return true;
}

bool nd_link_layer_option(std::span<const uint8_t> frame, const PacketMeta& m, uint8_t type,
                          Mac& out) noexcept {
    constexpr uint32_t kNdHdrLen = 24; // type, code, checksum, flags/reserved, target
    if (m.family != 6 || !frame_holds(m, frame.size())) {
        return false;
    }
    const uint32_t end = uint32_t{m.l3_off} + m.l3_len;
    uint32_t off = uint32_t{m.l4_off} + kNdHdrLen;
    while (off + 2 <= end) {
        const uint32_t olen = uint32_t{frame[off + 1]} * 8;
        if (olen == 0 || olen > end - off) {
            return false; // RFC 4861 4.6: a zero-length option invalidates the message
        }
        if (frame[off] == type && olen >= 8) {
            std::memcpy(out.data(), frame.data() + off + 2, 6);
            return true;
        }
        off += olen;
    }
    return false;
}

uint32_t build_neighbor_solicit(std::span<uint8_t> out, const Mac& our_mac, const Addr16& src,
                                const Addr16& target) noexcept {
    constexpr uint32_t kNsLen = 32; // header 8 + target 16 + source link-layer option 8
    constexpr uint32_t total = kEthHdrLen + kIpv6HdrLen + kNsLen;
    if (out.size() < total) {
        return 0;
    }
    uint8_t* o = out.data();
    const uint8_t mcast_mac[6] = {0x33, 0x33, 0xFF, target[13], target[14], target[15]};
    std::memcpy(o, mcast_mac, 6);
    std::memcpy(o + 6, our_mac.data(), 6);
    store_be16(o + 12, kEtherTypeIpv6);
    uint8_t* ip = o + kEthHdrLen;
    uint8_t* icmp = ip + kIpv6HdrLen;
    store_be32(ip, 6u << 28);
    store_be16(ip + 4, kNsLen);
    ip[6] = kProtoIcmpv6;
    ip[7] = 255; // RFC 4861 7.1.1
    std::memcpy(ip + 8, src.data(), 16);
    const uint8_t solicited[16] = {0xFF, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01, 0xFF,
                                   target[13], target[14], target[15]};
    std::memcpy(ip + 24, solicited, 16);
    icmp[0] = 135;
    icmp[1] = 0;
    store_be16(icmp + 2, 0);
    store_be32(icmp + 4, 0);
    std::memcpy(icmp + 8, target.data(), 16);
    icmp[24] = 1; // source link-layer address option, 1 x 8 octets
    icmp[25] = 1;
    std::memcpy(icmp + 26, our_mac.data(), 6);
    const uint32_t s =
        csum_add(csum_pseudo(6, ip + 8, ip + 24, kNsLen, kProtoIcmpv6), icmp, kNsLen);
    store_be16(icmp + 2, static_cast<uint16_t>(~csum_fold(s)));
    return total;
}

} // namespace sluice::dp
