#pragma once

/// @file
/// Per-lcore connection tracking: a preallocated table of flows, each in one 64-byte cache
/// line, keyed by the 5-tuple and holding the decision made for the flow's first packet
/// (service, backend id + backend-set generation). Established flows keep their backend
/// across table and backend-set changes: the worker re-checks only that the backend id is
/// still valid in the current snapshot (STYLE H4: ids + generation, never pointers).
///
/// Layout: 2-choice bucketed hashing with an overflow bucket. Buckets are kConnBucketSlots
/// entries; the first line of every bucket also carries 16-bit signatures of four slots,
/// so a miss reads one line per bucket (per four slots) and a hit one or two. A flow's two
/// buckets lie on one 4 KiB page (one TLB miss per lookup, not two); when both are full it
/// goes to a third bucket anywhere in the table, and its first bucket counts it (4 bits
/// in its signature line), so lookups read the third bucket only behind a counted first
/// bucket. No kicking, no chains, no tombstones: an expired entry is a free slot.
/// Inserting never evicts a live entry; when all three buckets are live and full the
/// insert returns Full and the caller forwards statelessly (Maglev). The share of new
/// flows refused as Full grows with the load: a handful of 1M flows in 2^21 slots, 0.28%
/// of those offered up to 75% load, 4.2% of 1M offered to 2^20 slots (which then hold
/// 91%) (measured; conntrack_test), so size `capacity` at ~1.3x the flows to track.
/// Half-open TCP flows (SYN seen, not yet ACKed) have a short timeout and their own
/// budget, so a SYN flood fills at most `half_open_max` slots and cannot push out
/// established flows.
///
/// Time is a caller-supplied uint32 millisecond tick; ages are signed 32-bit differences,
/// so the tick may wrap. An entry counts toward `entries`/`half_open` until it is reclaimed
/// (by sweep(), by a lookup or insert that meets it expired, or by erase()), so both
/// counters are exact at all times; run sweep() every loop iteration to keep them current.
///
/// The hot functions (lookup, insert, TCP state, sweep helpers) are inline in
/// conntrack_fp.h; include that from worker code. This header holds the types and the
/// control-path surface (create, sizing, stats).
///
/// Thread: a table belongs to one worker lcore (shared-nothing, STYLE H6); every mutating
/// call is made by that lcore. create() and destruction run on dp-control before the
/// worker starts / after it stopped. stats() may be read from any thread.

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <span>
#include <string>

#include "result.h"

namespace sluice::dp {

/// The wire values conntrack relies on. Kept in their own namespace so this header can be
/// included beside packet_fp.h, which defines the same values as kProto* / kTcp*.
/// TODO(lead): one definition when FlowKey and PacketKey are unified.
namespace ct_wire {
inline constexpr uint8_t kIcmp = 1;
inline constexpr uint8_t kTcp = 6;
inline constexpr uint8_t kUdp = 17;
inline constexpr uint8_t kIcmp6 = 58;
/// TCP header flag bits, as in byte 13 of the TCP header.
inline constexpr uint8_t kFin = 0x01;
inline constexpr uint8_t kSyn = 0x02;
inline constexpr uint8_t kRst = 0x04;
inline constexpr uint8_t kAck = 0x10;
} // namespace ct_wire

/// A flow's identity. Build it zeroed (`FlowKey k{};`) and fill the fields: every byte,
/// padding included, is hashed and compared.
/// TODO(lead): move to dataplane/common/flow_key.h (STYLE layout) when the parser lands.
struct FlowKey {
    std::array<uint8_t, 16> src{}; ///< IPv6, or IPv4 in bytes 0..3 and zeros (as `Addr`)
    std::array<uint8_t, 16> dst{};
    /// L4 ports as read from the packet (any byte order, used consistently). ICMP: put
    /// the echo identifier in both ports, so the reply's key is the reverse of the request's.
    uint16_t src_port = 0;
    uint16_t dst_port = 0;
    uint8_t family = 0;           ///< 4 or 6
    uint8_t proto = 0;            ///< IP protocol number: 6 TCP, 17 UDP, 1 ICMP, 58 ICMPv6, ...
    std::array<uint8_t, 2> pad{}; ///< always zero

