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

} // namespace sluice::dp
