#include "service_table.h"

#include "mix.h"

#include <arpa/inet.h>

#include <cstring>

namespace sluice::dp {

namespace {

} // namespace

bool parse_addr(const std::string& s, uint8_t& family, Addr& out) noexcept {
    out.fill(0);
    if (inet_pton(AF_INET, s.c_str(), out.data()) == 1) {
        family = 4;
        return true;
    }
    if (inet_pton(AF_INET6, s.c_str(), out.data()) == 1) {
        family = 6;
        return true;
    }
    return false;
}

bool ServiceTable::is_vip(uint8_t family, const Addr& addr) const noexcept {
    for (const auto& [f, a] : vips) {
        if (f == family && addr_eq(a, addr)) {
            return true;
        }
    }
    return false;
}

Result<ServiceTable> build_service_table(const ir::Ir& ir, const ServiceTableOptions& opts) {
    ServiceTable t;
    for (const ir::Gateway& g : ir.gateways) {
        for (const std::string& a : g.addresses) {
            uint8_t family = 0;
            Addr vip{};
            if (!parse_addr(a, family, vip)) {
                return fail(Errc::Invalid, "gateway " + g.ns + "/" + g.name + " address '" + a +
                                               "' is not an IP address");
            }
            t.vips.emplace_back(family, vip);
            for (uint32_t li : g.listeners) {
                const ir::Listener& l = ir.listeners[li];
                L4Service s;
                s.listener = li;
                s.family = family;
                s.vip = vip;
                s.port = l.port;
                s.proto = l.protocol == ir::Protocol::UDP ? 17 : 6;
                s.to_l7 = l.protocol == ir::Protocol::HTTP || l.protocol == ir::Protocol::HTTPS ||
                          l.protocol == ir::Protocol::TLS;
                s.mode = l.fwd_mode == FwdMode::Inherit ? opts.default_mode : l.fwd_mode;
                if (!s.to_l7 && l.l4_rule != ir::kNone &&
                    ir.rules[l.l4_rule].fwd_mode != FwdMode::Inherit) {
                    s.mode = ir.rules[l.l4_rule].fwd_mode;
                }
                s.first_endpoint = static_cast<uint32_t>(t.endpoints.size());
                if (!s.to_l7 && l.l4_rule != ir::kNone) {
                    uint64_t gen = 1469598103934665603ULL;
                    for (const ir::Backend& b : ir.rules[l.l4_rule].backends) {
                        if (b.weight == 0) {
                            continue;
                        }
                        if (b.status != 0) {
                            L4Endpoint e;
                            e.weight = b.weight * 840;
                            e.reject = true;
                            t.endpoints.push_back(e);
                            continue;
                        }
                        const ir::BackendGroup& grp = ir.groups[b.group];
                        uint32_t ready = 0;
                        for (const ir::Endpoint& ep : grp.endpoints) {
                            uint8_t ef = 0;
                            Addr ea{};
                            const bool usable = parse_addr(ep.address, ef, ea) &&
                                                (s.mode != FwdMode::FullNat || ef == family);
                            ready += usable && ep.ready && !ep.terminating ? 1 : 0;
                        }
                        for (const ir::Endpoint& ep : grp.endpoints) {
                            L4Endpoint e;
                            if (!parse_addr(ep.address, e.family, e.addr)) {
                                return fail(Errc::Invalid, "endpoint address '" + ep.address +
                                                               "' of " + grp.ns + "/" + grp.name +
                                                               " is not an IP address");
                            }
                            if (s.mode == FwdMode::FullNat && e.family != family) {
                                continue; // full-NAT does not translate between families
                            }
                            e.port = ep.port;
                            e.draining = !ep.ready || ep.terminating;
                            // A backendRef's weight is shared by its ready endpoints
                            // (840 = lcm(1..8) keeps small sets exact).
                            e.weight = e.draining || ready == 0
                                           ? 0
                                           : std::max<uint32_t>(1, b.weight * 840 / ready);
                            for (uint8_t byte : e.addr) {
                                gen = (gen ^ byte) * 1099511628211ULL;
                            }
                            gen = (gen ^ e.port ^ (uint64_t(e.weight) << 16)) * 1099511628211ULL;
                            e.id = endpoint_id(e);
                            e.nb_hash = static_cast<uint32_t>(addr_hash(e.family, e.addr));
                            t.endpoints.push_back(e);
                        }
                    }
                    s.generation = static_cast<uint32_t>(gen ^ (gen >> 32));
                }
                s.n_endpoints = static_cast<uint32_t>(t.endpoints.size()) - s.first_endpoint;
                std::vector<MaglevBackend> mb;
                for (uint32_t i = 0; i < s.n_endpoints; ++i) {
                    const L4Endpoint& e = t.endpoints[s.first_endpoint + i];
                    std::string name(reinterpret_cast<const char*>(e.addr.data()), e.addr.size());
                    name += std::to_string(e.port) + (e.reject ? "reject" + std::to_string(i) : "");
                    mb.push_back({maglev_key(name), e.weight});
                }
                if (!mb.empty()) {
                    s.maglev = MaglevTable::build(mb, opts.maglev_size);
                }
                t.services.push_back(std::move(s));
            }
        }
    }
    size_t cap = 16;
    while (cap < t.services.size() * 2) {
        cap <<= 1;
    }
    t.slots.assign(cap, ServiceSlot{});
    for (uint32_t i = 0; i < t.services.size(); ++i) {
        const L4Service& s = t.services[i];
        if (t.find(s.family, s.vip, s.proto, s.port)) {
            continue; // two Gateways on one address and port: the first one wins
        }
        const ServiceKey k = service_key(s.family, s.vip, s.proto, s.port);
        size_t j = service_hash(k) & (cap - 1);
        while (t.slots[j].service != ir::kNone) {
            j = (j + 1) & (cap - 1);
        }
        t.slots[j] = {k, i};
    }
    return t;
}

} // namespace sluice::dp