    friend bool operator==(const FlowKey&, const FlowKey&) = default;
};
static_assert(sizeof(FlowKey) == 40);

namespace conntrack_detail {
/// A FlowKey as its five 8-byte words, in memory order (src, dst, then ports, family,
/// protocol and padding in `rest`). The hot path hashes and compares keys as words held
/// in registers: a FlowKey built field by field on the stack and read back 16 bytes at a
/// time stalls on store forwarding.
struct KeyWords {
    uint64_t src_lo, src_hi, dst_lo, dst_hi, rest;
};

/// The fields of `rest` (little-endian FlowKey layout: source port bits 0..15, destination
/// port 16..31, family 32..39, protocol 40..47). The one place that decodes them.
[[nodiscard]] constexpr uint16_t src_port_of(const KeyWords& w) noexcept {
    return static_cast<uint16_t>(w.rest);
}
[[nodiscard]] constexpr uint16_t dst_port_of(const KeyWords& w) noexcept {
    return static_cast<uint16_t>(w.rest >> 16);
}
[[nodiscard]] constexpr uint8_t family_of(const KeyWords& w) noexcept {
    return static_cast<uint8_t>(w.rest >> 32);
}
[[nodiscard]] constexpr uint8_t proto_of(const KeyWords& w) noexcept {
    return static_cast<uint8_t>(w.rest >> 40);
}
/// `rest` of a key: the inverse of the four accessors above.
[[nodiscard]] constexpr uint64_t rest_word(uint16_t src_port, uint16_t dst_port, uint8_t family,
                                           uint8_t proto) noexcept {
    return uint64_t{src_port} | uint64_t{dst_port} << 16 | uint64_t{family} << 32 |
           uint64_t{proto} << 40;
}
} // namespace conntrack_detail

/// The key of the other direction of the same flow (addresses and ports swapped).
[[nodiscard]] constexpr FlowKey reversed(const FlowKey& k) noexcept {
    FlowKey r = k;
    r.src = k.dst;
    r.dst = k.src;
    r.src_port = k.dst_port;
    r.dst_port = k.src_port;
    return r;
}

/// Table-owned flow state; also selects the idle timeout.
enum class ConnState : uint8_t {
    Free = 0,       ///< slot not in use
    TcpSynSeen,     ///< half-open: counts against the half-open budget
    TcpEstablished, ///< a non-SYN ACK was seen
    TcpClosing,     ///< FIN or RST seen: short timeout
    Udp,
    Icmp,  ///< ICMP and ICMPv6
    Other, ///< any other L4 protocol (UDP timeout)
};
inline constexpr size_t kConnStates = 7;

/// What the worker decided for a flow. Fits in 16 bytes.
struct ConnValue {
    uint32_t service = 0;    ///< listener / L4 service index in the snapshot
    uint32_t backend = 0;    ///< endpoint index in the snapshot
    uint16_t generation = 0; ///< backend-set generation (low 16 bits) the index belongs to
    ConnState state = ConnState::Free; ///< owned by the table (set by insert/on_tcp_flags)
    uint8_t flags = 0;                 ///< owned by the caller; the table never reads it
    uint32_t last_seen = 0;            ///< ms tick of the last packet (insert/touch/on_tcp_flags)
};
static_assert(sizeof(ConnValue) == 16);

/// One tracked flow: exactly one cache line, and the table holds nothing else per flow.
struct alignas(64) ConnEntry {
    FlowKey key;
    ConnValue value;
    /// Table-internal: in the first kConnBucketSlots / 4 entries of each bucket, the
    /// 16-bit signatures of the bucket's slots (low 15 bits 0 = free), four per entry,
    /// and in their bit 15 the bucket's overflow count; unused in the other entries.
    /// Never written by callers.
    std::array<uint16_t, 4> bucket_sigs{};
};
static_assert(sizeof(ConnEntry) == 64, "one cache line per flow (issue: <= 64 B per flow)");

/// Slots per bucket: 4 (256 B, one signature line) or 8 (512 B, signatures in the first
/// two lines, one 128-byte adjacent-line pair).
inline constexpr uint32_t kConnBucketSlots = 4;
inline constexpr uint32_t kConnSigLines = kConnBucketSlots / 4;
inline constexpr size_t kConnBucketBytes = kConnBucketSlots * sizeof(ConnEntry);
static_assert(kConnBucketSlots == 4 || kConnBucketSlots == 8);
inline constexpr uint32_t kConnTrackMinCapacity = 2 * kConnBucketSlots;
inline constexpr uint32_t kConnTrackMaxCapacity = 1u << 30; ///< 64 GiB at 64 B per flow
/// Largest idle timeout: ages are signed 32-bit ms differences, and sweep() must visit
/// every entry well within 2^31 ms of its expiry.
inline constexpr uint32_t kConnTrackMaxTimeoutMs = 1u << 30;

struct ConnTrackConfig {
    uint32_t capacity = 1u << 20; ///< flows; rounded up to a power of two (min 8)
    uint32_t half_open_max = 0;   ///< half-open (SYN seen) budget; 0 = capacity / 8
    uint32_t tcp_syn_ms = 5000;
    uint32_t tcp_established_ms = 300000;
    uint32_t tcp_closing_ms = 10000; ///< after FIN or RST
    uint32_t udp_ms = 30000;         ///< also other non-TCP, non-ICMP protocols
    uint32_t icmp_ms = 10000;
    uint64_t seed = 0;    ///< keys bucket placement (hash-flood resistance); 0 = random
    /// NUMA node (DPDK socket id) a mapped table (>= 2 MiB) prefers for its memory: the
    /// owning worker lcore's (rte_lcore_to_socket_id). -1 = wherever the kernel puts it.
    int numa_socket = -1;
};

struct ConnTrackStats {
    uint64_t entries = 0;       ///< occupied slots (live, or expired and not yet reclaimed)
    uint64_t half_open = 0;     ///< occupied slots in TcpSynSeen
    uint64_t inserts = 0;       ///< successful inserts
    uint64_t insert_full = 0;   ///< inserts refused: all three buckets live and full
    uint64_t inserts_third = 0; ///< of `inserts`, those placed in their third bucket
    uint64_t insert_budget = 0; ///< inserts refused: half-open budget exhausted
    uint64_t expired = 0;       ///< entries reclaimed after their idle timeout
    uint64_t erased = 0;        ///< entries removed by erase()
};

enum class InsertStatus : uint8_t {
    Inserted,       ///< tracked; `entry` points at it
    Exists,         ///< a live entry with this key exists; `entry` points at it, unchanged
    Full,           ///< no free slot in either bucket: forward statelessly (Maglev)
    HalfOpenBudget, ///< half-open budget exhausted: forward statelessly, do not track
};

struct InsertResult {
    InsertStatus status = InsertStatus::Full;
    ConnEntry* entry = nullptr;
};

/// Single-writer counter: only the owning lcore writes (relaxed load + store, no locked
/// RMW); other threads read an untorn, possibly slightly stale value.
class ConnCounter {
public:
    void add(uint64_t d) noexcept {
        v_.store(v_.load(std::memory_order_relaxed) + d, std::memory_order_relaxed);
    }
    void sub(uint64_t d) noexcept {
        v_.store(v_.load(std::memory_order_relaxed) - d, std::memory_order_relaxed);
    }
    [[nodiscard]] uint64_t get() const noexcept { return v_.load(std::memory_order_relaxed); }

private:
    std::atomic<uint64_t> v_{0};
};

class ConnTrack {
public:
    /// Allocates and zeroes the table (capacity rounded up to a power of two). Fails with
    /// Invalid on a bad config and LimitExceeded when the memory cannot be had.
    /// Thread: dp-control (allocates), before the owning worker starts.
    [[nodiscard]] static Result<std::unique_ptr<ConnTrack>> create(const ConnTrackConfig& cfg);

