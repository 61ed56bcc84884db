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
/// and ends when its backend is removed. DSR flows (service mode DsrIpip/DsrGue) are
/// encapsulated to the backend instead (dsr_forward); their ConnValue.service is kDsrFlow
/// (no SNAT port), and the backend answers the client directly.
/// Thread: worker (the lcore that owns the LbContext); no allocation, lock or syscall.

#include <array>
#include <atomic>
#include <bit>
#include <cstring>
#include <optional>
#include <cstdint>
#include <span>

#include "conntrack.h"
#include "conntrack_fp.h"
#include "packet_fp.h"
#include "service_table.h"

namespace sluice::dp {

/// Tx: send out the port it came from. Drop: free it. Host: hand it to the kernel through
/// the exception interface (LbContext::exception), unchanged.
enum class LbAction : uint8_t { Tx, Drop, Host };

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
    L7Listener,
    ParseDrop,
    NdAdverts,           ///< neighbour advertisements sent for our addresses
    NdSolicits,          ///< neighbour solicitations sent on an IPv6 next-hop miss
    NdLearned,           ///< neighbour advertisements received (learned, not forwarded)
    IcmpErrorsToClient,  ///< ICMP errors from a backend translated back to the client
    IcmpErrorsToBackend, ///< ICMP errors about client<-VIP packets forwarded to the backend
    IcmpErrorNoFlow,     ///< ICMP errors about no flow we know (or not TCP/UDP): dropped
    TimeExceeded,        ///< ICMP time exceeded sent (TTL / hop limit 1 on a packet to forward)
    TtlDrop,             ///< TTL / hop limit 1 where no error may be sent (ICMP error, fragment)
    FragFirst,           ///< first fragments translated (decision remembered)
    FragTranslated,      ///< later fragments translated with a first fragment's decision
    FragNoState,         ///< later fragments with no first fragment seen (or expired): dropped
    FragUnsupported,     ///< fragments of other protocols than TCP/UDP (ICMP, ...): dropped
    ToHost,              ///< frames handed to the kernel (exception interface)
    FromHost,            ///< frames the kernel sent out through the exception interface
    Redirected,          ///< frames passed to the worker that owns their flow (lb_owner)
    RedirectDrops,       ///< frames dropped because that worker's ring was full
    FromWorkers,         ///< frames other workers passed to this one
    Count,
};
inline constexpr size_t kLbCounterCount = static_cast<size_t>(LbCounter::Count);

/// Counter label (snake_case) for logs and telemetry. Thread: any.
[[nodiscard]] constexpr const char* lb_counter_name(LbCounter c) noexcept {
    constexpr const char* kNames[] = {
        "rx",          "tx",           "arp_replies",   "arp_requests",
        "echo_replies", "new_flows",   "established",   "return",
        "stateless_fallback", "no_service", "no_backend", "rejected",
        "no_neighbor", "no_snat_port", "backend_gone",  "not_for_us",
        "l7_listener", "parse_drop",   "nd_adverts",    "nd_solicits",
        "nd_learned",  "icmp_errors_to_client", "icmp_errors_to_backend", "icmp_error_no_flow",
        "time_exceeded", "ttl_drop",   "frag_first",    "frag_translated",
        "frag_no_state", "frag_unsupported", "to_host", "from_host",
        "redirected",  "redirect_drops", "from_workers",
    };
    static_assert(std::size(kNames) == kLbCounterCount, "one name per LbCounter");
    const auto i = static_cast<size_t>(c);
    return i < kLbCounterCount ? kNames[i] : "invalid";
}

/// Per-lcore memory of the NAT decision taken for the first fragment of a fragmented
/// TCP/UDP datagram, so that its later fragments (which carry no ports) get the same
/// address translation. Keyed by family + protocol + source + destination + fragment id as
/// received; 4-way set associative, fixed size, no allocation; an entry lives kTimeoutMs
/// after the last fragment that used it, and a full set replaces its oldest entry. No
/// reassembly: a later fragment that arrives before its first fragment is dropped and
/// counted (LbCounter::FragNoState); the sender's retransmission recovers.
struct FragTable {
    static constexpr size_t kSlots = 1024;
    static constexpr size_t kWays = 4;
    static constexpr uint32_t kTimeoutMs = 2000;
    struct Slot {
        uint32_t id = 0;
        uint32_t expires = 0; ///< ms tick
        uint8_t family = 0;   ///< 0 = empty
        uint8_t proto = 0;
        Addr16 src{}; ///< as received (packet layout: IPv4 in bytes 12..15)
        Addr16 dst{};
        Addr16 new_src{}; ///< the translation of the first fragment
        Addr16 new_dst{};
    };
    std::array<Slot, kSlots> slots{};

