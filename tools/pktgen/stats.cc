#include "stats.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <tuple>

namespace sluice::pktgen {

uint64_t LatencyHistogram::lower_edge(uint32_t i) noexcept {
    if (i < kSub) {
        return i;
    }
    const uint32_t k = (i - kSub) / kSub + kSubBits;
    const uint32_t sub = (i - kSub) % kSub;
    return (uint64_t{1} << k) + (uint64_t{sub} << (k - kSubBits));
}

uint64_t LatencyHistogram::upper_edge(uint32_t i) noexcept {
    if (i < kSub) {
        return i;
    }
    const uint32_t k = (i - kSub) / kSub + kSubBits;
    return lower_edge(i) + (uint64_t{1} << (k - kSubBits)) - 1;
}

void LatencyHistogram::merge(const LatencyHistogram& o) noexcept {
    for (uint32_t i = 0; i < kBuckets; ++i) {
        counts_[i] += o.counts_[i];
    }
    count_ += o.count_;
    sum_ += o.sum_;
    min_ = std::min(min_, o.min_);
    max_ = std::max(max_, o.max_);
}

uint64_t LatencyHistogram::percentile(double q) const noexcept {
    if (count_ == 0) {
        return 0;
    }
    auto rank = static_cast<uint64_t>(std::ceil(q * static_cast<double>(count_)));
    rank = std::clamp<uint64_t>(rank, 1, count_);
    uint64_t seen = 0;
    for (uint32_t i = 0; i < kBuckets; ++i) {
        seen += counts_[i];
        if (seen >= rank) {
            return std::min(upper_edge(i), max_);
        }
    }
    return max_;
}

std::vector<std::pair<uint64_t, uint64_t>> LatencyHistogram::log2_buckets() const {
    std::vector<std::pair<uint64_t, uint64_t>> out;
    std::array<uint64_t, 65> by_k{}; // [0] holds value 0, [k+1] holds [2^k, 2^(k+1))
    for (uint32_t i = 0; i < kBuckets; ++i) {
        if (counts_[i] == 0) {
            continue;
        }
        const uint64_t lo = lower_edge(i);
        const size_t k = lo == 0 ? 0 : static_cast<size_t>(64 - __builtin_clzll(lo));
        by_k[k] += counts_[i];
    }
    for (size_t k = 0; k < by_k.size(); ++k) {
        if (by_k[k]) {
            out.emplace_back(k == 0 ? 0 : uint64_t{1} << (k - 1), by_k[k]);
        }
    }
    return out;
}

std::vector<std::pair<uint64_t, double>> LatencyHistogram::cdf() const {
    std::vector<std::pair<uint64_t, double>> out;
    uint64_t seen = 0;
    for (uint32_t i = 0; i < kBuckets && count_; ++i) {
        if (counts_[i] == 0) {
            continue;
        }
        seen += counts_[i];
        out.emplace_back(std::min(upper_edge(i), max_),
                         static_cast<double>(seen) / static_cast<double>(count_));
    }
    return out;
}

namespace {

// Two 8-byte compares (std::array's == became a memcmp call on the rx hot path).
bool same_addr(const Addr16& x, const Addr16& y) noexcept {
    uint64_t x0 = 0;
    uint64_t x1 = 0;
    uint64_t y0 = 0;
    uint64_t y1 = 0;
    std::memcpy(&x0, x.data(), 8);
    std::memcpy(&x1, x.data() + 8, 8);
    std::memcpy(&y0, y.data(), 8);
    std::memcpy(&y1, y.data() + 8, 8);
    return ((x0 ^ y0) | (x1 ^ y1)) == 0;
}

} // namespace

void DestTable::add_n(uint8_t family, uint8_t proto, const Addr16& addr, uint16_t port,
                      uint64_t n) noexcept {
    uint64_t h = (uint64_t{family} << 40) ^ (uint64_t{proto} << 32) ^ port;
    uint64_t a = 0;
    uint64_t b = 0;
    std::memcpy(&a, addr.data(), 8);
    std::memcpy(&b, addr.data() + 8, 8);
    h = (h ^ a) * 0xFF51AFD7ED558CCDull;
    h = (h ^ b ^ (h >> 29)) * 0xC4CEB9FE1A85EC53ull;
    h ^= h >> 32;
    for (uint32_t i = 0; i < kProbe; ++i) {
        Entry& e = slots_[(h + i) & (kSlots - 1)];
        if (e.family == family && e.port == port && e.proto == proto && same_addr(e.addr, addr)) {
            e.packets += n;
            return;
        }
        if (e.family == 0) {
            e.family = family;
            e.proto = proto;
            e.port = port;
            e.addr = addr;
            e.packets = n;
            ++used_;
            return;
        }
    }
    overflow_ += n;
}

void DestTable::merge(const DestTable& o) noexcept {
    for (const Entry& e : o.slots_) {
        if (e.family != 0) {
            add_n(e.family, e.proto, e.addr, e.port, e.packets);
        }
    }
    overflow_ += o.overflow_;
}

void DestTable::clear() noexcept {
    std::fill(slots_.begin(), slots_.end(), Entry{});
    overflow_ = 0;
    used_ = 0;
}

std::vector<DestTable::Entry> DestTable::top(size_t n) const {
    std::vector<Entry> all;
    for (const Entry& e : slots_) {
        if (e.family) {
            all.push_back(e);
        }
    }
    std::sort(all.begin(), all.end(), [](const Entry& x, const Entry& y) {
        if (x.packets != y.packets) {
            return x.packets > y.packets;
        }
        return std::tie(x.family, x.addr, x.port) < std::tie(y.family, y.addr, y.port);
    });
    if (all.size() > n) {
        all.resize(n);
    }
    return all;
}

void RxCounts::add(const RxCounts& o) noexcept {
    packets += o.packets;
    bytes += o.bytes;
    tunneled += o.tunneled;
    reordered += o.reordered;
    duplicates += o.duplicates;
    latency.merge(o.latency);
    dests.merge(o.dests);
}

void RxCounts::clear() noexcept {
    packets = bytes = tunneled = reordered = duplicates = 0;
    latency.clear();
    dests.clear();
}

void RxStats::reset(uint32_t flows, size_t nstreams) {
    std::vector<uint32_t> rx = std::move(flow_rx);
    std::vector<uint32_t> next = std::move(flow_next_seq);
    std::vector<RxCounts> st = std::move(streams);
    DestTable d = std::move(dests);
    *this = RxStats{};
    rx.assign(flows, 0);
    next.assign(flows, 0);
    d.clear();
    st.resize(nstreams);
    for (RxCounts& c : st) {
        c.clear();
    }
    flow_rx = std::move(rx);
    flow_next_seq = std::move(next);
    streams = std::move(st);
    dests = std::move(d);
}

void RxStats::fold_streams() noexcept {
    for (const RxCounts& c : streams) {
        add(c);
    }
}

} // namespace sluice::pktgen
