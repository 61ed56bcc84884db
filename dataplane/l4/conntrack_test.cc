#include "conntrack_fp.h"

#include <cerrno>
#include <optional>
#include <random>
#include <set>
#include <unordered_set>
#include <vector>

#include <gtest/gtest.h>

#include <linux/mempolicy.h>
#include <sys/syscall.h>
#include <unistd.h>

namespace sluice::dp {
namespace {

FlowKey v4(uint32_t src, uint16_t sport, uint32_t dst = 0x0a000001, uint16_t dport = 80,
           uint8_t proto = ct_wire::kTcp) {
    FlowKey k{};
    k.family = 4;
    k.proto = proto;
    std::memcpy(k.src.data(), &src, 4);
    std::memcpy(k.dst.data(), &dst, 4);
    k.src_port = sport;
    k.dst_port = dport;
    return k;
}

FlowKey v6(uint64_t src_lo, uint16_t sport, uint8_t proto = ct_wire::kTcp) {
    FlowKey k{};
    k.family = 6;
    k.proto = proto;
    k.src[0] = 0x20;
    k.src[1] = 0x01;
    std::memcpy(k.src.data() + 8, &src_lo, 8);
    k.dst[0] = 0x20;
    k.dst[1] = 0x01;
    k.dst[15] = 1;
    k.src_port = sport;
    k.dst_port = 443;
    return k;
}

ConnValue val(uint32_t backend) {
    return {.service = 7, .backend = backend, .generation = 3};
}

std::unique_ptr<ConnTrack> make(uint32_t capacity, uint32_t half_open_max = 0) {
    auto t =
        ConnTrack::create({.capacity = capacity, .half_open_max = half_open_max, .seed = 0x5eed});
    EXPECT_TRUE(t.has_value()) << (t ? "" : t.error().message);
    return t ? std::move(*t) : nullptr;
}

InsertStatus put(ConnTrack& t, const FlowKey& k, uint32_t now, uint32_t backend = 1,
                 bool half_open = false) {
    return t.insert(k, flow_hash(k), now, val(backend), half_open).status;
}

ConnEntry* get(ConnTrack& t, const FlowKey& k, uint32_t now) {
    return t.lookup(k, flow_hash(k), now);
}

TEST(ConnTrack, InsertAndLookupBothFamilies) {
    auto t = make(1024);
    const FlowKey a = v4(0xc0a80001, 40000), b = v6(0x1234, 40000);
    EXPECT_EQ(put(*t, a, 100, 11), InsertStatus::Inserted);
    EXPECT_EQ(put(*t, b, 100, 22), InsertStatus::Inserted);
    ConnEntry* ea = get(*t, a, 200);
    ConnEntry* eb = get(*t, b, 200);
    ASSERT_NE(ea, nullptr);
    ASSERT_NE(eb, nullptr);
    EXPECT_EQ(ea->value.backend, 11u);
    EXPECT_EQ(ea->value.service, 7u);
    EXPECT_EQ(ea->value.generation, 3u);
    EXPECT_EQ(ea->value.state, ConnState::TcpEstablished);
    EXPECT_EQ(ea->value.last_seen, 100u);
    EXPECT_EQ(eb->value.backend, 22u);
    EXPECT_EQ(t->stats().entries, 2u);
    EXPECT_EQ(t->stats().inserts, 2u);
    // Every field is part of the identity.
    FlowKey c = a;
    c.src_port = 40001;
    EXPECT_EQ(get(*t, c, 200), nullptr);
    c = a;
    c.proto = ct_wire::kUdp;
    EXPECT_EQ(get(*t, c, 200), nullptr);
    c = a;
    c.family = 6;
    EXPECT_EQ(get(*t, c, 200), nullptr);
    EXPECT_EQ(get(*t, reversed(a), 200), nullptr);
    // A second insert of a live key does not duplicate it.
    const InsertResult dup = t->insert(a, flow_hash(a), 300, val(99), false);
    EXPECT_EQ(dup.status, InsertStatus::Exists);
    EXPECT_EQ(dup.entry, ea);
    EXPECT_EQ(ea->value.backend, 11u);
    EXPECT_EQ(t->stats().entries, 2u);
}

TEST(ConnTrack, EntryIsOneCacheLine) {
    EXPECT_EQ(sizeof(ConnEntry), 64u);
    EXPECT_EQ(alignof(ConnEntry), 64u);
    auto t = make(1000);
    EXPECT_EQ(t->capacity(), 1024u);
    EXPECT_EQ(t->memory_bytes(), t->capacity() * sizeof(ConnEntry));
}

TEST(ConnTrack, MillionFlowsAt64BytesEach) {
    auto t = make(1'000'000);
    ASSERT_NE(t, nullptr);
    EXPECT_EQ(t->capacity(), 1u << 20);
    EXPECT_EQ(t->memory_bytes(), size_t{1} << 26); // 64 MiB: 64 B per flow, nothing else
    EXPECT_EQ(t->half_open_max(), (1u << 20) / 8);
    auto key = [](uint32_t i) {
        return v4(0x0a000000 + (i >> 4), static_cast<uint16_t>(1024 + (i & 15)));
    };
    std::vector<bool> tracked(1'000'000);
    uint32_t inserted = 0, full_at_75 = 0;
    for (uint32_t i = 0; i < 1'000'000; ++i) {
        const InsertStatus s = put(*t, key(i), 0, i);
        ASSERT_TRUE(s == InsertStatus::Inserted || s == InsertStatus::Full);
        tracked[i] = s == InsertStatus::Inserted;
        inserted += tracked[i];
        if (i + 1 == (3u << 20) / 4) {
            full_at_75 = i + 1 - inserted;
        }
    }
    // 2 page-local choices of 4-slot buckets and a third anywhere, no relocation: below
    // 0.5% of new flows fall back to stateless Maglev up to 75% load (0.28% measured; the
    // two choices without the third: 0.67%), and of 1M offered to 2^20 slots over 95%
    // are tracked (958,259; without the third 940,907). Some took their third bucket.
    EXPECT_LT(full_at_75, (3u << 20) / 4 / 200);
    EXPECT_GE(inserted, 950'000u);
    EXPECT_GT(t->stats().inserts_third, 0u);
    EXPECT_EQ(t->audit(), "");
    EXPECT_EQ(t->stats().entries, inserted);
    EXPECT_EQ(t->stats().inserts, inserted);
    EXPECT_EQ(t->stats().insert_full, 1'000'000u - inserted);
    for (uint32_t i = 0; i < 1'000'000; i += 97) {
        ConnEntry* e = get(*t, key(i), 1);
        ASSERT_EQ(e != nullptr, tracked[i]) << i;
        if (e != nullptr) {
            EXPECT_EQ(e->value.backend, i);
        }
    }
}

TEST(ConnTrack, TimeoutsPerProtocol) {
    auto t = make(1024);
    const FlowKey udp = v4(1, 1, 2, 53, ct_wire::kUdp);
    const FlowKey icmp = v4(1, 9, 2, 9, ct_wire::kIcmp);
    const FlowKey tcp = v4(1, 1, 2, 80, ct_wire::kTcp);
    FlowKey gre = v4(1, 0, 2, 0, 47);
    ASSERT_EQ(put(*t, udp, 0), InsertStatus::Inserted);
    ASSERT_EQ(put(*t, icmp, 0), InsertStatus::Inserted);
    ASSERT_EQ(put(*t, tcp, 0), InsertStatus::Inserted);
    ASSERT_EQ(put(*t, gre, 0), InsertStatus::Inserted);
    EXPECT_EQ(get(*t, icmp, 0)->value.state, ConnState::Icmp);
    EXPECT_EQ(get(*t, gre, 0)->value.state, ConnState::Other);

    EXPECT_NE(get(*t, icmp, 10'000), nullptr); // exactly the timeout: still live
    EXPECT_EQ(get(*t, icmp, 10'001), nullptr);
    EXPECT_NE(get(*t, udp, 30'000), nullptr);
    EXPECT_EQ(get(*t, udp, 30'001), nullptr);
    EXPECT_NE(get(*t, gre, 30'000), nullptr);
    EXPECT_EQ(get(*t, gre, 30'001), nullptr);
    EXPECT_NE(get(*t, tcp, 300'000), nullptr);
    EXPECT_EQ(get(*t, tcp, 300'001), nullptr);
    // Lookups that met them expired reclaimed them.
    EXPECT_EQ(t->stats().entries, 0u);
    EXPECT_EQ(t->stats().expired, 4u);
}

TEST(ConnTrack, TouchRefreshes) {
    auto t = make(64);
    const FlowKey udp = v4(1, 1, 2, 53, ct_wire::kUdp);
    ASSERT_EQ(put(*t, udp, 0), InsertStatus::Inserted);
    uint32_t now = 0;
    for (int i = 0; i < 10; ++i) {
        now += 20'000;
        ConnEntry* e = get(*t, udp, now);
        ASSERT_NE(e, nullptr) << i;
        t->touch(*e, now);
    }
    EXPECT_EQ(get(*t, udp, now + 30'001), nullptr);
}

TEST(ConnTrack, TcpLifecycle) {
    auto t = make(1024);
    const FlowKey k = v4(0xc0a80001, 5555);
    const InsertResult r = t->insert(k, flow_hash(k), 0, val(4), /*half_open=*/true);
    ASSERT_EQ(r.status, InsertStatus::Inserted);
    EXPECT_EQ(r.entry->value.state, ConnState::TcpSynSeen);
    EXPECT_EQ(t->stats().half_open, 1u);
    EXPECT_EQ(t->timeout_ms(ConnState::TcpSynSeen), 5000u);

    ConnEntry* e = get(*t, k, 1000);
    t->on_tcp_flags(*e, ct_wire::kSyn | ct_wire::kAck, 1000); // the server's SYN-ACK
    EXPECT_EQ(e->value.state, ConnState::TcpSynSeen);
    t->on_tcp_flags(*e, ct_wire::kAck, 1001); // the client's third packet
    EXPECT_EQ(e->value.state, ConnState::TcpEstablished);
    EXPECT_EQ(t->stats().half_open, 0u);
    EXPECT_NE(get(*t, k, 1001 + 299'000), nullptr);

    e = get(*t, k, 200'000);
    t->on_tcp_flags(*e, ct_wire::kAck, 200'000);
    t->on_tcp_flags(*e, ct_wire::kFin | ct_wire::kAck, 200'001);
    EXPECT_EQ(e->value.state, ConnState::TcpClosing);
    t->on_tcp_flags(*e, ct_wire::kAck, 205'000); // the last ACKs keep it closing
    EXPECT_EQ(e->value.state, ConnState::TcpClosing);
    EXPECT_NE(get(*t, k, 215'000), nullptr);
    EXPECT_EQ(get(*t, k, 215'001), nullptr);
    EXPECT_EQ(t->stats().entries, 0u);
    EXPECT_EQ(t->stats().half_open, 0u);
    EXPECT_EQ(t->stats().expired, 1u);
}

TEST(ConnTrack, SynTimeoutAndRstFromHalfOpen) {
    auto t = make(1024);
    const FlowKey a = v4(1, 1), b = v4(2, 2);
    ASSERT_EQ(put(*t, a, 0, 1, true), InsertStatus::Inserted);
    ASSERT_EQ(put(*t, b, 0, 1, true), InsertStatus::Inserted);
    EXPECT_EQ(t->stats().half_open, 2u);
    ConnEntry* eb = get(*t, b, 10);
    t->on_tcp_flags(*eb, ct_wire::kRst, 10);
    EXPECT_EQ(eb->value.state, ConnState::TcpClosing);
    EXPECT_EQ(t->stats().half_open, 1u);
    EXPECT_NE(get(*t, a, 5000), nullptr);
    EXPECT_EQ(get(*t, a, 5001), nullptr);
    EXPECT_EQ(t->stats().half_open, 0u);
    // Port reuse: a bare SYN on the closing flow re-opens it with the same backend.
    t->on_tcp_flags(*eb, ct_wire::kSyn, 20);
    EXPECT_EQ(eb->value.state, ConnState::TcpSynSeen);
    EXPECT_EQ(t->stats().half_open, 1u);
    t->on_tcp_flags(*eb, ct_wire::kAck, 21);
    EXPECT_EQ(eb->value.state, ConnState::TcpEstablished);
    EXPECT_EQ(t->stats().half_open, 0u);
    // TCP flags on a non-TCP entry only refresh it.
    const FlowKey u = v4(3, 3, 4, 53, ct_wire::kUdp);
    ASSERT_EQ(put(*t, u, 0), InsertStatus::Inserted);
    ConnEntry* eu = get(*t, u, 1);
    t->on_tcp_flags(*eu, ct_wire::kRst, 1);
    EXPECT_EQ(eu->value.state, ConnState::Udp);
    EXPECT_EQ(eu->value.last_seen, 1u);
}

TEST(ConnTrack, SynFloodCannotEvictEstablished) {
    auto t = make(4096, 256);
    std::vector<FlowKey> established;
    for (uint32_t i = 0; i < 2000; ++i) {
        established.push_back(v4(0x0b000000 + i, 1000));
        ASSERT_EQ(put(*t, established.back(), 0, i), InsertStatus::Inserted);
    }
    uint32_t inserted = 0, budget = 0, full = 0;
    for (uint32_t i = 0; i < 100'000; ++i) {
        switch (put(*t, v4(0x66000000 + i, static_cast<uint16_t>(i)), 100, 0, true)) {
        case InsertStatus::Inserted:
            ++inserted;
            break;
        case InsertStatus::HalfOpenBudget:
            ++budget;
            break;
        case InsertStatus::Full:
            ++full;
            break;
        case InsertStatus::Exists:
            ADD_FAILURE();
            break;
        }
    }
    EXPECT_EQ(inserted, 256u);
    EXPECT_EQ(t->stats().half_open, 256u);
    EXPECT_EQ(budget + full, 100'000u - 256u);
    EXPECT_EQ(t->stats().insert_budget, budget);
    for (uint32_t i = 0; i < established.size(); ++i) {
        ConnEntry* e = get(*t, established[i], 200);
        ASSERT_NE(e, nullptr) << i;
        EXPECT_EQ(e->value.backend, i);
    }
    // New established flows still fit beside the capped flood.
    EXPECT_EQ(put(*t, v4(0x0c000000, 1), 200), InsertStatus::Inserted);
    // Once the half-open entries expire and are swept, the budget is free again.
    EXPECT_EQ(put(*t, v4(0x67000000, 1), 5100, 0, true), InsertStatus::HalfOpenBudget);
    EXPECT_EQ(t->sweep(5101, t->capacity()), 256u);
    EXPECT_EQ(t->stats().half_open, 0u);
    EXPECT_EQ(put(*t, v4(0x67000000, 1), 5101, 0, true), InsertStatus::Inserted);
    EXPECT_NE(get(*t, established[0], 5101), nullptr);
}

TEST(ConnTrack, FullTableNeverEvictsLiveEntries) {
    auto t = make(64);
    std::vector<FlowKey> in;
    uint32_t full = 0;
    for (uint32_t i = 0; i < 1000; ++i) {
        const FlowKey k = v4(0x0d000000 + i, 7, 1, 53, ct_wire::kUdp);
        const InsertStatus s = put(*t, k, 0, i);
        if (s == InsertStatus::Inserted) {
            in.push_back(k);
        } else {
            ASSERT_EQ(s, InsertStatus::Full);
            ++full;
        }
    }
    EXPECT_GE(in.size(), 48u); // 2-choice packing fills most of a tiny table
    EXPECT_LE(in.size(), 64u);
    EXPECT_EQ(t->stats().entries, in.size());
    EXPECT_EQ(t->stats().insert_full, full);
    for (const FlowKey& k : in) {
        EXPECT_NE(get(*t, k, 30'000), nullptr);
    }
    // Still full while the entries are live (the lookups above did not refresh them).
    EXPECT_EQ(put(*t, v4(0x0e000000, 1, 1, 53, ct_wire::kUdp), 30'000), InsertStatus::Full);
    // Expired entries are free slots: inserts reuse them without a sweep.
    uint32_t reused = 0;
    for (uint32_t i = 0; i < 1000; ++i) {
        reused +=
            put(*t, v4(0x0e000000 + i, 7, 1, 53, ct_wire::kUdp), 30'001) == InsertStatus::Inserted;
    }
    EXPECT_GE(reused, 48u);
    const ConnTrackStats s = t->stats();
    EXPECT_EQ(s.entries, reused + (in.size() - s.expired));
    EXPECT_LE(s.entries, 64u);
}

TEST(ConnTrack, ExpiredHalfOpenIsAccountedAtReuse) {
    constexpr uint32_t kCap = kConnTrackMinCapacity; // 2 buckets: every key lands in both
    auto t = make(kCap, kCap);
    for (uint32_t i = 0; i < kCap; ++i) {
        ASSERT_EQ(put(*t, v4(0x10000000 + i, 1), 0, 0, true), InsertStatus::Inserted);
    }
    EXPECT_EQ(t->stats().half_open, kCap);
    EXPECT_EQ(put(*t, v4(0x11000000, 1), 1000, 0, true), InsertStatus::HalfOpenBudget);
    // Established inserts after the SYN timeout reuse the expired half-open slots.
    for (uint32_t i = 0; i < kCap; ++i) {
        ASSERT_EQ(put(*t, v4(0x12000000 + i, 1), 6000), InsertStatus::Inserted) << i;
    }
    EXPECT_EQ(t->stats().half_open, 0u);
    EXPECT_EQ(t->stats().entries, kCap);
    EXPECT_EQ(t->stats().expired, kCap);
}

TEST(ConnTrack, SweepFreesAndKeepsCountersExact) {
    auto t = make(4096);
    for (uint32_t i = 0; i < 1000; ++i) {
        ASSERT_EQ(put(*t, v4(0x20000000 + i, 1, 2, 53, ct_wire::kUdp), 0), InsertStatus::Inserted);
        ASSERT_EQ(put(*t, v4(0x21000000 + i, 1), 0, 0, i < 300), InsertStatus::Inserted);
    }
    EXPECT_EQ(t->stats().entries, 2000u);
    EXPECT_EQ(t->stats().half_open, 300u);
    EXPECT_EQ(t->sweep(4000, t->capacity()), 0u); // nothing idle long enough
    // t = 6000: only the half-open TCP flows are past their 5 s.
    size_t freed = 0;
    const uint32_t buckets = t->capacity() / kConnBucketSlots;
    for (uint32_t i = 0; i < buckets / 16; ++i) {
        freed += t->sweep(6000, 16); // every bucket once, 16 at a time
    }
    EXPECT_EQ(freed, 300u);
    EXPECT_EQ(t->stats().half_open, 0u);
    EXPECT_EQ(t->stats().entries, 1700u);
    // t = 31000: the UDP flows too.
    EXPECT_EQ(t->sweep(31'000, t->capacity()), 1000u);
    EXPECT_EQ(t->stats().entries, 700u);
    EXPECT_EQ(t->stats().expired, 1300u);
    for (uint32_t i = 300; i < 1000; ++i) {
        EXPECT_NE(get(*t, v4(0x21000000 + i, 1), 31'000), nullptr);
    }
    EXPECT_EQ(t->sweep(301'000, t->capacity() * 2), 700u); // max_buckets is capped
    EXPECT_EQ(t->stats().entries, 0u);
}

TEST(ConnTrack, EraseFreesTheSlot) {
    auto t = make(64);
    const FlowKey k = v4(1, 1);
    ASSERT_EQ(put(*t, k, 0, 1, true), InsertStatus::Inserted);
    ConnEntry* e = get(*t, k, 0);
    t->erase(*e);
    t->erase(*e); // idempotent
    EXPECT_EQ(get(*t, k, 0), nullptr);
    EXPECT_EQ(t->stats().entries, 0u);
    EXPECT_EQ(t->stats().half_open, 0u);
    EXPECT_EQ(t->stats().erased, 1u);
    EXPECT_EQ(put(*t, k, 0, 2), InsertStatus::Inserted);
    EXPECT_EQ(get(*t, k, 0)->value.backend, 2u);
}

TEST(ConnTrack, LookupBulk) {
    auto t = make(1024);
    std::vector<FlowKey> keys;
    std::vector<uint64_t> hashes;
    for (uint32_t i = 0; i < 64; ++i) {
        keys.push_back(v4(0x30000000 + i, 9));
        hashes.push_back(flow_hash(keys.back()));
        if (i % 3 == 0) {
            ASSERT_EQ(t->insert(keys[i], hashes[i], 0, val(i), false).status,
                      InsertStatus::Inserted);
        }
    }
    for (uint32_t i = 0; i < 64; ++i) {
        t->prefetch(hashes[i]);
    }
    std::vector<ConnEntry*> out(64, nullptr);
    const uint64_t hits = t->lookup_bulk(keys, hashes, 10, out);
    for (uint32_t i = 0; i < 64; ++i) {
        EXPECT_EQ((hits >> i) & 1, i % 3 == 0 ? 1u : 0u) << i;
        EXPECT_EQ(out[i] != nullptr, i % 3 == 0) << i;
        if (out[i] != nullptr) {
            EXPECT_EQ(out[i]->value.backend, i);
            EXPECT_EQ(out[i], get(*t, keys[i], 10));
        }
    }
    // Expired entries are misses, and a short output span bounds the burst.
    std::vector<ConnEntry*> few(5, nullptr);
    EXPECT_EQ(t->lookup_bulk(keys, hashes, 400'000, few), 0u);
}

TEST(ConnTrack, HintedLookupEqualsLookupEvenWhenStale) {
    auto t = make(1024);
    const FlowKey a = v4(0x0a010101, 1000), b = v4(0x0a010102, 2000);
    ASSERT_EQ(put(*t, a, 10, 5), InsertStatus::Inserted);
    ConnEntry* hint = t->prefetch_entry(flow_hash(a));
    ASSERT_NE(hint, nullptr);
    EXPECT_EQ(t->lookup_hinted(conntrack_detail::words(a), flow_hash(a), 11, hint), get(*t, a, 11));
    // A hint for another key, or none, falls back to the probe.
    EXPECT_EQ(t->lookup_hinted(conntrack_detail::words(b), flow_hash(b), 11, hint), nullptr);
    EXPECT_EQ(t->lookup_hinted(conntrack_detail::words(a), flow_hash(a), 11, nullptr), hint);
    // The slot freed (its key bytes are still there): the hint must not resurrect it.
    t->erase(*hint);
    EXPECT_EQ(t->lookup_hinted(conntrack_detail::words(a), flow_hash(a), 12, hint), nullptr);
    EXPECT_EQ(t->stats().entries, 0u);
    // Reinserted: found again through the stale hint or the probe, counted once.
    ASSERT_EQ(put(*t, a, 13, 6), InsertStatus::Inserted);
    ConnEntry* e = t->lookup_hinted(conntrack_detail::words(a), flow_hash(a), 13, hint);
    ASSERT_NE(e, nullptr);
    EXPECT_EQ(e->value.backend, 6u);
    EXPECT_EQ(t->stats().entries, 1u);
    // Expired behind the hint: reclaimed once, like lookup() does.
    EXPECT_EQ(t->lookup_hinted(conntrack_detail::words(a), flow_hash(a), 13 + 10'000'000, e), nullptr);
    EXPECT_EQ(t->stats().entries, 0u);
    EXPECT_EQ(t->lookup_hinted(conntrack_detail::words(a), flow_hash(a), 13 + 10'000'001, e), nullptr);
    EXPECT_EQ(t->stats().entries, 0u);
}

// The pipeline's split lookup: hint_hit() decides only on the hint; lookup(..., Probe&) hands
// its probe to insert(), which puts the key where lookup() then finds it (the same buckets
// as an insert that computes its own probe), for keys of both families filling a table.
TEST(ConnTrack, ProbeFromTheLookupServesTheInsert) {
    auto t = make(4096);
    auto ref = make(4096); // the same seed: inserts computing their own probe
    std::vector<FlowKey> keys;
    for (uint32_t i = 0; i < 2500; ++i) {
        keys.push_back(i % 2 ? v6(0x1000 + i, static_cast<uint16_t>(i)) : v4(0x0a000000 + i, 7));
    }
    for (const FlowKey& k : keys) {
        const auto kw = conntrack_detail::words(k);
        EXPECT_EQ(t->hint_hit(kw, 5, nullptr), nullptr);
        ConnTrack::Probe p;
        ASSERT_EQ(t->lookup(kw, flow_hash(k), 5, p), nullptr);
        ASSERT_NE(p.sig, 0u) << "the lookup computed its probe";
        const InsertResult a = t->insert(k, flow_hash(k), p, 5, val(1), false, true);
        const InsertResult b = ref->insert(k, flow_hash(k), 5, val(1), false);
        ASSERT_EQ(a.status, b.status);
        if (a.status != InsertStatus::Inserted) {
            continue;
        }
        // Found where it was put; `ref` (own probes) takes the same Inserted/Full decisions.
        EXPECT_EQ(get(*t, k, 5), a.entry);
        EXPECT_EQ(t->hint_hit(kw, 6, a.entry), a.entry);
        EXPECT_EQ(t->hint_hit(conntrack_detail::words(keys[0] == k ? keys[1] : keys[0]), 6, a.entry),
                  nullptr);
    }
    EXPECT_EQ(t->stats().entries, ref->stats().entries);
    // The insert with an unset probe (sig 0) computes it.
    auto u = make(4096);
    ASSERT_EQ(u->insert(keys[3], flow_hash(keys[3]), ConnTrack::Probe{}, 5, val(2), false, false).status,
              InsertStatus::Inserted);
    ASSERT_NE(get(*u, keys[3], 5), nullptr);
    EXPECT_EQ(get(*u, keys[3], 5)->value.backend, 2u);
}

TEST(ConnTrack, TickWrapAround) {
    auto t = make(64);
    const FlowKey k = v4(1, 1, 2, 53, ct_wire::kUdp);
    const uint32_t start = 0xFFFFF000u; // 4096 ms before the wrap
    ASSERT_EQ(put(*t, k, start), InsertStatus::Inserted);
    EXPECT_NE(get(*t, k, start + 20'000), nullptr); // wrapped: now == 15904
    EXPECT_EQ(t->sweep(start + 29'000, t->capacity()), 0u);
    EXPECT_NE(get(*t, k, start + 30'000), nullptr);
    EXPECT_EQ(t->sweep(start + 30'001, t->capacity()), 1u);
    // A stamp slightly ahead of `now` (a stale tick) is live, not 49 days old.
    ASSERT_EQ(put(*t, k, 5), InsertStatus::Inserted);
    EXPECT_NE(get(*t, k, 0xFFFFFFF0u), nullptr);
}

TEST(ConnTrack, RandomOpsMatchAReferenceModel) {
    // Random inserts, lookups, TCP flags, erases and partial sweeps on a small, often
    // full table; after each full sweep the counters equal the reference's live flows.
    auto t = make(256, 24);
    struct Ref {
        ConnState state;
        uint32_t last_seen;
        uint32_t backend;
    };
    std::vector<FlowKey> keys;
    for (uint32_t i = 0; i < 600; ++i) {
        keys.push_back(v4(0x40000000 + i, 1, 2, 80, i % 3 == 0 ? ct_wire::kUdp : ct_wire::kTcp));
    }
    std::vector<std::optional<Ref>> ref(keys.size());
    auto live = [&](const Ref& r, uint32_t now) {
        return static_cast<int32_t>(now - r.last_seen) <=
               static_cast<int32_t>(t->timeout_ms(r.state));
    };
    std::mt19937 rng(3);
    uint32_t now = 0xFFFF0000u; // crosses the tick wrap on the way
    for (int step = 0; step < 200'000; ++step) {
        now += rng() % 50;
        const uint32_t i = rng() % keys.size();
        if (ref[i] && !live(*ref[i], now)) {
            ref[i].reset();
        }
        ConnEntry* e = get(*t, keys[i], now);
        ASSERT_EQ(e != nullptr, ref[i].has_value()) << step;
        switch (rng() % 8) {
        case 0:
        case 1:
        case 2:
            if (e == nullptr) {
                const bool half_open = rng() % 2 == 0;
                const InsertResult r =
                    t->insert(keys[i], flow_hash(keys[i]), now, val(i), half_open);
                if (r.status == InsertStatus::Inserted) {
                    ref[i] = Ref{r.entry->value.state, now, i};
                } else {
                    ASSERT_TRUE(r.status == InsertStatus::Full ||
                                r.status == InsertStatus::HalfOpenBudget);
                    ASSERT_TRUE(r.status != InsertStatus::HalfOpenBudget ||
                                (half_open && keys[i].proto == ct_wire::kTcp));
                }
            }
            break;
        case 3:
        case 4: {
            if (e == nullptr) {
                break;
            }
            ASSERT_EQ(e->value.backend, ref[i]->backend);
            const uint8_t flags[] = {ct_wire::kAck, ct_wire::kAck,
                                     ct_wire::kAck, ct_wire::kFin | ct_wire::kAck,
                                     ct_wire::kRst, ct_wire::kSyn | ct_wire::kAck};
            const uint8_t f = flags[rng() % std::size(flags)];
            t->on_tcp_flags(*e, f, now);
            Ref& r = *ref[i];
            r.last_seen = now;
            if (keys[i].proto == ct_wire::kTcp) {
                if ((f & (ct_wire::kFin | ct_wire::kRst)) != 0) {
                    r.state = ConnState::TcpClosing;
                } else if ((f & ct_wire::kSyn) == 0 && r.state == ConnState::TcpSynSeen) {
                    r.state = ConnState::TcpEstablished;
                }
            }
            ASSERT_EQ(e->value.state, r.state);
            break;
        }
        case 5:
            if (e != nullptr && rng() % 4 == 0) {
                t->erase(*e);
                ref[i].reset();
            }
            break;
        default:
            t->sweep(now, 3);
            break;
        }
        if (step % 10'000 == 0) {
            t->sweep(now, t->capacity());
            uint64_t n = 0, half_open = 0;
            for (const auto& r : ref) {
                if (r && live(*r, now)) {
                    ++n;
                    half_open += r->state == ConnState::TcpSynSeen;
                }
            }
            ASSERT_EQ(t->stats().entries, n) << step;
            ASSERT_EQ(t->audit(), "") << step;
            ASSERT_EQ(t->stats().half_open, half_open) << step;
            ASSERT_LE(half_open, t->half_open_max());
        }
    }
    const ConnTrackStats s = t->stats();
    EXPECT_GT(s.insert_full, 0u);
    EXPECT_GT(s.inserts_third, 0u); // the third buckets and their counts were exercised
    EXPECT_GT(s.insert_budget, 0u);
    EXPECT_GT(s.expired, 0u);
    EXPECT_EQ(t->sweep(now + 400'000, t->capacity()), s.entries);
    EXPECT_EQ(t->stats().entries, 0u);
    EXPECT_EQ(t->stats().half_open, 0u);
}

// A flow's two buckets share one 4 KiB page (a lookup's two signature lines: one TLB
// miss), in small heap-allocated tables and in large mapped ones alike; the two always
// differ; the signature is never 0 and never carries the third-bucket mark.
TEST(ConnTrack, BothBucketsOfAFlowShareAPage) {
    for (const uint32_t cap : {64u, 1u << 12, 1u << 16}) {
        auto t = make(cap);
        ASSERT_NE(t, nullptr);
        std::mt19937_64 rng(cap);
        uint32_t pages_seen = 0;
        std::set<uintptr_t> pages;
        for (int i = 0; i < 20'000; ++i) {
            const ConnTrack::Probe p = t->probe_of(rng());
            const void* lines[ConnTrack::kProbeLines];
            ASSERT_EQ(t->probe_lines(p, lines), ConnTrack::kProbeLines);
            const auto a = reinterpret_cast<uintptr_t>(lines[0]);
            const auto b = reinterpret_cast<uintptr_t>(lines[1]);
            ASSERT_NE(p.b1, p.b2);
            ASSERT_NE(a, b);
            ASSERT_EQ(a >> 12, b >> 12) << cap << " " << p.b1 << " " << p.b2;
            ASSERT_EQ(p.sig & 1u, 1u);
            ASSERT_EQ(p.sig & 2u, 0u);
            pages_seen += pages.insert(a >> 12).second;
        }
        // ...and the pairs still spread over the whole table.
        EXPECT_EQ(pages_seen, std::max<uint32_t>(1, cap * sizeof(ConnEntry) / 4096));
    }
}

// When both buckets of a flow are full it goes to its third: found there, counted by its
// first bucket, and uncounted when it leaves (erased or expired), so the lookups of that
// bucket's flows stop looking at the third one.
TEST(ConnTrack, ThirdBucketFlowsAreFoundAndUncounted) {
    auto t = make(256); // 64 buckets, 4 pages: both choices of a flow within 16 buckets
    std::vector<FlowKey> in;
    for (uint32_t i = 0; i < 4000 && in.size() < 240; ++i) {
        const FlowKey k = v4(0x0f000000 + i, 9, 1, 53, ct_wire::kUdp);
        if (put(*t, k, 0, i) == InsertStatus::Inserted) {
            in.push_back(k);
        }
    }
    const ConnTrackStats s = t->stats();
    ASSERT_GT(s.inserts_third, 0u);
    EXPECT_GE(in.size(), 240u); // 94% of the slots: the third bucket takes what two could not
    EXPECT_EQ(t->audit(), "");
    for (const FlowKey& k : in) {
        ASSERT_NE(get(*t, k, 1), nullptr);
    }
    // Erase half, expire the rest: every count returns to zero (none saturated here, or
    // the audit says so), and the table takes as many flows again.
    for (size_t i = 0; i < in.size(); i += 2) {
        ConnEntry* e = get(*t, in[i], 2);
        ASSERT_NE(e, nullptr);
        t->erase(*e);
        ASSERT_EQ(get(*t, in[i], 2), nullptr);
    }
    EXPECT_EQ(t->audit(), "");
    for (size_t i = 1; i < in.size(); i += 2) {
        ASSERT_NE(get(*t, in[i], 3), nullptr); // the erasures moved nobody
    }
    EXPECT_EQ(t->sweep(40'000, t->capacity()), in.size() / 2);
    EXPECT_EQ(t->stats().entries, 0u);
    EXPECT_EQ(t->audit(), "");
    uint32_t again = 0;
    for (uint32_t i = 0; i < 4000; ++i) {
        again += put(*t, v4(0x0f100000 + i, 9, 1, 53, ct_wire::kUdp), 50'000) ==
                 InsertStatus::Inserted;
    }
    EXPECT_GE(again, 240u);
    EXPECT_EQ(t->audit(), "");
}

// A mapped table asks for its worker's NUMA node (STYLE H2): the kernel reports the
// preferred-node policy on its memory, and the default one without a node.
TEST(ConnTrack, MappedTablePrefersItsNumaNode) {
    auto policy_at = [](const ConnTrack& t) {
        const void* lines[ConnTrack::kProbeLines];
        (void)t.probe_lines(t.probe_of(12345), lines);
        int mode = -1;
        if (::syscall(SYS_get_mempolicy, &mode, nullptr, 0UL, lines[0], MPOL_F_ADDR) != 0) {
            return -errno;
        }
        return mode;
    };
    auto plain = ConnTrack::create({.capacity = 1u << 16}); // 4 MiB: mapped
    ASSERT_TRUE(plain.has_value());
    const int def = policy_at(**plain);
    if (def == -ENOSYS) {
        GTEST_SKIP() << "kernel without NUMA policy support";
    }
    EXPECT_EQ(def, MPOL_DEFAULT);
    auto bound = ConnTrack::create({.capacity = 1u << 16, .numa_socket = 0});
    ASSERT_TRUE(bound.has_value());
    EXPECT_EQ(policy_at(**bound), MPOL_PREFERRED);
    // Still a working table.
    const FlowKey k = v4(0x0a000001, 1000);
    EXPECT_EQ(put(**bound, k, 0), InsertStatus::Inserted);
    EXPECT_NE(get(**bound, k, 1), nullptr);
}

TEST(ConnTrack, RejectsBadConfig) {
    EXPECT_FALSE(ConnTrack::create({.capacity = 0}).has_value());
    EXPECT_FALSE(ConnTrack::create({.capacity = kConnTrackMaxCapacity + 1}).has_value());
    EXPECT_FALSE(ConnTrack::create({.capacity = 64, .tcp_established_ms = 3'000'000'000u}));
    EXPECT_FALSE(ConnTrack::create({.capacity = 64, .half_open_max = 65}).has_value());
    auto tiny = ConnTrack::create({.capacity = 1});
    ASSERT_TRUE(tiny.has_value());
    EXPECT_EQ((*tiny)->capacity(), kConnTrackMinCapacity);
}

TEST(FlowHash, SymmetricForReverseKeys) {
    for (uint32_t i = 0; i < 1000; ++i) {
        const FlowKey a = v4(0x0a000000 + i * 7919, static_cast<uint16_t>(i), 0x0a0000ff,
                             static_cast<uint16_t>(80 + i % 3));
        EXPECT_EQ(flow_hash_symmetric(a), flow_hash_symmetric(reversed(a)));
        EXPECT_NE(flow_hash(a), flow_hash(reversed(a)));
        const FlowKey b = v6(i * 0x9e3779b97f4a7c15ULL, static_cast<uint16_t>(i), ct_wire::kUdp);
        EXPECT_EQ(flow_hash_symmetric(b), flow_hash_symmetric(reversed(b)));
    }
    // Same addresses, ports differ only by order; ICMP echo id in both ports.
    const FlowKey same = v4(5, 1000, 5, 2000);
    EXPECT_EQ(flow_hash_symmetric(same), flow_hash_symmetric(reversed(same)));
    const FlowKey echo = v4(1, 77, 2, 77, ct_wire::kIcmp);
    EXPECT_EQ(flow_hash_symmetric(echo), flow_hash_symmetric(reversed(echo)));
}

// The hash is part of the fleet's contract (Maglev picks from it; every node must agree),
// so it is pinned: the word-wise multiply-mix written out here with plain 128-bit
// arithmetic, on random keys of both families, and two golden values.
TEST(FlowHash, IsTheDocumentedFunction) {
    __extension__ using U128 = unsigned __int128;
    auto mum = [](uint64_t a, uint64_t b) {
        const U128 r = static_cast<U128>(a) * b;
        return static_cast<uint64_t>(r) ^ static_cast<uint64_t>(r >> 64);
    };
    auto reference = [&mum](const FlowKey& k) {
        uint64_t w[5];
        std::memcpy(w, &k, 40);
        const uint64_t a = mum(w[0] ^ 0xa0761d6478bd642fULL, w[1] ^ 0xe7037ed1a0b428dbULL);
        const uint64_t b = mum(w[2] ^ 0x8ebc6af09c88c6e3ULL, w[3] ^ 0x589965cc75374cc3ULL);
        return mum(a ^ w[4] ^ 0x1d8e4e27c47d124fULL, b ^ 0xe7037ed1a0b428dbULL);
    };
    std::mt19937_64 rng(3);
    for (int i = 0; i < 100000; ++i) {
        const FlowKey k = i % 2 == 0 ? v4(static_cast<uint32_t>(rng()), static_cast<uint16_t>(rng()),
                                          static_cast<uint32_t>(rng()), static_cast<uint16_t>(rng()),
                                          i % 4 == 0 ? ct_wire::kTcp : ct_wire::kUdp)
                                     : v6(rng(), static_cast<uint16_t>(rng()));
        ASSERT_EQ(flow_hash(k), reference(k)) << i;
    }
    EXPECT_EQ(flow_hash(v4(0x0100000a, 1024, 0x6400000a, 80)), 0xd328a4b4368ca8beULL);
    EXPECT_EQ(flow_hash(v6(0x0123456789abcdefULL, 4242)), 0x378ea4cb0864e57ULL);
}

TEST(FlowHash, WellMixed) {
    // Sequential sources and ports must not collide and must spread over the low and
    // high bits alike (Maglev uses hash % 65537, lcore choice uses low bits).
    std::unordered_set<uint64_t> seen;
    std::vector<uint32_t> low(256, 0), high(256, 0);
    constexpr uint32_t kN = 256 * 400;
    for (uint32_t i = 0; i < kN; ++i) {
        const uint64_t h = flow_hash(v4(0x0a000000 + (i >> 8), static_cast<uint16_t>(i & 255)));
        seen.insert(h);
        ++low[h & 255];
        ++high[h >> 56];
    }
    EXPECT_EQ(seen.size(), kN);
    for (uint32_t c = 0; c < 256; ++c) {
        EXPECT_NEAR(low[c], 400.0, 100.0) << c; // > 5 sigma
        EXPECT_NEAR(high[c], 400.0, 100.0) << c;
    }
    // Avalanche: flipping any single key bit flips about half of the hash bits.
    const FlowKey base = v6(0x0123456789abcdefULL, 4242);
    const uint64_t h0 = flow_hash(base);
    double total = 0;
    for (size_t byte = 0; byte < 38; ++byte) {
        for (int bit = 0; bit < 8; ++bit) {
            FlowKey k = base;
            reinterpret_cast<uint8_t*>(&k)[byte] ^= static_cast<uint8_t>(1u << bit);
            const int flipped = std::popcount(flow_hash(k) ^ h0);
            EXPECT_GT(flipped, 12) << byte << ":" << bit;
            total += flipped;
        }
    }
    EXPECT_NEAR(total / (38 * 8), 32.0, 2.0);
}

} // namespace
} // namespace sluice::dp