    ~ConnTrack();
    ConnTrack(const ConnTrack&) = delete;
    ConnTrack& operator=(const ConnTrack&) = delete;

    // ---- worker API, defined inline in conntrack_fp.h ----------------------------------

    /// True when the half-open budget is spent: a new TCP flow now would be refused (no
    /// count; prefetch heuristics use it). Thread: worker (owner).
    [[nodiscard]] bool half_open_full() const noexcept {
        return half_open_n_.get() >= half_open_max_;
    }

    /// Prefetches the signature line(s) of both candidate buckets of `hash`; call one stage
    /// ahead of lookup/lookup_bulk (STYLE H3). Thread: worker (owner).
    [[gnu::always_inline]] void prefetch(uint64_t hash) const noexcept;

    /// Second prefetch stage: reads the signature line(s) prefetch() brought in and
    /// prefetches the line of the first slot whose signature matches, so that the key
    /// compare of lookup() hits too. Call it for the whole burst between prefetch() and the
    /// lookups. Thread: worker (owner).
    /// Returns the slot it prefetched (the first whose signature matches), or nullptr: a
    /// hint for lookup_hinted(), valid only as long as the table is not resized (never).
    [[gnu::always_inline]] ConnEntry* prefetch_entry(uint64_t hash) const noexcept;

