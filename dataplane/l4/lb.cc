#include "lb_fp.h"

#include <cstring>

namespace sluice::dp {

namespace {

uint64_t addr_hash(uint8_t family, const Addr& a) noexcept {
    uint64_t h = 0x9e3779b97f4a7c15ULL ^ family;
    for (size_t i = 0; i < a.size(); i += 8) {
        uint64_t w;
        std::memcpy(&w, a.data() + i, 8);
        h = (h ^ w) * 0xff51afd7ed558ccdULL;
        h ^= h >> 29;
    }
    return h;
}

FlowKey flow_key(const PacketMeta& m) noexcept {
    FlowKey k;
    k.family = m.family;
    k.proto = m.proto;
    k.src = to_table_addr(m.family, m.key.src);
    k.dst = to_table_addr(m.family, m.key.dst);
    k.src_port = m.key.src_port;
    k.dst_port = m.key.dst_port;
    return k;
}

int snat_slot(const LbContext& ctx, uint8_t family, const Addr& a) noexcept {
    for (size_t i = 0; i < ctx.snat.size(); ++i) {
        if (ctx.snat[i].first == family && ctx.snat[i].second == a) {
            return static_cast<int>(i);
        }
    }
    return -1;
}

int snat_for_family(const LbContext& ctx, uint8_t family) noexcept {
    for (size_t i = 0; i < ctx.snat.size(); ++i) {
        if (ctx.snat[i].first == family) {
            return static_cast<int>(i);
        }
    }
    return -1;
}

/// Frees flows whose SNAT port owner expired, then takes the next free port.
int alloc_port(LbContext& ctx, int slot, uint32_t now) noexcept {
    auto& owners = (*ctx.ports)[slot];
    const uint32_t span = static_cast<uint32_t>(ctx.port_hi - ctx.port_lo) + 1;
    uint16_t& cur = ctx.port_cursor[slot];
    for (uint32_t tries = 0; tries < span; ++tries) {
        const uint16_t port = static_cast<uint16_t>(ctx.port_lo + (cur++ % span));
        ConnEntry* e = owners[port];
        if (!e || ctx.ct->expired(*e, now) || (e->value.service & 0xFFFF) != port) {
            return port;
        }
    }
    return -1;
}

const L4Endpoint* endpoint_of(const ServiceTable& t, const L4Service& s, const ConnValue& v,
                              uint16_t* hint_out) noexcept {
    const uint32_t hint = v.generation;
    if (hint < s.n_endpoints && endpoint_id(t.endpoints[s.first_endpoint + hint]) == v.backend) {
        return &t.endpoints[s.first_endpoint + hint];
    }
    for (uint32_t i = 0; i < s.n_endpoints; ++i) {
        if (endpoint_id(t.endpoints[s.first_endpoint + i]) == v.backend) {
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

Addr to_table_addr(uint8_t family, const Addr16& a) noexcept {
    Addr out{};
    if (family == 4) {
        std::memcpy(out.data(), a.data() + 12, 4);
    } else {
        std::memcpy(out.data(), a.data(), 16);
    }
    return out;
}

Addr16 to_packet_addr(uint8_t family, const Addr& a) noexcept {
    Addr16 out{};
    if (family == 4) {
        std::memcpy(out.data() + 12, a.data(), 4); // as addr_from_v4()
    } else {
        std::memcpy(out.data(), a.data(), 16);
    }
    return out;
}

uint32_t endpoint_id(const L4Endpoint& e) noexcept {
    const uint64_t h = addr_hash(e.family, e.addr) ^ (uint64_t(e.port) * 0x9e3779b97f4a7c15ULL);
    const auto id = static_cast<uint32_t>(h ^ (h >> 32));
    return id == 0 ? 1 : id;
}

const Mac* NeighborTable::find(uint8_t family, const Addr& a) const noexcept {
    size_t i = addr_hash(family, a) & (kSlots - 1);
    for (size_t n = 0; n < kSlots; ++n, i = (i + 1) & (kSlots - 1)) {
        if (slots[i].family == 0) {
            return nullptr;
        }
        if (slots[i].family == family && slots[i].addr == a) {
            return &slots[i].mac;
        }
    }
    return nullptr;
}

void NeighborTable::learn(uint8_t family, const Addr& a, const Mac& mac) noexcept {
    size_t i = addr_hash(family, a) & (kSlots - 1);
    for (size_t n = 0; n < kSlots; ++n, i = (i + 1) & (kSlots - 1)) {
        if (slots[i].family == 0 || (slots[i].family == family && slots[i].addr == a)) {
            slots[i] = {family, a, mac};
            return;
        }
    }
    // Full: keep the old entries (a neighbour storm cannot evict the next hops in use).
}

LbAction lb_process(LbContext& ctx, const ServiceTable& table, std::span<uint8_t> buf,
                    uint32_t& len, uint32_t now) noexcept {
    ctx.count(LbCounter::RxPackets);
    PacketMeta m;
    const std::span<uint8_t> frame = buf.subspan(0, len);
    const Verdict v = parse_packet(std::span<const uint8_t>(frame.data(), frame.size()), m);
    auto drop = [&](LbCounter c) {
        ctx.count(c);
        return LbAction::Drop;
    };
    auto tx = [&]() {
        ctx.count(LbCounter::TxPackets);
        return LbAction::Tx;
    };
    if (v == Verdict::Drop) {
        ++ctx.drops[static_cast<size_t>(m.drop)];
        return drop(LbCounter::ParseDrop);
    }
    if (v == Verdict::Arp) {
        Mac sender{};
        std::memcpy(sender.data(), frame.data() + m.l3_off + 8, 6);
        const Addr spa = to_table_addr(4, m.key.src);
        ctx.neighbors->learn(4, spa, sender);
        const Addr tpa = to_table_addr(4, m.key.dst);
        if (m.arp_op == 1 && (table.is_vip(4, tpa) || snat_slot(ctx, 4, tpa) >= 0) &&
            make_arp_reply(m, frame, ctx.our_mac)) {
            ctx.count(LbCounter::ArpReplies);
            return tx();
        }
        return drop(LbCounter::NotForUs);
    }
    const Addr dst = to_table_addr(m.family, m.key.dst);
    if (v == Verdict::IcmpEcho) {
        if (table.is_vip(m.family, dst) || snat_slot(ctx, m.family, dst) >= 0) {
            if (make_icmp_echo_reply(m, frame)) {
                ctx.count(LbCounter::EchoReplies);
                return tx();
            }
        }
        return drop(LbCounter::NotForUs);
    }
    if (v != Verdict::Forward) {
        // Fragments, ICMP errors and neighbour discovery: issue 3 follow-ups.
        return drop(LbCounter::NotForUs);
    }
    FlowKey key = flow_key(m);

    // Return traffic: a backend answering one of our SNAT addresses.
    if (const int slot = snat_slot(ctx, m.family, dst); slot >= 0) {
        ConnEntry* e = (*ctx.ports)[slot][m.key.dst_port];
        if (!e || ctx.ct->expired(*e, now) || (e->value.service & 0xFFFF) != m.key.dst_port ||
            e->key.proto != m.proto) {
            return drop(LbCounter::BackendGone);
        }
        const FlowKey client = e->key;
        if (m.proto == kProtoTcp) {
            ctx.ct->on_tcp_flags(*e, m.tcp_flags, now);
        } else {
            ctx.ct->touch(*e, now);
        }
        const Mac* mac = ctx.neighbors->find(client.family, client.src);
        if (!mac) {
            return drop(LbCounter::NoNeighbor);
        }
        if (!dnat_snat(m, frame, to_packet_addr(client.family, client.dst), client.dst_port,
                       to_packet_addr(client.family, client.src), client.src_port)) {
            return drop(LbCounter::ParseDrop);
        }
        set_macs(frame, ctx.our_mac, *mac);
        ctx.count(LbCounter::ReturnPackets);
        return tx();
    }

    const L4Service* svc = table.find(m.family, dst, m.proto, m.key.dst_port);
    if (!svc) {
        return drop(table.is_vip(m.family, dst) ? LbCounter::NoService : LbCounter::NotForUs);
    }
    if (svc->to_l7) {
        return drop(LbCounter::L7NotReady);
    }
    // Learn the client's MAC for the way back (clients are on-link or behind a router
    // whose MAC this is).
    {
        Mac smac{};
        std::memcpy(smac.data(), frame.data() + 6, 6);
        ctx.neighbors->learn(key.family, key.src, smac);
    }
    const uint64_t h = flow_hash(key);
    ConnEntry* e = ctx.ct->lookup(key, h, now);
    const L4Endpoint* ep = nullptr;
    int slot = -1;
    uint16_t sport = 0;
    if (e) {
        uint16_t hint = e->value.generation;
        ep = endpoint_of(table, *svc, e->value, &hint);
        if (!ep || ep->reject) {
            ctx.ct->erase(*e);
            return drop(LbCounter::BackendGone);
        }
        e->value.generation = hint;
        slot = static_cast<int>((e->value.service >> 16) & 0xFF);
        sport = static_cast<uint16_t>(e->value.service & 0xFFFF);
        if (m.proto == kProtoTcp) {
            ctx.ct->on_tcp_flags(*e, m.tcp_flags, now);
        } else {
            ctx.ct->touch(*e, now);
        }
        ctx.count(LbCounter::Established);
    } else {
        if (m.proto == kProtoTcp && !(m.tcp_flags & kTcpSyn)) {
            // A mid-flow packet of a flow we do not know (table change on another node,
            // or our restart): full-NAT cannot resume it without its SNAT port.
            return drop(LbCounter::BackendGone);
        }
        const uint32_t pick = svc->maglev.pick(h);
        if (pick == kMaglevNoBackend) {
            return drop(LbCounter::NoBackend);
        }
        ep = &table.endpoints[svc->first_endpoint + pick];
        if (ep->reject || ep->family != m.family) {
            // The share of an invalid backendRef, or NAT between families (not supported).
            return drop(LbCounter::Rejected);
        }
        slot = snat_for_family(ctx, ep->family);
        const int port = slot >= 0 ? alloc_port(ctx, slot, now) : -1;
        if (port < 0) {
            return drop(LbCounter::NoSnatPort);
        }
        sport = static_cast<uint16_t>(port);
        ConnValue val;
        val.service = static_cast<uint32_t>(slot) << 16 | sport;
        val.backend = endpoint_id(*ep);
        val.generation = static_cast<uint16_t>(pick);
        const InsertResult ins = ctx.ct->insert(key, h, now, val, m.proto == kProtoTcp);
        if (ins.status == InsertStatus::Inserted) {
            (*ctx.ports)[slot][sport] = ins.entry;
            ctx.count(LbCounter::NewFlows);
        } else {
            // Table full or half-open budget spent: full-NAT needs state for the way back,
            // so the connection is refused rather than half served.
            return drop(LbCounter::StatelessFallback);
        }
    }
    const Mac* mac = ctx.neighbors->find(ep->family, ep->addr);
    if (!mac) {
        const Addr& src = ctx.snat[slot].second;
        if (ep->family == 4 && buf.size() >= 60) {
            len = arp_request(buf, ctx.our_mac, src, ep->addr);
            ctx.count(LbCounter::ArpRequests);
            return tx(); // the client retransmits; by then the neighbour is known
        }
        return drop(LbCounter::NoNeighbor);
    }
    if (!dnat_snat(m, frame, to_packet_addr(ep->family, ctx.snat[slot].second), sport,
                   to_packet_addr(ep->family, ep->addr), ep->port)) {
        return drop(LbCounter::ParseDrop);
    }
    set_macs(frame, ctx.our_mac, *mac);
    return tx();
}

} // namespace sluice::dp
