#pragma once

/// @file
/// Test-only frame builder for packet fixtures (Katran's `{description, input builder,
/// expected packet | verdict}` tables): Ethernet, 802.1Q/802.1ad tags, ARP, IPv4 (options,
/// fragments), IPv6 (extension headers, fragment header), TCP, UDP, ICMP/ICMPv6, payload.
/// Lengths and checksums are computed here with its own straightforward checksum code, so
/// tests do not validate the code under test against itself.
/// Thread: tests only (allocates freely).

#include <arpa/inet.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstring>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace sluice::test {

using Bytes = std::vector<uint8_t>;
using Mac = std::array<uint8_t, 6>;
using Addr16 = std::array<uint8_t, 16>;

inline constexpr Mac kClientMac = {0x02, 0x00, 0x00, 0x00, 0x00, 0x01};
inline constexpr Mac kSluiceMac = {0x02, 0x00, 0x00, 0x00, 0x00, 0x02};
inline constexpr Mac kBackendMac = {0x02, 0x00, 0x00, 0x00, 0x00, 0x03};

/// Address from text: IPv4 "a.b.c.d" goes to bytes 12..15, IPv6 to all 16. Bad text
/// returns all zeros (tests spot that quickly).
inline Addr16 addr(const std::string& text) {
    Addr16 a{};
    if (text.find(':') != std::string::npos) {
        (void)inet_pton(AF_INET6, text.c_str(), a.data());
    } else {
        (void)inet_pton(AF_INET, text.c_str(), a.data() + 12);
    }
    return a;
}

inline bool is_v6(const std::string& text) {
    return text.find(':') != std::string::npos;
}

/// Reference one's-complement sum (RFC 1071), deliberately naive.
inline uint32_t ref_sum(const uint8_t* p, size_t n, uint32_t sum = 0) {
    for (size_t i = 0; i < n; ++i) {
        sum += (i % 2 == 0) ? uint32_t{p[i]} << 8 : p[i];
    }
    while (sum >> 16) {
        sum = (sum & 0xFFFF) + (sum >> 16);
    }
    return sum;
}
inline uint16_t ref_checksum(const uint8_t* p, size_t n, uint32_t sum = 0) {
    return static_cast<uint16_t>(~ref_sum(p, n, sum) & 0xFFFF);
}
/// Pseudo-header sum for TCP/UDP/ICMPv6 (addresses are 4 or 16 bytes).
inline uint32_t ref_pseudo(const uint8_t* src, const uint8_t* dst, size_t alen, uint32_t len,
                           uint8_t proto) {
    uint32_t s = ref_sum(src, alen);
    s = ref_sum(dst, alen, s);
    s += (len >> 16) + (len & 0xFFFF) + proto;
    while (s >> 16) {
        s = (s & 0xFFFF) + (s >> 16);
    }
    return s;
}

inline void put16(Bytes& b, uint16_t v) {
    b.push_back(static_cast<uint8_t>(v >> 8));
    b.push_back(static_cast<uint8_t>(v));
}
inline void put32(Bytes& b, uint32_t v) {
    put16(b, static_cast<uint16_t>(v >> 16));
    put16(b, static_cast<uint16_t>(v));
}
inline void set16(Bytes& b, size_t off, uint16_t v) {
    b[off] = static_cast<uint8_t>(v >> 8);
    b[off + 1] = static_cast<uint8_t>(v);
}
inline uint16_t get16(const Bytes& b, size_t off) {
    return static_cast<uint16_t>((b[off] << 8) | b[off + 1]);
}

/// Builds one frame. Every setter returns *this; build() may be called repeatedly.
class PacketBuilder {
public:
    enum class L3 { None, V4, V6, Arp };
    enum class L4 { None, Tcp, Udp, Icmp, Raw };