    /// The live entry for a fragment, or nullptr. Refreshes its timeout.
    [[nodiscard]] const Slot* find(const PacketMeta& m, uint32_t now) noexcept;
    /// Remembers the translation `to` (the key after dnat_snat) of the first fragment whose
    /// key as received was `from`.
    void remember(const PacketMeta& m, const PacketKey& from, const PacketKey& to,
                  uint32_t now) noexcept;
};

/// Fixed-size neighbour table (IP -> MAC), learned from ARP, ND and new flows' sources.
/// Open addressing, no removal. One table serves every worker: any worker may learn, any
/// may read, without a lock. Each slot's MAC and family share one 64-bit atomic word (MAC in
/// bits 0..47, family in 56..63), so a reader never sees a torn MAC; a writer claims an
/// empty slot with a compare-and-swap (family kClaimed), writes the address, then publishes
/// the word with release order. Addresses never change once published.
struct NeighborTable {
    static constexpr size_t kSlots = 65536; ///< 1.5 MiB, shared by the workers
    static constexpr size_t kProbe = 16;     ///< bounded linear probing
    static constexpr uint8_t kClaimed = 0xFF; ///< family of a slot being filled
    struct Slot {
        std::atomic<uint64_t> word{0}; ///< 0 = empty; else family << 56 | MAC
        Addr addr{};
    };
    std::array<Slot, kSlots> slots{};

    [[nodiscard]] std::optional<Mac> find(uint8_t family, const Addr& a) const noexcept;
    /// The slot word (family << 56 | MAC; 0 = unknown) of a neighbour whose addr_hash() the
    /// caller already has (L4Endpoint::nb_hash): no hashing and no MAC copy on the hot path.
    [[nodiscard]] uint64_t find_word(uint8_t family, const Addr& a, uint64_t hash) const noexcept {
        size_t i = hash & (kSlots - 1);
        for (size_t n = 0; n < kProbe; ++n, i = (i + 1) & (kSlots - 1)) {
            const uint64_t w = slots[i].word.load(std::memory_order_acquire);
            if (w == 0) {
                return 0;
            }
            if ((w >> 56) == family && addr_eq(slots[i].addr, a)) {
                return w;
            }
        }
        return 0;
    }
    /// Adds or (overwrite) updates a neighbour. ARP and ND update; the source of a new
    /// flow only adds (never replaces a known neighbour's MAC).
    void learn(uint8_t family, const Addr& a, const Mac& mac, bool overwrite = true) noexcept;
};

/// Per-worker memory of which worker owns the flow of a fragmented datagram: its first
/// fragment carries the ports that decide the owner (lb_owner); later fragments carry none
/// and go where their first fragment went. Only the receiving worker reads and writes it.
/// Direct-mapped, fixed size; an entry lives FragTable::kTimeoutMs.
struct FragOwners {
    static constexpr size_t kSlots = 256;
    struct Slot {
        uint32_t id = 0;
        uint32_t expires = 0;
        uint8_t family = 0; ///< 0 = empty
        uint8_t proto = 0;
        uint16_t owner = 0;
        Addr16 src{};
        Addr16 dst{};
    };
    std::array<Slot, kSlots> slots{};
};

/// A MAC (6 bytes at `mac`) as the low 48 bits of a word, as it lies in memory (bytes 0..5,
/// little-endian), built in registers: a zeroed word on the stack filled by a 6-byte copy
/// and read back whole waits on store forwarding (perf: 11% of new_flow's samples).
[[nodiscard]] inline uint64_t mac_word(const uint8_t* mac) noexcept {
    static_assert(std::endian::native == std::endian::little);
    uint32_t lo;
    uint16_t hi;
    std::memcpy(&lo, mac, 4);
    std::memcpy(&hi, mac + 4, 2);
    return uint64_t{lo} | uint64_t{hi} << 32;
}

