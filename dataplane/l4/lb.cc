#include "lb_fp.h"

#include "mix.h"
#include "prefetch.h"

#include <algorithm>
#include <cstring>

namespace sluice::dp {

namespace {

/// The conntrack key of a parsed packet as its five words (FlowKey's memory layout: IPv4
/// addresses in bytes 0..3, then ports, family, protocol), composed in registers. Building
/// the FlowKey field by field and reading it back as words for the hash and the key
/// compare stalled on store forwarding twice per packet.
SLUICE_ALWAYS_INLINE conntrack_detail::KeyWords key_words(const PacketMeta& m) noexcept {
    using conntrack_detail::load64;
    static_assert(std::endian::native == std::endian::little, "rest: little-endian layout");
    conntrack_detail::KeyWords w;
    if (m.family == 4) {
        uint32_t s, d;
        std::memcpy(&s, m.key.src.data() + 12, 4);
        std::memcpy(&d, m.key.dst.data() + 12, 4);
        w.src_lo = s;
        w.src_hi = 0;
        w.dst_lo = d;
        w.dst_hi = 0;
    } else {
        w.src_lo = load64(m.key.src.data());
        w.src_hi = load64(m.key.src.data() + 8);
        w.dst_lo = load64(m.key.dst.data());
        w.dst_hi = load64(m.key.dst.data() + 8);
    }
    w.rest = conntrack_detail::rest_word(m.key.src_port, m.key.dst_port, m.family, m.proto);
    return w;
}

/// Frees flows whose SNAT port owner expired, then takes the next free port.
/// A new flow probes at most kPortProbes SNAT ports in all (spread over the SNAT addresses
/// of its family), so port exhaustion costs a bounded number of compares per new flow,
/// never a scan of 64 Ki ports per address: at 97% of the ports in use 64 probes still find
/// a free one 86% of the time, and a SYN flood cannot make each SYN cost thousands of
/// cache misses (it did with 16 addresses x 64 probes: 16,000 cycles per SYN).
constexpr uint32_t kPortProbes = 64;
constexpr uint32_t kPortBatch = 8; ///< ports whose owners are prefetched together

int alloc_port(LbContext& ctx, int slot, uint32_t now, uint32_t probes) noexcept {
    auto& owners = (*ctx.ports)[slot];
    // This worker's ports: those of [port_lo, port_hi] with port % workers == worker, the
    // c-th being first + c * stride. The first port and their number are divisions by the
    // worker count: computed again only when the range or the split changed (a new flow
    // paid four integer divisions, ~100 cycles, before).
    LbContext::PortPlan& pp = ctx.port_plan;
    if (!pp.valid || pp.key != LbContext::PortPlan::key_of(ctx.port_lo, ctx.port_hi, ctx.worker,
                                                           ctx.workers)) [[unlikely]] {
        pp = LbContext::PortPlan::of(ctx.port_lo, ctx.port_hi, ctx.worker, ctx.workers);
    }
    const uint32_t span = pp.span;
    if (span == 0) {
        return -1;
    }
    const uint32_t stride = pp.stride;
    uint16_t& cur = ctx.port_cursor[slot];
    uint32_t c = cur < span ? cur : cur % span; // (after a change of the range)
    if (const auto p0 = static_cast<uint16_t>(pp.first + c * stride); owners[p0] == nullptr) {
        // The common case, without the batch set-up below: the cursor's port was never
        // used (or was released).
        cur = static_cast<uint16_t>(c + 1 == span ? 0 : c + 1);
        return p0;
    }
    probes = probes < span ? probes : span;
    for (uint32_t done = 0; done < probes; done += kPortBatch) {
        const uint32_t n = probes - done < kPortBatch ? probes - done : kPortBatch;
        uint16_t port[kPortBatch];
        uint32_t at[kPortBatch]; // each port's index c, for the cursor
        for (uint32_t i = 0; i < n; ++i) {
            uint32_t ci = c + i; // c < span and i < n <= span: one wrap at most
            ci = ci >= span ? ci - span : ci;
            at[i] = ci;
            port[i] = static_cast<uint16_t>(pp.first + ci * stride);
            if (owners[port[i]] == nullptr) {
                cur = static_cast<uint16_t>(ci + 1 == span ? 0 : ci + 1);
                return port[i]; // never used (or released): no entry to read
            }
            prefetch_read(owners[port[i]]);
        }
        for (uint32_t i = 0; i < n; ++i) {
            const ConnEntry* e = owners[port[i]];
            if (ctx.ct->expired(*e, now) || (e->value.service & 0xFFFF) != port[i]) {
                cur = static_cast<uint16_t>(at[i] + 1 == span ? 0 : at[i] + 1);
                return port[i];
            }
        }
        c += n;
        c = c >= span ? c - span : c;
    }
    cur = static_cast<uint16_t>(c);
    return -1;
}

/// A SNAT address of `family` with a free port: the slots of that family in turn, sharing
/// one budget of kPortProbes probes.
int alloc_snat(LbContext& ctx, uint8_t family, uint32_t now, int& slot_out) noexcept {
    const size_t n = ctx.snat.size();
    const size_t fam = family == 6 ? 1 : 0;
    const uint32_t of_family = ctx.snat_count[fam];
    if (of_family == 0) {
        return -1;
    }
    // (A family searched in vain this millisecond is refused by new_flow() before the call.)
    // kPortProbes / of_family from a table: an integer division per new flow cost ~30 cycles.
    static constexpr auto kPerAddress = [] {
        std::array<uint8_t, kMaxSnat + 1> t{};
        for (size_t k = 1; k <= kMaxSnat; ++k) {
            t[k] = static_cast<uint8_t>(kPortProbes / k);
        }
        return t;
    }();
    const uint32_t per_address = std::max<uint32_t>(kPortBatch, kPerAddress[of_family]);
    uint32_t budget = std::max(kPortProbes, per_address);
    size_t last = ctx.snat_next;
    for (size_t k = 0; k < n && budget > 0; ++k) {
        const size_t i = (ctx.snat_next + k) % n;
        if (ctx.snat[i].first != family) {
            continue;
        }
        const uint32_t probes = std::min(per_address, budget);
        budget -= probes;
        last = i;
        const int port = alloc_port(ctx, static_cast<int>(i), now, probes);
        if (port >= 0) {
            ctx.snat_next = static_cast<uint8_t>((i + 1) % n);
            ctx.snat_dry[fam] = false;
            slot_out = static_cast<int>(i);
            return port;
        }
    }
    // Nothing free in the addresses probed: the next new flow starts after them, so full
    // addresses cannot hide the free ports of the others.
    ctx.snat_next = static_cast<uint8_t>((last + 1) % n);
    ctx.snat_dry[fam] = true;
    ctx.snat_dry_tick[fam] = now;
    return -1;
}

SLUICE_ALWAYS_INLINE const L4Endpoint* endpoint_of(const ServiceTable& t, const L4Service& s, const ConnValue& v,
                              uint16_t* hint_out) noexcept {
    const uint32_t hint = v.generation;
    if (hint < s.n_endpoints && t.endpoints[s.first_endpoint + hint].id == v.backend) {
        return &t.endpoints[s.first_endpoint + hint];
    }
    for (uint32_t i = 0; i < s.n_endpoints; ++i) {
        if (t.endpoints[s.first_endpoint + i].id == v.backend) {
            *hint_out = static_cast<uint16_t>(i);
            return &t.endpoints[s.first_endpoint + i];
        }
    }
    return nullptr;
}

/// Builds an ARP request for `target` from `src` into buf (a miss on the next hop).
uint32_t arp_request(std::span<uint8_t> buf, const Mac& our_mac, const Addr& src,
                     const Addr& target) noexcept {
    if (buf.size() < 60) {
        return 0;
    }
    uint8_t* p = buf.data();
    std::memset(p, 0, 60);
    std::memset(p, 0xFF, 6);
    std::memcpy(p + 6, our_mac.data(), 6);
    store_be16(p + 12, kEtherTypeArp);
    store_be16(p + 14, 1);      // Ethernet
    store_be16(p + 16, 0x0800); // IPv4
    p[18] = 6;
    p[19] = 4;
    store_be16(p + 20, 1); // request
    std::memcpy(p + 22, our_mac.data(), 6);
    std::memcpy(p + 28, src.data(), 4);
    std::memcpy(p + 38, target.data(), 4);
    return 60;
}

} // namespace

namespace {

constexpr uint64_t kMacMask = (uint64_t{1} << 48) - 1;

uint64_t neighbor_word(uint8_t family, const Mac& mac) noexcept {
    const uint64_t w = mac_word(mac.data()); // bytes 0..5 (little-endian: bits 0..47)
    return w | static_cast<uint64_t>(family) << 56;
}

} // namespace

std::optional<Mac> NeighborTable::find(uint8_t family, const Addr& a) const noexcept {
    size_t i = addr_hash(family, a) & (kSlots - 1);
    for (size_t n = 0; n < kProbe; ++n, i = (i + 1) & (kSlots - 1)) {
        const uint64_t w = slots[i].word.load(std::memory_order_acquire);
        if (w == 0) {
            return std::nullopt;
        }
        if ((w >> 56) == family && addr_eq(slots[i].addr, a)) {
            Mac mac;
            const uint64_t bits = w & kMacMask;
            std::memcpy(mac.data(), &bits, 6);
            return mac;
        }
    }
    return std::nullopt;
}

void NeighborTable::learn(uint8_t family, const Addr& a, const Mac& mac, bool overwrite) noexcept {
    const uint64_t want = neighbor_word(family, mac);
    size_t i = addr_hash(family, a) & (kSlots - 1);
    // Bounded probing: a full neighbourhood costs kProbe compares, never a table scan, and
    // a neighbour storm cannot evict the next hops in use (it just is not learned).
    for (size_t n = 0; n < kProbe; ++n, i = (i + 1) & (kSlots - 1)) {
        Slot& sl = slots[i];
        uint64_t w = sl.word.load(std::memory_order_acquire);
        if (w == 0) {
            const uint64_t claim = static_cast<uint64_t>(kClaimed) << 56;
            if (sl.word.compare_exchange_strong(w, claim, std::memory_order_acq_rel)) {
                sl.addr = a;
                sl.word.store(want, std::memory_order_release);
                return;
            }
            // Another worker claimed it first: w now holds its word; look at it below.
        }
        if ((w >> 56) == family && addr_eq(sl.addr, a)) {
            if (w != want && overwrite) {
                sl.word.store(want, std::memory_order_release); // only on change: lines stay clean
            }
            return;
        }
        // kClaimed: another worker is filling this slot (perhaps with the same address,
        // learned twice then; lookups find the first). Probe on.
    }
}

// --- Issue 3 protocol coverage: neighbour discovery, ICMP errors, fragments, TTL ---------

namespace {

LbAction sent(LbContext& ctx, LbCounter c) noexcept {
    ctx.count(c);
    ctx.count(LbCounter::TxPackets);
    return LbAction::Tx;
}

LbAction dropped(LbContext& ctx, LbCounter c) noexcept {
    ctx.count(c);
    return LbAction::Drop;
}

/// A frame for the host: to the kernel when there is an exception interface, else dropped;
/// counted under `c` either way.
LbAction to_host(LbContext& ctx, LbCounter c) noexcept {
    ctx.count(c);
    if (ctx.exception) {
        ctx.count(LbCounter::ToHost);
        return LbAction::Host;
    }
    return LbAction::Drop;
}

bool ours(const LbContext& ctx, const ServiceTable& table, uint8_t family,
          const Addr& a) noexcept {
    return table.is_vip(family, a) || snat_slot(ctx, family, a) >= 0;
}

/// Hash of a fragment's identity: the addresses of key `k` and m's family, protocol, id.
uint64_t frag_hash(const PacketMeta& m, const PacketKey& k) noexcept {
    uint64_t h = addr_hash(m.family, to_table_addr(6, k.src)) ^
                 (addr_hash(m.proto, to_table_addr(6, k.dst)) * 0x9e3779b97f4a7c15ULL);
    h ^= m.frag_id * 0xc4ceb9fe1a85ec53ULL;
    return h ^ (h >> 31);
}

bool frag_match(const FragTable::Slot& s, const PacketMeta& m, const PacketKey& k) noexcept {
    return s.family == m.family && s.proto == m.proto && s.id == m.frag_id && s.src == k.src &&
           s.dst == k.dst;
}

bool tick_before(uint32_t a, uint32_t b) noexcept {
    return static_cast<int32_t>(a - b) < 0;
}

/// Neighbour solicitation: learn the solicitor (source link-layer option), answer for our
/// addresses with a neighbour advertisement rebuilt into the same buffer.
LbAction on_neighbor_solicit(LbContext& ctx, const ServiceTable& table, std::span<uint8_t> buf,
                             std::span<uint8_t> frame, const PacketMeta& m,
                             uint32_t& len) noexcept {
    const Addr src = to_table_addr(6, m.key.src);
    Mac sll{};
    if (src != Addr{} && nd_link_layer_option(frame, m, 1, sll)) {
        ctx.neighbors->learn(6, src, sll);
    }
    if (!ours(ctx, table, 6, to_table_addr(6, m.key.dst))) {
        return to_host(ctx, LbCounter::NotForUs);
    }
    // The advert (l2 + 72 bytes) is written over the solicitation (which may be shorter);
    // build_neighbor_advert() reads everything it needs first, and checks buf's size.
    const uint32_t n = build_neighbor_advert(buf, frame, m, ctx.our_mac);
    if (n == 0) {
        return dropped(ctx, LbCounter::ParseDrop);
    }
    len = n;
    return sent(ctx, LbCounter::NdAdverts);
}

/// A frame the parser refused as "unsupported ICMP": a neighbour advertisement teaches us
/// the target's MAC (target link-layer option). @return true if it was one.
bool on_neighbor_advert(LbContext& ctx, std::span<const uint8_t> frame,
                        const PacketMeta& m) noexcept {
    constexpr uint8_t kNeighborAdvert = 136;
    if (m.family != 6 || m.proto != kProtoIcmpv6 || m.icmp_type != kNeighborAdvert ||
        m.icmp_code != 0 || m.ttl != 255 || m.l4_off + 24u > uint32_t{m.l3_off} + m.l3_len ||
        size_t{m.l3_off} + m.l3_len > frame.size()) {
        return false;
    }
    Addr16 target{};
    std::memcpy(target.data(), frame.data() + m.l4_off + 8, 16);
    Mac tll{};
    if (target[0] != 0xFF && nd_link_layer_option(frame, m, 2, tll)) {
        ctx.neighbors->learn(6, to_table_addr(6, target), tll);
    }
    ctx.count(LbCounter::NdLearned);
    return true;
}

/// Answers a packet whose TTL / hop limit would expire here with ICMP time exceeded from
/// the address it was sent to (a VIP, or a SNAT address for return traffic).
LbAction time_exceeded(LbContext& ctx, std::span<uint8_t> buf, std::span<const uint8_t> frame,
                       const PacketMeta& m, uint32_t& len) noexcept {
    // The reply quotes at most 548 (IPv4) / 1232 (IPv6) bytes of the datagram; it is built
    // over the frame, so that much is copied aside first.
    std::array<uint8_t, 22 + 1232> copy;
    PacketMeta q = m;
    const uint32_t limit = m.family == 4 ? 576 - kIpv4HdrLen - kIcmpHdrLen
                                         : 1280 - kIpv6HdrLen - kIcmpHdrLen;
    q.l3_len = static_cast<uint16_t>(std::min<uint32_t>(m.l3_len, limit));
    const size_t n = size_t{q.l3_off} + q.l3_len;
    if (n > copy.size() || n > frame.size()) {
        return dropped(ctx, LbCounter::TtlDrop);
    }
    std::memcpy(copy.data(), frame.data(), n);
    const uint32_t out = build_icmp_time_exceeded(buf, std::span<const uint8_t>(copy.data(), n),
                                                  q, m.key.dst);
    if (out == 0) {
        ++ctx.drops[static_cast<size_t>(DropReason::TtlExceeded)];
        return dropped(ctx, LbCounter::TtlDrop);
    }
    len = out;
    return sent(ctx, LbCounter::TimeExceeded);
}

/// ICMP error about a TCP/UDP flow: from a backend to our SNAT address (about
/// SNAT->backend) goes back to the client as if about VIP->client... the reverse of the
/// flow's translation; from elsewhere to a VIP (about VIP->client) goes to the backend.
LbAction on_icmp_error(LbContext& ctx, const ServiceTable& table, std::span<uint8_t> buf,
                       std::span<uint8_t> frame, PacketMeta& m, uint32_t& len, uint32_t now,
                       uint32_t* headroom) noexcept {
    const uint8_t fam = m.family;
    if (m.key.proto != kProtoTcp && m.key.proto != kProtoUdp) {
        return dropped(ctx, LbCounter::IcmpErrorNoFlow);
    }
    const uint8_t* ip = frame.data() + m.l3_off;
    Addr16 outer_dst{};
    std::memcpy(fam == 4 ? outer_dst.data() + 12 : outer_dst.data(), ip + (fam == 4 ? 16 : 24),
                fam == 4 ? 4 : 16);
    const Addr odst = to_table_addr(fam, outer_dst);
    const Addr kdst = to_table_addr(fam, m.key.dst);
    IcmpErrorNat t;
    std::optional<Mac> mac;
    LbCounter done = LbCounter::IcmpErrorsToClient;
    if (const int slot = snat_slot(ctx, fam, kdst); slot >= 0 && odst == kdst) {
        // Embedded SNAT:sport -> backend:port; the key is its reverse.
        const ConnEntry* e = (*ctx.ports)[slot][m.key.dst_port];
        L4Endpoint be;
        be.family = fam;
        be.addr = to_table_addr(fam, m.key.src);
        be.port = m.key.src_port;
        if (!e || ctx.ct->expired(*e, now) || (e->value.service & 0xFFFF) != m.key.dst_port ||
            ((e->value.service >> 16) & 0xFF) != static_cast<uint32_t>(slot) ||
            e->key.proto != m.key.proto || e->value.backend != endpoint_id(be)) {
            return dropped(ctx, LbCounter::IcmpErrorNoFlow);
        }
        const FlowKey& c = e->key; // client -> VIP
        t.outer_src = to_packet_addr(fam, c.dst);
        t.outer_dst = to_packet_addr(fam, c.src);
        t.inner_src = t.outer_dst;
        t.inner_src_port = c.src_port;
        t.inner_dst = t.outer_src;
        t.inner_dst_port = c.dst_port;
        if (const uint64_t w = ctx.peers.word(e->value.flags); w != 0) {
            mac.emplace();
            std::memcpy(mac->data(), &w, 6);
        } else {
            mac = ctx.neighbors->find(fam, c.src);
        }
    } else if (table.is_vip(fam, odst) && odst == kdst) {
        // Embedded VIP:vport -> client:cport; the key is the client->VIP flow's.
        const L4Service* svc = table.find(fam, kdst, m.key.proto, m.key.dst_port);
        FlowKey k;
        k.family = fam;
        k.proto = m.key.proto;
        k.src = to_table_addr(fam, m.key.src);
        k.dst = kdst;
        k.src_port = m.key.src_port;
        k.dst_port = m.key.dst_port;
        ConnEntry* e = svc ? ctx.ct->lookup(k, flow_hash(k), now) : nullptr;
        uint16_t hint = e ? e->value.generation : 0;
        const L4Endpoint* ep = e ? endpoint_of(table, *svc, e->value, &hint) : nullptr;
        if (!ep || ep->reject) {
            return dropped(ctx, LbCounter::IcmpErrorNoFlow);
        }
        mac = ctx.neighbors->find(ep->family, ep->addr);
        if (!mac) {
            return dropped(ctx, LbCounter::NoNeighbor);
        }
        if (e->value.service == kDsrFlow) {
            // DSR: the backend holds the VIP; hand it the error as is, encapsulated.
            const FwdMode mode = svc->mode == FwdMode::DsrGue ? FwdMode::DsrGue
                                                              : FwdMode::DsrIpip;
            return dsr_forward(ctx, m, mode, *ep, *mac, buf, len, headroom)
                       ? sent(ctx, LbCounter::IcmpErrorsToBackend)
                       : LbAction::Drop;
        }
        const auto slot = static_cast<size_t>((e->value.service >> 16) & 0xFF);
        if (slot >= ctx.snat.size() || ep->family != fam) {
            return dropped(ctx, LbCounter::IcmpErrorNoFlow);
        }
        t.outer_src = to_packet_addr(fam, ctx.snat[slot].second);
        t.outer_dst = to_packet_addr(fam, ep->addr);
        t.inner_src = t.outer_dst;
        t.inner_src_port = ep->port;
        t.inner_dst = t.outer_src;
        t.inner_dst_port = static_cast<uint16_t>(e->value.service & 0xFFFF);
        done = LbCounter::IcmpErrorsToBackend;
    } else {
        return to_host(ctx, LbCounter::NotForUs);
    }
    if (!mac) {
        return dropped(ctx, LbCounter::NoNeighbor);
    }
    if (!nat_icmp_error(m, frame, t)) {
        if (m.drop == DropReason::TtlExceeded) {
            ++ctx.drops[static_cast<size_t>(DropReason::TtlExceeded)];
            return dropped(ctx, LbCounter::TtlDrop);
        }
        return dropped(ctx, LbCounter::ParseDrop);
    }
    (void)set_macs(frame, ctx.our_mac, *mac);
    return sent(ctx, done);
}

/// A fragment that does not start with a TCP/UDP header: a later fragment of a datagram
/// whose first fragment was translated gets the same address translation.
LbAction on_fragment(LbContext& ctx, std::span<uint8_t> frame, PacketMeta& m,
                     uint32_t now) noexcept {
    if (m.proto != kProtoTcp && m.proto != kProtoUdp) {
        return dropped(ctx, LbCounter::FragUnsupported);
    }
    const FragTable::Slot* s = ctx.frags.find(m, now);
    if (!s) {
        return dropped(ctx, LbCounter::FragNoState);
    }
    const std::optional<Mac> mac = ctx.neighbors->find(m.family, to_table_addr(m.family, s->new_dst));
    if (!mac) {
        return dropped(ctx, LbCounter::NoNeighbor);
    }
    if (!dnat_snat(m, frame, s->new_src, 0, s->new_dst, 0)) {
        if (m.verdict == Verdict::TtlExceeded) {
            ++ctx.drops[static_cast<size_t>(DropReason::TtlExceeded)];
            return dropped(ctx, LbCounter::TtlDrop); // no ICMP for non-first fragments
        }
        return dropped(ctx, LbCounter::ParseDrop);
    }
    (void)set_macs(frame, ctx.our_mac, *mac);
    return sent(ctx, LbCounter::FragTranslated);
}

} // namespace

const FragTable::Slot* FragTable::find(const PacketMeta& m, uint32_t now) noexcept {
    const size_t base = frag_hash(m, m.key) & (kSlots - kWays);
    for (size_t w = 0; w < kWays; ++w) {
        Slot& s = slots[base + w];
        if (frag_match(s, m, m.key) && !tick_before(s.expires, now)) {
            s.expires = now + kTimeoutMs;
            return &s;
        }
    }
    return nullptr;
}

void FragTable::remember(const PacketMeta& m, const PacketKey& from, const PacketKey& to,
                         uint32_t now) noexcept {
    const size_t base = frag_hash(m, from) & (kSlots - kWays);
    Slot* victim = &slots[base];
    for (size_t w = 0; w < kWays; ++w) {
        Slot& s = slots[base + w];
        if (frag_match(s, m, from) || s.family == 0 || tick_before(s.expires, now)) {
            victim = &s;
            break;
        }
        if (tick_before(s.expires, victim->expires)) {
            victim = &s; // full set: the entry closest to expiry goes
        }
    }
    victim->family = m.family;
    victim->proto = m.proto;
    victim->id = m.frag_id;
    victim->src = from.src;
    victim->dst = from.dst;
    victim->new_src = to.src;
    victim->new_dst = to.dst;
    victim->expires = now + kTimeoutMs;
}

namespace {

/// Where the flow behind SNAT address `rslot` (>= 0), port `port` is found (return
/// traffic), or null without a port table.
SLUICE_ALWAYS_INLINE ConnEntry* const* port_slot(const LbContext& ctx, int rslot,
                                                  uint16_t port) noexcept {
    return ctx.ports == nullptr ? nullptr : &(*ctx.ports)[rslot][port];
}

/// The SNAT port slot of a packet to one of our SNAT addresses (return traffic), or null.
SLUICE_ALWAYS_INLINE ConnEntry* const* snat_port_slot(const LbContext& ctx,
                                                       const PacketMeta& m) noexcept {
    const int slot = snat_slot(ctx, m.family, to_table_addr(m.family, m.key.dst));
    return slot < 0 ? nullptr : port_slot(ctx, slot, m.key.dst_port);
}

} // namespace

namespace {

/// Owner of a flow by its client -> VIP hash: bits 16..47 scaled to [0, workers) (the
/// conntrack uses the high 16 bits as signature and a multiply of all bits for buckets).
uint16_t owner_of_hash(uint64_t h, uint16_t workers) noexcept {
    return static_cast<uint16_t>(((h >> 16) & 0xFFFFFFFFULL) * workers >> 32);
}

/// Owner from a key (TCP/UDP ports present): SNAT return traffic by its port, else by the
/// flow's hash (`hash` when the caller has it, 0 = compute).
uint16_t owner_of_key(const LbContext& ctx, const PacketKey& k, uint64_t hash) noexcept {
    if (snat_slot(ctx, k.family, to_table_addr(k.family, k.dst)) >= 0) {
        return static_cast<uint16_t>(k.dst_port % ctx.workers);
    }
    if (hash == 0) {
        FlowKey f;
        f.family = k.family;
        f.proto = k.proto;
        f.src = to_table_addr(k.family, k.src);
        f.dst = to_table_addr(k.family, k.dst);
        f.src_port = k.src_port;
        f.dst_port = k.dst_port;
        hash = flow_hash(f);
    }
    return owner_of_hash(hash, ctx.workers);
}

FragOwners::Slot& frag_owner_slot(LbContext& ctx, const PacketMeta& m) noexcept {
    return ctx.frag_owners.slots[frag_hash(m, m.key) & (FragOwners::kSlots - 1)];
}

} // namespace

uint16_t lb_burst_owner(LbContext& ctx, const LbBurst& burst, uint16_t i, uint32_t now) noexcept {
    if (burst.pre[i].lite) {
        // As owner_of_key() for a Forward frame: return traffic by its SNAT port, the
        // client's by its flow hash.
        if (ctx.workers <= 1) {
            return 0;
        }
        if (burst.hash[i] == 0) {
            return static_cast<uint16_t>(conntrack_detail::dst_port_of(burst.pre[i].kw) %
                                         ctx.workers);
        }
        return owner_of_hash(burst.hash[i], ctx.workers);
    }
    return lb_owner(ctx, burst.meta[i], burst.hash[i], now);
}

uint16_t lb_owner(LbContext& ctx, const PacketMeta& m, uint64_t hash, uint32_t now) noexcept {
    if (ctx.workers <= 1) {
        return 0;
    }
    const uint8_t proto = m.verdict == Verdict::IcmpError ? m.key.proto : m.proto;
    const bool tcp_udp = proto == kProtoTcp || proto == kProtoUdp;
    switch (m.verdict) {
    case Verdict::Forward:
        return owner_of_key(ctx, m.key, hash);
    case Verdict::IcmpError:
        // The key is the flow the error is about, as the client -> VIP or the backend ->
        // SNAT direction: the owner of that flow.
        return tcp_udp ? owner_of_key(ctx, m.key, 0) : ctx.worker;
    case Verdict::Fragment: {
        if (!tcp_udp) {
            return ctx.worker;
        }
        FragOwners::Slot& s = frag_owner_slot(ctx, m);
        if (m.frag_first) {
            const uint16_t owner = owner_of_key(ctx, m.key, 0);
            s = {m.frag_id, now + FragTable::kTimeoutMs, m.family, m.proto, owner, m.key.src,
                 m.key.dst};
            return owner;
        }
        if (s.family == m.family && s.proto == m.proto && s.id == m.frag_id &&
            s.src == m.key.src && s.dst == m.key.dst && !tick_before(s.expires, now)) {
            return s.owner;
        }
        return ctx.worker; // no first fragment seen here: counted as FragNoState there
    }
    default:
        return ctx.worker;
    }
}

namespace {

// The flow path, split so that the established-flow case compiles to a short function of
// its own: the other frame kinds, return traffic and new flows are out of line
// ([[gnu::noinline]]), so their code and registers stay off the per-packet path.

/// The full-NAT rewrite of a frame to forward (addresses, ports, TTL, checksums), the
/// translation of a first fragment remembered for its later fragments, and the MACs (ours
/// -> `mac`, a neighbour slot word). `src`/`dst`: table addresses of the packet's family.
/// The caller has answered TTL <= 1 already. False when the frame cannot be rewritten.
SLUICE_ALWAYS_INLINE bool nat_rewrite(LbContext& ctx, std::span<uint8_t> frame, PacketMeta& m,
                                      uint32_t now, bool first_frag, const Addr& src,
                                      uint16_t sport, const Addr& dst, uint16_t dport,
                                      uint64_t mac) noexcept {
    if (m.family == 4 && m.verdict == Verdict::Forward && m.ttl > 1) {
        // The common case, straight to the IPv4 rewrite: the parse put both headers in the
        // frame, and nothing reads m afterwards.
        pkt_detail::dnat_snat_v4(frame.data() + m.l3_off, frame.data() + m.l4_off, m.proto,
                                 src.data(), sport, dst.data(), dport);
        set_macs_word(frame.data(), mac, ctx.our_mac);
        return true;
    }
    PacketKey rx_key;
    if (first_frag) {
        rx_key = m.key; // as received: later fragments are matched on it
    }
    if (!dnat_snat(m, frame, to_packet_addr(m.family, src), sport, to_packet_addr(m.family, dst),
                   dport)) {
        return false;
    }
    if (first_frag) {
        ctx.frags.remember(m, rx_key, m.key, now);
        ctx.count(LbCounter::FragFirst);
    }
    set_macs_word(frame.data(), mac, ctx.our_mac);
    return true;
}

/// The last step for a flow with an endpoint (established or new): next-hop MAC, then DSR
/// encapsulation or the full-NAT rewrite. `slot`/`sport`: the flow's SNAT address slot and
/// port (DSR: the tunnel source's slot). First fragments remember their translation.
SLUICE_ALWAYS_INLINE LbAction to_endpoint(LbContext& ctx, std::span<uint8_t> buf, uint32_t& len,
                                          uint32_t now, PacketMeta& m, uint32_t* headroom,
                                          const L4Endpoint& ep, int slot, uint16_t sport,
                                          bool dsr, FwdMode dsr_mode, bool first_frag) noexcept {
    const std::span<uint8_t> frame = buf.subspan(0, len);
    const uint64_t mac = ctx.neighbors->find_word(ep.family, ep.addr, ep.nb_hash);
    if (mac == 0) [[unlikely]] {
        if (ep.family == 4 && slot >= 0 && buf.size() >= 60) {
            len = arp_request(buf, ctx.our_mac, ctx.snat[slot].second, ep.addr);
            return sent(ctx, LbCounter::ArpRequests); // the client retransmits; by then the neighbour is known
        }
        if (ep.family == 6 && slot >= 0) {
            if (const uint32_t n = build_neighbor_solicit(
                    buf, ctx.our_mac, to_packet_addr(6, ctx.snat[slot].second),
                    to_packet_addr(6, ep.addr));
                n != 0) {
                len = n;
                return sent(ctx, LbCounter::NdSolicits); // as for ARP: the client retransmits
            }
        }
        return dropped(ctx, LbCounter::NoNeighbor);
    }
    if (dsr) {
        Mac next_hop;
        std::memcpy(next_hop.data(), &mac, 6); // as set_macs_word
        if (!dsr_forward(ctx, m, dsr_mode, ep, next_hop, buf, len, headroom)) {
            return LbAction::Drop;
        }
        ctx.count(LbCounter::TxPackets);
        return LbAction::Tx;
    }
    if (!nat_rewrite(ctx, frame, m, now, first_frag, ctx.snat[slot].second, sport, ep.addr,
                     ep.port, mac)) {
        return dropped(ctx, LbCounter::ParseDrop);
    }
    ctx.count(LbCounter::TxPackets);
    return LbAction::Tx;
}

/// Return traffic: a backend answering one of our SNAT addresses (slot `slot`).
[[gnu::noinline]] LbAction return_path(LbContext& ctx, std::span<uint8_t> buf, uint32_t& len,
                                       uint32_t now, PacketMeta& m, int slot,
                                       bool first_frag) noexcept {
    const std::span<uint8_t> frame = buf.subspan(0, len);
    ConnEntry* e = (*ctx.ports)[slot][m.key.dst_port];
    if (!e || ctx.ct->expired(*e, now) || (e->value.service & 0xFFFF) != m.key.dst_port ||
        e->key.proto != m.proto) {
        return dropped(ctx, LbCounter::BackendGone);
    }
    const FlowKey client = e->key;
    if (m.ttl <= 1) {
        return time_exceeded(ctx, buf, frame, m, len);
    }
    if (m.proto == kProtoTcp) {
        ctx.ct->on_tcp_flags(*e, m.tcp_flags, now);
    } else {
        ctx.ct->touch(*e, now);
    }
    uint64_t mac = ctx.peers.word(e->value.flags);
    if (mac == 0) {
        if (const std::optional<Mac> n = ctx.neighbors->find(client.family, client.src)) {
            mac = mac_word(n->data());
        } else {
            return dropped(ctx, LbCounter::NoNeighbor);
        }
    }
    if (!nat_rewrite(ctx, frame, m, now, first_frag, client.dst, client.dst_port, client.src,
                     client.src_port, mac)) {
        return dropped(ctx, LbCounter::ParseDrop);
    }
    return sent(ctx, LbCounter::ReturnPackets);
}

/// A flow conntrack does not know: Maglev pick, SNAT port, conntrack insert (or, past the
/// table's limits, DSR's stateless forwarding / full-NAT's refusal). Inlined into its one
/// caller, lookup_or_new(), itself out of line: as a call of its own (twelve arguments,
/// most on the stack) it cost a new flow ~30 instructions of argument passing (callgrind).
SLUICE_ALWAYS_INLINE LbAction new_flow(LbContext& ctx, const ServiceTable& table,
                                       std::span<uint8_t> buf, uint32_t& len, uint32_t now,
                                       PacketMeta& m, uint32_t* headroom, const L4Service& svc,
                                       const conntrack_detail::KeyWords& kw, uint64_t h,
                                       const ConnTrack::Probe& probe, bool first_frag) noexcept {
    const bool dsr = svc.mode == FwdMode::DsrIpip || svc.mode == FwdMode::DsrGue;
    const FwdMode dsr_mode = svc.mode == FwdMode::DsrGue ? FwdMode::DsrGue : FwdMode::DsrIpip;
    if (!dsr && m.proto == kProtoTcp && !(m.tcp_flags & kTcpSyn)) {
        // A mid-flow packet of a flow we do not know (table change on another node,
        // or our restart): full-NAT cannot resume it without its SNAT port.
        return dropped(ctx, LbCounter::BackendGone);
    }
    const bool syn = m.proto == kProtoTcp && (m.tcp_flags & kTcpSyn);
    if (!dsr) {
        // Full-NAT refusals that need no backend (its family is the client's): checked
        // before the Maglev pick, whose slot is an L2 miss, so a SYN flood past the budget
        // or at port exhaustion costs the least.
        if (syn && ctx.ct->half_open_refused()) {
            return dropped(ctx, LbCounter::StatelessFallback);
        }
        const size_t fam = m.family == 6 ? 1 : 0;
        if (ctx.snat_dry[fam] && ctx.snat_dry_tick[fam] == now) {
            return dropped(ctx, LbCounter::NoSnatPort);
        }
    }
    const uint32_t pick = svc.maglev.pick(h);
    if (pick == kMaglevNoBackend) {
        return dropped(ctx, LbCounter::NoBackend);
    }
    const L4Endpoint& ep = table.endpoints[svc.first_endpoint + pick];
    if (ep.reject || (!dsr && ep.family != m.family)) {
        // The share of an invalid backendRef, or NAT between families (not supported).
        return dropped(ctx, LbCounter::Rejected);
    }
    int slot = snat_for_family(ctx, ep.family);
    if (dsr && syn && ctx.ct->half_open_refused()) {
        // Half-open budget spent (a SYN flood): nothing is tracked. DSR forwards by the
        // Maglev pick (full-NAT refused the connection above: it needs state for the way
        // back).
        ctx.count(LbCounter::StatelessFallback);
        return to_endpoint(ctx, buf, len, now, m, headroom, ep, slot, 0, dsr, dsr_mode,
                           first_frag);
    }
    const int port = dsr ? 0 : slot >= 0 ? alloc_snat(ctx, ep.family, now, slot) : -1;
    if (port < 0) {
        return dropped(ctx, LbCounter::NoSnatPort);
    }
    const auto sport = static_cast<uint16_t>(port);
    ConnValue val;
    val.service = dsr ? kDsrFlow : static_cast<uint32_t>(slot) << 16 | sport;
    val.backend = ep.id;
    val.generation = static_cast<uint16_t>(pick);
    // The client's MAC for the way back (clients are on-link or behind a router whose MAC
    // this is): the flow keeps it by index (PeerMacs), so answers need no neighbour lookup.
    val.flags = dsr ? 0 : ctx.peers.intern(buf.data() + 6);
    const InsertResult ins = ctx.ct->insert(kw, h, probe, now, val, syn, /*known_absent=*/true);
    if (ins.status == InsertStatus::Inserted) {
        if (!dsr) {
            (*ctx.ports)[slot][sport] = ins.entry;
            if (val.flags == 0) {
                // PeerMacs full: the neighbour table serves instead, learned only for a
                // tracked flow and never over a known neighbour (a spoofed SYN carrying a
                // backend's address must not redirect that backend's traffic).
                Mac smac{};
                std::memcpy(smac.data(), buf.data() + 6, 6);
                ctx.neighbors->learn(ins.entry->key.family, ins.entry->key.src, smac,
                                     /*overwrite=*/false);
            }
        }
        ctx.count(LbCounter::NewFlows);
    } else if (dsr) {
        // DSR keeps no state for the way back: forward statelessly (Maglev pick).
        ctx.count(LbCounter::StatelessFallback);
    } else {
        // Table full or half-open budget spent: full-NAT needs state for the way back, so
        // the connection is refused rather than half served.
        return dropped(ctx, LbCounter::StatelessFallback);
    }
    return to_endpoint(ctx, buf, len, now, m, headroom, ep, slot, sport, dsr, dsr_mode,
                       first_frag);
}

/// The flow of `kw` when stage 1b's hint did not have it: the conntrack lookup (its probe
/// reused by the insert of a new flow). Returns the live entry, or nullptr when the packet
/// was handled as a new flow (`out` says how).
[[gnu::noinline]] ConnEntry* lookup_or_new(LbContext& ctx, const ServiceTable& table,
                                           std::span<uint8_t> buf, uint32_t& len, uint32_t now,
                                           PacketMeta& m, uint32_t* headroom, const L4Service& svc,
                                           const conntrack_detail::KeyWords& kw, uint64_t h,
                                           const ConnTrack::Probe* given, bool first_frag,
                                           LbAction& out) noexcept {
    ConnTrack::Probe probe;
    ConnEntry* e;
    if (given != nullptr) {
        probe = *given;
        e = ctx.ct->lookup(kw, probe, now);
    } else {
        e = ctx.ct->lookup(kw, h, now, probe);
    }
    if (e != nullptr) {
        return e;
    }
    out = new_flow(ctx, table, buf, len, now, m, headroom, svc, kw, h, probe, first_frag);
    return nullptr;
}

/// The L4 service of a parsed TCP/UDP frame's destination, or nullptr.
SLUICE_ALWAYS_INLINE const L4Service* service_of(const ServiceTable& table,
                                                 const PacketMeta& m) noexcept {
    return table.find(m.family, to_table_addr(m.family, m.key.dst), m.proto, m.key.dst_port);
}

/// A TCP/UDP datagram (or the first fragment of one) to forward. `pre`: its key and probe
/// from a burst's first stage, which ruled out return traffic, with `hash` its flow hash,
/// `hint` stage 1b's slot and `pre_svc` stage 1c's service (pre nullptr: all derived here,
/// hash 0 and hint nullptr).
SLUICE_ALWAYS_INLINE LbAction flow_path(LbContext& ctx, const ServiceTable& table,
                                        std::span<uint8_t> buf, uint32_t& len, uint32_t now,
                                        PacketMeta& m, uint32_t* headroom, uint64_t hash,
                                        ConnEntry* hint, const LbFlowPre* pre,
                                        const L4Service* pre_svc, bool first_frag) noexcept {
    const L4Service* svc = pre_svc;
    if (pre == nullptr) {
        const Addr dst = to_table_addr(m.family, m.key.dst);
        if (const int rslot = snat_slot(ctx, m.family, dst); rslot >= 0) {
            if (ctx.ports == nullptr) [[unlikely]] {
                return dropped(ctx, LbCounter::BackendGone); // no full-NAT state at all
            }
            return return_path(ctx, buf, len, now, m, rslot, first_frag);
        }
        svc = service_of(table, m);
    }
    if (!svc) [[unlikely]] {
        const Addr dst = to_table_addr(m.family, m.key.dst);
        return to_host(ctx, table.is_vip(m.family, dst) ? LbCounter::NoService
                                                        : LbCounter::NotForUs);
    }
    if (svc->to_l7) {
        return to_host(ctx, LbCounter::L7Listener); // sluice-l7, on the kernel's sockets
    }
    if (m.ttl <= 1 && svc->mode == FwdMode::FullNat) [[unlikely]] {
        return time_exceeded(ctx, buf, buf.subspan(0, len), m, len); // before any flow state
    }
    // In registers, no FlowKey in memory (or as stage 1 left it).
    const conntrack_detail::KeyWords kw = pre != nullptr ? pre->kw : key_words(m);
    const uint64_t h = hash != 0 ? hash : conntrack_detail::hash_words(kw);
    ConnEntry* e = ctx.ct->hint_hit(kw, now, hint);
    if (e == nullptr) [[unlikely]] {
        // Not at stage 1b's hint: the full lookup, and a new flow on a miss, out of line.
        LbAction a;
        e = lookup_or_new(ctx, table, buf, len, now, m, headroom, *svc, kw, h,
                          pre != nullptr ? &pre->probe : nullptr, first_frag, a);
        if (e == nullptr) {
            return a;
        }
    }
    // Established: the flow keeps its endpoint while it is in the current snapshot.
    uint16_t hint_index = e->value.generation;
    const L4Endpoint* ep = endpoint_of(table, *svc, e->value, &hint_index);
    if (!ep || ep->reject) [[unlikely]] {
        ctx.ct->erase(*e);
        return dropped(ctx, LbCounter::BackendGone);
    }
    e->value.generation = hint_index;
    // DSR: new flows follow the service's mode, established ones the kind of their entry.
    const bool dsr = e->value.service == kDsrFlow;
    const FwdMode dsr_mode = svc->mode == FwdMode::DsrGue ? FwdMode::DsrGue : FwdMode::DsrIpip;
    const int slot = dsr ? snat_for_family(ctx, ep->family)
                         : static_cast<int>((e->value.service >> 16) & 0xFF);
    const auto sport = static_cast<uint16_t>(e->value.service & 0xFFFF);
    bool reopened = false;
    if (m.proto == kProtoTcp) {
        const ConnState before = e->value.state;
        ctx.ct->on_tcp_flags(*e, m.tcp_flags, now);
        // A bare SYN reusing the 4-tuple of a closing flow (the client reused its port
        // right away) is a new connection on the same backend: counted as a new flow.
        reopened = before == ConnState::TcpClosing && e->value.state == ConnState::TcpSynSeen;
    } else {
        ctx.ct->touch(*e, now);
    }
    ctx.count(reopened ? LbCounter::NewFlows : LbCounter::Established);
    return to_endpoint(ctx, buf, len, now, m, headroom, *ep, slot, sport, dsr, dsr_mode,
                       first_frag);
}

/// DSR's encapsulation in place (dsr4_in_place(): IP-in-IP, or GUE with the source port
/// from the key words `kw`) of a frame of stage 1's IPv4 lane (its lengths checked by stage
/// 1), and the MACs, ours -> `mac` (a neighbour slot word). The frame moves into its
/// headroom (>= dsr4_overhead(mode)).
SLUICE_ALWAYS_INLINE void dsr4_lane(LbFrame& f, FwdMode mode, const conntrack_detail::KeyWords& kw,
                                    const uint8_t* src4, const uint8_t* dst4, uint64_t mac,
                                    const Mac& our) noexcept {
    const uint32_t inner_len = load_be16(f.data + kEthHdrLen + 2);
    const uint32_t kh =
        mode == FwdMode::DsrGue
            ? packet_key_hash_v4(static_cast<uint32_t>(kw.src_lo), static_cast<uint32_t>(kw.dst_lo),
                                 conntrack_detail::src_port_of(kw),
                                 conntrack_detail::dst_port_of(kw), conntrack_detail::proto_of(kw))
            : 0;
    const uint32_t moved = dsr4_in_place(f.data, mode, inner_len, src4, dst4, kh);
    set_macs_word(f.data - moved, mac, our);
    f.headroom -= moved;
    f.len = kEthHdrLen + moved + inner_len;
}

/// A packet of a flow in state `st` that changes nothing in it but its idle stamp: TCP
/// established without SYN, FIN or RST, or UDP. What the lanes of stage 2 (established_v4,
/// return_v4) take; anything else goes through the general path's state tracking.
SLUICE_ALWAYS_INLINE bool quiet_established(ConnState st, uint8_t proto,
                                            uint8_t tcp_flags) noexcept {
    return proto == kProtoTcp ? st == ConnState::TcpEstablished &&
                                    (tcp_flags & (kTcpSyn | kTcpFin | kTcpRst)) == 0
                              : st == ConnState::Udp;
}

/// The established IPv4 lane of stage 2: a frame whose flow stage 1b found (the hint), with
/// nothing to decide: the entry live and holding the key, TCP established without
/// SYN/FIN/RST (or UDP), the endpoint still in the snapshot (IPv4), its next hop known,
/// TTL > 1. Then it does exactly what flow_path() does for that frame (refresh, endpoint
/// hint, full-NAT rewrite or DSR encapsulation, counters) and returns true with `out` set;
/// otherwise it has changed nothing and returns false, and flow_path() handles the frame.
/// The general path's branches for IPv6, fragments, TCP state changes and new flows, and
/// its stack traffic, stay off the most common packet (docs/adr/0015).
/// `pre`: the frame's stage-1 state; `m` its PacketMeta, written here for a DSR flow when
/// `pre.lite` (stage 1 did not).
SLUICE_ALWAYS_INLINE bool established_v4(LbContext& ctx, const ServiceTable& table, LbFrame& f,
                                          PacketMeta& m, const LbFlowPre& pre, ConnEntry* e,
                                          const L4Service* svc, uint32_t now,
                                          LbAction& out) noexcept {
    const uint8_t ttl = pre.ttl, proto = conntrack_detail::proto_of(pre.kw);
    const uint8_t tcp_flags = pre.tcp_flags;
    const conntrack_detail::KeyWords& kw = pre.kw;
    if (e == nullptr || svc == nullptr || pre.family != 4 || ttl <= 1 || svc->to_l7) {
        return false;
    }
    if (!quiet_established(e->value.state, proto, tcp_flags)) {
        return false;
    }
    const uint32_t service = e->value.service;
    if (!conntrack_detail::key_equal(e->key, kw) || ctx.ct->expired(*e, now)) {
        return false;
    }
    uint16_t hint_index = e->value.generation;
    const L4Endpoint* ep = endpoint_of(table, *svc, e->value, &hint_index);
    if (ep == nullptr || ep->reject || ep->family != 4) {
        return false;
    }
    const uint64_t mac = ctx.neighbors->find_word(4, ep->addr, ep->nb_hash);
    if (mac == 0) {
        return false;
    }
    e->value.generation = hint_index;
    e->value.last_seen = now;
    ctx.count(LbCounter::Established);
    if (service == kDsrFlow) [[unlikely]] {
        // DSR (the flow's kind, the service's encapsulation), as to_endpoint() does it.
        const FwdMode mode = svc->mode == FwdMode::DsrGue ? FwdMode::DsrGue : FwdMode::DsrIpip;
        if (pre.lite && ctx.snat_first4 >= 0 &&
            dsr4_in_place_fits(mode, ep->family, f.headroom,
                               load_be16(f.data + kEthHdrLen + 2))) [[likely]] {
            // IPIP or GUE over IPv4 from stage 1's lane: the bytes dsr_forward() writes,
            // built here.
            dsr4_lane(f, mode, kw, ctx.snat[static_cast<size_t>(ctx.snat_first4)].second.data(),
                      ep->addr.data(), mac, ctx.our_mac);
            ctx.count(LbCounter::TxPackets);
            out = LbAction::Tx;
            return true;
        }
        if (pre.lite) {
            lb_detail::lite_meta(f, pre, m);
        }
        Mac next_hop;
        std::memcpy(next_hop.data(), &mac, 6); // as set_macs_word
        if (!dsr_forward(ctx, m, mode, *ep, next_hop, std::span<uint8_t>(f.data, f.cap), f.len,
                         &f.headroom)) {
            out = LbAction::Drop;
            return true;
        }
    } else {
        pkt_detail::dnat_snat_v4(f.data + pre.l3_off, f.data + pre.l4_off, proto,
                                 ctx.snat[(service >> 16) & 0xFF].second.data(),
                                 static_cast<uint16_t>(service & 0xFFFF), ep->addr.data(),
                                 ep->port);
        set_macs_word(f.data, mac, ctx.our_mac);
    }
    ctx.count(LbCounter::TxPackets);
    out = LbAction::Tx;
    return true;
}

/// Every frame that is not a whole TCP/UDP datagram: parse drops, ARP, ICMP echo, neighbour
/// discovery, ICMP errors, fragments (a first TCP/UDP fragment takes the flow path).
[[gnu::noinline]] LbAction process_other(LbContext& ctx, const ServiceTable& table,
                                         std::span<uint8_t> buf, uint32_t& len, uint32_t now,
                                         PacketMeta& m, uint32_t* headroom) noexcept {
    const std::span<uint8_t> frame = buf.subspan(0, len);
    const Verdict v = m.verdict;
    if (v == Verdict::Drop) {
        if (m.drop == DropReason::UnsupportedIcmp && on_neighbor_advert(ctx, frame, m)) {
            // learned (counted as NdLearned); the kernel may be waiting for it too
            return ctx.exception ? to_host(ctx, LbCounter::NdLearned) : LbAction::Drop;
        }
        ++ctx.drops[static_cast<size_t>(m.drop)];
        return dropped(ctx, LbCounter::ParseDrop);
    }
    if (v == Verdict::Arp) {
        Mac sender{};
        std::memcpy(sender.data(), frame.data() + m.l3_off + 8, 6);
        const Addr spa = to_table_addr(4, m.key.src);
        ctx.neighbors->learn(4, spa, sender);
        const Addr tpa = to_table_addr(4, m.key.dst);
        if (m.arp_op == 1 && (table.is_vip(4, tpa) || snat_slot(ctx, 4, tpa) >= 0) &&
            make_arp_reply(m, frame, ctx.our_mac)) {
            return sent(ctx, LbCounter::ArpReplies);
        }
        return to_host(ctx, LbCounter::NotForUs);
    }
    if (v == Verdict::IcmpEcho) {
        const Addr dst = to_table_addr(m.family, m.key.dst);
        if (table.is_vip(m.family, dst) || snat_slot(ctx, m.family, dst) >= 0) {
            if (make_icmp_echo_reply(m, frame)) {
                return sent(ctx, LbCounter::EchoReplies);
            }
        }
        return to_host(ctx, LbCounter::NotForUs);
    }
    if (v == Verdict::NeighborSolicit) {
        return on_neighbor_solicit(ctx, table, buf, frame, m, len);
    }
    if (v == Verdict::IcmpError) {
        return on_icmp_error(ctx, table, buf, frame, m, len, now, headroom);
    }
    // A first fragment of a TCP/UDP datagram (it has the ports) takes the flow path, which
    // remembers its translation for the later fragments (FragTable).
    if (v == Verdict::Fragment && m.frag_first && (m.proto == kProtoTcp || m.proto == kProtoUdp)) {
        return flow_path(ctx, table, buf, len, now, m, headroom, 0, nullptr, nullptr, nullptr,
                         /*first_frag=*/true);
    }
    if (v == Verdict::Fragment) {
        return on_fragment(ctx, frame, m, now);
    }
    return to_host(ctx, LbCounter::NotForUs);
}

} // namespace

LbAction lb_process(LbContext& ctx, const ServiceTable& table, std::span<uint8_t> buf,
                    uint32_t& len, uint32_t now, uint32_t* headroom) noexcept {
    PacketMeta m;
    (void)parse_packet(std::span<const uint8_t>(buf.data(), len), m);
    ctx.count(LbCounter::RxPackets);
    if (m.verdict == Verdict::Forward) [[likely]] {
        return flow_path(ctx, table, buf, len, now, m, headroom, 0, nullptr, nullptr, nullptr,
                         /*first_frag=*/false);
    }
    return process_other(ctx, table, buf, len, now, m, headroom);
}

namespace {

/// The table address (IPv4 in bytes 0..3) of an IPv4 address as read from a frame, built
/// as words (as to_table_addr(), for the same reason).
SLUICE_ALWAYS_INLINE Addr v4_table_addr(uint32_t a) noexcept {
    const uint64_t w[2] = {a, 0};
    Addr r;
    std::memcpy(r.data(), w, sizeof(w));
    return r;
}

/// service_of() from a frame's key words (stage 1's): the destination address is the
/// table's layout in dst_lo/dst_hi (see key_words()).
SLUICE_ALWAYS_INLINE const L4Service* service_of(const ServiceTable& table,
                                                 const conntrack_detail::KeyWords& kw) noexcept {
    const uint64_t w[2] = {kw.dst_lo, kw.dst_hi};
    Addr dst;
    std::memcpy(dst.data(), w, sizeof(w));
    return table.find(conntrack_detail::family_of(kw), dst, conntrack_detail::proto_of(kw),
                      conntrack_detail::dst_port_of(kw));
}

using conntrack_detail::dst_port_of;
using conntrack_detail::proto_of;

} // namespace

namespace {

/// The return-traffic lane of stage 2 (ADR 0015): a frame of stage 1's IPv4 lane to SNAT
/// address `pre.rslot` whose flow is live behind its SNAT port with nothing to decide (TCP
/// established without SYN/FIN/RST, or UDP; TTL > 1; the client's MAC known by its peer
/// index) is refreshed, rewritten and counted exactly as return_path() would; otherwise
/// nothing is changed and false returned.
SLUICE_ALWAYS_INLINE bool return_v4(LbContext& ctx, uint8_t* frame, const LbFlowPre& pre,
                                    uint32_t now) noexcept {
    const uint16_t dport = dst_port_of(pre.kw);
    const uint8_t proto = proto_of(pre.kw);
    ConnEntry* e = *port_slot(ctx, pre.rslot, dport); // (a lane frame: ctx.ports is set)
    if (e == nullptr || pre.ttl <= 1 || (e->value.service & 0xFFFF) != dport ||
        e->key.proto != proto || ctx.ct->expired(*e, now)) {
        return false;
    }
    if (!quiet_established(e->value.state, proto, pre.tcp_flags)) {
        return false;
    }
    const uint64_t mac = ctx.peers.word(e->value.flags);
    if (mac == 0 || e->key.family != 4) {
        return false;
    }
    e->value.last_seen = now;
    pkt_detail::dnat_snat_v4(frame + pre.l3_off, frame + pre.l4_off, proto, e->key.dst.data(),
                             e->key.dst_port, e->key.src.data(), e->key.src_port);
    set_macs_word(frame, mac, ctx.our_mac);
    ctx.count(LbCounter::ReturnPackets);
    ctx.count(LbCounter::TxPackets);
    return true;
}

/// Stage 2 for a frame of stage 1's IPv4 lane that left the established lane: parsed into
/// `m` now, then flow_path() as for any frame. Out of line: the established loop keeps
/// its registers.
[[gnu::noinline]] LbAction lite_general(LbContext& ctx, const ServiceTable& table, LbFrame& f,
                                        PacketMeta& m, uint32_t now, uint64_t h, ConnEntry* hint,
                                        const LbFlowPre& pre, const L4Service* svc) noexcept {
    lb_detail::lite_meta(f, pre, m);
    return flow_path(ctx, table, std::span<uint8_t>(f.data, f.cap), f.len, now, m, &f.headroom,
                     h, hint, &pre, svc, /*first_frag=*/false);
}

} // namespace

void lb_burst_parse(const LbContext& ctx, LbBurst& burst, const LbFrame* frames, uint16_t first,
                    uint16_t count) noexcept {
    const uint16_t end = static_cast<uint16_t>(first + count);
    // The lines this stage prefetches (conntrack signature lines, return traffic's SNAT
    // port slots), collected here and prefetched by the loop at the end: a prefetch that
    // misses the TLB blocks retirement until its page walk ends, and among the parse's
    // instructions only a few of them would be in flight at a time (ConnTrack::
    // probe_lines(); measured: 1M flows, own work per established packet -18%).
    const void* lines[LbBurst::kMax * ConnTrack::kProbeLines];
    uint32_t nl = 0;
    auto port_line = [&](int rslot, uint16_t port) {
        if (ConnEntry* const* p = port_slot(ctx, rslot, port); p != nullptr) {
            lines[nl++] = p;
        }
    };
    for (uint16_t i = first; i < end; ++i) {
        PacketMeta& m = burst.meta[i];
        LbFlowPre& pre = burst.pre[i];
        burst.hash[i] = 0;
        pre.lite = false;
        pkt_detail::Ipv4Fast f;
        conntrack_detail::KeyWords kw; // (the general path's key: hashed from registers)
        if (pkt_detail::ipv4_fast_check(frames[i].data, frames[i].len > 0xFFFF ? 0xFFFF : frames[i].len,
                                        ParseOptions{}, f)) [[likely]] {
            const int rslot = snat_slot(ctx, 4, v4_table_addr(f.dst));
            if ((f.tcp_flags & kTcpSyn) == 0 && (rslot < 0 || ctx.ports != nullptr)) [[likely]] {
                // Stage 1's IPv4 lane: no PacketMeta (stage 2 parses the frame again only
                // if it leaves the established lane).
                pre.lite = true;
                pre.rslot = static_cast<int8_t>(rslot);
                pre.family = 4;
                pre.ttl = f.ttl;
                pre.tcp_flags = f.tcp_flags;
                pre.l3_off = kEthHdrLen;
                pre.l4_off = kEthHdrLen + kIpv4HdrLen;
                kw = {f.src, 0, f.dst, 0,
                      uint64_t{f.ports} | conntrack_detail::rest_word(0, 0, 4, f.proto)};
                pre.kw = kw;
                if (rslot >= 0) {
                    port_line(rslot, f.dst_port); // return traffic
                    continue;
                }
                // Hashed from the words in registers (the high address words are constant
                // zeros here), not read back from `pre`.
                const uint64_t h = conntrack_detail::hash_words(kw);
                if (h != 0) [[likely]] {
                    pre.probe = ctx.ct->probe_of(h);
                    nl += ctx.ct->probe_lines(pre.probe, lines + nl);
                    burst.hash[i] = h;
                    continue;
                }
                // Hash 0 means "no stage-1 state" to the later stages (and a lite frame
                // without a hash would read as return traffic): this frame takes the
                // general path, with its PacketMeta (its flow looked up from scratch).
                lb_detail::lite_meta(frames[i], pre, m);
                pre.lite = false;
                continue;
            } else {
                std::memset(static_cast<void*>(&m), 0, sizeof(m));
                pkt_detail::fill_meta_v4(m, f, frames[i].data);
                if (rslot >= 0) {
                    // Return traffic (or, without a port table, a frame to refuse): stage
                    // 2's general path.
                    port_line(rslot, m.key.dst_port);
                    continue;
                }
                kw = key_words(m);
            }
        } else {
            if (parse_packet(frames[i].data, frames[i].len, m) != Verdict::Forward) {
                continue;
            }
            if (const int rslot = snat_slot(ctx, m.family, to_table_addr(m.family, m.key.dst));
                rslot >= 0) {
                port_line(rslot, m.key.dst_port); // return traffic
                continue;
            }
            kw = key_words(m);
        }
        pre.kw = kw;
        pre.family = m.family;
        pre.ttl = m.ttl;
        pre.tcp_flags = m.tcp_flags;
        pre.l3_off = m.l3_off;
        pre.l4_off = m.l4_off;
        const uint64_t h = conntrack_detail::hash_words(kw);
        pre.probe = ctx.ct->probe_of(h);
        nl += ctx.ct->probe_lines(pre.probe, lines + nl);
        burst.hash[i] = h; // (a flow whose hash is 0 is looked up from scratch in stage 2)
    }
    for (uint32_t j = 0; j < nl; ++j) {
        prefetch_read(lines[j]);
    }
}

void lb_burst_run(LbContext& ctx, const ServiceTable& table, LbBurst& burst, LbFrame* frames,
                  uint16_t n, uint32_t now, LbAction* out) noexcept {
    // Stage 1b: the entries behind the signature lines stage 1 prefetched; for a flow no
    // signature matched (new, most likely) the slot its insert will take instead, and in
    // stage 1c its Maglev slot. Neither for TCP past the half-open budget (a SYN flood):
    // nothing is inserted then and full-NAT refuses before the pick, so those prefetches
    // would only take line-fill buffers from the lookups (docs/performance.md: a Maglev
    // prefetch for refused SYNs cost the flood rate ~20%).
    const bool budget_spent = ctx.ct->half_open_full();
    for (uint16_t i = 0; i < n; ++i) {
        ConnEntry* hint = nullptr;
        if (burst.hash[i] != 0) {
            const bool refused = budget_spent && proto_of(burst.pre[i].kw) == kProtoTcp;
            hint = ctx.ct->prefetch_entry(burst.pre[i].probe, !refused);
        } else if (burst.pre[i].lite) {
            // Return traffic of stage 1's IPv4 lane: the flow's entry.
            const LbFlowPre& pre = burst.pre[i];
            if (ConnEntry* e = *port_slot(ctx, pre.rslot, dst_port_of(pre.kw)); e != nullptr) {
                prefetch_write(e);
            }
        } else if (burst.meta[i].verdict == Verdict::Forward) {
            ConnEntry* const* p = snat_port_slot(ctx, burst.meta[i]);
            if (p != nullptr && *p != nullptr) {
                prefetch_write(*p); // return traffic: the flow's entry
            }
        }
        burst.hint[i] = hint;
    }
    // Stage 1c, a pass of its own so that the entries prefetched above have its length to
    // arrive before stage 2 reads the first of them: the services. A frame to the same
    // listener as the one before it (destination address, port and protocol: the key words
    // but the source port) reuses its lookup: three compares instead of a hash and a probe.
    constexpr uint64_t kNotSrcPort = ~uint64_t{0xFFFF}; // KeyWords::rest: source port bits 0..15
    uint64_t last_lo = 0, last_hi = 0, last_rest = 0; // rest 0: no family, matches no frame
    const L4Service* last_svc = nullptr;
    for (uint16_t i = 0; i < n; ++i) {
        if (const uint64_t h = burst.hash[i]; h != 0) {
            const conntrack_detail::KeyWords& kw = burst.pre[i].kw;
            const uint64_t rest = kw.rest & kNotSrcPort;
            if (kw.dst_lo != last_lo || kw.dst_hi != last_hi || rest != last_rest) {
                last_svc = service_of(table, kw);
                last_lo = kw.dst_lo;
                last_hi = kw.dst_hi;
                last_rest = rest;
            }
            const L4Service* svc = last_svc;
            burst.svc[i] = svc;
            const bool refused = budget_spent && proto_of(kw) == kProtoTcp;
            if (burst.hint[i] == nullptr && svc != nullptr &&
                (!refused || svc->mode != FwdMode::FullNat)) {
                svc->maglev.prefetch(h);
            }
        }
    }
    // Stage 2.
    ctx.counters[static_cast<size_t>(LbCounter::RxPackets)] += n;
    for (uint16_t i = 0; i < n; ++i) {
        LbFrame& f = frames[i];
        PacketMeta& m = burst.meta[i];
        const std::span<uint8_t> buf(f.data, f.cap);
        if (const uint64_t h = burst.hash[i]; h != 0) [[likely]] {
            const LbFlowPre& pre = burst.pre[i];
            if (established_v4(ctx, table, f, m, pre, burst.hint[i], burst.svc[i], now,
                               out[i])) [[likely]] {
                continue;
            }
            if (pre.lite) {
                out[i] = lite_general(ctx, table, f, m, now, h, burst.hint[i], pre,
                                      burst.svc[i]);
                continue;
            }
            out[i] = flow_path(ctx, table, buf, f.len, now, m, &f.headroom, h, burst.hint[i],
                               &burst.pre[i], burst.svc[i], /*first_frag=*/false);
        } else if (burst.pre[i].lite) {
            if (!return_v4(ctx, f.data, burst.pre[i], now)) {
                lb_detail::lite_meta(f, burst.pre[i], m); // the general path wants it
                out[i] = flow_path(ctx, table, buf, f.len, now, m, &f.headroom, 0, nullptr,
                                   nullptr, nullptr, /*first_frag=*/false);
            } else {
                out[i] = LbAction::Tx;
            }
        } else if (m.verdict == Verdict::Forward) {
            out[i] = flow_path(ctx, table, buf, f.len, now, m, &f.headroom, 0, nullptr, nullptr,
                               nullptr, /*first_frag=*/false);
        } else {
            out[i] = process_other(ctx, table, buf, f.len, now, m, &f.headroom);
        }
    }
}

} // namespace sluice::dp