    PacketBuilder& eth(Mac src, Mac dst) {
        src_mac_ = src;
        dst_mac_ = dst;
        return *this;
    }
    /// Adds a VLAN tag (outermost first). tpid 0x88A8 for an 802.1ad S-tag.
    PacketBuilder& vlan(uint16_t vid, uint16_t tpid = 0x8100, uint8_t pcp = 0) {
        vlans_.emplace_back(tpid, static_cast<uint16_t>((pcp << 13) | (vid & 0x0FFF)));
        return *this;
    }
    /// Overrides the ethertype after the tags (default from the L3 chosen).
    PacketBuilder& ethertype(uint16_t et) {
        ethertype_ = et;
        return *this;
    }
    PacketBuilder& ipv4(const std::string& src, const std::string& dst, uint8_t ttl = 64) {
        l3_ = L3::V4;
        src_ = src;
        dst_ = dst;
        ttl_ = ttl;
        return *this;
    }
    PacketBuilder& ipv6(const std::string& src, const std::string& dst, uint8_t hop = 64) {
        l3_ = L3::V6;
        src_ = src;
        dst_ = dst;
        ttl_ = hop;
        return *this;
    }
    PacketBuilder& ip_id(uint16_t id) {
        ip_id_ = id;
        return *this;
    }
    PacketBuilder& tos(uint8_t tos) {
        tos_ = tos;
        return *this;
    }
    PacketBuilder& df(bool on = true) {
        df_ = on;
        return *this;
    }
    PacketBuilder& flow_label(uint32_t fl) {
        flow_label_ = fl & 0xFFFFF;
        return *this;
    }
    /// IPv4 options (padded with EOL to a multiple of 4).
    PacketBuilder& ipv4_options(Bytes opts) {
        while (opts.size() % 4 != 0) {
            opts.push_back(0);
        }
        ip_opts_ = std::move(opts);
        return *this;
    }
    /// IPv6 extension header (hop-by-hop 0, routing 43, destination options 60, AH 51) of
    /// `len` bytes (a multiple of 8; AH a multiple of 4), filled with PadN.
    PacketBuilder& ext(uint8_t type, size_t len = 8) {
        exts_.emplace_back(type, len);
        return *this;
    }
    /// Makes this a fragment carrying bytes [offset, offset + keep) of the L4 datagram
    /// (built whole, with its checksum). IPv4: flags/offset; IPv6: a fragment header after
    /// the other extension headers.
    PacketBuilder& fragment(uint16_t offset, bool more, size_t keep, uint32_t id = 0x1234) {
        frag_ = true;
        frag_offset_ = offset;
        frag_more_ = more;
        frag_keep_ = keep;
        frag_id_ = id;
        return *this;
    }
    /// Overrides the IP protocol / final next header.
    PacketBuilder& proto(uint8_t p) {
        proto_override_ = p;
        return *this;
    }
    PacketBuilder& tcp(uint16_t sport, uint16_t dport, uint8_t flags = 0x02, Bytes opts = {}) {
        l4_ = L4::Tcp;
        sport_ = sport;
        dport_ = dport;
        tcp_flags_ = flags;
        while (opts.size() % 4 != 0) {
            opts.push_back(0);
        }
        tcp_opts_ = std::move(opts);
        return *this;
    }
    PacketBuilder& udp(uint16_t sport, uint16_t dport, bool zero_checksum = false) {
        l4_ = L4::Udp;
        sport_ = sport;
        dport_ = dport;
        udp_zero_ = zero_checksum;
        return *this;
    }
    /// ICMP (IPv4) or ICMPv6 (IPv6) with the 4-byte rest-of-header (echo: id << 16 | seq).
    PacketBuilder& icmp(uint8_t type, uint8_t code, uint32_t rest = 0) {
        l4_ = L4::Icmp;
        icmp_type_ = type;
        icmp_code_ = code;
        icmp_rest_ = rest;
        return *this;
    }
    /// L4 = the payload bytes only, under IP protocol `p`.
    PacketBuilder& raw(uint8_t p) {
        l4_ = L4::Raw;
        proto_override_ = p;
        return *this;
    }
    PacketBuilder& arp(uint16_t op, Mac sha, const std::string& spa, Mac tha,
                       const std::string& tpa) {
        l3_ = L3::Arp;
        arp_op_ = op;
        arp_sha_ = sha;
        arp_tha_ = tha;
        src_ = spa;
        dst_ = tpa;
        return *this;
    }
    PacketBuilder& payload(Bytes p) {
        payload_ = std::move(p);
        return *this;
    }
    /// `n` bytes of a counting pattern.
    PacketBuilder& payload(size_t n) {
        payload_.resize(n);
        for (size_t i = 0; i < n; ++i) {
            payload_[i] = static_cast<uint8_t>(i * 7 + 1);
        }
        return *this;
    }
    /// Pads the frame with zeros to at least `n` bytes (Ethernet minimum 60).
    PacketBuilder& pad_to(size_t n) {
        pad_to_ = n;
        return *this;
    }

