#pragma once

/// @file
/// The DPDK-free packet layer of the L4 fast path: parse an Ethernet frame (up to two VLAN
/// tags, ARP, IPv4 with options and fragments, IPv6 with extension headers, TCP, UDP,
/// ICMP/ICMPv6 including the flow key embedded in ICMP errors) into a PacketMeta with a
/// Verdict and a DropReason; Internet checksum helpers (full and RFC 1624 incremental);
/// in-place full-NAT rewrite; DSR encapsulation (IPIP, GUE) into headroom; and the
/// declarations of the ICMP/ARP/ND responders (out of line in packet.cc).
///
/// Everything works on plain bytes (a pointer + length, or a span), so it runs in unit tests
/// and fuzzers; the worker passes rte_pktmbuf_mtod() data. Nothing here allocates, throws,
/// locks or asserts on packet content: hostile input ends as Verdict::Drop + a DropReason
/// (STYLE.md H1, H9). Thread: every function is worker-callable (and any other thread).
///
/// Byte order: multi-byte fields in PacketMeta are in host order; addresses are kept as
/// 16 network-order bytes (Addr16), an IPv4 address in the low (last) 4 bytes, the first 12
/// zero. Checksum helpers take and return the numeric value of the big-endian field.

#if defined(__x86_64__)
#include <x86intrin.h> // _addcarry_u64 (ADC: baseline x86-64)
#endif
#include <array>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <string_view>
#include <type_traits>

#include "prefetch.h" // SLUICE_ALWAYS_INLINE

namespace sluice::dp {

// ---------------------------------------------------------------------------------------
// Constants
// ---------------------------------------------------------------------------------------

inline constexpr uint16_t kEtherTypeIpv4 = 0x0800;
inline constexpr uint16_t kEtherTypeIpv6 = 0x86DD;
inline constexpr uint16_t kEtherTypeArp = 0x0806;
inline constexpr uint16_t kEtherTypeVlan = 0x8100;    ///< 802.1Q C-tag
inline constexpr uint16_t kEtherTypeQinQ = 0x88A8;    ///< 802.1ad S-tag
inline constexpr uint16_t kEtherTypeQinQOld = 0x9100; ///< pre-standard S-tag, still seen

inline constexpr uint8_t kProtoHopByHop = 0;
inline constexpr uint8_t kProtoIcmp = 1;
inline constexpr uint8_t kProtoIpip = 4; ///< IPv4 payload (IP-in-IP)
inline constexpr uint8_t kProtoTcp = 6;
inline constexpr uint8_t kProtoUdp = 17;
inline constexpr uint8_t kProtoIpv6 = 41; ///< IPv6 payload
inline constexpr uint8_t kProtoRouting = 43;
inline constexpr uint8_t kProtoFragment = 44;
inline constexpr uint8_t kProtoAh = 51;
inline constexpr uint8_t kProtoIcmpv6 = 58;
inline constexpr uint8_t kProtoNoNext = 59;
inline constexpr uint8_t kProtoDstOpts = 60;

inline constexpr uint8_t kTcpFin = 0x01;
inline constexpr uint8_t kTcpSyn = 0x02;
inline constexpr uint8_t kTcpRst = 0x04;
inline constexpr uint8_t kTcpPsh = 0x08;
inline constexpr uint8_t kTcpAck = 0x10;

inline constexpr uint32_t kEthHdrLen = 14;
inline constexpr uint32_t kVlanTagLen = 4;
inline constexpr uint32_t kMaxVlanTags = 2;
inline constexpr uint32_t kIpv4HdrLen = 20;
inline constexpr uint32_t kIpv6HdrLen = 40;
inline constexpr uint32_t kTcpHdrLen = 20;
inline constexpr uint32_t kUdpHdrLen = 8;
inline constexpr uint32_t kIcmpHdrLen = 8;
inline constexpr uint32_t kArpLen = 28;
inline constexpr uint32_t kGueHdrLen = 4;
inline constexpr uint32_t kMaxIpv6ExtHeaders = 8; ///< longer chains are dropped
inline constexpr uint16_t kGueDefaultPort = 6080;
inline constexpr uint8_t kEncapTtl = 64;
inline constexpr uint8_t kReplyTtl = 64;

using Addr16 = std::array<uint8_t, 16>;
using Mac = std::array<uint8_t, 6>;

// ---------------------------------------------------------------------------------------
// Types
// ---------------------------------------------------------------------------------------

/// What the worker should do with a parsed frame.
enum class Verdict : uint8_t {
    Forward,         ///< TCP/UDP, not fragmented: candidate for the VIP lookup
    Arp,             ///< ARP request/reply; key.src/dst = sender/target protocol address
    IcmpEcho,        ///< ICMP echo request / ICMPv6 echo request (128)
    IcmpError,       ///< ICMP error; key = the flow it is about (see PacketMeta::key)
    NeighborSolicit, ///< ICMPv6 neighbour solicitation; key.dst = the target address
    Fragment,        ///< IPv4/IPv6 fragment; only the first one has ports (frag_first)
    TtlExceeded,     ///< set by dnat_snat(): TTL/hop limit would reach 0; answer ICMP
    Drop,            ///< see PacketMeta::drop
};

/// Why a frame was dropped (one counter each; kept dense for an array of counters).
enum class DropReason : uint8_t {
    None,
    Truncated,         ///< a header or the IP total/payload length runs past the buffer
    BadVersion,        ///< IP version nibble does not match the ethertype
    BadIhl,            ///< IPv4 IHL < 5
    BadLength,         ///< IPv4 total length < header, UDP length wrong, frame > 64 KiB
    BadChecksum,       ///< a checksum that was verified is wrong; IPv6 UDP checksum 0
    BadTcpOffset,      ///< TCP data offset < 5 or past the end of the datagram
    BadArp,            ///< not Ethernet/IPv4 ARP, or an unknown opcode
    BadIcmpError,      ///< ICMP error whose embedded header cannot give a flow key
    BadNd,             ///< neighbour solicitation failing RFC 4861 7.1.1 checks
    TtlExceeded,       ///< TTL/hop limit <= 1 on a packet we would forward
    TooManyExtHeaders, ///< more than kMaxIpv6ExtHeaders IPv6 extension headers
    TooManyVlanTags,   ///< more than kMaxVlanTags VLAN tags
    Unsupported,       ///< ethertype we do not handle (candidate for the exception path)
    UnsupportedProto,  ///< IP protocol other than TCP/UDP/ICMP (ESP, GRE, no-next, ...)
    UnsupportedIcmp,   ///< ICMP type that is neither echo request, error nor NS
    NoHeadroom,        ///< encapsulation needs more headroom than the buffer has
    Count,
};
inline constexpr size_t kDropReasonCount = static_cast<size_t>(DropReason::Count);

/// Counter label for a drop reason. Thread: any.
[[nodiscard]] constexpr std::string_view drop_reason_name(DropReason r) noexcept {
    constexpr std::array<std::string_view, kDropReasonCount> kNames = {
        "none",           "truncated",    "bad_version",       "bad_ihl",
        "bad_length",     "bad_checksum", "bad_tcp_offset",    "bad_arp",
        "bad_icmp_error", "bad_nd",       "ttl_exceeded",      "too_many_ext_headers",
        "too_many_vlans", "unsupported",  "unsupported_proto", "unsupported_icmp",
        "no_headroom",
    };
    const auto i = static_cast<size_t>(r);
    return i < kNames.size() ? kNames[i] : std::string_view("invalid");
}

/// A flow 5-tuple. The lead will unify this with the conntrack FlowKey.
struct PacketKey {
    Addr16 src{}; ///< network order; IPv4 in bytes 12..15
    Addr16 dst{};
    uint16_t src_port = 0; ///< host order; ICMP echo: the identifier; else 0 without ports
    uint16_t dst_port = 0;
    uint8_t proto = 0;  ///< L4 protocol (TCP/UDP/ICMP/ICMPv6/...)
    uint8_t family = 0; ///< 4 or 6 (ARP: 4)

