#pragma once

/// @file
/// The L4 view of an IR: VIP:port/protocol → service, each service with its flattened
/// endpoint list and Maglev table. Built by dp-control beside the live table and published
/// whole (QSBR); workers only read it. find() is an open-addressing probe with no
/// allocation. Thread: build_service_table() dp-control (allocates); find() any.

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "ir.h"
#include "maglev.h"
#include "result.h"

namespace sluice::dp {

using FwdMode = ir::FwdMode; ///< FullNat, DsrIpip, DsrGue (never Inherit in a table)

using Addr = std::array<uint8_t, 16>; ///< IPv6, or IPv4 in bytes 0..3 with family 4

struct L4Endpoint {
    uint8_t family = 4;
    Addr addr{};
    uint16_t port = 0;
    uint32_t weight = 1;
    bool reject = false; ///< share of an invalid backendRef: refuse (TCP RST / ICMP)
    bool draining = false; ///< terminating: no new flows, established ones finish
};

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

struct ServiceTable {
    std::vector<L4Service> services;
    std::vector<L4Endpoint> endpoints;
    std::vector<uint32_t> slots; ///< open addressing, kNone = empty; size power of two
    std::vector<std::pair<uint8_t, Addr>> vips; ///< own addresses (ARP/ND, ICMP echo)

    /// Service for a destination, or nullptr. Thread: any; no allocation.
    [[nodiscard]] const L4Service* find(uint8_t family, const Addr& addr, uint8_t proto,
                                        uint16_t port) const noexcept;
    [[nodiscard]] bool is_vip(uint8_t family, const Addr& addr) const noexcept;
};

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