    /// The L4 header + payload with a correct checksum (whole datagram, before fragmenting).
    Bytes build_l4() const {
        Bytes b;
        const Addr16 s = addr(src_);
        const Addr16 d = addr(dst_);
        const bool v6 = l3_ == L3::V6;
        const uint8_t* sp = v6 ? s.data() : s.data() + 12;
        const uint8_t* dp = v6 ? d.data() : d.data() + 12;
        const size_t alen = v6 ? 16 : 4;
        switch (l4_) {
        case L4::Tcp: {
            put16(b, sport_);
            put16(b, dport_);
            put32(b, 1000);
            put32(b, (tcp_flags_ & 0x10) ? 2000 : 0);
            b.push_back(static_cast<uint8_t>(((20 + tcp_opts_.size()) / 4) << 4));
            b.push_back(tcp_flags_);
            put16(b, 65535);
            put16(b, 0);
            put16(b, 0);
            b.insert(b.end(), tcp_opts_.begin(), tcp_opts_.end());
            b.insert(b.end(), payload_.begin(), payload_.end());
            set16(
                b, 16,
                ref_checksum(b.data(), b.size(), ref_pseudo(sp, dp, alen, uint32_t(b.size()), 6)));
            break;
        }
        case L4::Udp: {
            put16(b, sport_);
            put16(b, dport_);
            put16(b, static_cast<uint16_t>(8 + payload_.size()));
            put16(b, 0);
            b.insert(b.end(), payload_.begin(), payload_.end());
            if (!udp_zero_) {
                uint16_t c = ref_checksum(b.data(), b.size(),
                                          ref_pseudo(sp, dp, alen, uint32_t(b.size()), 17));
                set16(b, 6, c == 0 ? 0xFFFF : c);
            }
            break;
        }
        case L4::Icmp: {
            b.push_back(icmp_type_);
            b.push_back(icmp_code_);
            put16(b, 0);
            put32(b, icmp_rest_);
            b.insert(b.end(), payload_.begin(), payload_.end());
            const uint32_t ps = v6 ? ref_pseudo(sp, dp, alen, uint32_t(b.size()), 58) : 0;
            set16(b, 2, ref_checksum(b.data(), b.size(), ps));
            break;
        }
        case L4::Raw:
        case L4::None:
            b = payload_;
            break;
        }
        return b;
    }

    /// The IP datagram (or ARP body) without L2.
    Bytes build_l3() const {
        Bytes b;
        if (l3_ == L3::Arp) {
            put16(b, 1);
            put16(b, 0x0800);
            b.push_back(6);
            b.push_back(4);
            put16(b, arp_op_);
            const Addr16 s = addr(src_);
            const Addr16 d = addr(dst_);
            b.insert(b.end(), arp_sha_.begin(), arp_sha_.end());
            b.insert(b.end(), s.begin() + 12, s.end());
            b.insert(b.end(), arp_tha_.begin(), arp_tha_.end());
            b.insert(b.end(), d.begin() + 12, d.end());
            return b;
        }
        if (l3_ == L3::None) {
            return payload_;
        }
        Bytes l4 = build_l4();
        if (frag_) {
            const size_t from = std::min<size_t>(frag_offset_, l4.size());
            const size_t to = std::min<size_t>(from + frag_keep_, l4.size());
            l4 = Bytes(l4.begin() + static_cast<long>(from), l4.begin() + static_cast<long>(to));
        }
        const uint8_t proto = proto_override_ ? *proto_override_ : l4_proto();
        const Addr16 s = addr(src_);
        const Addr16 d = addr(dst_);
        if (l3_ == L3::V4) {
            const size_t hl = 20 + ip_opts_.size();
            b.push_back(static_cast<uint8_t>(0x40 | (hl / 4)));
            b.push_back(tos_);
            put16(b, static_cast<uint16_t>(hl + l4.size()));
            put16(b, frag_ ? static_cast<uint16_t>(frag_id_) : ip_id_);
            uint16_t flags = df_ ? 0x4000 : 0;
            if (frag_) {
                flags =
                    static_cast<uint16_t>(flags | (frag_more_ ? 0x2000 : 0) | (frag_offset_ / 8));
            }
            put16(b, flags);
            b.push_back(ttl_);
            b.push_back(proto);
            put16(b, 0);
            b.insert(b.end(), s.begin() + 12, s.end());
            b.insert(b.end(), d.begin() + 12, d.end());
            b.insert(b.end(), ip_opts_.begin(), ip_opts_.end());
            set16(b, 10, ref_checksum(b.data(), hl));
        } else {
            Bytes ext;
            std::vector<uint8_t> types;
            for (const auto& [t, len] : exts_) {
                types.push_back(t);
            }
            if (frag_) {
                types.push_back(44);
            }
            for (size_t i = 0; i < types.size(); ++i) {
                const uint8_t next = i + 1 < types.size() ? types[i + 1] : proto;
                if (types[i] == 44) {
                    ext.push_back(next);
                    ext.push_back(0);
                    put16(ext,
                          static_cast<uint16_t>((frag_offset_ & 0xFFF8) | (frag_more_ ? 1 : 0)));
                    put32(ext, frag_id_);
                    continue;
                }
                const size_t len = exts_[i].second;
                const size_t start = ext.size();
                ext.push_back(next);
                ext.push_back(static_cast<uint8_t>(types[i] == 51 ? len / 4 - 2 : len / 8 - 1));
                if (types[i] == 51) {
                    ext.resize(start + len, 0); // AH: reserved, SPI, seq, ICV zeros
                } else {
                    // PadN option filling the rest.
                    ext.push_back(1);
                    ext.push_back(static_cast<uint8_t>(len - 4));
                    ext.resize(start + len, 0);
                }
            }
            const uint8_t first = types.empty() ? proto : types[0];
            put32(b, (6u << 28) | (uint32_t{tos_} << 20) | flow_label_);
            put16(b, static_cast<uint16_t>(ext.size() + l4.size()));
            b.push_back(first);
            b.push_back(ttl_);
            b.insert(b.end(), s.begin(), s.end());
            b.insert(b.end(), d.begin(), d.end());
            b.insert(b.end(), ext.begin(), ext.end());
        }
        b.insert(b.end(), l4.begin(), l4.end());
        return b;
    }

