#pragma once

/// @file
/// The generator's per-packet work on plain bytes (no DPDK, so it is unit-tested): the
/// 16-byte stamp carried at the start of the UDP/TCP payload, the frame writer that turns a
/// flow's 5-tuple + stamp into an Ethernet/IPv4|IPv6/UDP|TCP frame, and the flow cursor that
/// walks the profile's 5-tuple space without divisions.
///
/// Stamp layout (16 bytes, big-endian):
///   [0..2]  magic 5C 1E 67
///   [3..5]  flow index (24 bits; each stream of a profile owns a disjoint range of it)
///   [6..9]  sequence number within the flow (32 bits)
///   [10..15] TX TSC, low 48 bits (widened on receive; latencies must stay under 2^48 cycles)
/// Thread: tx/rx lcores of sluice-pktgen (any thread); nothing here allocates or throws.

#include <array>
#include <cstdint>
#include <cstring>

#include "packet_fp.h"
#include "profile.h"

namespace sluice::pktgen {

inline constexpr uint32_t kStampLen = 16;
inline constexpr uint8_t kStampMagic[3] = {0x5C, 0x1E, 0x67};
inline constexpr uint64_t kTsc48Mask = (uint64_t{1} << 48) - 1;

struct Stamp {
    uint32_t flow = 0; ///< < 2^24
    uint32_t seq = 0;
    uint64_t tsc = 0; ///< only the low 48 bits travel
};

/// Writes the 16-byte stamp at p. Thread: any.
inline void encode_stamp(uint8_t* p, const Stamp& s) noexcept {
    p[0] = kStampMagic[0];
    p[1] = kStampMagic[1];
    p[2] = kStampMagic[2];
    p[3] = static_cast<uint8_t>(s.flow >> 16);
    p[4] = static_cast<uint8_t>(s.flow >> 8);
    p[5] = static_cast<uint8_t>(s.flow);
    dp::store_be32(p + 6, s.seq);
    const uint64_t t = s.tsc & kTsc48Mask;
    dp::store_be16(p + 10, static_cast<uint16_t>(t >> 32));
    dp::store_be32(p + 12, static_cast<uint32_t>(t));
}

/// Reads a stamp from p[0, avail). @return false when it is too short or the magic is
/// wrong (s.tsc holds the 48-bit value; see widen_tsc48). Thread: any.
inline bool decode_stamp(const uint8_t* p, size_t avail, Stamp& s) noexcept {
    if (avail < kStampLen || p[0] != kStampMagic[0] || p[1] != kStampMagic[1] ||
        p[2] != kStampMagic[2]) {
        return false;
    }
    s.flow = (uint32_t{p[3]} << 16) | (uint32_t{p[4]} << 8) | p[5];
    s.seq = dp::load_be32(p + 6);
    s.tsc = (uint64_t{dp::load_be16(p + 10)} << 32) | dp::load_be32(p + 12);
    return true;
}

/// The full TSC of a stamp sent at most 2^48 cycles before `now`. Thread: any.
[[nodiscard]] inline uint64_t widen_tsc48(uint64_t t48, uint64_t now) noexcept {
    uint64_t t = (now & ~kTsc48Mask) | (t48 & kTsc48Mask);
    if (t > now && t >= (uint64_t{1} << 48)) {
        t -= uint64_t{1} << 48;
    }
    return t;
}

/// Constant part of every generated frame, built once from the profile.
struct FrameSpec {
    uint8_t family = 4;
    uint8_t l4proto = dp::kProtoUdp;
    uint32_t l3_off = dp::kEthHdrLen;
    uint32_t l4_off = 0;
    uint32_t payload_off = 0;           ///< where the stamp goes
    std::array<uint8_t, 128> hdr{};     ///< Ethernet + IP + L4 template (payload_off bytes)
};

/// Builds the template of one stream's frames: MACs, ethertype, IP version/TTL/protocol,
/// TCP data offset. Thread: any.
[[nodiscard]] inline FrameSpec make_frame_spec(const TrafficSpec& p, const Mac& src_mac,
                                               const Mac& dst_mac) noexcept {
    FrameSpec s;
    s.family = p.ip;
    s.l4proto = p.proto == Proto::Udp ? dp::kProtoUdp : dp::kProtoTcp;
    uint8_t* h = s.hdr.data();
    std::memcpy(h, dst_mac.data(), 6);
    std::memcpy(h + 6, src_mac.data(), 6);
    dp::store_be16(h + 12, p.ip == 6 ? dp::kEtherTypeIpv6 : dp::kEtherTypeIpv4);
    uint8_t* ip = h + s.l3_off;
    if (p.ip == 6) {
        ip[0] = 0x60;
        ip[6] = s.l4proto;
        ip[7] = p.ttl;
        s.l4_off = s.l3_off + dp::kIpv6HdrLen;
    } else {
        ip[0] = 0x45;
        ip[6] = 0x40; // DF
        ip[8] = p.ttl;
        ip[9] = s.l4proto;
        s.l4_off = s.l3_off + dp::kIpv4HdrLen;
    }
    uint8_t* l4 = h + s.l4_off;
    if (s.l4proto == dp::kProtoTcp) {
        l4[12] = 0x50;                  // data offset 5
        dp::store_be16(l4 + 14, 65535); // window
        s.payload_off = s.l4_off + dp::kTcpHdrLen;
    } else {
        s.payload_off = s.l4_off + dp::kUdpHdrLen;
    }
    return s;
}

struct FlowTuple {
    Addr16 src{};
    Addr16 dst{};
    uint16_t sport = 0;
    uint16_t dport = 0;
};

/// Writes one frame of `len` bytes (the frame without FCS; >= payload_off + kStampLen) at f.
/// Bytes after the stamp are left as they are: the caller keeps them zero (the checksum
/// counts them as zero). IPv4 UDP is sent with checksum 0; IPv6 UDP and TCP get a full
/// checksum. `tcp_flags` is used for TCP only; the TCP sequence number is the stamp's.
/// Thread: any; no allocation.
inline void write_frame(uint8_t* f, uint32_t len, const FrameSpec& s, const FlowTuple& t,
                        const Stamp& st, uint8_t tcp_flags) noexcept {
    std::memcpy(f, s.hdr.data(), s.payload_off);
    uint8_t* ip = f + s.l3_off;
    uint8_t* l4 = f + s.l4_off;
    const uint32_t l4_len = len - s.l4_off;
    const uint8_t* src = nullptr;
    const uint8_t* dst = nullptr;
    if (s.family == 4) {
        dp::store_be16(ip + 2, static_cast<uint16_t>(len - s.l3_off));
        std::memcpy(ip + 12, t.src.data() + 12, 4);
        std::memcpy(ip + 16, t.dst.data() + 12, 4);
        dp::store_be16(ip + 10, dp::inet_checksum(ip, dp::kIpv4HdrLen));
        src = ip + 12;
        dst = ip + 16;
    } else {
        dp::store_be16(ip + 4, static_cast<uint16_t>(l4_len));
        std::memcpy(ip + 8, t.src.data(), 16);
        std::memcpy(ip + 24, t.dst.data(), 16);
        src = ip + 8;
        dst = ip + 24;
    }
    dp::store_be16(l4, t.sport);
    dp::store_be16(l4 + 2, t.dport);
    encode_stamp(f + s.payload_off, st);
    uint32_t csum_off = 0;
    if (s.l4proto == dp::kProtoUdp) {
        dp::store_be16(l4 + 4, static_cast<uint16_t>(l4_len));
        if (s.family == 4) {
            return; // checksum 0: "not computed" (RFC 768)
        }
        csum_off = 6;
    } else {
        dp::store_be32(l4 + 4, st.seq);
        l4[13] = tcp_flags;
        if (tcp_flags & dp::kTcpAck) {
            dp::store_be32(l4 + 8, 1);
        }
        csum_off = 16;
    }
    uint32_t sum = dp::csum_pseudo(s.family, src, dst, l4_len, s.l4proto);
    sum = dp::csum_add(sum, l4, s.payload_off - s.l4_off + kStampLen);
    uint16_t c = static_cast<uint16_t>(~dp::csum_fold(sum));
    if (c == 0 && s.l4proto == dp::kProtoUdp) {
        c = 0xFFFF;
    }
    dp::store_be16(l4 + csum_off, c);
}

/// Adds k to an address (big-endian, carries into the upper half). Thread: any.
[[nodiscard]] inline Addr16 addr_add(const Addr16& base, uint64_t k) noexcept {
    uint64_t hi = 0;
    uint64_t lo = 0;
    for (int i = 0; i < 8; ++i) {
        hi = (hi << 8) | base[static_cast<size_t>(i)];
        lo = (lo << 8) | base[static_cast<size_t>(i + 8)];
    }
    const uint64_t nlo = lo + k;
    hi += nlo < lo ? 1 : 0;
    Addr16 out;
    uint64_t l = nlo;
    for (int i = 7; i >= 0; --i) {
        out[static_cast<size_t>(i)] = static_cast<uint8_t>(hi);
        out[static_cast<size_t>(i + 8)] = static_cast<uint8_t>(l);
        hi >>= 8;
        l >>= 8;
    }
    return out;
}

/// Walks one stream's flow indexes 0..flows-1 (the stamp carries flow_base + that) and
/// their 5-tuples in mixed radix (source port fastest,
/// then source address, destination port, destination address), so consecutive packets
/// belong to different flows. For Proto::Syn the source port is random per packet.
class FlowCursor {
public:
    explicit FlowCursor(const TrafficSpec& p) noexcept
        : p_(p)
        , n_sport_(p.proto == Proto::Syn ? 1 : p.sport.count())
        , rng_(p.seed * 0x9E3779B97F4A7C15ull + 1) {
        load();
    }