/// The client-side next hops of one worker's full-NAT flows. A flow's ConnValue.flags is
/// 1 + the index here of the source MAC of its first packet (0: none, the way back looks the
/// client's address up in the NeighborTable). Clients behind a router all share the
/// router's entry, so a million clients take no neighbour-table slots and their answers
/// never miss a next hop; a spoofed source address only steers its own flow's answers.
/// Entries are never removed (a flow may still name one); past kMax distinct MACs (a huge
/// on-link segment) new flows fall back to the NeighborTable. Thread: the owning worker.
struct PeerMacs {
    static constexpr uint32_t kMax = 255;
    std::array<uint64_t, kMax> words{}; ///< MAC in the first 6 bytes (as set_macs_word reads)
    uint32_t count = 0;
    uint32_t last = 0; ///< index of the last match: behind a router, the next one too

    /// 1 + the index of `mac` (6 bytes), added if new and there is room; 0 when full.
    [[nodiscard]] uint8_t intern(const uint8_t* mac) noexcept {
        const uint64_t w = mac_word(mac);
        if (last < count && words[last] == w) {
            return static_cast<uint8_t>(last + 1);
        }
        for (uint32_t i = 0; i < count; ++i) {
            if (words[i] == w) {
                last = i;
                return static_cast<uint8_t>(i + 1);
            }
        }
        if (count == kMax) {
            return 0;
        }
        words[count] = w;
        last = count++;
        return static_cast<uint8_t>(last + 1);
    }
    /// The MAC word of a flow's peer index (ConnValue.flags), or 0 for none.
    [[nodiscard]] uint64_t word(uint8_t index) const noexcept {
        return index != 0 && index <= count ? words[index - 1u] : 0;
    }
};

/// SNAT source addresses per worker: each gives ~64k concurrent full-NAT flows per
/// backend-facing family, so 16 cover a million flows.
inline constexpr size_t kMaxSnat = 16;
/// Owner of each SNAT (address slot, port): the flow's conntrack entry, for return traffic.
using SnatPorts = std::array<std::array<ConnEntry*, 65536>, kMaxSnat>;

/// Per-lcore state of the L4 path. Created on dp-control before the worker starts.
struct LbContext {
    Mac our_mac{};
    std::array<std::pair<uint8_t, Addr>, kMaxSnat> snat{}; ///< SNAT addresses (family 0 = unused)
    uint16_t port_lo = 1024, port_hi = 65535;        ///< SNAT port range (all workers)
    /// This worker's index and the number of workers: its SNAT ports are those of the range
    /// with port % workers == worker, so the owner of return traffic is its destination
    /// port % workers (lb_owner) whatever queue it arrives on.
    uint16_t worker = 0, workers = 1;
    ConnTrack* ct = nullptr;
    NeighborTable* neighbors = nullptr;
    /// SNAT slot x port -> the flow using it (nullptr = free). 4 x 64 Ki pointers.
    SnatPorts* ports = nullptr;
    /// ctx.snat slots by the last byte of their address (bit i = snat[i]), so "is this one of
    /// our SNAT addresses?" costs one load per packet and a compare only on a candidate.
    /// Rebuilt by index_snat(): call it after changing `snat`.
    std::array<uint16_t, 256> snat_by_byte{};
    /// The first snat slot of family 4 / 6 (-1: none): DSR's tunnel source, and where a new
    /// full-NAT flow's port search starts. Rebuilt by index_snat().
    int8_t snat_first4 = -1, snat_first6 = -1;
    std::array<uint8_t, 2> snat_count{}; ///< SNAT addresses of family 4 / 6 (index_snat())
    /// Each SNAT slot's next port, as an index c of this worker's ports (see PortPlan).
    /// Staggered by index_snat(): new flows take the slots in turn, so the cursors advance
    /// in step, and started equal they would read owner words 512 KiB apart, which share
    /// one cache set at every level (16 lines in an 8-way set: a miss per new flow).
    std::array<uint16_t, kMaxSnat> port_cursor{};
    uint8_t snat_next = 0; ///< round robin over SNAT addresses of a family
    /// Per family (0: IPv4, 1: IPv6): the ms tick of the last port search that found
    /// nothing. In that same tick further new flows of the family are refused without a
    /// search, so a SYN flood at port exhaustion costs a compare per SYN, not 64 probes.
    std::array<uint32_t, 2> snat_dry_tick{};
    std::array<bool, 2> snat_dry{};
    std::array<uint64_t, kLbCounterCount> counters{};
    std::array<uint64_t, kDropReasonCount> drops{};
    PeerMacs peers;  ///< client-side next hops of full-NAT flows (~2 KiB)
    FragTable frags; ///< fragments' NAT decisions (~76 KiB, in place)
    FragOwners frag_owners; ///< fragments' owning workers (lb_owner, ~11 KiB)
    /// An exception interface exists: frames for the host (not a VIP's L4 listener, not an
    /// answer sluice gives itself) go to the kernel instead of being dropped: management
    /// traffic, ARP/ND of the kernel's addresses, and the L7 listeners' traffic, which
    /// sluice-l7 serves on the kernel's sockets.
    bool exception = false;
    /// This worker's SNAT ports: first + c * workers for c in [0, span), the ports of
    /// [port_lo, port_hi] with port % workers == worker. Cached for the range and split it
    /// was computed from (alloc_port recomputes it when they change).
    struct PortPlan {
        /// The inputs a plan is computed from, as one word: a new flow checks its plan with
        /// one compare (five, field by field, cost ~10 instructions per new flow).
        static constexpr uint64_t key_of(uint16_t lo, uint16_t hi, uint16_t worker,
                                         uint16_t workers) noexcept {
            return uint64_t{lo} | uint64_t{hi} << 16 | uint64_t{worker} << 32 |
                   uint64_t{workers} << 48;
        }
        uint64_t key = 0;
        uint32_t first = 0, span = 0, stride = 1;
        bool valid = false; ///< computed (a default plan matches no context)
        static PortPlan of(uint16_t lo, uint16_t hi, uint16_t worker, uint16_t workers) noexcept {
            PortPlan p;
            p.key = key_of(lo, hi, worker, workers);
            p.valid = true;
            p.stride = workers ? workers : 1;
            p.first = lo + (worker + p.stride - lo % p.stride) % p.stride;
            p.span = p.first > hi ? 0 : (hi - p.first) / p.stride + 1;
            return p;
        }
    };
    PortPlan port_plan{};