    /// The whole Ethernet frame.
    Bytes build() const {
        Bytes b(dst_mac_.begin(), dst_mac_.end());
        b.insert(b.end(), src_mac_.begin(), src_mac_.end());
        for (const auto& [tpid, tci] : vlans_) {
            put16(b, tpid);
            put16(b, tci);
        }
        uint16_t et = 0;
        if (ethertype_) {
            et = *ethertype_;
        } else if (l3_ == L3::V4) {
            et = 0x0800;
        } else if (l3_ == L3::V6) {
            et = 0x86DD;
        } else if (l3_ == L3::Arp) {
            et = 0x0806;
        }
        put16(b, et);
        const Bytes l3 = build_l3();
        b.insert(b.end(), l3.begin(), l3.end());
        if (b.size() < pad_to_) {
            b.resize(pad_to_, 0);
        }
        return b;
    }

private:
    uint8_t l4_proto() const {
        switch (l4_) {
        case L4::Tcp:
            return 6;
        case L4::Udp:
            return 17;
        case L4::Icmp:
            return l3_ == L3::V6 ? 58 : 1;
        default:
            return 59;
        }
    }

    Mac src_mac_ = kClientMac;
    Mac dst_mac_ = kSluiceMac;
    std::vector<std::pair<uint16_t, uint16_t>> vlans_;
    std::optional<uint16_t> ethertype_;
    L3 l3_ = L3::None;
    L4 l4_ = L4::None;
    std::string src_;
    std::string dst_;
    uint8_t ttl_ = 64;
    uint16_t ip_id_ = 0x4242;
    uint8_t tos_ = 0;
    bool df_ = false;
    uint32_t flow_label_ = 0;
    Bytes ip_opts_;
    std::vector<std::pair<uint8_t, size_t>> exts_;
    bool frag_ = false;
    uint16_t frag_offset_ = 0;
    bool frag_more_ = false;
    size_t frag_keep_ = 0;
    uint32_t frag_id_ = 0;
    std::optional<uint8_t> proto_override_;
    uint16_t sport_ = 0;
    uint16_t dport_ = 0;
    uint8_t tcp_flags_ = 0;
    Bytes tcp_opts_;
    bool udp_zero_ = false;
    uint8_t icmp_type_ = 0;
    uint8_t icmp_code_ = 0;
    uint32_t icmp_rest_ = 0;
    uint16_t arp_op_ = 1;
    Mac arp_sha_{};
    Mac arp_tha_{};
    Bytes payload_;
    size_t pad_to_ = 0;
};

} // namespace sluice::test