    friend bool operator==(const PacketKey&, const PacketKey&) = default;
};

/// Everything the fast path learns from one frame. Offsets are from the frame start.
struct PacketMeta {
    /// Lookup key. For IcmpError it is the embedded datagram's tuple with source and
    /// destination swapped: an error about backend/VIP->client packets yields the
    /// client->VIP key, so the error follows that flow. The outer addresses stay in the
    /// frame at l3_off.
    PacketKey key;
    uint16_t l2_len = 0; ///< Ethernet + VLAN tags (== l3_off)
    uint16_t l3_off = 0;
    uint16_t l4_off = 0;              ///< after IPv4 options / IPv6 extension headers
    uint16_t payload_off = 0;         ///< after the L4 header (TCP options included)
    uint16_t l3_len = 0;              ///< IP datagram length from its header (excludes L2 padding)
    uint16_t ethertype = 0;           ///< after the VLAN tags
    uint16_t vlan[kMaxVlanTags] = {}; ///< VLAN ids, outermost first
    uint8_t vlan_count = 0;
    uint8_t family = 0; ///< 4, 6, or 0 (not IP)
    uint8_t proto = 0;  ///< L4 protocol of the outer packet (ICMP for IcmpError)
    uint8_t tcp_flags = 0;
    uint8_t ttl = 0; ///< TTL / hop limit
    uint8_t icmp_type = 0;
    uint8_t icmp_code = 0;
    uint8_t arp_op = 0; ///< 1 request, 2 reply
    bool is_fragment = false;
    bool frag_first = false;   ///< offset 0: carries the L4 header
    bool frag_more = false;    ///< MF / M flag
    uint16_t frag_offset = 0;  ///< bytes
    uint32_t frag_id = 0;      ///< IPv4 identification or IPv6 fragment id
    uint16_t inner_l3_off = 0; ///< IcmpError: embedded IP header
    uint16_t inner_l4_off = 0; ///< IcmpError: embedded L4 header
    Verdict verdict = Verdict::Drop;
    DropReason drop = DropReason::None;
};

struct ParseOptions {
    bool verify_ipv4_checksum = true; ///< false when the NIC already checked it
    bool verify_l4_checksum = false;  ///< TCP/UDP/ICMP/ICMPv6 of unfragmented datagrams
    /// Frames of the common shape (untagged IPv4, 20-byte header, not a fragment, TCP or
    /// UDP) take a straight-line parse; false forces the general one. Both give the same
    /// PacketMeta byte for byte (tested); the switch exists for that test.
    bool fast_ipv4 = true;
};

/// Outer header parameters for DSR encapsulation.
struct EncapParams {
    Addr16 src{};       ///< sluice's address (IPv4 in bytes 12..15)
    Addr16 dst{};       ///< backend address
    uint8_t family = 4; ///< outer family, 4 or 6 (the inner may be either)
    uint8_t ttl = kEncapTtl;
    uint16_t gue_port = kGueDefaultPort;
    uint16_t udp_src_port = 0; ///< GUE source port; 0 = derived from the flow key
};

// ---------------------------------------------------------------------------------------
// Byte access
// ---------------------------------------------------------------------------------------

[[nodiscard]] inline uint16_t load_be16(const uint8_t* p) noexcept {
    return static_cast<uint16_t>((p[0] << 8) | p[1]);
}
[[nodiscard]] inline uint32_t load_be32(const uint8_t* p) noexcept {
    return (uint32_t{p[0]} << 24) | (uint32_t{p[1]} << 16) | (uint32_t{p[2]} << 8) | p[3];
}
inline void store_be16(uint8_t* p, uint16_t v) noexcept {
    p[0] = static_cast<uint8_t>(v >> 8);
    p[1] = static_cast<uint8_t>(v);
}
inline void store_be32(uint8_t* p, uint32_t v) noexcept {
    p[0] = static_cast<uint8_t>(v >> 24);
    p[1] = static_cast<uint8_t>(v >> 16);
    p[2] = static_cast<uint8_t>(v >> 8);
    p[3] = static_cast<uint8_t>(v);
}

/// An Addr16 holding an IPv4 address given as 4 network-order bytes.
[[nodiscard]] inline Addr16 addr_from_v4(const uint8_t* p) noexcept {
    Addr16 a{};
    std::memcpy(a.data() + 12, p, 4);
    return a;
}

// ---------------------------------------------------------------------------------------
// Checksums (RFC 1071; incremental per RFC 1624 eq. 3: HC' = ~(~HC + ~m + m'))
// ---------------------------------------------------------------------------------------

/// Folds a 32-bit one's-complement accumulator to 16 bits (not complemented).
[[nodiscard]] constexpr uint16_t csum_fold(uint32_t sum) noexcept {
    sum = (sum & 0xFFFF) + (sum >> 16);
    sum = (sum & 0xFFFF) + (sum >> 16);
    return static_cast<uint16_t>(sum);
}

/// Adds `len` bytes as big-endian 16-bit words to a partial sum (returned folded to 16
/// bits). Only the last chunk of a multi-chunk sum may have an odd length.
[[nodiscard]] inline uint32_t csum_add(uint32_t sum, const uint8_t* p, size_t len) noexcept {
    uint64_t s = sum;
    size_t i = 0;
    for (; i + 4 <= len; i += 4) {
        s += load_be32(p + i);
    }
    for (; i + 2 <= len; i += 2) {
        s += load_be16(p + i);
    }
    if (i < len) {
        s += uint32_t{p[i]} << 8;
    }
    s = (s & 0xFFFFFFFF) + (s >> 32);
    s = (s & 0xFFFFFFFF) + (s >> 32);
    return csum_fold(static_cast<uint32_t>(s));
}

/// The Internet checksum of a buffer (value to store in a zeroed checksum field).
[[nodiscard]] inline uint16_t inet_checksum(const uint8_t* p, size_t len) noexcept {
    return static_cast<uint16_t>(~csum_add(0, p, len));
}

/// Pseudo-header partial sum (RFC 768/793 for IPv4, RFC 8200 8.1 for IPv6).
[[nodiscard]] inline uint32_t csum_pseudo(uint8_t family, const uint8_t* src, const uint8_t* dst,
                                          uint32_t l4_len, uint8_t proto) noexcept {
    const size_t alen = family == 4 ? 4 : 16;
    uint32_t s = csum_add(0, src, alen);
    s = csum_add(s, dst, alen);
    return csum_fold(s + (l4_len >> 16) + (l4_len & 0xFFFF) + proto);
}

/// Accumulates the RFC 1624 difference (~old + new) for one 16-bit field.
[[nodiscard]] constexpr uint32_t csum_diff16(uint32_t acc, uint16_t old_v,
                                             uint16_t new_v) noexcept {
    return csum_fold(acc + static_cast<uint16_t>(~old_v) + new_v);
}
/// Same for a 32-bit field (two words).
[[nodiscard]] constexpr uint32_t csum_diff32(uint32_t acc, uint32_t old_v,
                                             uint32_t new_v) noexcept {
    acc = csum_diff16(acc, static_cast<uint16_t>(old_v >> 16), static_cast<uint16_t>(new_v >> 16));
    return csum_diff16(acc, static_cast<uint16_t>(old_v), static_cast<uint16_t>(new_v));
}
/// Same for an even-length byte field (an IPv6 address: len 16). Summed as 32-bit words
/// in a 64-bit accumulator and folded once (the one's-complement sum of the 16-bit words,
/// as csum_add() takes it): an IPv6 NAT's two addresses in ~25 instructions, not ~100
/// (a fold per word). The same residue as the word-by-word sum; where that sum is zero it
/// may come out as 0xFFFF instead of 0 (both are zero in one's complement).
[[nodiscard]] inline uint32_t csum_diff_bytes(uint32_t acc, const uint8_t* old_b,
                                              const uint8_t* new_b, size_t len) noexcept {
    uint64_t s = acc;
    size_t i = 0;
    for (; i + 4 <= len; i += 4) {
        s += uint64_t{static_cast<uint32_t>(~load_be32(old_b + i))} + load_be32(new_b + i);
    }
    for (; i + 2 <= len; i += 2) {
        s += uint64_t{static_cast<uint16_t>(~load_be16(old_b + i))} + load_be16(new_b + i);
    }
    s = (s & 0xFFFFFFFF) + (s >> 32);
    s = (s & 0xFFFFFFFF) + (s >> 32);
    return csum_fold(static_cast<uint32_t>(s));
}
/// Applies an accumulated difference to a checksum field value.
[[nodiscard]] constexpr uint16_t csum_apply(uint16_t hc, uint32_t diff) noexcept {
    return static_cast<uint16_t>(~csum_fold(static_cast<uint16_t>(~hc) + diff));
}

/// New checksum after a 16-bit field changed from old_v to new_v.
[[nodiscard]] constexpr uint16_t csum_update16(uint16_t hc, uint16_t old_v,
                                               uint16_t new_v) noexcept {
    return csum_apply(hc, csum_diff16(0, old_v, new_v));
}
/// New checksum after a 32-bit field (an IPv4 address) changed.
[[nodiscard]] constexpr uint16_t csum_update32(uint16_t hc, uint32_t old_v,
                                               uint32_t new_v) noexcept {
    return csum_apply(hc, csum_diff32(0, old_v, new_v));
}
/// New checksum after a 16-byte field (an IPv6 address) changed.
[[nodiscard]] inline uint16_t csum_update_addr16(uint16_t hc, const uint8_t* old_a,
                                                 const uint8_t* new_a) noexcept {
    return csum_apply(hc, csum_diff_bytes(0, old_a, new_a, 16));
}

namespace pkt_detail {
/// packet_key_hash()'s function of its key as words: the ports and protocol, then the
/// addresses' 8-byte words (src0/dst0 bytes 0..7, src1/dst1 bytes 8..15, native order).
[[nodiscard]] SLUICE_ALWAYS_INLINE uint32_t key_hash_words(uint16_t src_port, uint16_t dst_port,
                                                           uint8_t proto, uint64_t src0,
                                                           uint64_t dst0, uint64_t src1,
                                                           uint64_t dst1) noexcept {
    uint64_t h = 0x9E3779B97F4A7C15ull ^ (uint64_t{proto} << 32) ^ (uint64_t{src_port} << 16) ^
                 dst_port;
    h = (h ^ src0) * 0xFF51AFD7ED558CCDull;
    h = (h ^ dst0 ^ (h >> 29)) * 0xC4CEB9FE1A85EC53ull;
    h = (h ^ src1) * 0xFF51AFD7ED558CCDull;
    h = (h ^ dst1 ^ (h >> 29)) * 0xC4CEB9FE1A85EC53ull;
    h ^= h >> 32;
    return static_cast<uint32_t>(h);
}
} // namespace pkt_detail

/// Cheap well-mixed hash of a key (entropy for GUE source ports and IPv6 flow labels; not
/// the conntrack hash).
[[nodiscard]] inline uint32_t packet_key_hash(const PacketKey& k) noexcept {
    uint64_t w[4];
    std::memcpy(&w[0], k.src.data(), 8);
    std::memcpy(&w[1], k.dst.data(), 8);
    std::memcpy(&w[2], k.src.data() + 8, 8);
    std::memcpy(&w[3], k.dst.data() + 8, 8);
    return pkt_detail::key_hash_words(k.src_port, k.dst_port, k.proto, w[0], w[1], w[2], w[3]);
}

/// packet_key_hash() of an IPv4 key (addresses as 4 network-order bytes read as native
/// words, as in a frame; ports in host order), from registers: the same function (tested),
/// for the lanes that have no PacketKey. An IPv4 Addr16 is zero but for bytes 12..15.
[[nodiscard]] SLUICE_ALWAYS_INLINE uint32_t packet_key_hash_v4(uint32_t src, uint32_t dst,
                                                               uint16_t src_port, uint16_t dst_port,
                                                               uint8_t proto) noexcept {
    static_assert(std::endian::native == std::endian::little);
    return pkt_detail::key_hash_words(src_port, dst_port, proto, 0, 0, uint64_t{src} << 32,
                                      uint64_t{dst} << 32);
}

/// GUE's outer UDP source port for a flow of key hash `h` (packet_key_hash), when the
/// configuration gives none: the ephemeral range, so ECMP and the backend's RSS spread flows.
[[nodiscard]] constexpr uint16_t gue_source_port(uint32_t h) noexcept {
    return static_cast<uint16_t>(0xC000 | (h & 0x3FFF));
}

// ---------------------------------------------------------------------------------------
// Parse
// ---------------------------------------------------------------------------------------

namespace pkt_detail {

inline Verdict drop(PacketMeta& m, DropReason r) noexcept {
    m.verdict = Verdict::Drop;
    m.drop = r;
    return Verdict::Drop;
}

inline Verdict set(PacketMeta& m, Verdict v) noexcept {
    m.verdict = v;
    return v;
}

inline bool is_v6_ext(uint8_t nh) noexcept {
    return nh == kProtoHopByHop || nh == kProtoRouting || nh == kProtoDstOpts || nh == kProtoAh ||
           nh == kProtoFragment;
}

/// Result of walking an IPv6 extension header chain.
struct V6Chain {
    uint8_t proto = 0;
    uint32_t l4_off = 0;
    bool frag = false;
    bool first = false;
    bool more = false;
    uint16_t frag_offset = 0;
    uint32_t frag_id = 0;
};

/// Walks extension headers of the IPv6 header at p[off - 40] bounded by `end`. A non-first
/// fragment stops the walk (its payload is not a header).
inline DropReason walk_v6_chain(const uint8_t* p, uint32_t off, uint32_t end, uint8_t nh,
                                V6Chain& c) noexcept {
    for (uint32_t n = 0; is_v6_ext(nh); ++n) {
        if (n >= kMaxIpv6ExtHeaders) {
            return DropReason::TooManyExtHeaders;
        }
        if (end - off < 8) {
            return DropReason::Truncated;
        }
        const uint8_t* h = p + off;
        if (nh == kProtoFragment) {
            const uint16_t fo = load_be16(h + 2);
            nh = h[0];
            off += 8;
            const auto offset = static_cast<uint16_t>(fo & 0xFFF8);
            const bool more = (fo & 1) != 0;
            if (offset == 0 && !more) {
                continue; // atomic fragment (RFC 6946): a whole datagram
            }
            c.frag = true;
            c.first = offset == 0;
            c.more = more;
            c.frag_offset = offset;
            c.frag_id = load_be32(h + 4);
            if (!c.first) {
                break;
            }
            continue;
        }
        const uint32_t hl = nh == kProtoAh ? (uint32_t{h[1]} + 2) * 4 : (uint32_t{h[1]} + 1) * 8;
        if (end - off < hl) {
            return DropReason::Truncated;
        }
        nh = h[0];
        off += hl;
    }
    c.proto = nh;
    c.l4_off = off;
    return DropReason::None;
}

/// Pseudo-header sum for the packet described by m (addresses from m.key).
inline uint32_t meta_pseudo(const PacketMeta& m, uint32_t l4_len) noexcept {
    const size_t skip = m.family == 4 ? 12 : 0;
    return csum_pseudo(m.family, m.key.src.data() + skip, m.key.dst.data() + skip, l4_len, m.proto);
}

/// Ports/flags of the L4 header at p[off..end). `whole` = the datagram is not a fragment,
/// so lengths and checksums can be checked against it.
SLUICE_ALWAYS_INLINE DropReason parse_ports(const uint8_t* p, uint32_t off, uint32_t end, PacketMeta& m,
                              bool whole, bool verify) noexcept {
    const uint32_t avail = end - off;
    const uint8_t* l4 = p + off;
    if (m.proto == kProtoTcp) {
        if (avail < kTcpHdrLen) {
            return DropReason::Truncated;
        }
        const uint32_t doff = (uint32_t{l4[12]} >> 4) * 4;
        if (doff < kTcpHdrLen || doff > avail) {
            return DropReason::BadTcpOffset;
        }
        m.tcp_flags = l4[13];
        m.payload_off = static_cast<uint16_t>(off + doff);
    } else {
        if (avail < kUdpHdrLen) {
            return DropReason::Truncated;
        }
        const uint16_t ulen = load_be16(l4 + 4);
        const uint16_t ucsum = load_be16(l4 + 6);
        if (whole && (ulen < kUdpHdrLen || ulen > avail)) {
            return DropReason::BadLength;
        }
        if (m.family == 6 && ucsum == 0) {
            return DropReason::BadChecksum; // RFC 8200 8.1: zero UDP checksum over IPv6
        }
        if (whole && verify && ucsum != 0 &&
            csum_fold(csum_add(meta_pseudo(m, ulen), l4, ulen)) != 0xFFFF) {
            return DropReason::BadChecksum;
        }
        m.payload_off = static_cast<uint16_t>(off + kUdpHdrLen);
    }
    if (m.proto == kProtoTcp && whole && verify &&
        csum_fold(csum_add(meta_pseudo(m, avail), l4, avail)) != 0xFFFF) {
        return DropReason::BadChecksum;
    }
    m.key.src_port = load_be16(l4);
    m.key.dst_port = load_be16(l4 + 2);
    return DropReason::None;
}

/// The flow key of the datagram embedded in an ICMP error at p[off..end) (truncated copy:
/// its own length fields are not checked against the buffer). Needs the IP header and the
/// first 8 bytes of L4 for TCP/UDP/ICMP.
inline bool parse_embedded(const uint8_t* p, uint32_t off, uint32_t end, uint8_t family,
                           PacketMeta& m) noexcept {
    const uint8_t* ip = p + off;
    const uint32_t avail = end - off;
    PacketKey inner{};
    inner.family = family;
    uint32_t l4 = 0;
    bool ports = true;
    if (family == 4) {
        if (avail < kIpv4HdrLen || (ip[0] >> 4) != 4) {
            return false;
        }
        const uint32_t ihl = uint32_t{ip[0] & 0x0Fu} * 4;
        if (ihl < kIpv4HdrLen || ihl > avail) {
            return false;
        }
        inner.proto = ip[9];
        inner.src = addr_from_v4(ip + 12);
        inner.dst = addr_from_v4(ip + 16);
        ports = (load_be16(ip + 6) & 0x1FFF) == 0;
        l4 = off + ihl;
    } else {
        if (avail < kIpv6HdrLen || (ip[0] >> 4) != 6) {
            return false;
        }
        std::memcpy(inner.src.data(), ip + 8, 16);
        std::memcpy(inner.dst.data(), ip + 24, 16);
        V6Chain c;
        if (walk_v6_chain(p, off + kIpv6HdrLen, end, ip[6], c) != DropReason::None) {
            return false;
        }
        inner.proto = c.proto;
        ports = !c.frag || c.first;
        l4 = c.l4_off;
    }
    const bool has_ports = inner.proto == kProtoTcp || inner.proto == kProtoUdp ||
                           inner.proto == kProtoIcmp || inner.proto == kProtoIcmpv6;
    if (ports && has_ports) {
        if (end - l4 < 8) {
            return false;
        }
        if (inner.proto == kProtoTcp || inner.proto == kProtoUdp) {
            inner.src_port = load_be16(p + l4);
            inner.dst_port = load_be16(p + l4 + 2);
        } else {
            inner.src_port = load_be16(p + l4 + 4); // echo identifier
        }
    }
    // Swap so the key reads like a packet of the flow arriving from the peer.
    m.key.family = family;
    m.key.proto = inner.proto;
    m.key.src = inner.dst;
    m.key.dst = inner.src;
    if (inner.proto == kProtoTcp || inner.proto == kProtoUdp) {
        m.key.src_port = inner.dst_port;
        m.key.dst_port = inner.src_port;
    } else {
        m.key.src_port = inner.src_port;
        m.key.dst_port = 0;
    }
    m.inner_l3_off = static_cast<uint16_t>(off);
    m.inner_l4_off = static_cast<uint16_t>(l4);
    return true;
}

inline Verdict parse_icmp(const uint8_t* p, uint32_t off, uint32_t end, PacketMeta& m, bool verify,
                          uint32_t pseudo) noexcept {
    if (end - off < kIcmpHdrLen) {
        return drop(m, DropReason::Truncated);
    }
    const uint8_t* h = p + off;
    m.icmp_type = h[0];
    m.icmp_code = h[1];
    m.payload_off = static_cast<uint16_t>(off + kIcmpHdrLen);
    if (verify && csum_fold(csum_add(pseudo, h, end - off)) != 0xFFFF) {
        return drop(m, DropReason::BadChecksum);
    }
    const bool v4 = m.family == 4;
    const uint8_t t = h[0];
    if ((v4 && t == 8) || (!v4 && t == 128)) {
        m.key.src_port = load_be16(h + 4);
        return set(m, Verdict::IcmpEcho);
    }
    const bool error = v4 ? (t == 3 || t == 4 || t == 11 || t == 12) : (t >= 1 && t <= 4);
    if (error) {
        if (!parse_embedded(p, off + kIcmpHdrLen, end, m.family, m)) {
            return drop(m, DropReason::BadIcmpError);
        }
        return set(m, Verdict::IcmpError);
    }
    if (!v4 && t == 135) {
        // RFC 4861 7.1.1: hop limit 255, code 0, >= 24 octets, target not multicast.
        if (m.ttl != 255 || h[1] != 0 || end - off < 24 || h[8] == 0xFF) {
            return drop(m, DropReason::BadNd);
        }
        std::memcpy(m.key.dst.data(), h + 8, 16);
        return set(m, Verdict::NeighborSolicit);
    }
    return drop(m, DropReason::UnsupportedIcmp);
}

/// L4 dispatch for an IP datagram whose L4 header starts at p[off], datagram end `end`.
SLUICE_ALWAYS_INLINE Verdict parse_l4(const uint8_t* p, uint32_t off, uint32_t end, PacketMeta& m,
                        const ParseOptions& opt) noexcept {
    m.l4_off = static_cast<uint16_t>(off);
    m.payload_off = static_cast<uint16_t>(off);
    m.key.proto = m.proto;
    const bool whole = !m.is_fragment;
    if (m.is_fragment && !m.frag_first) {
        return set(m, Verdict::Fragment);
    }
    const bool verify = opt.verify_l4_checksum && whole;
    switch (m.proto) {
    case kProtoTcp:
    case kProtoUdp: {
        const DropReason r = parse_ports(p, off, end, m, whole, verify);
        if (r != DropReason::None) {
            return drop(m, r);
        }
        return set(m, whole ? Verdict::Forward : Verdict::Fragment);
    }
    case kProtoIcmp:
    case kProtoIcmpv6: {
        if ((m.proto == kProtoIcmp) != (m.family == 4)) {
            return drop(m, DropReason::UnsupportedProto);
        }
        if (!whole) {
            if (end - off < kIcmpHdrLen) {
                return drop(m, DropReason::Truncated);
            }
            m.icmp_type = p[off];
            m.icmp_code = p[off + 1];
            m.payload_off = static_cast<uint16_t>(off + kIcmpHdrLen);
            return set(m, Verdict::Fragment);
        }
        // ICMPv4 has no pseudo-header.
        const uint32_t pseudo = verify && m.family == 6 ? meta_pseudo(m, end - off) : 0;
        return parse_icmp(p, off, end, m, verify, pseudo);
    }
    default:
        if (!whole) {
            return set(m, Verdict::Fragment); // never silently drop a fragment
        }
        return drop(m, DropReason::UnsupportedProto);
    }
}

/// One's complement sum folded to 16 bits.
/// 64 -> 32 bits: the halves added, the carry added back (it cannot carry again); 32 -> 16
/// bits: x + rotr(x, 16) holds the end-around-carry sum of x's halves in its top half (as
/// Linux's csum_fold). 7 instructions instead of four folds' 12; three per forwarded packet.
[[nodiscard]] SLUICE_ALWAYS_INLINE uint16_t fold64(uint64_t s) noexcept {
    const auto lo = static_cast<uint32_t>(s);
    uint32_t x = lo + static_cast<uint32_t>(s >> 32);
    x += x < lo ? 1u : 0u;
    x += std::rotr(x, 16);
    return static_cast<uint16_t>(x >> 16);
}

/// The IPv4 header checksum verifies (the one's complement sum of the header is 0xFFFF).
/// A 20-byte header is summed as two 8-byte and one 4-byte word in machine byte order (the
/// sum is byte-order independent, RFC 1071 2(B), and 0xFFFF reads the same both ways);
/// headers with options take the general loop.
SLUICE_ALWAYS_INLINE bool ipv4_header_sum_ok(const uint8_t* ip, uint32_t ihl) noexcept {
    if (ihl != kIpv4HdrLen) {
        return csum_fold(csum_add(0, ip, ihl)) == 0xFFFF;
    }
    uint64_t a, b;
    uint32_t c;
    std::memcpy(&a, ip, 8);
    std::memcpy(&b, ip + 8, 8);
    std::memcpy(&c, ip + 16, 4);
#if defined(__x86_64__)
    // 64-bit words with the end-around carry (add, adc, and the last carry added back):
    // the same one's complement sum as 16-bit words (RFC 1071 2(C)). Never zero here (the
    // first byte is 0x45), so any exact reduction folds to the same 16-bit value.
    unsigned long long s;
    unsigned char cf = _addcarry_u64(0, a, b, &s);
    cf = _addcarry_u64(cf, s, c, &s);
    s += cf; // (when the adc carried, s < 2^33: this cannot carry again)
#else
    const uint64_t s = (a & 0xFFFFFFFFu) + (a >> 32) + (b & 0xFFFFFFFFu) + (b >> 32) + c;
#endif
    return fold64(s) == 0xFFFF;
}

SLUICE_ALWAYS_INLINE Verdict parse_ipv4(const uint8_t* p, uint32_t len, uint32_t off, PacketMeta& m,
                          const ParseOptions& opt) noexcept {
    if (len - off < kIpv4HdrLen) {
        return drop(m, DropReason::Truncated);
    }
    const uint8_t* ip = p + off;
    if ((ip[0] >> 4) != 4) {
        return drop(m, DropReason::BadVersion);
    }
    const uint32_t ihl = uint32_t{ip[0] & 0x0Fu} * 4;
    if (ihl < kIpv4HdrLen) {
        return drop(m, DropReason::BadIhl);
    }
    if (ihl > len - off) {
        return drop(m, DropReason::Truncated);
    }
    const uint16_t tot = load_be16(ip + 2);
    if (tot < ihl) {
        return drop(m, DropReason::BadLength);
    }
    if (tot > len - off) {
        return drop(m, DropReason::Truncated);
    }
    if (opt.verify_ipv4_checksum && !ipv4_header_sum_ok(ip, ihl)) {
        return drop(m, DropReason::BadChecksum);
    }
    m.family = 4;
    m.l3_len = tot;
    m.ttl = ip[8];
    m.proto = ip[9];
    m.key.family = 4;
    std::memcpy(m.key.src.data() + 12, ip + 12, 4); // as addr_from_v4(); the rest is zero
    std::memcpy(m.key.dst.data() + 12, ip + 16, 4);
    const uint16_t frag = load_be16(ip + 6);
    m.frag_id = load_be16(ip + 4);
    if ((frag & 0x3FFF) != 0) {
        m.is_fragment = true;
        m.frag_more = (frag & 0x2000) != 0;
        m.frag_offset = static_cast<uint16_t>((frag & 0x1FFF) * 8);
        m.frag_first = m.frag_offset == 0;
    }
    return parse_l4(p, off + ihl, off + tot, m, opt);
}

inline Verdict parse_ipv6(const uint8_t* p, uint32_t len, uint32_t off, PacketMeta& m,
                          const ParseOptions& opt) noexcept {
    if (len - off < kIpv6HdrLen) {
        return drop(m, DropReason::Truncated);
    }
    const uint8_t* ip = p + off;
    if ((ip[0] >> 4) != 6) {
        return drop(m, DropReason::BadVersion);
    }
    const uint32_t tot = kIpv6HdrLen + load_be16(ip + 4);
    if (tot > len - off) {
        return drop(m, DropReason::Truncated);
    }
    m.family = 6;
    m.l3_len = static_cast<uint16_t>(tot); // fits: len is clamped to 0xFFFF
    m.ttl = ip[7];
    m.key.family = 6;
    std::memcpy(m.key.src.data(), ip + 8, 16);
    std::memcpy(m.key.dst.data(), ip + 24, 16);
    V6Chain c;
    const DropReason r = walk_v6_chain(p, off + kIpv6HdrLen, off + tot, ip[6], c);
    if (r != DropReason::None) {
        return drop(m, r);
    }
    m.proto = c.proto;
    if (c.frag) {
        m.is_fragment = true;
        m.frag_first = c.first;
        m.frag_more = c.more;
        m.frag_offset = c.frag_offset;
        m.frag_id = c.frag_id;
    }
    return parse_l4(p, c.l4_off, off + tot, m, opt);
}

inline Verdict parse_arp(const uint8_t* p, uint32_t len, uint32_t off, PacketMeta& m) noexcept {
    if (len - off < kArpLen) {
        return drop(m, DropReason::Truncated);
    }
    const uint8_t* a = p + off;
    const uint16_t op = load_be16(a + 6);
    if (load_be16(a) != 1 || load_be16(a + 2) != kEtherTypeIpv4 || a[4] != 6 || a[5] != 4 ||
        (op != 1 && op != 2)) {
        return drop(m, DropReason::BadArp);
    }
    m.arp_op = static_cast<uint8_t>(op);
    m.key.family = 4;
    m.key.src = addr_from_v4(a + 14);
    m.key.dst = addr_from_v4(a + 24);
    m.l3_len = kArpLen;
    m.l4_off = static_cast<uint16_t>(off + kArpLen);
    m.payload_off = m.l4_off;
    return set(m, Verdict::Arp);
}

/// What the straight-line parse reads from an untagged IPv4 TCP/UDP datagram with a
/// 20-byte header (l3 at 14, l4 at 34) for the flow: the key and the fields the L4 lanes
/// decide on. The rest of a PacketMeta (lengths, fragment id) fill_meta_v4() reads from
/// the checked frame when a PacketMeta is wanted: the lanes never need them, and carrying
/// them here kept them live through stage 1 (stack spills).
struct Ipv4Fast {
    uint32_t src = 0, dst = 0; ///< as in the frame (network order in memory)
    uint16_t src_port = 0, dst_port = 0; ///< host order
    uint32_t ports = 0; ///< src_port | dst_port << 16 (as a conntrack key's words hold them)
    uint8_t proto = 0;
    uint8_t ttl = 0;
    uint8_t tcp_flags = 0;
};

/// The checks of the straight-line parse (untagged IPv4, 20-byte header, not a fragment,
/// TCP or UDP, lengths consistent, header checksum per `opt`): true and `out` filled when
/// the frame has that shape and passes them; false (the general parse then decides) when
/// not. The one definition of the shape: parse_ipv4_fast() and the L4 burst's IPv4 lane
/// both use it. `len` <= 0xFFFF.
SLUICE_ALWAYS_INLINE bool ipv4_fast_check(const uint8_t* p, uint32_t len, const ParseOptions& opt,
                                          Ipv4Fast& out) noexcept {
    constexpr uint32_t l3 = kEthHdrLen, l4o = kEthHdrLen + kIpv4HdrLen;
    if (len < l4o + kUdpHdrLen || load_be16(p + 12) != kEtherTypeIpv4 || p[l3] != 0x45) {
        return false;
    }
    const uint8_t* ip = p + l3;
    const uint8_t proto = ip[9];
    const uint32_t tot = load_be16(ip + 2);
    // Not a fragment (MF clear, offset 0); the whole datagram in the frame.
    if ((load_be16(ip + 6) & 0x3FFF) != 0 || tot > len - l3 || tot < kIpv4HdrLen + kUdpHdrLen) {
        return false;
    }
    const uint32_t avail = tot - kIpv4HdrLen;
    const uint8_t* l4 = ip + kIpv4HdrLen;
    if (proto == kProtoTcp) {
        if (avail < kTcpHdrLen) { // (before reading the data offset at l4[12])
            return false;
        }
        const uint32_t doff = (uint32_t{l4[12]} >> 4) * 4;
        if (doff < kTcpHdrLen || doff > avail) {
            return false;
        }
    } else if (proto == kProtoUdp) {
        const uint32_t ulen = load_be16(l4 + 4);
        if (ulen < kUdpHdrLen || ulen > avail) {
            return false;
        }
    } else {
        return false;
    }
    if (opt.verify_l4_checksum || (opt.verify_ipv4_checksum && !ipv4_header_sum_ok(ip, kIpv4HdrLen))) {
        return false;
    }
    std::memcpy(&out.src, ip + 12, 4);
    std::memcpy(&out.dst, ip + 16, 4);
    // Both ports from one load, each 16-bit half byte-swapped to host order.
    uint32_t pw;
    std::memcpy(&pw, l4, 4);
    static_assert(std::endian::native == std::endian::little);
    out.ports = ((pw & 0x00FF00FFu) << 8) | ((pw >> 8) & 0x00FF00FFu);
    out.src_port = static_cast<uint16_t>(out.ports);
    out.dst_port = static_cast<uint16_t>(out.ports >> 16);
    out.proto = proto;
    out.ttl = ip[8];
    out.tcp_flags = proto == kProtoTcp ? l4[13] : 0;
    return true;
}

/// The PacketMeta parse_packet() gives frame `p`, which ipv4_fast_check() accepted as `f`
/// (`m` zeroed; the frame's IPv4 length, fragment id and TCP data offset read again here).
SLUICE_ALWAYS_INLINE void fill_meta_v4(PacketMeta& m, const Ipv4Fast& f, const uint8_t* p) noexcept {
    constexpr uint16_t l3 = kEthHdrLen, l4o = kEthHdrLen + kIpv4HdrLen;
    const uint8_t* ip = p + l3;
    m.ethertype = kEtherTypeIpv4;
    m.l2_len = l3;
    m.l3_off = l3;
    m.family = 4;
    m.l3_len = load_be16(ip + 2);
    m.ttl = f.ttl;
    m.proto = f.proto;
    m.key.family = 4;
    m.key.proto = f.proto;
    std::memcpy(m.key.src.data() + 12, &f.src, 4);
    std::memcpy(m.key.dst.data() + 12, &f.dst, 4);
    m.l4_off = l4o;
    m.payload_off = static_cast<uint16_t>(
        l4o + (f.proto == kProtoTcp ? (uint32_t{ip[kIpv4HdrLen + 12]} >> 4) * 4 : kUdpHdrLen));
    m.tcp_flags = f.tcp_flags;
    m.key.src_port = f.src_port;
    m.key.dst_port = f.dst_port;
    m.frag_id = load_be16(ip + 4);
    m.verdict = Verdict::Forward;
}

/// The straight-line parse of an untagged IPv4 TCP/UDP datagram with a 20-byte header and
/// no fragmentation: the same checks and the same PacketMeta as parse_ipv4() + parse_l4()
/// for such a frame, without the VLAN loop, the option and fragment branches or the
/// protocol dispatch. Writes nothing and returns false when the frame is of another shape
/// or fails a check: the general parse then runs from the zeroed `m` and gives the reason.
/// `m` is zeroed. `len` <= 0xFFFF.
SLUICE_ALWAYS_INLINE bool parse_ipv4_fast(const uint8_t* p, uint32_t len, PacketMeta& m,
                                          const ParseOptions& opt) noexcept {
    Ipv4Fast f;
    if (!ipv4_fast_check(p, len, opt, f)) {
        return false;
    }
    fill_meta_v4(m, f, p);
    return true;
}


} // namespace pkt_detail

/// Parses one Ethernet frame. Never reads outside data[0, len); never asserts.
/// @param data frame start (Ethernet header)   @param len bytes available at data
/// @return m.verdict (Drop with m.drop set for anything malformed or unsupported)
/// Thread: worker (any); no allocation.
SLUICE_ALWAYS_INLINE Verdict parse_packet(const uint8_t* data, uint32_t len, PacketMeta& m,
                            const ParseOptions& opt = {}) noexcept {
    using namespace pkt_detail;
    // Zeroed with wide stores (assigning a PacketMeta{} temporary built it byte by byte on
    // the stack and copied it with 16-byte loads: a store-forwarding stall per packet).
    static_assert(std::is_trivially_copyable_v<PacketMeta>);
    std::memset(static_cast<void*>(&m), 0, sizeof(m));
    m.verdict = Verdict::Drop;
    static_assert(static_cast<uint8_t>(DropReason::None) == 0);
    // Offsets are uint16_t: nothing past 64 KiB can be a valid IP datagram anyway.
    len = len > 0xFFFF ? 0xFFFF : len;
    if (opt.fast_ipv4 && parse_ipv4_fast(data, len, m, opt)) [[likely]] {
        return Verdict::Forward;
    }
    if (len < kEthHdrLen) {
        return drop(m, DropReason::Truncated);
    }
    uint32_t off = kEthHdrLen;
    uint16_t et = load_be16(data + 12);
    while (et == kEtherTypeVlan || et == kEtherTypeQinQ || et == kEtherTypeQinQOld) {
        if (m.vlan_count == kMaxVlanTags) {
            return drop(m, DropReason::TooManyVlanTags);
        }
        if (len - off < kVlanTagLen) {
            return drop(m, DropReason::Truncated);
        }
        m.vlan[m.vlan_count++] = load_be16(data + off) & 0x0FFF;
        et = load_be16(data + off + 2);
        off += kVlanTagLen;
    }
    m.ethertype = et;
    m.l2_len = static_cast<uint16_t>(off);
    m.l3_off = static_cast<uint16_t>(off);
    switch (et) {
    case kEtherTypeIpv4:
        return parse_ipv4(data, len, off, m, opt);
    case kEtherTypeIpv6:
        return parse_ipv6(data, len, off, m, opt);
    case kEtherTypeArp:
        return parse_arp(data, len, off, m);
    default:
        return drop(m, DropReason::Unsupported);
    }
}

/// Span overload of parse_packet(). Thread: worker (any).
SLUICE_ALWAYS_INLINE Verdict parse_packet(std::span<const uint8_t> frame, PacketMeta& m,
                            const ParseOptions& opt = {}) noexcept {
    const auto len = frame.size() > 0xFFFF ? uint32_t{0xFFFF} : static_cast<uint32_t>(frame.size());
    return parse_packet(frame.data(), len, m, opt);
}

// ---------------------------------------------------------------------------------------
// Rewrites
// ---------------------------------------------------------------------------------------

/// Sets the Ethernet source and destination MACs. @return false if the frame is < 12 bytes.
/// Thread: worker (any).
inline bool set_macs(std::span<uint8_t> frame, const Mac& src, const Mac& dst) noexcept {
    if (frame.size() < 12) {
        return false;
    }
    std::memcpy(frame.data(), dst.data(), 6);
    std::memcpy(frame.data() + 6, src.data(), 6);
    return true;
}

/// Swaps the Ethernet source and destination MACs (replies). Thread: worker (any).
inline bool swap_macs(std::span<uint8_t> frame) noexcept {
    if (frame.size() < 12) {
        return false;
    }
    uint8_t tmp[6];
    std::memcpy(tmp, frame.data(), 6);
    std::memmove(frame.data(), frame.data() + 6, 6);
    std::memcpy(frame.data() + 6, tmp, 6);
    return true;
}

namespace pkt_detail {


[[nodiscard]] inline uint32_t load_ne32(const uint8_t* p) noexcept {
    uint32_t v;
    std::memcpy(&v, p, 4);
    return v;
}
[[nodiscard]] inline uint16_t load_ne16(const uint8_t* p) noexcept {
    uint16_t v;
    std::memcpy(&v, p, 2);
    return v;
}
inline void store_ne16(uint8_t* p, uint16_t v) noexcept { std::memcpy(p, &v, 2); }

/// dnat_snat() for IPv4, checked by the caller (header and, when l4 != nullptr, the TCP/UDP
/// header are in the frame; TTL > 1). The RFC 1624 updates are summed in the machine's
/// byte order (the one's complement sum is byte-order independent, RFC 1071 2(B)), 32 bits
/// at a time, and folded once: no byte swaps but the new ports'.
SLUICE_ALWAYS_INLINE void dnat_snat_v4(uint8_t* ip, uint8_t* l4, uint8_t proto, const uint8_t* ns,
                         uint16_t new_src_port, const uint8_t* nd, uint16_t new_dst_port) noexcept {
    const uint32_t os = load_ne32(ip + 12), od = load_ne32(ip + 16);
    const uint32_t nsw = load_ne32(ns), ndw = load_ne32(nd);
    const uint64_t addr = uint64_t{~os} + uint64_t{~od} + nsw + ndw;
    if (l4 != nullptr) {
        uint8_t* csum_p = l4 + (proto == kProtoTcp ? 16 : 6);
        const uint16_t old_csum = load_ne16(csum_p);
        // Both ports as one 32-bit word in network order, replaced and summed at once.
        static_assert(std::endian::native == std::endian::little);
        const uint32_t old_ports = load_ne32(l4);
        const uint32_t new_ports = __builtin_bswap32(uint32_t{new_src_port} << 16 | new_dst_port);
        if (proto == kProtoTcp || old_csum != 0) {
            const uint64_t d = addr + uint64_t{~old_ports} + new_ports;
            uint16_t c = static_cast<uint16_t>(~fold64(uint64_t{uint16_t(~old_csum)} + d));
            if (proto == kProtoUdp && c == 0) {
                c = 0xFFFF; // 0 means "no checksum" for UDP
            }
            store_ne16(csum_p, c);
        }
        std::memcpy(l4, &new_ports, 4);
    }
    // TTL - 1. In machine order the TTL/protocol word holds the TTL in its low byte, so the
    // word drops by exactly 1 (TTL > 1: no borrow) and the header sum with it: the update
    // adds ~1 = 0xFFFE (RFC 1624), whatever the TTL.
    const uint16_t old_w = load_ne16(ip + 8);
    const uint64_t d = addr + 0xFFFEu;
    store_ne16(ip + 10, static_cast<uint16_t>(~fold64(uint64_t{uint16_t(~load_ne16(ip + 10))} + d)));
    store_ne16(ip + 8, static_cast<uint16_t>(old_w - 1));
    std::memcpy(ip + 12, ns, 4);
    std::memcpy(ip + 16, nd, 4);
}

} // namespace pkt_detail

/// Full NAT in place: sets source and destination address and port, decrements the TTL /
/// hop limit and fixes the IPv4 header and TCP/UDP checksums incrementally (an IPv4 UDP
/// checksum of 0 stays 0; a computed 0 is sent as 0xFFFF). Works on Forward TCP/UDP packets
/// and on fragments of TCP/UDP datagrams: the first fragment gets the full rewrite; a
/// non-first fragment has no ports, so only its addresses change (the caller must use the
/// translation of the first fragment). Addresses must be of the packet's family (IPv4 in
/// bytes 12..15). meta.key and meta.ttl are updated.
/// @return false, leaving the frame unchanged, when it cannot be rewritten; when the TTL /
///         hop limit is <= 1 it also sets meta.verdict = TtlExceeded, meta.drop =
///         DropReason::TtlExceeded (answer with build_icmp_time_exceeded()).
/// Thread: worker (any); no allocation.
SLUICE_ALWAYS_INLINE bool dnat_snat(PacketMeta& m, std::span<uint8_t> frame, const Addr16& new_src,
                      uint16_t new_src_port, const Addr16& new_dst,
                      uint16_t new_dst_port) noexcept {
    if (m.verdict != Verdict::Forward && m.verdict != Verdict::Fragment) {
        return false;
    }
    if ((m.proto != kProtoTcp && m.proto != kProtoUdp) || (m.family != 4 && m.family != 6)) {
        return false;
    }
    const bool has_l4 = !m.is_fragment || m.frag_first;
    const uint32_t l4_min = m.proto == kProtoTcp ? kTcpHdrLen : kUdpHdrLen;
    const uint32_t l3_min = m.family == 4 ? kIpv4HdrLen : kIpv6HdrLen;
    if (size_t{m.l3_off} + l3_min > frame.size() ||
        (has_l4 && size_t{m.l4_off} + l4_min > frame.size())) {
        return false; // meta does not describe this buffer
    }
    if (m.ttl <= 1) {
        m.verdict = Verdict::TtlExceeded;
        m.drop = DropReason::TtlExceeded;
        return false;
    }
    uint8_t* ip = frame.data() + m.l3_off;
    uint8_t* l4 = frame.data() + m.l4_off;
    if (m.family == 4) {
        pkt_detail::dnat_snat_v4(ip, has_l4 ? l4 : nullptr, m.proto, new_src.data() + 12,
                                 new_src_port, new_dst.data() + 12, new_dst_port);
        m.ttl = ip[8];
        if (has_l4) {
            m.key.src_port = new_src_port;
            m.key.dst_port = new_dst_port;
        }
        m.key.src = new_src;
        m.key.dst = new_dst;
        return true;
    }
    uint8_t* src_p = ip + (m.family == 4 ? 12 : 8);
    uint8_t* dst_p = ip + (m.family == 4 ? 16 : 24);
    const size_t alen = m.family == 4 ? 4 : 16;
    const uint8_t* ns = new_src.data() + (m.family == 4 ? 12 : 0);
    const uint8_t* nd = new_dst.data() + (m.family == 4 ? 12 : 0);

    // Pseudo-header (address) difference, shared by the IPv4 header and L4 checksums.
    uint32_t addr_diff = csum_diff_bytes(0, src_p, ns, alen);
    addr_diff = csum_diff_bytes(addr_diff, dst_p, nd, alen);

    if (has_l4) {
        uint8_t* csum_p = l4 + (m.proto == kProtoTcp ? 16 : 6);
        const uint16_t old_csum = load_be16(csum_p);
        if (m.proto == kProtoTcp || old_csum != 0) {
            uint32_t d = csum_diff16(addr_diff, load_be16(l4), new_src_port);
            d = csum_diff16(d, load_be16(l4 + 2), new_dst_port);
            uint16_t c = csum_apply(old_csum, d);
            if (m.proto == kProtoUdp && c == 0) {
                c = 0xFFFF; // 0 means "no checksum" for UDP
            }
            store_be16(csum_p, c);
        }
        store_be16(l4, new_src_port);
        store_be16(l4 + 2, new_dst_port);
        m.key.src_port = new_src_port;
        m.key.dst_port = new_dst_port;
    }
    if (m.family == 4) {
        const uint16_t old_w = load_be16(ip + 8);
        ip[8] = static_cast<uint8_t>(ip[8] - 1);
        const uint32_t d = csum_diff16(addr_diff, old_w, load_be16(ip + 8));
        store_be16(ip + 10, csum_apply(load_be16(ip + 10), d));
        m.ttl = ip[8];
    } else {
        ip[7] = static_cast<uint8_t>(ip[7] - 1); // the hop limit is in no checksum
        m.ttl = ip[7];
    }
    std::memcpy(src_p, ns, alen);
    std::memcpy(dst_p, nd, alen);
    m.key.src = new_src;
    m.key.dst = new_dst;
    return true;
}

namespace pkt_detail {

/// The ethertype and outer IPv4 header of an encapsulation in place, written at `nf` (the
/// new frame) for the inner IPv4 datagram at `inner`: bytes 12..33 of the new frame. TOS
/// copied from the inner header, DF set as the inner one's and then ID 0, else the inner ID
/// (RFC 6864), TTL `ttl`, protocol `proto`, total length `outer_len`. Three stores
/// built in registers, the checksum summed as little-endian words of the header's bytes
/// (RFC 1071: byte-order independent).
SLUICE_ALWAYS_INLINE void outer_ipv4_in_place(uint8_t* nf, const uint8_t* inner, uint32_t outer_len,
                                              uint8_t proto, const uint8_t* src4,
                                              const uint8_t* dst4, uint8_t ttl = kEncapTtl) noexcept {
    static_assert(std::endian::native == std::endian::little);
    const bool df = (inner[6] & 0x40) != 0;
    uint16_t id = 0; // in network order, as in the frame
    if (!df) {
        std::memcpy(&id, inner + 4, 2);
    }
    const uint64_t w01 = 0x45u | uint64_t{inner[1]} << 8 |
                         uint64_t{__builtin_bswap16(static_cast<uint16_t>(outer_len))} << 16 |
                         uint64_t{id} << 32 | uint64_t{df ? 0x0040u : 0u} << 48;
    const uint32_t src = load_ne32(src4), dst = load_ne32(dst4);
    const uint32_t w4 = ttl | uint32_t{proto} << 8;
    const uint64_t sum = (w01 & 0xFFFFFFFFu) + (w01 >> 32) + w4 + src + dst;
    const auto csum = static_cast<uint16_t>(~fold64(sum));
    const uint64_t w23 = w4 | uint64_t{csum} << 16 | uint64_t{src} << 32;
    const uint16_t et = 0x0008; // 0x0800 in network order
    std::memcpy(nf + 12, &et, 2);
    std::memcpy(nf + 14, &w01, 8);
    std::memcpy(nf + 22, &w23, 8);
    std::memcpy(nf + 30, &dst, 4);
}

/// encap() of an untagged IPv4 datagram in IPv4, IPIP (the common DSR case) in straight
/// lines: the same bytes as the general code below (tested), with the outer header built in
/// registers and written as three words (outer_ipv4_in_place()), and only the MACs moved
/// (the general code moves the L2 header with memmove, and every one of the 2-byte fields
/// is a store of its own).
/// False (nothing written) when the frame is of another shape or does not fit.
SLUICE_ALWAYS_INLINE bool encap_ipip4_fast(std::span<uint8_t> buf, uint32_t data_off,
                                           const PacketMeta& m, const EncapParams& p,
                                           int32_t& new_off, uint32_t& frame_len) noexcept {
    const uint32_t inner_len = m.l3_len;
    if (p.family != 4 || m.family != 4 || m.l3_off != kEthHdrLen || data_off < kIpv4HdrLen ||
        data_off > buf.size() || buf.size() - data_off < kEthHdrLen + inner_len ||
        inner_len < kIpv4HdrLen || inner_len + kIpv4HdrLen > 0xFFFF) {
        return false;
    }
    uint8_t* f = buf.data() + data_off;
    uint8_t* nf = f - kIpv4HdrLen; // the new frame; [nf, nf + 12) and [f, f + 12) are disjoint
    std::memcpy(nf, f, 12);        // MACs (set_macs() writes them anyway)
    outer_ipv4_in_place(nf, f + kEthHdrLen, kIpv4HdrLen + inner_len, kProtoIpip,
                        p.src.data() + 12, p.dst.data() + 12, p.ttl);
    new_off = static_cast<int32_t>(data_off - kIpv4HdrLen);
    frame_len = kEthHdrLen + kIpv4HdrLen + inner_len;
    return true;
}

/// IP-in-IP (RFC 2003) of the untagged IPv4 frame at `f` (Ethernet header at f, an IPv4
/// datagram of `inner_len` >= 20 bytes at f + 14, all in the frame) to `dst4` from tunnel
/// source `src4` (IPv4 addresses as in a frame), in place: the new frame starts at
/// f - kIpv4HdrLen (the caller has that headroom) and is kEthHdrLen + kIpv4HdrLen +
/// inner_len long (Ethernet padding dropped). Writes bytes 12..33 of the new frame
/// (ethertype, outer header: outer_ipv4_in_place()); the MACs are the caller's. The same
/// bytes as encap() with EncapParams' defaults (tested).
SLUICE_ALWAYS_INLINE void ipip4_in_place(uint8_t* f, uint32_t inner_len, const uint8_t* src4,
                                         const uint8_t* dst4) noexcept {
    outer_ipv4_in_place(f - kIpv4HdrLen, f + kEthHdrLen, kIpv4HdrLen + inner_len, kProtoIpip,
                        src4, dst4);
}

/// Outer headers GUE over IPv4 puts before the inner datagram: IPv4 + UDP + GUE.
inline constexpr uint32_t kGue4Overhead = kIpv4HdrLen + kUdpHdrLen + kGueHdrLen;

/// GUE (version 0, carrying IPv4) over IPv4 of the untagged IPv4 frame at `f`, in place, as
/// ipip4_in_place(): the new frame starts at f - kGue4Overhead (the caller has that
/// headroom) and is kEthHdrLen + kGue4Overhead + inner_len long; bytes 12..45 are written
/// (ethertype, outer IPv4, UDP from `sport` to kGueDefaultPort with checksum 0, GUE), the
/// MACs are the caller's. The same bytes as encap() with gue and EncapParams' defaults, its
/// source port gue_source_port(packet_key_hash()) (tested). `inner_len` <= 0xFFFF -
/// kGue4Overhead.
SLUICE_ALWAYS_INLINE void gue4_in_place(uint8_t* f, uint32_t inner_len, const uint8_t* src4,
                                        const uint8_t* dst4, uint16_t sport) noexcept {
    uint8_t* nf = f - kGue4Overhead;
    outer_ipv4_in_place(nf, f + kEthHdrLen, kGue4Overhead + inner_len, kProtoUdp, src4, dst4);
    const uint64_t udp =
        uint64_t{__builtin_bswap16(sport)} | uint64_t{__builtin_bswap16(kGueDefaultPort)} << 16 |
        uint64_t{__builtin_bswap16(static_cast<uint16_t>(kUdpHdrLen + kGueHdrLen + inner_len))} << 32;
    const uint32_t gue = uint32_t{kProtoIpip} << 8; // version 0, C 0, Hlen 0, proto, flags 0
    std::memcpy(nf + 34, &udp, 8);
    std::memcpy(nf + 42, &gue, 4);
}

/// `fast` = false skips encap_ipip4_fast() (for the test that compares the two).
inline int32_t encap(std::span<uint8_t> buf, uint32_t data_off, const PacketMeta& m,
                     const EncapParams& p, bool gue, uint32_t& frame_len,
                     bool fast = true) noexcept {
    if (int32_t off = 0; fast && !gue && encap_ipip4_fast(buf, data_off, m, p, off, frame_len)) {
        return off;
    }
    if ((m.family != 4 && m.family != 6) || (p.family != 4 && p.family != 6) ||
        m.l3_off < kEthHdrLen) {
        return -1;
    }
    const uint32_t l2 = m.l3_off;
    const uint32_t inner_len = m.l3_len;
    if (data_off > buf.size() || buf.size() - data_off < size_t{l2} + inner_len ||
        inner_len < (m.family == 4 ? kIpv4HdrLen : kIpv6HdrLen)) {
        return -1;
    }
    const uint32_t ip_len = p.family == 4 ? kIpv4HdrLen : kIpv6HdrLen;
    const uint32_t udp_len = gue ? kUdpHdrLen + kGueHdrLen + inner_len : 0;
    const uint32_t overhead = ip_len + (gue ? kUdpHdrLen + kGueHdrLen : 0);
    if (overhead > data_off || overhead + inner_len > 0xFFFF + (p.family == 6 ? ip_len : 0)) {
        return -1;
    }
    const uint32_t new_off = data_off - overhead;
    uint8_t* base = buf.data();
    const uint8_t* inner = base + data_off + l2;
    const uint8_t ipproto = m.family == 4 ? kProtoIpip : kProtoIpv6;
    // Traffic class of the inner packet (DSCP + ECN) is copied to the outer header.
    const uint8_t tos =
        m.family == 4 ? inner[1] : static_cast<uint8_t>((inner[0] << 4) | (inner[1] >> 4));
    const bool inner_df = m.family == 6 || (load_be16(inner + 6) & 0x4000) != 0;
    // The flow hash only feeds the IPv6 flow label and GUE's source port.
    const uint32_t h = p.family == 6 || (gue && p.udp_src_port == 0) ? packet_key_hash(m.key) : 0;

    std::memmove(base + new_off, base + data_off, l2);
    store_be16(base + new_off + l2 - 2, p.family == 4 ? kEtherTypeIpv4 : kEtherTypeIpv6);
    uint8_t* o = base + new_off + l2;
    if (p.family == 4) {
        // The header's ten 16-bit words are known values: their checksum is summed in
        // registers (summing the bytes just stored would stall on store forwarding).
        const auto w0 = static_cast<uint16_t>(0x4500 | tos);
        const auto tot = static_cast<uint16_t>(overhead + inner_len);
        // RFC 6864: the ID only matters without DF; reuse the inner one then.
        const uint16_t id = inner_df ? 0 : load_be16(inner + 4);
        const uint16_t frag = inner_df ? 0x4000 : 0;
        const auto w4 = static_cast<uint16_t>(p.ttl << 8 | (gue ? kProtoUdp : ipproto));
        const uint32_t src = load_be32(p.src.data() + 12), dst = load_be32(p.dst.data() + 12);
        const uint32_t sum = uint32_t{w0} + tot + id + frag + w4 + (src >> 16) + (src & 0xFFFF) +
                             (dst >> 16) + (dst & 0xFFFF);
        store_be16(o, w0);
        store_be16(o + 2, tot);
        store_be16(o + 4, id);
        store_be16(o + 6, frag);
        store_be16(o + 8, w4);
        store_be16(o + 10, static_cast<uint16_t>(~csum_fold(sum)));
        std::memcpy(o + 12, p.src.data() + 12, 4);
        std::memcpy(o + 16, p.dst.data() + 12, 4);
    } else {
        const uint32_t flow = h & 0xFFFFF;
        store_be32(o, (6u << 28) | (uint32_t{tos} << 20) | flow);
        store_be16(o + 4, static_cast<uint16_t>(overhead - kIpv6HdrLen + inner_len));
        o[6] = gue ? kProtoUdp : ipproto;
        o[7] = p.ttl;
        std::memcpy(o + 8, p.src.data(), 16);
        std::memcpy(o + 24, p.dst.data(), 16);
    }
    if (gue) {
        uint8_t* u = o + ip_len;
        const uint16_t sport = p.udp_src_port != 0 ? p.udp_src_port : gue_source_port(h);
        store_be16(u, sport);
        store_be16(u + 2, p.gue_port);
        store_be16(u + 4, static_cast<uint16_t>(udp_len));
        store_be16(u + 6, 0);
        // GUE version 0, C = 0, Hlen = 0, Proto/ctype = inner protocol, flags 0.
        u[8] = 0;
        u[9] = ipproto;
        u[10] = 0;
        u[11] = 0;
        if (p.family == 6) {
            // IPv6 needs a real UDP checksum (RFC 8200 8.1); the payload is summed once.
            uint32_t s = csum_pseudo(6, o + 8, o + 24, udp_len, kProtoUdp);
            s = csum_add(s, u, udp_len);
            uint16_t c = static_cast<uint16_t>(~csum_fold(s));
            store_be16(u + 6, c == 0 ? 0xFFFF : c);
        }
    }
    frame_len = l2 + overhead + inner_len;
    return static_cast<int32_t>(new_off);
}

} // namespace pkt_detail

/// DSR IP-in-IP encapsulation: moves the L2 header (Ethernet + VLAN tags) down into the
/// headroom and inserts an outer IPv4 (proto 4 / 41) or IPv6 (next header 4 / 41) header
/// between it and the inner IP datagram; the L2 ethertype becomes the outer family's. The
/// outer TTL is p.ttl (64), DSCP/ECN are copied, IPv4 DF is set unless the inner IPv4 packet
/// lacks it; the IPv4 header checksum is computed. Ethernet padding after the inner datagram
/// is not carried (the caller trims the buffer to frame_len). MACs are left to set_macs().
/// @param buf the whole buffer (for an mbuf: buf_addr, buf_len)
/// @param data_off offset of the frame (Ethernet header) in buf; also the headroom
/// @param m the parse of the frame at buf[data_off]
/// @param frame_len out: length of the encapsulated frame
/// @return the new data offset, or -1 (no headroom, family unknown, meta/buffer mismatch)
/// Thread: worker (any); no allocation.
inline int32_t encap_ipip(std::span<uint8_t> buf, uint32_t data_off, const PacketMeta& m,
                          const EncapParams& p, uint32_t& frame_len) noexcept {
    return pkt_detail::encap(buf, data_off, m, p, false, frame_len);
}

/// DSR GUE encapsulation: like encap_ipip() with outer UDP (source port from
/// p.udp_src_port or the flow hash, destination p.gue_port = 6080) and a 4-byte GUE version
/// 0 header carrying the inner protocol (4 / 41). Outer UDP checksum: 0 over IPv4, computed
/// over IPv6. Thread: worker (any); no allocation.
inline int32_t encap_gue(std::span<uint8_t> buf, uint32_t data_off, const PacketMeta& m,
                         const EncapParams& p, uint32_t& frame_len) noexcept {
    return pkt_detail::encap(buf, data_off, m, p, true, frame_len);
}

/// Headroom an encapsulation needs. Thread: any.
[[nodiscard]] constexpr uint32_t encap_overhead(uint8_t outer_family, bool gue) noexcept {
    return (outer_family == 4 ? kIpv4HdrLen : kIpv6HdrLen) + (gue ? kUdpHdrLen + kGueHdrLen : 0);
}

// ---------------------------------------------------------------------------------------
// Responders (packet.cc)
// ---------------------------------------------------------------------------------------

/// Turns an ICMP echo request (meta.verdict == IcmpEcho) into the echo reply in place:
/// swaps MACs and addresses, type 0 / ICMPv6 129, TTL/hop limit kReplyTtl, checksums fixed
/// incrementally. The caller checks the destination is one of its VIPs. meta.key is swapped.
/// @return false (frame unchanged) if meta is not an echo request of this frame.
/// Thread: worker (any).
[[nodiscard]] bool make_icmp_echo_reply(PacketMeta& m, std::span<uint8_t> frame) noexcept;

/// Turns an ARP request (meta.verdict == Arp, arp_op 1) into the reply in place, answering
/// that the requested address (meta.key.dst, which the caller checked is ours) is at
/// `our_mac`. @return false (frame unchanged) if it is not a request. Thread: worker (any).
[[nodiscard]] bool make_arp_reply(PacketMeta& m, std::span<uint8_t> frame,
                                  const Mac& our_mac) noexcept;

/// Writes a neighbour advertisement for the target of a neighbour solicitation
/// (meta.verdict == NeighborSolicit; the caller checked meta.key.dst is ours) into `out`:
/// same VLAN tags, solicited + override flags, target link-layer address option = our_mac;
/// sent to the solicitor, or to ff02::1 (not solicited) for DAD from ::.
/// @return the frame length written, 0 if `out` is too small or meta does not fit.
/// Thread: worker (any).
[[nodiscard]] uint32_t build_neighbor_advert(std::span<uint8_t> out,
                                             std::span<const uint8_t> ns_frame, const PacketMeta& m,
                                             const Mac& our_mac) noexcept;

/// Writes an ICMP time exceeded (type 11 / ICMPv6 3, code 0) answering `frame` into `out`:
/// MACs swapped, same VLAN tags, from `our_addr` to the packet's source, quoting as much of
/// the original datagram as fits in 576 (IPv4) / 1280 (IPv6) bytes. Refuses (returns 0) for
/// ICMP errors and non-first fragments (RFC 1122 3.2.2), or if `out` is too small.
/// @return the frame length written, or 0. Thread: worker (any).
[[nodiscard]] uint32_t build_icmp_time_exceeded(std::span<uint8_t> out,
                                                std::span<const uint8_t> frame, const PacketMeta& m,
                                                const Addr16& our_addr) noexcept;

/// New addresses and ports for nat_icmp_error(), of the packet's family (IPv4 in bytes
/// 12..15). inner_* describe the embedded (quoted) datagram as it must read after the
/// rewrite, i.e. as its receiver originally sent it.
struct IcmpErrorNat {
    Addr16 outer_src{};
    Addr16 outer_dst{};
    Addr16 inner_src{};
    Addr16 inner_dst{};
    uint16_t inner_src_port = 0;
    uint16_t inner_dst_port = 0;
};

/// Full NAT of an ICMP/ICMPv6 error (meta.verdict == IcmpError) about a TCP/UDP flow, in
/// place: outer addresses set and TTL/hop limit decremented (IPv4 header checksum fixed);
/// embedded IP addresses set (embedded IPv4 header checksum fixed), embedded ports set when
/// quoted (not for an embedded non-first fragment) and the embedded TCP/UDP checksum fixed
/// when quoted (a UDP checksum 0 stays 0); the ICMP checksum fixed, including the ICMPv6
/// pseudo-header. All updates are incremental (RFC 1624), so a corrupt message stays
/// detectably corrupt. The rest of the message (e.g. the MTU of "fragmentation needed" /
/// "packet too big") is kept. meta.key (the swapped embedded tuple) and meta.ttl follow.
/// @return false, frame unchanged, if meta does not describe such an error in this frame or
///         the TTL/hop limit is <= 1 (then meta.drop = DropReason::TtlExceeded; never answer
///         an error with an error). Thread: worker (any); no allocation.
[[nodiscard]] bool nat_icmp_error(PacketMeta& m, std::span<uint8_t> frame,
                                  const IcmpErrorNat& t) noexcept;

/// Finds the link-layer address option of `type` (1 source, 2 target; RFC 4861 4.6.1) in
/// the neighbour solicitation or advertisement whose ICMPv6 header is at meta.l4_off.
/// @return false if absent, or the option list is malformed (zero length).
/// Thread: worker (any).
[[nodiscard]] bool nd_link_layer_option(std::span<const uint8_t> frame, const PacketMeta& m,
                                        uint8_t type, Mac& out) noexcept;

/// Writes a neighbour solicitation for `target` into `out` (86 bytes, untagged): from
/// our_mac / `src` to the solicited-node multicast address ff02::1:ffXX:XXXX (and MAC
/// 33:33:ff:XX:XX:XX), hop limit 255, source link-layer address option = our_mac.
/// @return the frame length, or 0 if `out` is too small. Thread: worker (any).
[[nodiscard]] uint32_t build_neighbor_solicit(std::span<uint8_t> out, const Mac& our_mac,
                                              const Addr16& src, const Addr16& target) noexcept;

} // namespace sluice::dp