    static constexpr uint16_t kCursorStagger = 521; ///< ports between slots' first cursors

    void count(LbCounter c) noexcept { ++counters[static_cast<size_t>(c)]; }
    /// Rebuilds snat_by_byte, the per-family firsts and counts from snat, and restarts the
    /// port cursors (staggered). Thread: the owner (before the worker starts).
    void index_snat() noexcept {
        snat_by_byte.fill(0);
        snat_first4 = snat_first6 = -1;
        snat_count = {};
        for (size_t i = kMaxSnat; i-- > 0;) {
            if (snat[i].first == 4) {
                snat_first4 = static_cast<int8_t>(i);
                ++snat_count[0];
            } else if (snat[i].first == 6) {
                snat_first6 = static_cast<int8_t>(i);
                ++snat_count[1];
            }
        }
        for (size_t i = 0; i < kMaxSnat; ++i) {
            // 521 ports = 65 cache lines + 8 bytes apart: distinct L1 and L2 sets per slot.
            port_cursor[i] = static_cast<uint16_t>(i * kCursorStagger);
        }
        static_assert(kMaxSnat <= 16, "snat_by_byte holds a 16-bit mask");
        for (size_t i = 0; i < kMaxSnat; ++i) {
            if (snat[i].first == 4 || snat[i].first == 6) {
                snat_by_byte[snat[i].second[snat[i].first == 4 ? 3 : 15]] |=
                    static_cast<uint16_t>(1u << i);
            }
        }
    }
};

/// The ctx.snat slot holding (family, a), or -1. Thread: worker; no state change.
[[nodiscard]] inline int snat_slot(const LbContext& ctx, uint8_t family, const Addr& a) noexcept {
    uint32_t cand = ctx.snat_by_byte[a[family == 4 ? 3 : 15]];
    while (cand != 0) {
        const int i = std::countr_zero(cand);
        cand &= cand - 1;
        if (ctx.snat[i].first == family && addr_eq(ctx.snat[i].second, a)) {
            return i;
        }
    }
    return -1;
}

