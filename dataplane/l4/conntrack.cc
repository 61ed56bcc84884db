#include "conntrack.h"

#include "mix.h"

#include <algorithm>
#include <bit>
#include <chrono>
#include <cstring>
#include <new>
#include <string>
#include <vector>

#include "conntrack_fp.h"

#include <linux/mempolicy.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

namespace sluice::dp {

namespace {

// The one place conntrack memory comes from. Tables of 2 MiB and more are mapped on 2 MiB
// pages: from the hugetlbfs pool when it has pages (MAP_HUGETLB), otherwise as transparent
// huge pages (a 2 MiB-aligned anonymous mapping with MADV_HUGEPAGE, which the kernel's
// default "madvise" THP mode honours). A flow lookup is a random access into a table of up
// to gigabytes: on 4 KiB pages nearly every one also misses the TLB, and a prefetch only
// hides that when the page walk itself hits. Smaller tables (tests) use the heap.
// NUMA (STYLE H2): a mapped table is bound to `numa_socket`'s node before its pages are
// touched (mbind, MPOL_PREFERRED: the node's memory while it has some, never a failure),
// so the worker that owns it reads local memory on a multi-socket machine. The kernel's
// node numbers are DPDK's socket ids (both come from the same sysfs topology).
constexpr size_t kHugePage = size_t{2} << 20;
/// Small tables are page-aligned too: a flow's two buckets are one 4 KiB page's (probe()).
constexpr size_t kPage = 4096;

size_t mapped_bytes(size_t bytes) noexcept { return (bytes + kHugePage - 1) & ~(kHugePage - 1); }

/// Asks for [p, p + len) on NUMA node `node` (best effort: on a kernel without NUMA, or a
/// node that is not there, the memory stays where the default policy puts it).
void prefer_node(void* p, size_t len, int node) noexcept {
    constexpr int kMaxNode = 1023;
    if (node < 0 || node > kMaxNode) {
        return;
    }
    unsigned long mask[(kMaxNode + 1) / (8 * sizeof(unsigned long))] = {};
    mask[static_cast<size_t>(node) / (8 * sizeof(unsigned long))] |=
        1UL << (static_cast<size_t>(node) % (8 * sizeof(unsigned long)));
    (void)::syscall(SYS_mbind, p, len, MPOL_PREFERRED, mask, kMaxNode + 1, 0);
}

ConnEntry* table_alloc(size_t bytes, int socket) noexcept {
    void* p = nullptr;
    if (bytes >= kHugePage) {
        const size_t len = mapped_bytes(bytes);
        p = ::mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_HUGETLB,
                   -1, 0);
        if (p == MAP_FAILED) {
            // Over-map by one huge page, keep the 2 MiB-aligned part, ask for THP.
            void* raw = ::mmap(nullptr, len + kHugePage, PROT_READ | PROT_WRITE,
                               MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
            if (raw == MAP_FAILED) {
                return nullptr;
            }
            const auto base = reinterpret_cast<uintptr_t>(raw);
            const uintptr_t aligned = (base + kHugePage - 1) & ~(kHugePage - 1);
            if (aligned > base) {
                ::munmap(raw, aligned - base);
            }
            if (const size_t tail = base + len + kHugePage - (aligned + len); tail != 0) {
                ::munmap(reinterpret_cast<void*>(aligned + len), tail);
            }
            p = reinterpret_cast<void*>(aligned);
            (void)::madvise(p, len, MADV_HUGEPAGE); // best effort: 4 KiB pages still work
        }
        prefer_node(p, len, socket); // (before the memset below touches the pages)
    } else {
        p = ::operator new (bytes, std::align_val_t{kPage}, std::nothrow);
        if (p == nullptr) {
            return nullptr;
        }
    }
    // Zero = every signature free. Also faults every page in now, not on the hot path.
    std::memset(p, 0, bytes);
    return static_cast<ConnEntry*>(p);
}

void table_free(ConnEntry* p, size_t bytes) noexcept {
    if (bytes >= kHugePage) {
        ::munmap(p, mapped_bytes(bytes));
    } else {
        ::operator delete (p, std::align_val_t{kPage});
    }
}

uint64_t splitmix(uint64_t x) noexcept { return splitmix64(x); }

} // namespace

Result<std::unique_ptr<ConnTrack>> ConnTrack::create(const ConnTrackConfig& cfg) {
    if (cfg.capacity == 0 || cfg.capacity > kConnTrackMaxCapacity) {
        return fail(Errc::Invalid, "conntrack: capacity must be 1.." +
                                       std::to_string(kConnTrackMaxCapacity) + ", got " +
                                       std::to_string(cfg.capacity));
    }
    for (const uint32_t t :
         {cfg.tcp_syn_ms, cfg.tcp_established_ms, cfg.tcp_closing_ms, cfg.udp_ms, cfg.icmp_ms}) {
        if (t > kConnTrackMaxTimeoutMs) {
            return fail(Errc::Invalid, "conntrack: timeout " + std::to_string(t) + " ms exceeds " +
                                           std::to_string(kConnTrackMaxTimeoutMs));
        }
    }
    const uint32_t capacity = std::bit_ceil(std::max(cfg.capacity, kConnTrackMinCapacity));
    if (cfg.half_open_max > capacity) {
        return fail(Errc::Invalid, "conntrack: half_open_max exceeds the capacity");
    }

    std::unique_ptr<ConnTrack> t(new ConnTrack());
    t->memory_bytes_ = static_cast<size_t>(capacity) * sizeof(ConnEntry);
    t->entries_ = table_alloc(t->memory_bytes_, cfg.numa_socket);
    if (t->entries_ == nullptr) {
        return fail(Errc::LimitExceeded,
                    "conntrack: cannot allocate " + std::to_string(t->memory_bytes_) + " bytes");
    }
    const uint32_t buckets = capacity / kConnBucketSlots;
    t->capacity_ = capacity;
    t->bucket_mask_ = buckets - 1;
    t->shift_ = 64 - static_cast<uint32_t>(std::countr_zero(buckets));
    t->half_open_max_ = cfg.half_open_max != 0 ? cfg.half_open_max : capacity / 8;
    // Unpredictable per table unless a test pins it: an attacker who knows flow_hash()
    // still cannot aim packets at one bucket pair.
    t->seed_ = cfg.seed != 0
                   ? cfg.seed
                   : splitmix(static_cast<uint64_t>(
                                  std::chrono::steady_clock::now().time_since_epoch().count()) ^
                              reinterpret_cast<uintptr_t>(t->entries_));
    auto ms = [](uint32_t v) { return static_cast<int32_t>(v); };
    t->timeout_[static_cast<size_t>(ConnState::Free)] = 0;
    t->timeout_[static_cast<size_t>(ConnState::TcpSynSeen)] = ms(cfg.tcp_syn_ms);
    t->timeout_[static_cast<size_t>(ConnState::TcpEstablished)] = ms(cfg.tcp_established_ms);
    t->timeout_[static_cast<size_t>(ConnState::TcpClosing)] = ms(cfg.tcp_closing_ms);
    t->timeout_[static_cast<size_t>(ConnState::Udp)] = ms(cfg.udp_ms);
    t->timeout_[static_cast<size_t>(ConnState::Icmp)] = ms(cfg.icmp_ms);
    t->timeout_[static_cast<size_t>(ConnState::Other)] = ms(cfg.udp_ms);
    return t;
}

ConnTrack::~ConnTrack() {
    if (entries_ != nullptr) {
        table_free(entries_, memory_bytes_);
    }
}

size_t ConnTrack::sweep(uint32_t now, size_t max_buckets) noexcept {
    const size_t buckets = static_cast<size_t>(bucket_mask_) + 1;
    const size_t n = max_buckets < buckets ? max_buckets : buckets;
    size_t freed = 0;
    uint32_t b = sweep_cursor_;
    for (size_t i = 0; i < n; ++i) {
        // Only occupied slots are read beyond slot 0's signature line.
        freed += reclaim_expired(b, now);
        b = (b + 1) & bucket_mask_;
    }
    sweep_cursor_ = b;
    return freed;
}

ConnEntry* ConnTrack::find_third(const Probe& p,
                                 const conntrack_detail::KeyWords& key) const noexcept {
    const uint16_t sig3 = static_cast<uint16_t>(p.sig | kSigThird);
    const uint32_t b3 = third_bucket(p.b1, p.sig);
    return find(b3, sig_match(b3, sig3), key);
}

ConnEntry* ConnTrack::third_slot(const Probe& p, uint32_t now) noexcept {
    const uint32_t b3 = third_bucket(p.b1, p.sig);
    uint32_t f = sig_match(b3, 0);
    if (f == 0) {
        reclaim_expired(b3, now);
        f = sig_match(b3, 0);
    }
    return f == 0 ? nullptr : &slot(b3, static_cast<uint32_t>(std::countr_zero(f)));
}

std::string ConnTrack::audit() const {
    const uint32_t buckets = bucket_mask_ + 1;
    std::vector<uint32_t> third(buckets, 0); // per first bucket: its flows in a third one
    for (uint32_t b = 0; b < buckets; ++b) {
        for (uint32_t s = 0; s < kConnBucketSlots; ++s) {
            const uint16_t v = sig(b, s);
            if (v == 0 || (v & kSigThird) == 0) {
                continue;
            }
            // The slot's flow: its first bucket must name this one as its third.
            const ConnEntry& e = slot(b, s);
            const Probe p = probe(conntrack_detail::hash_words(conntrack_detail::words(e.key)));
            if (third_bucket(p.b1, p.sig) != b || (p.sig | kSigThird) != v) {
                return "bucket " + std::to_string(b) + " slot " + std::to_string(s) +
                       ": marked third, but not its flow's third bucket";
            }
            ++third[p.b1];
        }
    }
    for (uint32_t b = 0; b < buckets; ++b) {
        const uint32_t c = overflow_count(b);
        if (c != third[b] && c != kOverflowSaturated) {
            return "bucket " + std::to_string(b) + ": overflow count " + std::to_string(c) +
                   ", flows in their third bucket " + std::to_string(third[b]);
        }
    }
    return "";
}

ConnTrackStats ConnTrack::stats() const noexcept {
    return {.entries = entries_n_.get(),
            .half_open = half_open_n_.get(),
            .inserts = inserts_.get(),
            .insert_full = insert_full_.get(),
            .inserts_third = inserts_third_.get(),
            .insert_budget = insert_budget_.get(),
            .expired = expired_.get(),
            .erased = erased_.get()};
}

} // namespace sluice::dp
