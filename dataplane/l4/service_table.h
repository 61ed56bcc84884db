#pragma once

/// @file
/// The L4 view of an IR: VIP:port/protocol → service, each service with its flattened
/// endpoint list and Maglev table. Built by dp-control beside the live table and published
/// whole (QSBR); workers only read it. find() is an open-addressing probe with no
/// allocation. Thread: build_service_table() dp-control (allocates); find() any.

#include <array>
#include <bit>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "ir.h"
#include "maglev.h"
#include "mix.h"
#include "result.h"

namespace sluice::dp {

using FwdMode = ir::FwdMode; ///< FullNat, DsrIpip, DsrGue (never Inherit in a table)

using Addr = std::array<uint8_t, 16>; ///< IPv6, or IPv4 in bytes 0..3 with family 4

/// Address equality as two 8-byte compares (std::array's operator== may call memcmp).
[[nodiscard]] inline bool addr_eq(const Addr& a, const Addr& b) noexcept {
    uint64_t x[2], y[2];
    std::memcpy(x, a.data(), 16);
    std::memcpy(y, b.data(), 16);
    return ((x[0] ^ y[0]) | (x[1] ^ y[1])) == 0;
}

/// Hash of a table address (VIP lookup, neighbours, endpoint ids; per process, no wire format).
[[nodiscard]] inline uint64_t addr_hash(uint8_t family, const Addr& a) noexcept {
    return mix_addr16(0x9e3779b97f4a7c15ULL ^ family, a.data());
}

struct L4Endpoint {
    uint8_t family = 4;
    Addr addr{};
    uint16_t port = 0;
    uint32_t weight = 1;
    bool reject = false; ///< share of an invalid backendRef: refuse (TCP RST / ICMP)
    bool draining = false; ///< terminating: no new flows, established ones finish
    uint32_t id = 0;       ///< endpoint_id(*this), set by build_service_table()
    uint32_t nb_hash = 0;  ///< low bits of addr_hash(family, addr): its NeighborTable home
};

/// Stable id of an endpoint (address + port), equal in every snapshot; conntrack entries
/// hold it (STYLE H4: ids, never pointers). Never 0.
[[nodiscard]] inline uint32_t endpoint_id(const L4Endpoint& e) noexcept {
    const uint64_t h = addr_hash(e.family, e.addr) ^ (uint64_t(e.port) * 0x9e3779b97f4a7c15ULL);
    const auto id = static_cast<uint32_t>(h ^ (h >> 32));
    return id == 0 ? 1 : id;
}

struct L4Service {
    uint32_t listener = ir::kNone; ///< IR listener index
    uint8_t family = 4;
    Addr vip{};
    uint8_t proto = 6; ///< IPPROTO_TCP / IPPROTO_UDP
    uint16_t port = 0;
    bool to_l7 = false; ///< HTTP/HTTPS/TLS listener: hand to the L7 engine
    FwdMode mode = FwdMode::FullNat;
    uint32_t generation = 0; ///< changes when the endpoint set changes
    uint32_t first_endpoint = 0, n_endpoints = 0;
    MaglevTable maglev; ///< indices relative to first_endpoint
};

/// A service's lookup key as three words: the address halves and (port, protocol,
/// family), so find() compares it with three XORs in registers.
struct ServiceKey {
    uint64_t lo = 0, hi = 0, meta = 0;
};
[[nodiscard]] inline ServiceKey service_key(uint8_t family, const Addr& a, uint8_t proto,
                                            uint16_t port) noexcept {
    ServiceKey k;
    std::memcpy(&k.lo, a.data(), 8);
    std::memcpy(&k.hi, a.data() + 8, 8);
    k.meta = uint64_t{port} | uint64_t{proto} << 16 | uint64_t{family} << 24;
    return k;
}

/// One open-addressing slot of ServiceTable::slots.
struct ServiceSlot {
    ServiceKey key;
    uint32_t service = ir::kNone; ///< index into services; kNone = empty
};

struct ServiceTable {
    std::vector<L4Service> services;
    std::vector<L4Endpoint> endpoints;
    std::vector<ServiceSlot> slots; ///< open addressing; size a power of two
    std::vector<std::pair<uint8_t, Addr>> vips; ///< own addresses (ARP/ND, ICMP echo)

    /// Service for a destination, or nullptr. Thread: any; no allocation.
    [[nodiscard]] [[gnu::always_inline]] const L4Service* find(uint8_t family, const Addr& addr,
                                                               uint8_t proto,
                                                               uint16_t port) const noexcept;
    [[nodiscard]] bool is_vip(uint8_t family, const Addr& addr) const noexcept;
};

/// Hash of a service's key (VIP lookup, once per packet): one multiply of the folded key,
/// its high half folded down (find() uses the low bits). Per process, no wire format.
/// Thread: any.
[[nodiscard]] inline uint64_t service_hash(const ServiceKey& k) noexcept {
    const uint64_t h = (k.lo ^ std::rotl(k.hi, 17) ^ (k.meta << 32)) * 0x9e3779b97f4a7c15ULL;
    return h ^ (h >> 29);
}

inline const L4Service* ServiceTable::find(uint8_t family, const Addr& addr, uint8_t proto,
                                           uint16_t port) const noexcept {
    if (slots.empty()) {
        return nullptr;
    }
    const ServiceKey k = service_key(family, addr, proto, port);
    const size_t mask = slots.size() - 1;
    for (size_t i = service_hash(k) & mask, n = 0; n < slots.size(); i = (i + 1) & mask, ++n) {
        const ServiceSlot& sl = slots[i];
        if (sl.service == ir::kNone) {
            return nullptr;
        }
        if (((sl.key.lo ^ k.lo) | (sl.key.hi ^ k.hi) | (sl.key.meta ^ k.meta)) == 0) {
            return &services[sl.service];
        }
    }
    return nullptr;
}

struct ServiceTableOptions {
    uint32_t maglev_size = kMaglevDefaultSize;
    FwdMode default_mode = FwdMode::FullNat;
};

/// Parses "10.0.0.1" or "2001:db8::1". Thread: any.
[[nodiscard]] bool parse_addr(const std::string& s, uint8_t& family, Addr& out) noexcept;

/// Builds the table for every listener of every Gateway address. Fails (NACK) only on
/// limits or addresses that cannot be parsed. Thread: dp-control.
[[nodiscard]] Result<ServiceTable> build_service_table(const ir::Ir& ir,
                                                       const ServiceTableOptions& opts);

} // namespace sluice::dp