/// The first ctx.snat slot of `family` (DSR's tunnel source; where a new full-NAT flow's
/// port search starts), or -1. Thread: worker.
[[nodiscard]] inline int snat_for_family(const LbContext& ctx, uint8_t family) noexcept {
    return family == 4 ? ctx.snat_first4 : family == 6 ? ctx.snat_first6 : -1;
}

/// Writes the Ethernet header's MACs: destination from a NeighborTable slot word (the MAC
/// is the word's first 6 bytes in memory, as NeighborTable::learn stores it), source ours.
/// The frame holds >= 12 bytes. Written as two stores built in registers (bytes 0..7: the
/// destination and the source's first two bytes; 8..11 the rest of the source): a 6-byte
/// copy of a register went through the stack.
inline void set_macs_word(uint8_t* frame, uint64_t dst_word, const Mac& src) noexcept {
    static_assert(std::endian::native == std::endian::little);
    constexpr uint64_t kMac48 = (uint64_t{1} << 48) - 1;
    uint16_t s01;
    uint32_t s25;
    std::memcpy(&s01, src.data(), 2);
    std::memcpy(&s25, src.data() + 2, 4);
    const uint64_t w0 = (dst_word & kMac48) | uint64_t{s01} << 48;
    std::memcpy(frame, &w0, 8);
    std::memcpy(frame + 8, &s25, 4);
}

/// Converts between the packet layer's addresses (IPv4 in bytes 12..15) and the tables'
/// (IPv4 in bytes 0..3).
[[nodiscard]] inline Addr to_table_addr(uint8_t family, const Addr16& a) noexcept {
    // Built as two 8-byte words: a 4-byte store into a zeroed array, read back 8 bytes at a
    // time by addr_eq(), would stall on store forwarding.
    uint64_t w[2];
    if (family == 4) {
        uint32_t v;
        std::memcpy(&v, a.data() + 12, 4);
        w[0] = v; // IPv4 in bytes 0..3 (little-endian)
        w[1] = 0;
    } else {
        std::memcpy(w, a.data(), 16);
    }
    static_assert(std::endian::native == std::endian::little);
    Addr out;
    std::memcpy(out.data(), w, 16);
    return out;
}
[[nodiscard]] inline Addr16 to_packet_addr(uint8_t family, const Addr& a) noexcept {
    Addr16 out{};
    if (family == 4) {
        std::memcpy(out.data() + 12, a.data(), 4); // as addr_from_v4()
    } else {
        out = a;
    }
    return out;
}

/// The worker that owns the flow of a frame parsed by lb_burst_parse() (`hash` its
/// LbBurst::hash; 0: computed here when needed),
/// among ctx.workers. Full-NAT return traffic to a SNAT address (and ICMP errors about it):
/// its destination port % workers (lb_owner is why the SNAT ports are split that way).
/// Other TCP/UDP traffic and ICMP errors about a client's flow: a function of the client ->
/// VIP flow's hash (bits 16..47: independent of the conntrack bucket and signature bits).
/// Later fragments: the owner of their first fragment as this worker saw it
/// (ctx.frag_owners), else this worker. Everything else (ARP, ND, echo, frames for the
/// host): this worker. Thread: worker; updates ctx.frag_owners only.
[[nodiscard]] uint16_t lb_owner(LbContext& ctx, const PacketMeta& m, uint64_t hash,
                                uint32_t now) noexcept;

/// Handles one frame in place. `len` may change (replies). `now` is a ms tick.
/// `buf` starts at the frame and extends over the tailroom. `headroom` (optional) gives the
/// bytes before buf.data() that may be written (rte_pktmbuf_headroom); DSR services
/// (FwdMode::DsrIpip / DsrGue) encapsulate into it and lower *headroom by the bytes the
/// frame grew at the front: on Tx the frame starts at buf.data() - (old - new *headroom).
/// Without headroom, DSR packets are dropped (DropReason::NoHeadroom).
/// Thread: worker; no allocation.
[[nodiscard]] LbAction lb_process(LbContext& ctx, const ServiceTable& table,
                                  std::span<uint8_t> buf, uint32_t& len, uint32_t now,
                                  uint32_t* headroom = nullptr) noexcept;

/// One frame of a burst for lb_burst_run(): the buffer as lb_process() takes it.
struct LbFrame {
    uint8_t* data = nullptr; ///< frame start (Ethernet header)
    uint32_t len = 0;        ///< frame bytes; lb_burst_run() leaves the new length here
    uint32_t cap = 0;        ///< bytes writable from data (len + tailroom)
    uint32_t headroom = 0;   ///< bytes writable before data; DSR lowers it (see lb_process)
};

