#pragma once

/// @file
/// The L4 load-balancing decision for one frame, on plain bytes (the DPDK worker passes
/// rte_pktmbuf_mtod data; tests pass vectors): ARP and ICMP echo for sluice's addresses,
/// full-NAT of TCP/UDP flows to a Maglev-chosen endpoint with per-lcore connection tracking,
/// and the reverse translation of the backends' answers.
///
/// Flow state (ConnEntry, 64 bytes) holds no snapshot pointer or index that a table change
/// could invalidate (STYLE H4): ConnValue.backend is the endpoint's stable id (hash of its
/// address and port), ConnValue.generation an index hint checked against that id, and
/// ConnValue.service the SNAT port (low 16 bits) and SNAT address slot (bits 16..23).
/// An established flow therefore keeps its backend across table and backend-set changes,
/// and ends when its backend is removed.
/// Thread: worker (the lcore that owns the LbContext); no allocation, lock or syscall.

#include <array>
#include <cstdint>
#include <span>

#include "conntrack.h"
#include "conntrack_fp.h"
#include "packet_fp.h"
#include "service_table.h"

namespace sluice::dp {

enum class LbAction : uint8_t { Tx, Drop };

enum class LbCounter : uint8_t {
    RxPackets,
    TxPackets,
    ArpReplies,
    ArpRequests,
    EchoReplies,
    NewFlows,
    Established,
    ReturnPackets,
    StatelessFallback,
    NoService,
    NoBackend,
    Rejected,
    NoNeighbor,
    NoSnatPort,
    BackendGone,
    NotForUs,
    L7NotReady,
    ParseDrop,
    Count,
};
inline constexpr size_t kLbCounterCount = static_cast<size_t>(LbCounter::Count);

/// Fixed-size neighbour table (IP -> MAC), learned from ARP. Open addressing, no removal.
struct NeighborTable {
    static constexpr size_t kSlots = 4096;
    struct Slot {
        uint8_t family = 0; ///< 0 = empty
        Addr addr{};
        Mac mac{};
    };
    std::array<Slot, kSlots> slots{};

    [[nodiscard]] const Mac* find(uint8_t family, const Addr& a) const noexcept;
    void learn(uint8_t family, const Addr& a, const Mac& mac) noexcept;
};

/// Per-lcore state of the L4 path. Created on dp-control before the worker starts.
struct LbContext {
    Mac our_mac{};
    std::array<std::pair<uint8_t, Addr>, 4> snat{}; ///< SNAT addresses (family 0 = unused)
    uint16_t port_lo = 1024, port_hi = 65535;        ///< this lcore's SNAT port range
    ConnTrack* ct = nullptr;
    NeighborTable* neighbors = nullptr;
    /// SNAT slot x port -> the flow using it (nullptr = free). 4 x 64 Ki pointers.
    std::array<std::array<ConnEntry*, 65536>, 4>* ports = nullptr;
    std::array<uint16_t, 4> port_cursor{};
    std::array<uint64_t, kLbCounterCount> counters{};
    std::array<uint64_t, kDropReasonCount> drops{};

    void count(LbCounter c) noexcept { ++counters[static_cast<size_t>(c)]; }
};

/// Converts between the packet layer's addresses (IPv4 in bytes 12..15) and the tables'
/// (IPv4 in bytes 0..3).
[[nodiscard]] Addr to_table_addr(uint8_t family, const Addr16& a) noexcept;
[[nodiscard]] Addr16 to_packet_addr(uint8_t family, const Addr& a) noexcept;

/// Stable id of an endpoint (address + port), equal in every snapshot.
[[nodiscard]] uint32_t endpoint_id(const L4Endpoint& e) noexcept;

/// Handles one frame in place. `len` may change (replies). `now` is a ms tick.
/// Thread: worker; no allocation.
[[nodiscard]] LbAction lb_process(LbContext& ctx, const ServiceTable& table,
                                  std::span<uint8_t> buf, uint32_t& len, uint32_t now) noexcept;

} // namespace sluice::dp
