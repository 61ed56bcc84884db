#pragma once

/// @file
/// Worker-side conntrack: the flow hashes and the inline lookup / insert / TCP-state code
/// of ConnTrack (types and docs in conntrack.h). Everything here follows STYLE H1: no
/// allocation, lock, exception, syscall or logging.
/// Thread: worker (the lcore owning the table); flow_hash*() any.

#if defined(__SSE2__)
#include <emmintrin.h>
#endif
#include <bit>
#include <cstring>

#include "conntrack.h"
#include "prefetch.h"

namespace sluice::dp {

namespace conntrack_detail {

[[nodiscard]] SLUICE_ALWAYS_INLINE uint64_t load64(const void* p) noexcept {
    uint64_t v;
    std::memcpy(&v, p, sizeof(v));
    return v;
}

// GCC/Clang extension (x86-64 MUL gives the high half for free); __extension__ keeps
// -Wpedantic quiet about it.
__extension__ using U128 = unsigned __int128;

/// 64x64 -> 128 multiply folded to 64 bits (the wyhash/mum mixer).
[[nodiscard]] SLUICE_ALWAYS_INLINE uint64_t mum(uint64_t a, uint64_t b) noexcept {
#if defined(__x86_64__) && defined(__GNUC__)
    // One MUL with its register constraints spelled out: GCC 12 spilled the 128-bit
    // product of the generic form to the stack and read it back (callgrind).
    uint64_t lo = a, hi;
    asm("mulq %2" : "+a"(lo), "=d"(hi) : "rm"(b) : "cc");
    return lo ^ hi;
#else
    const U128 r = static_cast<U128>(a) * b;
    return static_cast<uint64_t>(r) ^ static_cast<uint64_t>(r >> 64);
#endif
}

/// The five 8-byte words of a key, in a fixed order.
[[nodiscard]] SLUICE_ALWAYS_INLINE KeyWords words(const FlowKey& k) noexcept {
    static_assert(offsetof(FlowKey, src_port) == 32 && offsetof(FlowKey, pad) == 38);
    return {load64(k.src.data()), load64(k.src.data() + 8), load64(k.dst.data()),
            load64(k.dst.data() + 8), load64(&k.src_port)};
}

[[nodiscard]] SLUICE_ALWAYS_INLINE uint64_t hash_words(const KeyWords& w) noexcept {
    // Secrets (odd, ~half the bits set). Fixed forever: Maglev picks backends from this
    // hash, so every node of a fleet must compute the same value for the same flow.
    constexpr uint64_t kS0 = 0xa0761d6478bd642fULL;
    constexpr uint64_t kS1 = 0xe7037ed1a0b428dbULL;
    constexpr uint64_t kS2 = 0x8ebc6af09c88c6e3ULL;
    constexpr uint64_t kS3 = 0x589965cc75374cc3ULL;
    constexpr uint64_t kS4 = 0x1d8e4e27c47d124fULL;
    const uint64_t a = mum(w.src_lo ^ kS0, w.src_hi ^ kS1);
    const uint64_t b = mum(w.dst_lo ^ kS2, w.dst_hi ^ kS3);
    return mum(a ^ w.rest ^ kS4, b ^ kS1);
}

[[nodiscard]] SLUICE_ALWAYS_INLINE bool key_equal(const FlowKey& a, const KeyWords& y) noexcept {
    const KeyWords x = words(a);
    return ((x.src_lo ^ y.src_lo) | (x.src_hi ^ y.src_hi) | (x.dst_lo ^ y.dst_lo) |
            (x.dst_hi ^ y.dst_hi) | (x.rest ^ y.rest)) == 0;
}

} // namespace conntrack_detail

/// 64-bit hash of a flow key: a multiply-mix over the 40 key bytes (three 64x64->128
/// multiplies, two of them independent). Deliberately not CRC32-C: the value must not
/// depend on -march, because Maglev uses it and every node must agree. Not
/// adversary-proof; the table keys its bucket choice with a per-table seed.
/// Thread: any.
[[nodiscard]] SLUICE_ALWAYS_INLINE uint64_t flow_hash(const FlowKey& k) noexcept {
    return conntrack_detail::hash_words(conntrack_detail::words(k));
}

/// Direction-independent hash: equal for a key and reversed(key). Use it to choose the
/// lcore of a flow (software RSS); use flow_hash() for Maglev and the conntrack table.
/// Thread: any.
[[nodiscard]] inline uint64_t flow_hash_symmetric(const FlowKey& k) noexcept {
    using conntrack_detail::KeyWords;
    const KeyWords w = conntrack_detail::words(k);
    // Canonical order: the (address, port) endpoint that compares lower goes first. Any
    // total order works; this one needs no byte swaps.
    const bool swap = w.src_hi != w.dst_hi   ? w.src_hi > w.dst_hi
                      : w.src_lo != w.dst_lo ? w.src_lo > w.dst_lo
                                             : k.src_port > k.dst_port;
    if (!swap) {
        return conntrack_detail::hash_words(w);
    }
    const uint64_t ports =
        static_cast<uint64_t>(k.dst_port) | (static_cast<uint64_t>(k.src_port) << 16);
    const KeyWords r{w.dst_lo, w.dst_hi, w.src_lo, w.src_hi,
                     (w.rest & ~0xffffffffULL) | ports}; // little-endian layout of rest
    static_assert(std::endian::native == std::endian::little);
    return conntrack_detail::hash_words(r);
}

// ---- ConnTrack inline members -----------------------------------------------------------

inline ConnTrack::Probe ConnTrack::probe(uint64_t hash) const noexcept {
    // One keyed Fibonacci multiply: its high bits pick the first bucket; bits 8..11 pick
    // the second as the first XOR an odd offset below 16, so the two always differ (there
    // are >= 2 buckets) and lie on the same 4 KiB page (16 buckets of 256 B): a lookup's
    // two signature lines cost one TLB miss, not two (ADR 0015, thirteenth-session
    // addendum: on 4 KiB host pages under a VM the page walks, not the lines, bound a
    // million-flow table; paired, own work per established packet -10%). Page-local
    // buckets alone refuse more flows as Full (a page's 64 slots fill together); the
    // third bucket (third_bucket(), anywhere in the table, used only when both are full)
    // more than makes up for it. The signature: bits 2..14 from the hash's top bits, bit 0
    // set (never 0: free), bit 1 clear (kSigThird marks an entry in its third bucket); a
    // false match per occupied slot 1 in 8 Ki.
    const uint64_t x = (hash ^ seed_) * 0x9e3779b97f4a7c15ULL;
    const uint32_t b1 = static_cast<uint32_t>(x >> shift_);
    const uint32_t b2 = b1 ^ ((static_cast<uint32_t>(x >> 8) & bucket_mask_ & 15u) | 1u);
    return {b1, b2, static_cast<uint16_t>((static_cast<uint16_t>(hash >> 48) & 0x7FFCu) | 1u)};
}

inline uint32_t ConnTrack::sig_match(uint32_t bucket, uint16_t sig) const noexcept {
#if defined(__SSE2__)
    if constexpr (kConnBucketSlots == 4) {
        // The four signatures in the low half of a vector, compared as 16-bit lanes; the
        // lane masks packed to bytes and gathered by movemask: 7 instructions (the SWAR
        // version below takes 16, and a new flow asks six times).
        // (Bit 15 of each lane is the bucket's overflow count, not the slot's: masked.)
        const __m128i w = _mm_and_si128(
            _mm_loadl_epi64(reinterpret_cast<const __m128i*>(slot(bucket, 0).bucket_sigs.data())),
            _mm_set1_epi16(static_cast<short>(kSigSlotBits)));
        const __m128i eq = _mm_cmpeq_epi16(w, _mm_set1_epi16(static_cast<short>(sig)));
        // Lanes 4..7 compare the zeroed upper half (equal when sig == 0): masked off.
        return static_cast<uint32_t>(_mm_movemask_epi8(_mm_packs_epi16(eq, _mm_setzero_si128()))) & 0xFu;
    }
#endif
    if constexpr (kConnBucketSlots == 4 && std::endian::native == std::endian::little) {
        // SWAR over the bucket's four 16-bit signatures (one 8-byte load): lane i is 0 in
        // x exactly when slot i's signature equals `sig`; the high bit of each zero lane is
        // set in t (exact, no borrow between lanes), and one multiply gathers bits 15, 31,
        // 47 and 63 into bits 48..51 (the other partial products land below bit 48 at
        // distinct positions, so nothing carries into them).
        constexpr uint64_t kLow15 = 0x7FFF7FFF7FFF7FFFULL;
        const uint64_t w = sig_word(bucket) & kLow15; // (bit 15: the bucket's count)
        const uint64_t x = w ^ (uint64_t{sig} * 0x0001000100010001ULL);
        const uint64_t t = ~(((x & kLow15) + kLow15) | x) & ~kLow15;
        return static_cast<uint32_t>(((t >> 15) * 0x0001000200040008ULL) >> 48) & 0xFu;
    }
    uint32_t m = 0;
    for (uint32_t i = 0; i < kConnBucketSlots; ++i) {
        m |= static_cast<uint32_t>(this->sig(bucket, i) == sig) << i;
    }
    return m;
}

inline ConnEntry* ConnTrack::find(uint32_t bucket, uint32_t candidates,
                                  const conntrack_detail::KeyWords& key) const noexcept {
    while (candidates != 0) {
        const uint32_t s = static_cast<uint32_t>(std::countr_zero(candidates));
        candidates &= candidates - 1;
        ConnEntry& e = slot(bucket, s);
        if (conntrack_detail::key_equal(e.key, key)) {
            return &e;
        }
    }
    return nullptr;
}

inline bool ConnTrack::expired(const ConnEntry& e, uint32_t now) const noexcept {
    // Signed age: correct across tick wrap-around; a stamp slightly ahead of `now`
    // (a caller's stale tick) reads as a negative age, i.e. live.
    const int32_t age = static_cast<int32_t>(now - e.value.last_seen);
    return age > timeout_[static_cast<size_t>(e.value.state)];
}

inline uint32_t ConnTrack::overflow_count(uint32_t bucket) const noexcept {
    const uint64_t w = sig_word(bucket);
    return static_cast<uint32_t>(((w >> 15) & 1) | ((w >> 30) & 2) | ((w >> 45) & 4) |
                                 ((w >> 60) & 8));
}

inline void ConnTrack::set_overflow_count(uint32_t bucket, uint32_t n) noexcept {
    const uint64_t c = n;
    const uint64_t w = (sig_word(bucket) & ~kOverflowBits) | (c & 1) << 15 | (c & 2) << 30 |
                       (c & 4) << 45 | (c & 8) << 60;
    std::memcpy(slot(bucket, 0).bucket_sigs.data(), &w, sizeof(w));
}

inline void ConnTrack::reclaim(uint32_t bucket, uint32_t s) noexcept {
    ConnEntry& e = slot(bucket, s);
    if (e.value.state == ConnState::TcpSynSeen) {
        half_open_n_.sub(1);
    }
    e.value.state = ConnState::Free;
    if (const uint16_t v = sig(bucket, s); (v & kSigThird) != 0) [[unlikely]] {
        // In its third bucket: one fewer overflowed flow for its first (a saturated count
        // stays: lookups there then always look at the third bucket too, never wrongly).
        const uint32_t home = third_bucket(bucket, v);
        if (const uint32_t c = overflow_count(home); c != 0 && c != kOverflowSaturated) {
            set_overflow_count(home, c - 1);
        }
    }
    set_sig(bucket, s, 0);
    entries_n_.sub(1);
}

inline uint32_t ConnTrack::reclaim_expired(uint32_t bucket, uint32_t now) noexcept {
    uint32_t freed = 0;
    for (uint32_t i = 0; i < kConnBucketSlots; ++i) {
        if (sig(bucket, i) != 0 && expired(slot(bucket, i), now)) {
            reclaim(bucket, i);
            ++freed;
        }
    }
    if (freed != 0) {
        expired_.add(freed);
    }
    return freed;
}

inline ConnEntry* ConnTrack::live_or_reclaim(ConnEntry* e, uint32_t now) noexcept {
    if (e == nullptr || !expired(*e, now)) {
        return e;
    }
    const Position at = position_of(*e);
    reclaim(at.bucket, at.slot);
    expired_.add(1);
    return nullptr;
}

inline void ConnTrack::prefetch(uint64_t hash) const noexcept {
    prefetch(probe(hash));
}

inline void ConnTrack::prefetch(const Probe& p) const noexcept {
    const void* lines[kProbeLines];
    for (uint32_t i = 0, n = probe_lines(p, lines); i < n; ++i) {
        prefetch_read(lines[i]);
    }
}

inline ConnEntry* ConnTrack::prefetch_entry(uint64_t hash) const noexcept {
    return prefetch_entry(probe(hash));
}

inline ConnEntry* ConnTrack::free_slot(const Probe& p) const noexcept {
    // Two choices: the bucket with more free slots (fewer collisions later), ties to the
    // first; in it the first free slot. Free slots per bucket: a 4-bit popcount from a
    // nibble table (std::popcount is a libgcc call on baseline x86-64, without POPCNT).
    static_assert(kConnBucketSlots == 4 || kConnBucketSlots == 8);
    auto free_count = [](uint32_t m) noexcept {
        if constexpr (kConnBucketSlots == 4) {
            return static_cast<uint32_t>((0x4332322132212110ULL >> (m * 4)) & 0xF);
        } else {
            return static_cast<uint32_t>(std::popcount(m));
        }
    };
    const uint32_t f1 = sig_match(p.b1, 0), f2 = sig_match(p.b2, 0);
    if ((f1 | f2) == 0) {
        return nullptr;
    }
    const bool first = free_count(f1) >= free_count(f2);
    return &slot(first ? p.b1 : p.b2, static_cast<uint32_t>(std::countr_zero(first ? f1 : f2)));
}

inline ConnEntry* ConnTrack::prefetch_entry(const Probe& p, bool insert_likely) const noexcept {
    ConnEntry* e = nullptr;
    if (const uint32_t m1 = sig_match(p.b1, p.sig); m1 != 0) {
        e = &slot(p.b1, static_cast<uint32_t>(std::countr_zero(m1)));
    } else if (const uint32_t m2 = sig_match(p.b2, p.sig); m2 != 0) {
        e = &slot(p.b2, static_cast<uint32_t>(std::countr_zero(m2)));
    } else if (overflowed(p.b1)) [[unlikely]] {
        // Perhaps in its third bucket (not prefetched: rare); the lookup decides.
        return nullptr;
    } else {
        // No signature matches: a new flow, most likely. Its insert() will write the slot
        // free_slot() names now (unless the burst's earlier frames take it): fetch that line
        // ahead too, or the entry's stores wait on it and fill the store buffer (perf: new
        // full-NAT flows +11%). Not a hint: the lookup runs as before.
        if (ConnEntry* f = insert_likely ? free_slot(p) : nullptr; f != nullptr) {
            prefetch_write(f);
        }
        return nullptr;
    }
    prefetch_write(e);
    return e;
}

inline ConnEntry* ConnTrack::lookup(const FlowKey& key, uint64_t hash, uint32_t now) noexcept {
    return lookup(conntrack_detail::words(key), hash, now);
}

inline ConnEntry* ConnTrack::lookup(const conntrack_detail::KeyWords& key, uint64_t hash,
                                    uint32_t now) noexcept {
    Probe p;
    return lookup(key, hash, now, p);
}

inline ConnEntry* ConnTrack::hint_hit(const conntrack_detail::KeyWords& key, uint32_t now,
                                      ConnEntry* hint) noexcept {
    if (hint != nullptr && hint->value.state != ConnState::Free &&
        conntrack_detail::key_equal(hint->key, key)) {
        return live_or_reclaim(hint, now);
    }
    return nullptr;
}

inline ConnEntry* ConnTrack::lookup(const conntrack_detail::KeyWords& key, uint64_t hash,
                                    uint32_t now, Probe& p) noexcept {
    p = probe(hash);
    return lookup(key, static_cast<const Probe&>(p), now);
}

inline ConnEntry* ConnTrack::find_key(const Probe& p,
                                      const conntrack_detail::KeyWords& key) const noexcept {
    ConnEntry* e = find(p.b1, sig_match(p.b1, p.sig), key);
    if (e == nullptr) {
        e = find(p.b2, sig_match(p.b2, p.sig), key);
        if (e == nullptr && overflowed(p.b1)) [[unlikely]] {
            e = find_third(p, key);
        }
    }
    return e;
}

inline ConnEntry* ConnTrack::lookup(const conntrack_detail::KeyWords& key, const Probe& p,
                                    uint32_t now) noexcept {
    return live_or_reclaim(find_key(p, key), now);
}

inline ConnEntry* ConnTrack::lookup_hinted(const conntrack_detail::KeyWords& key, uint64_t hash,
                                           uint32_t now, ConnEntry* hint) noexcept {
    // (A hint holding the key but expired is reclaimed by hint_hit(); lookup() then misses.)
    if (ConnEntry* e = hint_hit(key, now, hint); e != nullptr) {
        return e;
    }
    return lookup(key, hash, now);
}

inline uint64_t ConnTrack::lookup_bulk(std::span<const FlowKey> keys,
                                       std::span<const uint64_t> hashes, uint32_t now,
                                       std::span<ConnEntry*> out) noexcept {
    size_t n = keys.size() < hashes.size() ? keys.size() : hashes.size();
    n = n < out.size() ? n : out.size();
    n = n < 64 ? n : 64;
    uint32_t b1[64], b2[64];
    uint16_t cand[64]; // low kConnBucketSlots bits: bucket 1 slots; next ones: bucket 2
    // Stage 1: signatures for the whole burst (lines prefetched by the caller),
    // and a prefetch of each first candidate entry, so stage 2's key compares overlap
    // their misses. Prefetch for write: a hit is refreshed right after.
    for (size_t i = 0; i < n; ++i) {
        const Probe p = probe(hashes[i]);
        const uint32_t m1 = sig_match(p.b1, p.sig);
        const uint32_t m2 = sig_match(p.b2, p.sig);
        b1[i] = p.b1;
        b2[i] = p.b2;
        cand[i] = static_cast<uint16_t>(m1 | m2 << kConnBucketSlots);
        if (m1 != 0) {
            prefetch_write(&slot(p.b1, static_cast<uint32_t>(std::countr_zero(m1))));
        } else if (m2 != 0) {
            prefetch_write(&slot(p.b2, static_cast<uint32_t>(std::countr_zero(m2))));
        }
    }
    // Stage 2: compare keys, check idle timeouts.
    uint64_t hits = 0;
    for (size_t i = 0; i < n; ++i) {
        ConnEntry* e = nullptr;
        const conntrack_detail::KeyWords kw = conntrack_detail::words(keys[i]);
        if (cand[i] != 0) {
            constexpr uint32_t kMask = (1u << kConnBucketSlots) - 1;
            e = find(b1[i], cand[i] & kMask, kw);
            if (e == nullptr) {
                e = find(b2[i], static_cast<uint32_t>(cand[i]) >> kConnBucketSlots, kw);
            }
        }
        if (e == nullptr && overflowed(b1[i])) [[unlikely]] {
            e = find_third(probe(hashes[i]), kw);
        }
        e = live_or_reclaim(e, now);
        out[i] = e;
        hits |= static_cast<uint64_t>(e != nullptr) << i;
    }
    return hits;
}

inline InsertResult ConnTrack::insert(const FlowKey& key, uint64_t hash, uint32_t now,
                                      const ConnValue& value, bool half_open,
                                      bool known_absent) noexcept {
    return insert(key, hash, Probe{}, now, value, half_open, known_absent);
}

inline InsertResult ConnTrack::insert(const FlowKey& key, uint64_t hash, const Probe& given,
                                      uint32_t now, const ConnValue& value, bool half_open,
                                      bool known_absent) noexcept {
    return insert(conntrack_detail::words(key), hash, given, now, value, half_open, known_absent);
}

inline InsertResult ConnTrack::insert(const conntrack_detail::KeyWords& key, uint64_t hash,
                                      const Probe& given, uint32_t now, const ConnValue& value,
                                      bool half_open, bool known_absent) noexcept {
    const Probe p = given.sig != 0 ? given : probe(hash);
    // An existing entry for the key: report it if live; reclaim it if expired, so the key
    // never occupies two slots.
    if (!known_absent) {
        if (ConnEntry* e = find_key(p, key); e != nullptr && live_or_reclaim(e, now) != nullptr) {
            return {InsertStatus::Exists, e};
        }
    }
    ConnState state;
    switch (conntrack_detail::proto_of(key)) {
    case ct_wire::kTcp:
        state = half_open ? ConnState::TcpSynSeen : ConnState::TcpEstablished;
        break;
    case ct_wire::kUdp:
        state = ConnState::Udp;
        break;
    case ct_wire::kIcmp:
    case ct_wire::kIcmp6:
        state = ConnState::Icmp;
        break;
    default:
        state = ConnState::Other;
        break;
    }
    if (state == ConnState::TcpSynSeen && half_open_n_.get() >= half_open_max_) {
        insert_budget_.add(1);
        return {InsertStatus::HalfOpenBudget, nullptr};
    }
    // Two choices: the bucket with more free slots (fewer collisions later). If both are
    // full, expired entries in them are free slots: reclaim them and look again; then the
    // third bucket. Live entries are never evicted.
    ConnEntry* target = free_slot(p);
    uint16_t sig_bits = p.sig;
    if (target == nullptr) [[unlikely]] {
        reclaim_expired(p.b1, now);
        reclaim_expired(p.b2, now);
        target = free_slot(p);
        if (target == nullptr) {
            target = third_slot(p, now);
            if (target == nullptr) {
                insert_full_.add(1);
                return {InsertStatus::Full, nullptr};
            }
            sig_bits = static_cast<uint16_t>(p.sig | kSigThird);
            inserts_third_.add(1);
            if (const uint32_t c = overflow_count(p.b1); c != kOverflowSaturated) {
                set_overflow_count(p.b1, c + 1);
            }
        }
    }
    ConnEntry& e = *target;
    const Position at = position_of(e);
    // The key's words straight from the caller's registers (a FlowKey built on the stack
    // and copied cost a new flow ~15 instructions).
    static_assert(sizeof(conntrack_detail::KeyWords) == sizeof(FlowKey));
    std::memcpy(static_cast<void*>(&e.key), &key, sizeof(key));
    e.value = value;
    e.value.state = state;
    e.value.last_seen = now;
    set_sig(at.bucket, at.slot, sig_bits);
    entries_n_.add(1);
    if (state == ConnState::TcpSynSeen) {
        half_open_n_.add(1);
    }
    inserts_.add(1);
    return {InsertStatus::Inserted, &e};
}

inline void ConnTrack::on_tcp_flags(ConnEntry& e, uint8_t tcp_flags, uint32_t now) noexcept {
    e.value.last_seen = now;
    const ConnState s = e.value.state;
    if (s != ConnState::TcpSynSeen && s != ConnState::TcpEstablished &&
        s != ConnState::TcpClosing) {
        return; // not a TCP entry
    }
    ConnState next = s;
    if ((tcp_flags & (ct_wire::kFin | ct_wire::kRst)) != 0) {
        next = ConnState::TcpClosing;
    } else if ((tcp_flags & ct_wire::kSyn) != 0) {
        // A bare SYN on a closing flow is a new connection reusing the 4-tuple; it keeps
        // the backend. Without budget it stays CLOSING (short timeout either way).
        if ((tcp_flags & ct_wire::kAck) == 0 && s == ConnState::TcpClosing &&
            half_open_n_.get() < half_open_max_) {
            next = ConnState::TcpSynSeen;
        }
    } else if ((tcp_flags & ct_wire::kAck) != 0 && s == ConnState::TcpSynSeen) {
        next = ConnState::TcpEstablished;
    }
    if (next == s) {
        return;
    }
    if (s == ConnState::TcpSynSeen) {
        half_open_n_.sub(1);
    } else if (next == ConnState::TcpSynSeen) {
        half_open_n_.add(1);
    }
    e.value.state = next;
}

inline void ConnTrack::erase(ConnEntry& e) noexcept {
    const Position at = position_of(e);
    if (sig(at.bucket, at.slot) == 0) {
        return; // already free
    }
    reclaim(at.bucket, at.slot);
    erased_.add(1);
}

} // namespace sluice::dp
