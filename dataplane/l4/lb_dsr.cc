// DSR forwarding step of the L4 pipeline (lb_process in lb.cc calls it once a flow has its
// endpoint): IPIP or GUE encapsulation towards the backend, which answers the client
// directly. Split from lb.cc to keep the full-NAT pipeline readable.

#include "lb_fp.h"

namespace sluice::dp {

bool dsr_forward(LbContext& ctx, const PacketMeta& m, FwdMode mode, const L4Endpoint& ep,
                 const Mac& next_hop, std::span<uint8_t> buf, uint32_t& len,
                 uint32_t* headroom) noexcept {
    // The tunnel source is the first configured "SNAT" address of the backend's family.
    const int slot = snat_for_family(ctx, ep.family);
    const std::pair<uint8_t, Addr>* src = slot >= 0 ? &ctx.snat[slot] : nullptr;
    if (!src) {
        ctx.count(LbCounter::NoSnatPort); // no tunnel source of the backend's family
        return false;
    }
    if (!headroom || len > buf.size()) {
        ++ctx.drops[static_cast<size_t>(DropReason::NoHeadroom)];
        return false;
    }
    if (m.family == 4 && m.l3_off == kEthHdrLen && kEthHdrLen + uint32_t{m.l3_len} <= len &&
        dsr4_in_place_fits(mode, ep.family, *headroom, m.l3_len)) [[likely]] {
        // IPv4 in IPv4 or GUE over IPv4, untagged (new DSR flows, stateless forwarding past
        // the half-open budget): in place, as the established lane does it.
        const uint32_t kh = mode == FwdMode::DsrGue ? packet_key_hash(m.key) : 0;
        const uint32_t moved = dsr4_in_place(buf.data(), mode, m.l3_len, src->second.data(),
                                             ep.addr.data(), kh);
        uint8_t* nf = buf.data() - moved;
        set_macs(std::span<uint8_t>(nf, 12), ctx.our_mac, next_hop);
        *headroom -= moved;
        len = kEthHdrLen + moved + m.l3_len;
        return true;
    }
    EncapParams p;
    p.family = ep.family;
    p.src = to_packet_addr(ep.family, src->second);
    p.dst = to_packet_addr(ep.family, ep.addr);
    // The encapsulation works on the whole buffer: headroom + frame (+ tailroom).
    const std::span<uint8_t> whole(buf.data() - *headroom, *headroom + buf.size());
    uint32_t frame_len = 0;
    const int32_t off = mode == FwdMode::DsrGue
                            ? encap_gue(whole, *headroom, m, p, frame_len)
                            : encap_ipip(whole, *headroom, m, p, frame_len);
    if (off < 0) {
        ++ctx.drops[static_cast<size_t>(DropReason::NoHeadroom)];
        return false;
    }
    set_macs(whole.subspan(static_cast<size_t>(off), frame_len), ctx.our_mac, next_hop);
    *headroom = static_cast<uint32_t>(off);
    len = frame_len;
    return true;
}

} // namespace sluice::dp