    [[nodiscard]] uint32_t flow() const noexcept { return flow_; }
    [[nodiscard]] const FlowTuple& tuple() noexcept {
        if (p_.proto == Proto::Syn) {
            rng_ ^= rng_ >> 12;
            rng_ ^= rng_ << 25;
            rng_ ^= rng_ >> 27;
            const auto r = static_cast<uint32_t>((rng_ * 0x2545F4914F6CDD1Dull) >> 32);
            t_.sport = static_cast<uint16_t>(
                p_.sport.lo + ((uint64_t{r} * p_.sport.count()) >> 32));
        }
        return t_;
    }
    /// Moves to the next flow (wrapping after flows - 1).
    void advance() noexcept {
        if (++flow_ == p_.flows) {
            flow_ = 0;
            d_sport_ = d_src_ = d_dport_ = d_dst_ = 0;
            load();
            return;
        }
        if (++d_sport_ < n_sport_) {
            t_.sport = static_cast<uint16_t>(p_.sport.lo + d_sport_);
            return;
        }
        d_sport_ = 0;
        t_.sport = p_.sport.lo;
        if (++d_src_ < p_.src.count) {
            t_.src = addr_add(p_.src.lo, d_src_);
            return;
        }
        d_src_ = 0;
        t_.src = p_.src.lo;
        if (++d_dport_ < p_.dport.count()) {
            t_.dport = static_cast<uint16_t>(p_.dport.lo + d_dport_);
            return;
        }
        d_dport_ = 0;
        t_.dport = p_.dport.lo;
        ++d_dst_;
        t_.dst = addr_add(p_.dst.lo, d_dst_);
    }

