// libFuzzer target: hostile bytes -> sluice::dp::parse_packet. Parsing must never crash or
// read outside the frame; whatever parses is pushed through every rewrite on copies (full
// NAT, echo/ARP replies, ND and time-exceeded builders, IPIP and GUE encapsulation), which
// must not crash either. A few invariants on the parse are checked with __builtin_trap().

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <vector>

#include "packet_fp.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    using namespace sluice::dp;
    if (size == 0) {
        return 0;
    }
    // The first byte picks parse options and rewrite parameters; the rest is the frame.
    const uint8_t ctl = data[0];
    const std::vector<uint8_t> frame(data + 1, data + size); // exact size: ASan sees overruns
    const ParseOptions opt{.verify_ipv4_checksum = (ctl & 1) != 0,
                           .verify_l4_checksum = (ctl & 2) != 0};
    PacketMeta m;
    const Verdict v = parse_packet(frame.data(), static_cast<uint32_t>(frame.size()), m, opt);
    if (v != m.verdict || (v == Verdict::Drop) != (m.drop != DropReason::None)) {
        __builtin_trap();
    }
    if (v == Verdict::Drop) {
        return 0;
    }
    if (m.l3_off > frame.size() || m.l4_off > frame.size() || m.payload_off > frame.size() ||
        m.l4_off < m.l3_off || (m.family != 0 && size_t{m.l3_off} + m.l3_len > frame.size())) {
        __builtin_trap();
    }

    Addr16 a{};
    Addr16 b{};
    for (size_t i = 0; i < 16; ++i) {
        a[i] = static_cast<uint8_t>(ctl * (i + 1));
        b[i] = static_cast<uint8_t>(ctl ^ (i * 17));
    }
    if (m.family == 4) {
        std::memset(a.data(), 0, 12);
        std::memset(b.data(), 0, 12);
    }
    const Mac mac = {2, 0, 0, 0, 0, ctl};

    std::vector<uint8_t> c = frame;
    PacketMeta mc = m;
    if (dnat_snat(mc, c, a, static_cast<uint16_t>(ctl * 257), b, 8080)) {
        // A rewritten packet parses again to the same verdict (checksums were kept valid
        // only if they were valid before, so do not verify them here).
        PacketMeta again;
        if (parse_packet(c.data(), static_cast<uint32_t>(c.size()), again,
                         {.verify_ipv4_checksum = false}) != m.verdict) {
            __builtin_trap();
        }
        // Checksums that were verified valid stay valid after the incremental rewrite.
        if (opt.verify_ipv4_checksum && opt.verify_l4_checksum &&
            parse_packet(c.data(), static_cast<uint32_t>(c.size()), again, opt) != m.verdict) {
            __builtin_trap();
        }
    }
    (void)set_macs(c, mac, mac);
    (void)swap_macs(c);

    c = frame;
    mc = m;
    (void)make_icmp_echo_reply(mc, c);
    c = frame;
    mc = m;
    (void)make_arp_reply(mc, c, mac);

    std::vector<uint8_t> out(1600);
    (void)build_neighbor_advert(out, frame, m, mac);
    (void)build_icmp_time_exceeded(out, frame, m, a);

    for (const bool gue : {false, true}) {
        constexpr uint32_t kHeadroom = 64;
        std::vector<uint8_t> buf(kHeadroom + frame.size());
        std::memcpy(buf.data() + kHeadroom, frame.data(), frame.size());
        EncapParams p;
        p.family = (ctl & 4) ? 6 : 4;
        p.src = a;
        p.dst = b;
        uint32_t len = 0;
        const int32_t off =
            gue ? encap_gue(buf, kHeadroom, m, p, len) : encap_ipip(buf, kHeadroom, m, p, len);
        if (off >= 0 && size_t(off) + len > buf.size()) {
            __builtin_trap();
        }
    }
    return 0;
}