    /// The live entry for `key`, or nullptr when absent or expired (an expired entry met
    /// here is reclaimed). Does not refresh it: call on_tcp_flags() or touch() on a hit.
    /// @param hash flow_hash(key). Thread: worker (owner); no allocation, lock or syscall.
    [[gnu::always_inline]] [[nodiscard]] ConnEntry* lookup(const FlowKey& key, uint64_t hash, uint32_t now) noexcept;
    /// lookup() that first tries `hint` (prefetch_entry()'s result for this hash, or
    /// nullptr): a hit there skips the probe and signature match. The hint may be stale
    /// (entries inserted or freed since): it counts only if the slot is in use and holds
    /// `key`, and a key lives in one slot at most, so the answer equals lookup()'s.
    [[gnu::always_inline]] [[nodiscard]] ConnEntry* lookup_hinted(
        const conntrack_detail::KeyWords& key, uint64_t hash, uint32_t now,
        ConnEntry* hint) noexcept;
    /// Where a flow hash lives: its two candidate buckets and its signature (never 0).
    struct Probe {
        uint32_t b1 = 0;
        uint32_t b2 = 0;
        uint16_t sig = 0; ///< 0: not computed
    };
    /// The first half of lookup_hinted() (the worker calls the halves itself, to keep the
    /// probe of the second for an insert): the live entry at `hint` when it holds `key` (an
    /// expired one there is reclaimed), else nullptr, and then lookup() decides.
    [[gnu::always_inline]] [[nodiscard]] ConnEntry* hint_hit(const conntrack_detail::KeyWords& key,
                                                           uint32_t now, ConnEntry* hint) noexcept;
    /// lookup() that hands its probe to the caller, for an insert() right after a miss.
    [[gnu::always_inline]] [[nodiscard]] ConnEntry* lookup(const conntrack_detail::KeyWords& key,
                                                           uint64_t hash, uint32_t now,
                                                           Probe& probe) noexcept;
    /// The probe of a flow hash (computed once per packet by a burst's first stage and
    /// handed to the prefetches and the lookup below).
    [[gnu::always_inline]] [[nodiscard]] Probe probe_of(uint64_t hash) const noexcept {
        return probe(hash);
    }
    /// prefetch() and prefetch_entry() with the probe already computed.
    [[gnu::always_inline]] void prefetch(const Probe& p) const noexcept;
    /// The lines prefetch(p) would prefetch (the signature lines of both buckets), written
    /// to `out` for the caller to prefetch later; returns their number, kProbeLines.
    /// A burst's first stage collects them while it parses and prefetches them all in a
    /// loop of their own: a prefetch that misses the TLB (a table of a million flows on
    /// 4 KiB host pages under a VM: nearly every one) holds its place in the reorder
    /// buffer until the page walk ends, so among the parse's ~60 instructions per frame
    /// only a few are in flight at once; in a loop of a few instructions per line all of
    /// the burst's are (docs/adr/0015, thirteenth-session addendum). Thread: worker (owner).
    static constexpr uint32_t kProbeLines = 2 * kConnSigLines;
    [[gnu::always_inline]] uint32_t probe_lines(const Probe& p, const void** out) const noexcept {
        for (uint32_t i = 0; i < kConnSigLines; ++i) {
            out[2 * i] = &slot(p.b1, i);
            out[2 * i + 1] = &slot(p.b2, i);
        }
        return kProbeLines;
    }
    /// `insert_likely`: where no signature matches, also prefetch the slot an insert would
    /// take now (false under a SYN flood past the budget, whose SYNs insert nothing).
    [[gnu::always_inline]] ConnEntry* prefetch_entry(const Probe& p,
                                                     bool insert_likely = true) const noexcept;
    /// lookup() with the probe already computed (probe_of(hash) of the key's hash).
    [[gnu::always_inline]] [[nodiscard]] ConnEntry* lookup(const conntrack_detail::KeyWords& key,
                                                           const Probe& p, uint32_t now) noexcept;
    /// insert() with the probe of lookup(..., Probe&) (sig 0: computed here from `hash`).
    InsertResult insert(const FlowKey& key, uint64_t hash, const Probe& probe, uint32_t now,
                        const ConnValue& value, bool half_open, bool known_absent) noexcept;
    /// The same with the key as words (conntrack_detail::words() of the FlowKey).
    InsertResult insert(const conntrack_detail::KeyWords& key, uint64_t hash, const Probe& probe,
                        uint32_t now, const ConnValue& value, bool half_open,
                        bool known_absent) noexcept;
    /// lookup() of a key given as words (conntrack_detail::words() of the FlowKey).
    [[gnu::always_inline]] [[nodiscard]] ConnEntry* lookup(const conntrack_detail::KeyWords& key,
                                                           uint64_t hash, uint32_t now) noexcept;