    /// The tuple of any flow index (with divisions; for reports and tests). For Proto::Syn
    /// the source port is the range's first. Thread: any.
    [[nodiscard]] static FlowTuple tuple_of(const TrafficSpec& p, uint32_t flow) noexcept {
        const uint64_t ns = p.proto == Proto::Syn ? 1 : p.sport.count();
        uint64_t i = flow;
        FlowTuple t;
        t.sport = static_cast<uint16_t>(p.sport.lo + i % ns);
        i /= ns;
        t.src = addr_add(p.src.lo, i % p.src.count);
        i /= p.src.count;
        t.dport = static_cast<uint16_t>(p.dport.lo + i % p.dport.count());
        i /= p.dport.count();
        t.dst = addr_add(p.dst.lo, i);
        return t;
    }

private:
    void load() noexcept {
        t_.src = p_.src.lo;
        t_.dst = p_.dst.lo;
        t_.sport = p_.sport.lo;
        t_.dport = p_.dport.lo;
    }

    const TrafficSpec& p_;
    uint64_t n_sport_;
    uint64_t rng_;
    uint32_t flow_ = 0;
    uint64_t d_sport_ = 0, d_src_ = 0, d_dport_ = 0, d_dst_ = 0;
    FlowTuple t_;
};

/// What the receive side found in a frame.
enum class RxKind : uint8_t {
    Stamped,    ///< UDP/TCP with our stamp: `stamp` and `meta` (destination) are set
    ArpRequest, ///< an ARP request (meta.key.dst = the address asked for)
    Other,      ///< anything else (unstamped traffic, ARP replies, malformed)
};

/// Classifies a received frame. DSR encapsulations (IP-in-IP, IPv6-in-IP, GUE on UDP port
/// 6080, as sluice's DSR modes send them) are looked through: the stamp is read from the
/// inner packet, and the destination reported is the outer one (the backend chosen) with
/// the inner destination port; `tunneled` says so.
/// Thread: any; no allocation.
inline RxKind classify_rx(const uint8_t* f, uint32_t len, dp::PacketMeta& meta, Stamp& stamp,
                          bool* tunneled = nullptr) noexcept {
    dp::ParseOptions opt;
    opt.verify_ipv4_checksum = false;
    dp::Verdict v = dp::parse_packet(f, len, meta, opt);
    if (v == dp::Verdict::Arp) {
        return meta.arp_op == 1 ? RxKind::ArpRequest : RxKind::Other;
    }
    if (tunneled) {
        *tunneled = false;
    }
    uint32_t inner = 0;
    const uint32_t outer_end = uint32_t{meta.l3_off} + meta.l3_len;
    if (v == dp::Verdict::Drop && meta.drop == dp::DropReason::UnsupportedProto &&
        (meta.proto == dp::kProtoIpip || meta.proto == dp::kProtoIpv6)) {
        inner = meta.l4_off; // IP-in-IP: the inner header follows the outer one
    } else if (v == dp::Verdict::Forward && meta.proto == dp::kProtoUdp &&
               meta.key.dst_port == dp::kGueDefaultPort && meta.payload_off + 4u <= outer_end) {
        inner = meta.payload_off + 4u + 4u * (f[meta.payload_off] & 0x1F); // GUE v0 + options
    }
    if (inner != 0) {
        if (inner + 1 > outer_end) {
            return RxKind::Other;
        }
        const dp::PacketMeta outer = meta;
        meta = dp::PacketMeta{};
        meta.l2_len = meta.l3_off = static_cast<uint16_t>(inner);
        const uint8_t ver = f[inner] >> 4;
        meta.ethertype = ver == 6 ? dp::kEtherTypeIpv6 : dp::kEtherTypeIpv4;
        v = ver == 6 ? dp::pkt_detail::parse_ipv6(f, outer_end, inner, meta, opt)
                     : dp::pkt_detail::parse_ipv4(f, outer_end, inner, meta, opt);
        if (v != dp::Verdict::Forward) {
            return RxKind::Other;
        }
        meta.key.dst = outer.key.dst; // the backend the balancer chose
        meta.family = outer.family;
        if (tunneled) {
            *tunneled = true;
        }
    }
    if (v != dp::Verdict::Forward ||
        (meta.proto != dp::kProtoUdp && meta.proto != dp::kProtoTcp)) {
        return RxKind::Other;
    }
    const uint32_t end = uint32_t{meta.l3_off} + meta.l3_len;
    if (meta.payload_off >= end ||
        !decode_stamp(f + meta.payload_off, end - meta.payload_off, stamp)) {
        return RxKind::Other;
    }
    return RxKind::Stamped;
}

} // namespace sluice::pktgen