/// What a burst's first stage derived from a TCP/UDP frame for the later ones: the
/// conntrack key as words and the buckets + signature of its hash.
struct LbFlowPre {
    conntrack_detail::KeyWords kw{};
    ConnTrack::Probe probe{};
    /// Stage 1's IPv4 lane (ADR 0015): the frame has the straight-line shape
    /// (pkt_detail::ipv4_fast_check) and is no SYN, and its PacketMeta was not written:
    /// stage 2 parses it only if it leaves the established lane. With a hash: client ->
    /// VIP; without (hash 0): return traffic to SNAT address `rslot` (`kw` holds its words
    /// all the same: the SNAT port is its destination port).
    bool lite = false;
    int8_t rslot = -1;
    /// What stage 2's established lane reads of every frame with a hash (lite or not);
    /// protocol, ports and addresses are in `kw`.
    uint8_t family = 0;
    uint8_t ttl = 0;
    uint8_t tcp_flags = 0;
    uint16_t l3_off = 0;
    uint16_t l4_off = 0;
};
static_assert(sizeof(LbFlowPre) <= 64);

/// The per-frame state of one burst between its stages (STYLE H3), kept by the worker
/// across bursts (no per-burst initialisation: stage 1 writes every field it reads later).
/// Slot i belongs to frame i of the LbFrame array handed to lb_burst_run().
struct LbBurst {
    static constexpr uint16_t kMax = 64;
    std::array<PacketMeta, kMax> meta; ///< not written for a frame with pre[i].lite
    /// Flow hash; 0: stage 2 takes the general path (not a TCP/UDP datagram, or one to a
    /// SNAT address: return traffic).
    std::array<uint64_t, kMax> hash;
    std::array<LbFlowPre, kMax> pre;  ///< valid where hash != 0
    std::array<ConnEntry*, kMax> hint; ///< stage 1b's prefetched conntrack slot
    std::array<const L4Service*, kMax> svc; ///< stage 1c's service lookup (where hash != 0)

    /// Moves slot `from`'s stage-1 state to slot `to` (a dispatcher compacting the burst).
    void move(uint16_t from, uint16_t to) noexcept {
        meta[to] = meta[from];
        hash[to] = hash[from];
        pre[to] = pre[from];
    }
};

namespace lb_detail {

/// The PacketMeta parse_packet() gives a frame of stage 1's IPv4 lane (`pre` its stage-1
/// state): stage 1 checked these bytes (unchanged since), so the straight-line parse's
/// result is rebuilt from `pre` and the header fields fill_meta_v4() reads, without
/// checking again.
SLUICE_ALWAYS_INLINE void lite_meta(const LbFrame& f, const LbFlowPre& pre,
                                    PacketMeta& m) noexcept {
    pkt_detail::Ipv4Fast v;
    v.src = static_cast<uint32_t>(pre.kw.src_lo);
    v.dst = static_cast<uint32_t>(pre.kw.dst_lo);
    v.ports = static_cast<uint32_t>(pre.kw.rest); // (both ports: rest's low 32 bits)
    v.src_port = conntrack_detail::src_port_of(pre.kw);
    v.dst_port = conntrack_detail::dst_port_of(pre.kw);
    v.proto = conntrack_detail::proto_of(pre.kw);
    v.ttl = pre.ttl;
    v.tcp_flags = pre.tcp_flags;
    std::memset(static_cast<void*>(&m), 0, sizeof(m));
    pkt_detail::fill_meta_v4(m, v, f.data);
}

} // namespace lb_detail

/// lb_owner() for frame i of a burst after lb_burst_parse() (a frame of its IPv4 lane has
/// no PacketMeta: it is client -> VIP traffic, owned by its flow hash).
/// Thread: worker; updates ctx.frag_owners only.
[[nodiscard]] uint16_t lb_burst_owner(LbContext& ctx, const LbBurst& burst, uint16_t i,
                                      uint32_t now) noexcept;

