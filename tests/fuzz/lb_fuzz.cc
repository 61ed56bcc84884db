// libFuzzer target: hostile bytes -> the whole L4 decision (sluice::dp::lb_process): ARP,
// ND, echo, ICMP errors, fragments, full-NAT and DSR flows, return traffic, new flows and
// established ones, on one context that lives across inputs (so flows made by one input
// are met by the next). Nothing may crash or read or write outside the buffer; the frame
// to send must lie inside the buffer (headroom included), and a refused frame is counted.
// Differential too: every input becomes four frames — the frame, the frame with its IPv4
// protocol swapped (TCP <-> UDP: the same listener address and port, another protocol),
// the frame with another source port (another flow to the same listener), and the frame
// again (a retransmission: it meets what the first made). The first context gets them one
// by one (lb_process), a twin context as one burst through the workers' API
// (lb_burst_parse + lb_burst_run); actions, frames and counters must be equal, input
// after input.
//
// Input: byte 0 advances the millisecond clock (0..255 ms, so flows age and expire over a
// run), byte 1 picks the headroom given (DSR needs it, bits 0..6) and whether an IPv4 header
// at offset 14 gets a valid checksum (bit 7: random bytes almost never have one, and
// without it nothing reaches the flow path), the rest is the frame.

#include <array>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <span>
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

World make_world() {
    return [] {
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
}

/// [0]: frames one by one (lb_process); [1]: the same frames as bursts (lb_burst_*).
World& world(int which) {
    static World w[2] = {make_world(), make_world()};
    return w[which];
}

/// One copy of the input's frame: exactly headroom + frame + tailroom, so ASan sees any
/// access outside.
struct Copy {
    static constexpr size_t kTail = 256; // replies (ICMP errors, ND) may be longer than the input
    std::vector<uint8_t> buf;
    uint32_t headroom;
    uint32_t len;
    /// `variant`: 0 and 3 the frame as given, 1 its IPv4 protocol byte swapped between TCP
    /// and UDP, 2 its byte 34 (an untagged IPv4 datagram's source port) plus one.
    Copy(const uint8_t* frame, size_t frame_len, uint32_t room, bool fix_ipv4_sum, int variant)
        : buf(room + frame_len + kTail, 0), headroom(room), len(static_cast<uint32_t>(frame_len)) {
        std::memcpy(buf.data() + room, frame, frame_len);
        uint8_t* f = buf.data() + room;
        if (variant == 1 && frame_len > 23) {
            f[23] = f[23] == 6 ? 17 : f[23] == 17 ? 6 : f[23];
        } else if (variant == 2 && frame_len > 34) {
            ++f[34];
        }
        if (fix_ipv4_sum && frame_len >= 34 && f[12] == 0x08 && f[13] == 0x00 && (f[14] >> 4) == 4) {
            const size_t ihl = size_t{f[14] & 0x0Fu} * 4;
            if (ihl >= 20 && 14 + ihl <= frame_len) {
                f[24] = f[25] = 0;
                const uint16_t c = inet_checksum(f + 14, ihl);
                f[24] = static_cast<uint8_t>(c >> 8);
                f[25] = static_cast<uint8_t>(c);
            }
        }
    }
    [[nodiscard]] std::span<uint8_t> span() { return {buf.data() + headroom, buf.size() - headroom}; }
};

/// The checks every handled frame must pass: the frame to send lies inside its buffer, and
/// only a sent DSR frame moves into the headroom.
void check_sent(LbAction a, const Copy& c, uint32_t head, uint32_t len) {
    if (a == LbAction::Tx) {
        if (head > c.headroom || size_t{head} + len > c.buf.size() || len < 14) {
            __builtin_trap();
        }
    } else if (head != c.headroom) {
        __builtin_trap();
    }
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    if (size < 2) {
        return 0;
    }
    World& w = world(0);
    World& wb = world(1);
    w.now += data[0];
    wb.now = w.now;
    const uint32_t headroom = data[1] & 0x7F; // 0..127 bytes before the frame
    const bool fix_ipv4_sum = (data[1] & 0x80) != 0;
    const size_t frame_len = size - 2;
    constexpr int kCopies = 4;
    auto copies = [&] {
        return std::array<Copy, kCopies>{Copy{data + 2, frame_len, headroom, fix_ipv4_sum, 0},
                                         Copy{data + 2, frame_len, headroom, fix_ipv4_sum, 1},
                                         Copy{data + 2, frame_len, headroom, fix_ipv4_sum, 2},
                                         Copy{data + 2, frame_len, headroom, fix_ipv4_sum, 3}};
    };

    // One by one.
    std::array<Copy, kCopies> one = copies();
    LbAction want[kCopies];
    uint32_t want_head[kCopies];
    uint32_t want_len[kCopies];
    for (int i = 0; i < kCopies; ++i) {
        uint32_t len = one[i].len;
        uint32_t head = headroom;
        const uint64_t before = w.ctx->counters[static_cast<size_t>(LbCounter::RxPackets)];
        want[i] = lb_process(*w.ctx, w.table, one[i].span(), len, w.now, &head);
        if (w.ctx->counters[static_cast<size_t>(LbCounter::RxPackets)] != before + 1) {
            __builtin_trap(); // every frame is counted once
        }
        check_sent(want[i], one[i], head, len);
        want_head[i] = head;
        want_len[i] = len;
    }

    // As one burst, on the twin context.
    std::array<Copy, kCopies> many = copies();
    LbFrame frames[kCopies];
    for (int i = 0; i < kCopies; ++i) {
        frames[i] = {many[i].buf.data() + headroom, many[i].len,
                     static_cast<uint32_t>(many[i].buf.size()) - headroom, headroom};
    }
    static auto* burst = new LbBurst;
    LbAction got[kCopies];
    lb_burst_parse(*wb.ctx, *burst, frames, 0, kCopies);
    lb_burst_run(*wb.ctx, wb.table, *burst, frames, kCopies, wb.now, got);
    for (int i = 0; i < kCopies; ++i) {
        check_sent(got[i], many[i], frames[i].headroom, frames[i].len);
        if (got[i] != want[i] || frames[i].headroom != want_head[i] || frames[i].len != want_len[i] ||
            std::memcmp(many[i].buf.data() + want_head[i], one[i].buf.data() + want_head[i],
                        want[i] == LbAction::Tx ? want_len[i] : 0) != 0) {
            __builtin_trap(); // the burst API decided otherwise than lb_process
        }
    }
    if (std::memcmp(w.ctx->counters.data(), wb.ctx->counters.data(), sizeof(w.ctx->counters)) != 0 ||
        std::memcmp(w.ctx->drops.data(), wb.ctx->drops.data(), sizeof(w.ctx->drops)) != 0) {
        __builtin_trap();
    }
    (void)w.ct->sweep(w.now, 4);
    (void)wb.ct->sweep(wb.now, 4);
    return 0;
}