    /// lookup() for a burst: out[i] = entry or nullptr. Looks up the first
    /// min(keys, hashes, out, 64) keys, matching signatures for all of them and
    /// prefetching candidate entries before comparing any key.
    /// @return bit i set when out[i] is a hit. Thread: worker (owner).
    uint64_t lookup_bulk(std::span<const FlowKey> keys, std::span<const uint64_t> hashes,
                         uint32_t now, std::span<ConnEntry*> out) noexcept;

    /// Starts tracking `key` with `value` (its state and last_seen are set here). Never
    /// evicts a live entry. TCP with `half_open` starts in TcpSynSeen and needs budget;
    /// TCP without it starts established (use half_open for mid-flow pickups too, so an
    /// ACK flood only gets the short timeout and the budget). `half_open` is ignored for
    /// other protocols. Thread: worker (owner); no allocation.
    /// `known_absent`: the caller has just looked the key up and missed (no live entry, an
    /// expired one reclaimed), so the existence check is skipped.
    InsertResult insert(const FlowKey& key, uint64_t hash, uint32_t now, const ConnValue& value,
                        bool half_open, bool known_absent = false) noexcept;

    /// True when a new half-open TCP flow would be refused for budget now; the refusal is
    /// counted as insert() would count it. Lets a SYN flood past the budget skip the work
    /// of preparing an insert that cannot succeed. Thread: worker (owner).
    [[nodiscard]] bool half_open_refused() noexcept {
        if (half_open_n_.get() < half_open_max_) {
            return false;
        }
        insert_budget_.add(1);
        return true;
    }

    /// Advances the TCP state for a packet of the flow (either direction) and refreshes
    /// it: SYN_SEEN -> ESTABLISHED on an ACK without SYN; FIN or RST -> CLOSING from any
    /// state; a bare SYN on a CLOSING flow (port reuse) -> SYN_SEEN if budget allows.
    /// Non-TCP entries are only refreshed. Thread: worker (owner).
    [[gnu::always_inline]] void on_tcp_flags(ConnEntry& e, uint8_t tcp_flags, uint32_t now) noexcept;

