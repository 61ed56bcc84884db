// libFuzzer target: hostile bytes -> the whole L4 decision (sluice::dp::lb_process): ARP,
// ND, echo, ICMP errors, fragments, full-NAT and DSR flows, return traffic, new flows and
// established ones, on one context that lives across inputs (so flows made by one input
// are met by the next). Nothing may crash or read or write outside the buffer; the frame
// to send must lie inside the buffer (headroom included), and a refused frame is counted.
//
// Input: byte 0 advances the millisecond clock (0..255 ms, so flows age and expire over a
// run), byte 1 picks the headroom given (DSR needs it, bits 0..6) and whether an IPv4 header
// at offset 14 gets a valid checksum (bit 7: random bytes almost never have one, and
// without it nothing reaches the flow path), the rest is the frame.

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <vector>

#include "lb_fp.h"

namespace {

using namespace sluice;
using namespace sluice::dp;

struct World {
    std::unique_ptr<ConnTrack> ct;
    std::unique_ptr<NeighborTable> nb = std::make_unique<NeighborTable>();
    std::unique_ptr<SnatPorts> ports = std::make_unique<SnatPorts>();
    std::unique_ptr<LbContext> ctx = std::make_unique<LbContext>();
    ServiceTable table;
    uint32_t now = 1000;
};

ir::Ir world_ir() {
    ir::Ir ir;
    ir::Rule r;
    for (int i = 0; i < 3; ++i) {
        ir::BackendGroup g;
        g.ns = "f";
        g.name = "b" + std::to_string(i);
        g.endpoints.push_back({"10.0.1." + std::to_string(i + 1), 8080, true, true, false, g.name});
        g.endpoints.push_back({"fd00::1:" + std::to_string(i + 1), 8080, true, true, false, g.name});
        ir.groups.push_back(g);
        r.backends.push_back({static_cast<uint32_t>(i), 1, 0, "", ir::kNone});
    }
    ir.rules.push_back(r);
    // Full-NAT TCP :80 and UDP :53, DSR IP-in-IP TCP :81, DSR GUE UDP :54, an L7 port :443.
    const struct {
        uint16_t port;
        ir::Protocol proto;
        ir::FwdMode mode;
    } ls[] = {{80, ir::Protocol::TCP, ir::FwdMode::FullNat},
              {53, ir::Protocol::UDP, ir::FwdMode::FullNat},
              {81, ir::Protocol::TCP, ir::FwdMode::DsrIpip},
              {54, ir::Protocol::UDP, ir::FwdMode::DsrGue},
              {443, ir::Protocol::HTTPS, ir::FwdMode::FullNat}};
    std::vector<uint32_t> idx;
    for (const auto& x : ls) {
        ir::Listener l;
        l.port = x.port;
        l.protocol = x.proto;
        l.fwd_mode = x.mode;
        l.l4_rule = x.proto == ir::Protocol::HTTPS ? ir::kNone : 0;
        idx.push_back(static_cast<uint32_t>(ir.listeners.size()));
        ir.listeners.push_back(l);
    }
    ir.gateways.push_back({"f", "gw", {"10.0.0.100", "fd00::100"}, idx, {}});
    return ir;
}

World& world() {
    static World w = [] {
        World x;
        ConnTrackConfig c;
        c.capacity = 1 << 12;
        c.seed = 3;
        x.ct = std::move(*ConnTrack::create(c));
        x.ctx->our_mac = {2, 0, 0, 0, 0, 2};
        x.ctx->ct = x.ct.get();
        x.ctx->neighbors = x.nb.get();
        x.ctx->ports = x.ports.get();
        uint8_t fam = 0;
        (void)parse_addr("10.0.0.99", fam, x.ctx->snat[0].second);
        x.ctx->snat[0].first = fam;
        (void)parse_addr("fd00::99", fam, x.ctx->snat[1].second);
        x.ctx->snat[1].first = fam;
        x.ctx->index_snat();
        x.ctx->exception = true;
        auto t = build_service_table(world_ir(), {});
        if (!t) {
            __builtin_trap();
        }
        x.table = std::move(*t);
        // Some next hops known, some not (ARP / ND requests are then sent instead).
        x.nb->learn(4, Addr{10, 0, 1, 1}, Mac{2, 0, 0, 0, 1, 1});
        return x;
    }();
    return w;
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    if (size < 2) {
        return 0;
    }
    World& w = world();
    w.now += data[0];
    const uint32_t headroom = data[1] & 0x7F; // 0..127 bytes before the frame
    const bool fix_ipv4_sum = (data[1] & 0x80) != 0;
    const size_t frame_len = size - 2;
    constexpr size_t kTail = 256; // replies (ICMP errors, ND) may be longer than the input
    // Exactly headroom + frame + tailroom: ASan sees any access outside.
    std::vector<uint8_t> buf(headroom + frame_len + kTail, 0);
    std::memcpy(buf.data() + headroom, data + 2, frame_len);
    uint8_t* f = buf.data() + headroom;
    if (fix_ipv4_sum && frame_len >= 34 && f[12] == 0x08 && f[13] == 0x00 && (f[14] >> 4) == 4) {
        const size_t ihl = size_t{f[14] & 0x0Fu} * 4;
        if (ihl >= 20 && 14 + ihl <= frame_len) {
            f[24] = f[25] = 0;
            const uint16_t c = inet_checksum(f + 14, ihl);
            f[24] = static_cast<uint8_t>(c >> 8);
            f[25] = static_cast<uint8_t>(c);
        }
    }
    uint32_t len = static_cast<uint32_t>(frame_len);
    uint32_t head = headroom;
    const uint64_t before = w.ctx->counters[static_cast<size_t>(LbCounter::RxPackets)];
    const LbAction a = lb_process(*w.ctx, w.table,
                                  std::span<uint8_t>(buf.data() + headroom, frame_len + kTail), len,
                                  w.now, &head);
    if (w.ctx->counters[static_cast<size_t>(LbCounter::RxPackets)] != before + 1) {
        __builtin_trap(); // every frame is counted once
    }
    if (a == LbAction::Tx) {
        // The frame to send starts at buf[head] and must end inside the buffer.
        if (head > headroom || size_t{head} + len > buf.size() || len < 14) {
            __builtin_trap();
        }
    } else if (head != headroom) {
        __builtin_trap(); // only a sent DSR frame moves into the headroom
    }
    (void)w.ct->sweep(w.now, 4);
    return 0;
}