/// Stage 1 for frames [first, first + count) of a burst (at most LbBurst::kMax in all):
/// parses each into burst.meta, derives its conntrack key, hash and probe, and prefetches
/// the lines its flow state is reached through (the conntrack buckets' signature lines,
/// or for return traffic to a SNAT address its SNAT port slot), so the lookups of the
/// whole burst overlap their cache misses. Thread: worker; no allocation, no state change.
void lb_burst_parse(const LbContext& ctx, LbBurst& burst, const LbFrame* frames, uint16_t first,
                    uint16_t count) noexcept;

/// Stages 1b, 1c and 2 for frames [0, n) parsed by lb_burst_parse() (unchanged since):
/// prefetches every flow's conntrack entry, looks the services up (ADR 0014), then handles
/// each frame as lb_process() would,
/// out[i] its action and frames[i].len / .headroom its new shape. One call per burst: the
/// per-frame work runs in this function's loops, with no call per frame on the
/// established-flow path. `table` is the burst's snapshot. Thread: worker; no allocation.
void lb_burst_run(LbContext& ctx, const ServiceTable& table, LbBurst& burst, LbFrame* frames,
                  uint16_t n, uint32_t now, LbAction* out) noexcept;

/// Bytes DSR encapsulation in place puts before an IPv4 frame's datagram in `mode`:
/// pkt_detail::gue4_in_place() for GUE, else pkt_detail::ipip4_in_place().
[[nodiscard]] constexpr uint32_t dsr4_overhead(FwdMode mode) noexcept {
    return mode == FwdMode::DsrGue ? pkt_detail::kGue4Overhead : kIpv4HdrLen;
}

/// Whether a DSR frame can be encapsulated in place (dsr4_in_place()): an IPv4 endpoint,
/// the mode's outer headers' room in the headroom, and an inner datagram of `inner_len`
/// bytes whose outer length fits. The caller knows the frame is untagged IPv4 with the
/// whole datagram in it, and has a tunnel source. One check for the established lane and
/// dsr_forward().
[[nodiscard]] inline bool dsr4_in_place_fits(FwdMode mode, uint8_t ep_family, uint32_t headroom,
                                             uint32_t inner_len) noexcept {
    const uint32_t overhead = dsr4_overhead(mode);
    return ep_family == 4 && headroom >= overhead && inner_len >= kIpv4HdrLen &&
           inner_len <= 0xFFFF - overhead;
}

/// DSR encapsulation in place of a frame dsr4_in_place_fits() accepted, IP-in-IP or GUE per
/// `mode` (GUE's source port from the flow's key hash `key_hash`, packet_key_hash(), which
/// the caller computes only for GUE). Returns the bytes the frame moved into its headroom.
SLUICE_ALWAYS_INLINE uint32_t dsr4_in_place(uint8_t* f, FwdMode mode, uint32_t inner_len,
                                            const uint8_t* src4, const uint8_t* dst4,
                                            uint32_t key_hash) noexcept {
    if (mode == FwdMode::DsrGue) {
        pkt_detail::gue4_in_place(f, inner_len, src4, dst4, gue_source_port(key_hash));
        return pkt_detail::kGue4Overhead;
    }
    pkt_detail::ipip4_in_place(f, inner_len, src4, dst4);
    return kIpv4HdrLen;
}

/// ConnValue.service of a DSR flow: it owns no SNAT port (no return traffic passes here).
inline constexpr uint32_t kDsrFlow = 0xFFFFFFFFu;

/// The DSR forwarding step (lb_dsr.cc): encapsulates the client's frame (parsed into `m`)
/// for endpoint `ep`, IPIP or GUE per `mode`, and sets the MACs (ours -> `next_hop`). The
/// outer source is ctx.snat's first address of ep's family: in DSR the "SNAT" address is
/// the tunnel source, never seen by the client. The outer destination is ep.addr (its port
/// is unused: the backend listens on the VIP's port). Inner families may differ from the
/// outer one. On success *headroom and len describe the new frame (see lb_process); on
/// failure the frame is unchanged and the reason is counted (NoSnatPort: no tunnel source
/// of that family; drops[NoHeadroom]).
/// Thread: worker; no allocation.
[[nodiscard]] bool dsr_forward(LbContext& ctx, const PacketMeta& m, FwdMode mode,
                               const L4Endpoint& ep, const Mac& next_hop,
                               std::span<uint8_t> buf, uint32_t& len,
                               uint32_t* headroom) noexcept;

} // namespace sluice::dp