    /// Refreshes a flow's idle timer (UDP, ICMP, or TCP without flag changes).
    /// Thread: worker (owner).
    void touch(ConnEntry& e, uint32_t now) noexcept { e.value.last_seen = now; }

    /// Stops tracking a flow (e.g. its backend was removed and it must be re-decided).
    /// `e` must come from this table. Thread: worker (owner).
    void erase(ConnEntry& e) noexcept;

    /// True when `e` has been idle longer than its state's timeout at `now`.
    /// Thread: worker (owner).
    [[gnu::always_inline]] [[nodiscard]] bool expired(const ConnEntry& e, uint32_t now) const noexcept;

    // ---- control-path and housekeeping (conntrack.cc) ----------------------------------

    /// Reclaims expired entries in the next `max_buckets` buckets (cursor kept across
    /// calls, wrapping), keeping entries/half_open exact. A worker calling
    /// sweep(now, 64) per loop iteration covers a 1M-flow table every 4096 iterations.
    /// @return entries freed. Thread: worker (owner); no allocation.
    size_t sweep(uint32_t now, size_t max_buckets) noexcept;

    /// Counters; each is exact for the owner, others see untorn but not mutually
    /// consistent values. Thread: any.
    [[nodiscard]] ConnTrackStats stats() const noexcept;

    /// Checks the table's internal bookkeeping: every slot marked third sits in its flow's
    /// third bucket, and every bucket's overflow count equals the number of its flows in
    /// their third bucket (unless saturated at 15: kept from then on). Needs every insert's
    /// `hash` to have been flow_hash() of its key, as the worker's are. Returns "" when
    /// consistent, else what is wrong. O(capacity): tests and diagnostics only.
    /// Thread: the owner, or any while the owner is stopped.
    [[nodiscard]] std::string audit() const;

    /// Slots (a power of two). Thread: any.
    [[nodiscard]] uint32_t capacity() const noexcept { return capacity_; }
    /// Bytes allocated for the table: capacity() * sizeof(ConnEntry). Thread: any.
    [[nodiscard]] size_t memory_bytes() const noexcept { return memory_bytes_; }
    /// Half-open budget in effect. Thread: any.
    [[nodiscard]] uint32_t half_open_max() const noexcept { return half_open_max_; }
    /// Idle timeout of a state in ms (0 for Free). Thread: any.
    [[nodiscard]] uint32_t timeout_ms(ConnState s) const noexcept {
        return static_cast<uint32_t>(timeout_[static_cast<size_t>(s)]);
    }

private:
    ConnTrack() = default;

    [[gnu::always_inline]] Probe probe(uint64_t hash) const noexcept;
    ConnEntry& slot(uint32_t bucket, uint32_t s) const noexcept {
        return entries_[static_cast<size_t>(bucket) * kConnBucketSlots + s];
    }
    // Signature lanes (ConnEntry::bucket_sigs): bit 0 set in every used slot, bit 1
    // (kSigThird) set where the entry sits in its third bucket, bits 2..14 the hash's
    // signature; bit 15 belongs to the bucket, not the slot: lane i's is bit i of the
    // bucket's overflow count (its flows placed in their third bucket; 15 = saturated, kept).
    static constexpr uint16_t kSigThird = 2;
    static constexpr uint16_t kSigSlotBits = 0x7FFF;
    static constexpr uint64_t kOverflowBits = 0x8000800080008000ULL;
    uint16_t& sig_lane(uint32_t bucket, uint32_t s) const noexcept {
        return slot(bucket, s / 4).bucket_sigs[s % 4];
    }
    /// Slot s's signature (0: free).
    uint16_t sig(uint32_t bucket, uint32_t s) const noexcept {
        return static_cast<uint16_t>(sig_lane(bucket, s) & kSigSlotBits);
    }
    void set_sig(uint32_t bucket, uint32_t s, uint16_t v) noexcept {
        uint16_t& l = sig_lane(bucket, s);
        l = static_cast<uint16_t>((l & ~kSigSlotBits) | v);
    }
    /// The first four lanes of a bucket as one word (little-endian: lane i in bits 16i..).
    uint64_t sig_word(uint32_t bucket) const noexcept {
        uint64_t w;
        std::memcpy(&w, slot(bucket, 0).bucket_sigs.data(), sizeof(w));
        return w;
    }
    /// True when some flow whose first bucket is `bucket` may sit in its third bucket.
    bool overflowed(uint32_t bucket) const noexcept {
        return (sig_word(bucket) & kOverflowBits) != 0;
    }
    uint32_t overflow_count(uint32_t bucket) const noexcept;
    void set_overflow_count(uint32_t bucket, uint32_t n) noexcept;
    /// A flow's third bucket: its first XOR an odd offset from the signature alone, so an
    /// entry there (kSigThird) finds its first bucket again the same way (for the count).
    uint32_t third_bucket(uint32_t bucket, uint16_t sig) const noexcept {
        const uint64_t x = static_cast<uint64_t>(sig >> 2) * 0xD6E8FEB86659FD93ULL;
        return bucket ^ (static_cast<uint32_t>(x >> shift_) | 1u);
    }
    [[gnu::always_inline]] uint32_t sig_match(uint32_t bucket, uint16_t sig) const noexcept;
    /// Where an entry of this table lies: its bucket and its slot in the bucket.
    struct Position {
        uint32_t bucket;
        uint32_t slot;
    };
    [[nodiscard]] Position position_of(const ConnEntry& e) const noexcept {
        const auto idx = static_cast<size_t>(&e - entries_);
        return {static_cast<uint32_t>(idx / kConnBucketSlots),
                static_cast<uint32_t>(idx % kConnBucketSlots)};
    }
    /// The slot an insert of probe `p` takes now, or nullptr when both buckets are full.
    [[gnu::always_inline]] ConnEntry* free_slot(const Probe& p) const noexcept;
    [[gnu::always_inline]] ConnEntry* find(uint32_t bucket, uint32_t candidates,
                                           const conntrack_detail::KeyWords& key) const noexcept;
    /// The slot holding `key` (live or expired) in the buckets of `p`: the first, the
    /// second, and the third only behind a first bucket's overflow count; or nullptr.
    [[gnu::always_inline]] ConnEntry* find_key(const Probe& p,
                                               const conntrack_detail::KeyWords& key) const noexcept;
    /// The slot holding `key` in its third bucket (looked at only when its first bucket
    /// overflowed), or nullptr.
    ConnEntry* find_third(const Probe& p, const conntrack_detail::KeyWords& key) const noexcept;
    /// A free slot in the third bucket of `p` (expired entries there reclaimed), or nullptr.
    ConnEntry* third_slot(const Probe& p, uint32_t now) noexcept;
    static constexpr uint32_t kOverflowSaturated = 15;
    void reclaim(uint32_t bucket, uint32_t s) noexcept;
    uint32_t reclaim_expired(uint32_t bucket, uint32_t now) noexcept;
    [[gnu::always_inline]] ConnEntry* live_or_reclaim(ConnEntry* e, uint32_t now) noexcept;

    // Hot, read-mostly fields first.
    ConnEntry* entries_ = nullptr;
    uint64_t seed_ = 0;
    uint32_t shift_ = 63;      // 64 - log2(buckets)
    uint32_t bucket_mask_ = 1; // buckets - 1
    uint32_t half_open_max_ = 0;
    std::array<int32_t, kConnStates> timeout_{}; // indexed by ConnState
    uint32_t capacity_ = 0;
    size_t memory_bytes_ = 0;
    uint32_t sweep_cursor_ = 0;

    ConnCounter entries_n_;
    ConnCounter half_open_n_;
    ConnCounter inserts_;
    ConnCounter insert_full_;
    ConnCounter inserts_third_;
    ConnCounter insert_budget_;
    ConnCounter expired_;
    ConnCounter erased_;
};

} // namespace sluice::dp
