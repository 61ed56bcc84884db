// sluice-pktgen: a DPDK traffic generator for the L4 benchmark rig. Usage:
//   sluice-pktgen --profile FILE.yaml [--json OUT] [--plot DIR] [--search] -- [EAL arguments]
// The profile (tools/pktgen/README.md) says what to send; EAL arguments pass through, so
// virtual devices (net_ring, net_memif, net_pcap, net_null) and real NICs work the DPDK way.
//
// One lcore sends and receives in one loop; with two lcores in the EAL core list the main
// lcore receives and the next one sends. Every generated packet carries a 16-byte stamp
// (stamp_fp.h): the receive side measures rate, loss (sent - received, after a drain),
// reordering, latency (TSC) and where packets went (destination address:port as received).
// A profile with `streams:` sends several streams interleaved packet by packet by their
// shares; each owns a range of the stamp's flow index, so results are also split by stream.

#include <algorithm>
#include <atomic>
#include <cinttypes>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include <boost/program_options.hpp>
#include <rte_bus.h>
#include <rte_cycles.h>
#include <rte_dev.h>
#include <rte_eal.h>
#include <rte_ethdev.h>
#include <rte_launch.h>
#include <rte_lcore.h>
#include <rte_mbuf.h>
#include <rte_mempool.h>
#include <rte_ring.h>

#include "pcap_file.h"
#include "profile.h"
#include "report.h"
#include "stamp_fp.h"
#include "stats.h"

namespace po = boost::program_options;
using namespace sluice;
using namespace sluice::pktgen;

namespace {

std::atomic<bool> g_stop{false};
void on_signal(int) { g_stop.store(true, std::memory_order_relaxed); }

constexpr uint32_t kPoolSize = 16383;
constexpr uint16_t kRxBurst = 32;

int die(const std::string& msg) {
    std::cerr << "sluice-pktgen: " << msg << std::endl;
    return 1;
}

// Single-writer counters read by another lcore (the progress line): relaxed, a plain store
// on x86; nothing is published through them.
void bump(std::atomic<uint64_t>& c, uint64_t n) noexcept {
    c.store(c.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);
}

struct PortInfo {
    uint16_t id = 0;
    std::string name;
    std::string driver;
    bool is_vdev = false;
    uint32_t speed_mbps = 0; ///< 0 = unknown
    Mac mac{};
};

Result<PortInfo> port_setup(uint16_t port, rte_mempool* rx_pool, uint16_t txq) {
    PortInfo pi;
    pi.id = port;
    rte_eth_dev_info info{};
    if (rte_eth_dev_info_get(port, &info) != 0) {
        return fail(Errc::Io, "port " + std::to_string(port) + ": no device info");
    }
    char name[RTE_ETH_NAME_MAX_LEN] = {};
    rte_eth_dev_get_name_by_port(port, name);
    pi.name = name;
    pi.driver = info.driver_name ? info.driver_name : "";
    if (info.device) {
        const rte_bus* bus = rte_dev_bus(info.device);
        pi.is_vdev = bus && std::strcmp(rte_bus_name(bus), "vdev") == 0;
    }
    rte_eth_conf conf{};
    if (rte_eth_dev_configure(port, 1, txq, &conf) != 0) {
        return fail(Errc::Io, "port " + std::to_string(port) + ": configure failed");
    }
    uint16_t rxd = 1024;
    uint16_t txd = 1024;
    rte_eth_dev_adjust_nb_rx_tx_desc(port, &rxd, &txd);
    const int sock = rte_eth_dev_socket_id(port);
    const unsigned s = sock < 0 ? 0 : static_cast<unsigned>(sock);
    if (rte_eth_rx_queue_setup(port, 0, rxd, s, nullptr, rx_pool) != 0) {
        return fail(Errc::Io, "port " + std::to_string(port) + ": rx queue setup failed");
    }
    for (uint16_t q = 0; q < txq; ++q) {
        if (rte_eth_tx_queue_setup(port, q, txd, s, nullptr) != 0) {
            return fail(Errc::Io, "port " + std::to_string(port) + ": tx queue setup failed");
        }
    }
    if (rte_eth_dev_start(port) != 0) {
        return fail(Errc::Io, "port " + std::to_string(port) + ": start failed");
    }
    rte_eth_promiscuous_enable(port);
    rte_ether_addr mac{};
    rte_eth_macaddr_get(port, &mac);
    std::copy(std::begin(mac.addr_bytes), std::end(mac.addr_bytes), pi.mac.begin());
    return pi;
}

/// Waits for link up (memif: the peer connected). @return false on timeout.
bool wait_link(uint16_t port, double seconds, uint32_t& speed) {
    const uint64_t end = rte_get_tsc_cycles() + static_cast<uint64_t>(seconds * static_cast<double>(rte_get_tsc_hz()));
    while (!g_stop.load(std::memory_order_relaxed)) {
        rte_eth_link link{};
        if (rte_eth_link_get_nowait(port, &link) == 0 && link.link_status == RTE_ETH_LINK_UP) {
            speed = link.link_speed == RTE_ETH_SPEED_NUM_UNKNOWN ? 0 : link.link_speed;
            return true;
        }
        if (rte_get_tsc_cycles() > end) {
            return false;
        }
        rte_delay_ms(20);
    }
    return false;
}

void zero_mbuf_data(rte_mempool*, void*, void* obj, unsigned) {
    auto* m = static_cast<rte_mbuf*>(obj);
    std::memset(m->buf_addr, 0, m->buf_len);
}

struct Pending {
    rte_mbuf* m = nullptr;
    uint32_t flow = 0;
    uint16_t bytes = 0; ///< frame bytes with FCS
    bool in_window = false;
};

/// One trial: warm-up, measured window, drain.
struct TrialSpec {
    double pps = 0; ///< 0 = as fast as possible
    double warmup_s = 0;
    double measure_s = 1;
    double drain_s = 0.5;
};

class Generator {
public:
    Generator(const Profile& p, const PortInfo& tx, const PortInfo& rx, rte_mempool* tx_pool,
              const PcapFrames* replay, unsigned tx_lcore)
        : p_(p)
        , tx_(tx)
        , rx_(rx)
        , tx_pool_(tx_pool)
        , replay_(replay)
        , tx_lcore_(tx_lcore)
        , hz_(rte_get_tsc_hz())
        , ns_per_cycle_(1e9 / static_cast<double>(hz_))
        , multi_(p.multi_stream)
        , total_flows_(p.total_flows()) {
        src_mac_ = p.src_mac_set ? p.src_mac : tx.mac;
        arp_mac_ = p.arp_mac_set ? p.arp_mac : rx.mac;
        dst_mac_ = p.dst_mac;
        flow_seq_.assign(total_flows_, 0);
        flow_tx_.assign(total_flows_, 0);
        rx_stats_.reset(total_flows_, multi_ ? p.streams.size() : 0);
        streams_.reserve(p.streams.size());
        for (const Stream& s : p.streams) {
            streams_.emplace_back(s);
        }
        progress_stream_rx_.assign(p.streams.size(), 0);
        if (tx_lcore_ != LCORE_ID_ANY) {
            arp_ring_ = rte_ring_create("pktgen_arp", 256, static_cast<int>(rte_socket_id()),
                                        RING_F_SP_ENQ | RING_F_SC_DEQ);
        }
        make_frame_specs();
    }
    ~Generator() {
        if (arp_ring_) {
            rte_ring_free(arp_ring_);
        }
    }

    [[nodiscard]] const Mac& dst_mac() const noexcept { return dst_mac_; }

    /// Resolves dst_mac with ARP requests for the first destination address.
    bool resolve_dst_mac(double timeout_s) {
        const Addr16 target = p_.dst.lo;
        const Addr16 sender = p_.src.lo;
        const uint64_t end = rte_get_tsc_cycles() + static_cast<uint64_t>(timeout_s * static_cast<double>(hz_));
        uint64_t next_req = 0;
        while (!g_stop.load(std::memory_order_relaxed) && rte_get_tsc_cycles() < end) {
            const uint64_t now = rte_get_tsc_cycles();
            if (now >= next_req) {
                if (rte_mbuf* m = rte_pktmbuf_alloc(tx_pool_)) {
                    uint8_t* f = rte_pktmbuf_mtod(m, uint8_t*);
                    std::memset(f, 0xff, 6);
                    std::memcpy(f + 6, src_mac_.data(), 6);
                    dp::store_be16(f + 12, dp::kEtherTypeArp);
                    uint8_t* a = f + 14;
                    dp::store_be16(a, 1);
                    dp::store_be16(a + 2, dp::kEtherTypeIpv4);
                    a[4] = 6;
                    a[5] = 4;
                    dp::store_be16(a + 6, 1);
                    std::memcpy(a + 8, src_mac_.data(), 6);
                    std::memcpy(a + 14, sender.data() + 12, 4);
                    std::memset(a + 18, 0, 6);
                    std::memcpy(a + 24, target.data() + 12, 4);
                    m->data_len = 60;
                    m->pkt_len = 60;
                    if (rte_eth_tx_burst(tx_.id, 0, &m, 1) != 1) {
                        rte_pktmbuf_free(m);
                    }
                }
                next_req = now + hz_ / 5;
            }
            rte_mbuf* pkts[kRxBurst];
            for (uint16_t port : rx_ports()) {
                const uint16_t n = rte_eth_rx_burst(port, 0, pkts, kRxBurst);
                for (uint16_t i = 0; i < n; ++i) {
                    const uint8_t* f = rte_pktmbuf_mtod(pkts[i], const uint8_t*);
                    dp::PacketMeta meta;
                    if (dp::parse_packet(f, rte_pktmbuf_data_len(pkts[i]), meta) == dp::Verdict::Arp &&
                        meta.arp_op == 2 && meta.key.src == target) {
                        std::memcpy(dst_mac_.data(), f + meta.l3_off + 8, 6);
                        make_frame_specs();
                        rte_pktmbuf_free_bulk(pkts + i, n - i);
                        return true;
                    }
                    rte_pktmbuf_free(pkts[i]);
                }
            }
        }
        return false;
    }

    TrialResult run_trial(const std::string& label, const TrialSpec& ts) {
        // Both sides know the window in advance: a packet belongs to the trial iff its stamp
        // (TX TSC) lies in [ws_, we_).
        rx_stats_.reset(total_flows_, multi_ ? p_.streams.size() : 0);
        std::fill(flow_tx_.begin(), flow_tx_.end(), 0);
        std::fill(progress_stream_rx_.begin(), progress_stream_rx_.end(), 0);
        for (auto* c : {&tx_packets_, &tx_bytes_, &tx_all_}) {
            c->store(0, std::memory_order_relaxed);
        }
        tx_refused_ = tx_alloc_fail_ = tx_behind_ = tx_unsent_ = 0;
        pps_ = ts.pps;
        max_backlog_ = std::max<uint64_t>(4u * p_.burst, static_cast<uint64_t>(ts.pps / 10));
        built_ = 0;
        t0_ = rte_get_tsc_cycles() + hz_ / 100;
        ws_ = t0_ + static_cast<uint64_t>(ts.warmup_s * static_cast<double>(hz_));
        we_ = ws_ + static_cast<uint64_t>(ts.measure_s * static_cast<double>(hz_));
        const uint64_t drain_end = we_ + static_cast<uint64_t>(ts.drain_s * static_cast<double>(hz_));
        tx_done_.store(false, std::memory_order_relaxed);
        tx_end_tsc_ = ~uint64_t{0};
        window_started_ = false;
        next_progress_ = t0_ + hz_;
        last_progress_tsc_ = t0_;
        last_progress_tx_ = last_progress_rx_ = 0;
        progress_label_ = label;
        if (tx_lcore_ != LCORE_ID_ANY) {
            rte_eal_remote_launch(&Generator::tx_lcore_main, this, tx_lcore_);
            while (!tx_done_.load(std::memory_order_acquire)) {
                rx_poll(true);
            }
            rte_eal_wait_lcore(tx_lcore_);
        } else {
            for (;;) {
                rx_poll(false);
                if (!tx_step(rte_get_tsc_cycles())) {
                    break;
                }
            }
        }
        const uint64_t stop_at = g_stop.load(std::memory_order_relaxed) ? rte_get_tsc_cycles() : drain_end;
        const uint64_t actual_we = std::min(we_, tx_end_tsc_);
        while (rte_get_tsc_cycles() < stop_at) {
            rx_poll(false); // the tx lcore is done: this thread may send ARP replies
        }
        if (multi_) {
            rx_stats_.fold_streams(); // the totals, from the per-stream counts
        }
        TxTotals tx;
        tx.packets = tx_packets_.load(std::memory_order_relaxed);
        tx.bytes = tx_bytes_.load(std::memory_order_relaxed);
        tx.refused = tx_refused_;
        tx.alloc_fail = tx_alloc_fail_;
        tx.behind = tx_behind_;
        tx.unsent = tx_unsent_;
        tx.flow_tx = &flow_tx_;
        const double window =
            actual_we > ws_ ? static_cast<double>(actual_we - ws_) / static_cast<double>(hz_) : 0;
        return summarize(p_, label, ts.pps, window, tx, rx_stats_, replay_ != nullptr);
    }

private:
    /// One stream's sending state (tx lcore). The stream's values build() reads per packet
    /// are copied here, next to the cursor, rather than read through the Stream.
    struct StreamTx {
        explicit StreamTx(const Stream& st) noexcept
            : s(&st)
            , cursor(st)
            , sizes(st.size_pattern.data())
            , nsizes(static_cast<uint32_t>(st.size_pattern.size()))
            , flow_base(st.flow_base)
            , proto(st.proto) {}

        const Stream* s;
        FlowCursor cursor;
        const uint16_t* sizes;
        uint32_t nsizes;
        uint32_t size_idx = 0;
        uint32_t flow_base;
        Proto proto;
        FrameSpec frame{};
    };

    /// (Re)builds every stream's frame template (after the destination MAC is resolved).
    void make_frame_specs() noexcept {
        for (StreamTx& x : streams_) {
            x.frame = make_frame_spec(*x.s, x.s->src_mac_set ? x.s->src_mac : tx_.mac, dst_mac_);
        }
    }

    std::vector<uint16_t> rx_ports() const {
        if (tx_.id == rx_.id) {
            return {rx_.id};
        }
        return {rx_.id, tx_.id}; // ARP for the sending side arrives on the tx port
    }

    static int tx_lcore_main(void* arg) {
        auto* g = static_cast<Generator*>(arg);
        while (g->tx_step(rte_get_tsc_cycles())) {
        }
        g->tx_done_.store(true, std::memory_order_release); // the counters are final
        return 0;
    }

    /// One round of sending. @return false when the trial's sending part is over.
    bool tx_step(uint64_t now) noexcept {
        if (arp_ring_) {
            rte_mbuf* r[8];
            const unsigned n = rte_ring_sc_dequeue_burst(arp_ring_, reinterpret_cast<void**>(r), 8, nullptr);
            const uint16_t s = n ? rte_eth_tx_burst(tx_.id, 0, r, static_cast<uint16_t>(n)) : 0;
            for (unsigned i = s; i < n; ++i) {
                rte_pktmbuf_free(r[i]);
            }
        }
        if (now >= we_ || g_stop.load(std::memory_order_relaxed)) {
            for (uint16_t i = 0; i < npending_; ++i) {
                rte_pktmbuf_free(pending_[i].m);
            }
            tx_unsent_ += npending_;
            npending_ = 0;
            tx_end_tsc_ = now;
            return false;
        }
        if (now < t0_) {
            return true;
        }
        if (replay_ && !window_started_ && ws_ > t0_) {
            // Replayed frames carry no stamp, so the receive side counts them by arrival
            // time: pause a little before the window so no warm-up frame is still in flight
            // when it opens, then pace afresh from the window's start.
            if (now < ws_ - std::min(ws_ - t0_, hz_ / 20)) {
                // warm-up: send
            } else if (now < ws_) {
                return true;
            } else {
                window_started_ = true;
                t0_ = ws_;
                built_ = 0;
            }
        }
        if (npending_ == 0) {
            uint32_t due = p_.burst;
            if (pps_ > 0) {
                const auto target = static_cast<uint64_t>(static_cast<double>(now - t0_) *
                                                          pps_ / static_cast<double>(hz_));
                if (target <= built_) {
                    return true;
                }
                uint64_t d = target - built_;
                if (d > max_backlog_) {
                    // Stalled for more than 100 ms (descheduled?): give up that deficit
                    // rather than sending it back to back. Shorter stalls are caught up,
                    // one burst per round, so the mean rate holds.
                    ++tx_behind_;
                    built_ = target - p_.burst;
                    d = p_.burst;
                }
                due = static_cast<uint32_t>(std::min<uint64_t>(d, p_.burst));
            }
            if (!build(now, due)) {
                return true;
            }
        }
        rte_mbuf* ms[kMaxBurst];
        for (uint16_t i = 0; i < npending_; ++i) {
            ms[i] = pending_[i].m;
        }
        const uint16_t sent = rte_eth_tx_burst(tx_.id, 0, ms, npending_);
        uint64_t pk = 0;
        uint64_t by = 0;
        for (uint16_t i = 0; i < sent; ++i) {
            if (pending_[i].in_window) {
                ++pk;
                by += pending_[i].bytes;
                if (!replay_) {
                    ++flow_tx_[pending_[i].flow];
                }
            }
        }
        bump(tx_all_, sent);
        if (pk) {
            bump(tx_packets_, pk);
            bump(tx_bytes_, by);
        }
        if (sent < npending_) {
            ++tx_refused_; // the port's ring is full: retried on the next round
            std::memmove(pending_, pending_ + sent, (npending_ - sent) * sizeof(Pending));
        }
        npending_ = static_cast<uint16_t>(npending_ - sent);
        return true;
    }

    bool build(uint64_t now, uint32_t n) noexcept {
        rte_mbuf* ms[kMaxBurst];
        if (rte_pktmbuf_alloc_bulk(tx_pool_, ms, n) != 0) {
            ++tx_alloc_fail_;
            return false;
        }
        const bool in_window = now >= ws_;
        // Locals, not members: the frame writes (uint8_t stores) would make the compiler
        // reload members after each one.
        const uint16_t* const order = p_.stream_pattern.data();
        const size_t order_len = p_.stream_pattern.size();
        StreamTx* const streams = streams_.data();
        uint32_t* const flow_seq = flow_seq_.data();
        size_t mix = mix_idx_;
        for (uint32_t i = 0; i < n; ++i) {
            rte_mbuf* m = ms[i];
            uint8_t* f = rte_pktmbuf_mtod(m, uint8_t*);
            Pending& pe = pending_[i];
            pe.m = m;
            pe.in_window = in_window;
            if (replay_) {
                const std::vector<uint8_t>& fr = (*replay_)[replay_idx_];
                replay_idx_ = replay_idx_ + 1 == replay_->size() ? 0 : replay_idx_ + 1;
                const auto len = static_cast<uint16_t>(std::min<size_t>(fr.size(), rte_pktmbuf_tailroom(m)));
                std::memcpy(f, fr.data(), len);
                m->data_len = len;
                m->pkt_len = len;
                pe.bytes = static_cast<uint16_t>(len + 4);
                pe.flow = 0;
                continue;
            }
            // The streams take turns in the precomputed send order (smooth weighted round
            // robin over their shares), so a mix is interleaved packet by packet.
            StreamTx& x = streams[order[mix]];
            mix = mix + 1 == order_len ? 0 : mix + 1;
            const uint16_t size = x.sizes[x.size_idx];
            x.size_idx = x.size_idx + 1 == x.nsizes ? 0 : x.size_idx + 1;
            const uint32_t flow = x.flow_base + x.cursor.flow();
            const uint32_t seq = flow_seq[flow]++;
            uint8_t flags = 0;
            if (x.proto == Proto::Syn || (x.proto == Proto::Tcp && seq == 0)) {
                flags = dp::kTcpSyn;
            } else if (x.proto == Proto::Tcp) {
                flags = dp::kTcpAck | dp::kTcpPsh;
            }
            const uint32_t len = size - 4u;
            write_frame(f, len, x.frame, x.cursor.tuple(), Stamp{flow, seq, now}, flags);
            m->data_len = static_cast<uint16_t>(len);
            m->pkt_len = len;
            pe.bytes = size;
            pe.flow = flow;
            x.cursor.advance();
        }
        mix_idx_ = mix;
        npending_ = static_cast<uint16_t>(n);
        built_ += n;
        return true;
    }

    /// Receives one burst from each port. `two_lcores`: the tx lcore is running, so ARP
    /// replies for the tx port go through the ring to it (it owns that port's only tx
    /// queue); otherwise they are sent from here.
    void rx_poll(bool two_lcores) noexcept {
        rte_mbuf* pkts[kRxBurst];
        const uint16_t nports = tx_.id == rx_.id ? 1 : 2;
        for (uint16_t pi = 0; pi < nports; ++pi) {
            const uint16_t port = pi == 0 ? rx_.id : tx_.id;
            const uint16_t n = rte_eth_rx_burst(port, 0, pkts, kRxBurst);
            if (n == 0) {
                continue;
            }
            const uint64_t now = rte_get_tsc_cycles();
            RxStats& st = rx_stats_;
            const bool multi = multi_;
            if (st.first_rx_tsc == 0) {
                st.first_rx_tsc = now;
            }
            st.last_rx_tsc = now;
            for (uint16_t i = 0; i < n; ++i) {
                rte_mbuf* m = pkts[i];
                uint8_t* f = rte_pktmbuf_mtod(m, uint8_t*);
                const uint32_t len = rte_pktmbuf_data_len(m);
                dp::PacketMeta meta;
                Stamp s;
                bool tunneled = false;
                const RxKind k = classify_rx(f, len, meta, s, &tunneled);
                if (k == RxKind::Stamped) {
                    const uint64_t t = widen_tsc48(s.tsc, now);
                    if (t < ws_ || t >= we_) {
                        ++st.outside_window;
                    } else if (s.flow >= total_flows_) {
                        ++st.bad_flow;
                    } else {
                        // Several streams: counted in the stream owning the flow index only
                        // (folded into the totals after the trial).
                        RxCounts& c = multi ? st.streams[p_.stream_of(s.flow)] : st;
                        ++c.packets;
                        c.tunneled += tunneled ? 1 : 0;
                        c.bytes += rte_pktmbuf_pkt_len(m) + 4;
                        c.latency.add(static_cast<uint64_t>(static_cast<double>(now - t) *
                                                            ns_per_cycle_));
                        ++st.flow_rx[s.flow];
                        uint32_t& next = st.flow_next_seq[s.flow];
                        if (next == 0 || s.seq >= next) {
                            next = s.seq + 1;
                        } else if (s.seq + 1 == next) {
                            ++c.duplicates;
                        } else {
                            ++c.reordered;
                        }
                        c.dests.add(meta.family, meta.proto, meta.key.dst, meta.key.dst_port);
                    }
                } else if (k == RxKind::ArpRequest) {
                    ++st.arp_requests;
                    if (answer_arp(meta, m, port, two_lcores)) {
                        continue; // the mbuf is on its way back
                    }
                } else if (now >= ws_ && meta.verdict != dp::Verdict::Arp) {
                    ++st.unstamped;
                    st.unstamped_bytes += rte_pktmbuf_pkt_len(m) + 4;
                    if (replay_ && (meta.verdict == dp::Verdict::Forward)) {
                        st.dests.add(meta.family, meta.proto, meta.key.dst, meta.key.dst_port);
                    }
                }
                rte_pktmbuf_free(m);
            }
        }
        progress();
    }

    bool answer_arp(dp::PacketMeta& meta, rte_mbuf* m, uint16_t port, bool two_lcores) noexcept {
        bool ours = false;
        for (const AddrRange& r : p_.arp_reply_for) {
            ours = ours || r.contains(4, meta.key.dst);
        }
        if (!ours) {
            ++rx_stats_.arp_ignored;
            return false;
        }
        uint8_t* f = rte_pktmbuf_mtod(m, uint8_t*);
        if (!dp::make_arp_reply(meta, {f, rte_pktmbuf_data_len(m)}, arp_mac_)) {
            return false;
        }
        ++rx_stats_.arp_replies;
        if (two_lcores && port == tx_.id) {
            // The tx lcore owns this port's tx queue: it sends the reply.
            if (arp_ring_ && rte_ring_sp_enqueue(arp_ring_, m) == 0) {
                return true;
            }
            return false;
        }
        return rte_eth_tx_burst(port, 0, &m, 1) == 1;
    }

    void progress() {
        const uint64_t now = rte_get_tsc_cycles();
        if (now < next_progress_) {
            return;
        }
        next_progress_ = now + hz_;
        const double dt = static_cast<double>(now - last_progress_tsc_) / static_cast<double>(hz_);
        // Several streams: the totals are folded only after the trial; sum them here, and
        // append each stream's rx rate (from the window) to the line.
        uint64_t rx_win = rx_stats_.packets;
        const LatencyHistogram* lat = &rx_stats_.latency;
        char per_stream[512] = "";
        if (multi_) {
            progress_latency_.clear();
            size_t used = 0;
            for (size_t k = 0; k < rx_stats_.streams.size(); ++k) {
                const RxCounts& c = rx_stats_.streams[k];
                rx_win += c.packets;
                progress_latency_.merge(c.latency);
                const int n = std::snprintf(
                    per_stream + used, sizeof per_stream - used, " | %s rx %.3f Mpps",
                    p_.streams[k].name.c_str(),
                    static_cast<double>(c.packets - progress_stream_rx_[k]) / dt / 1e6);
                used = std::min(sizeof per_stream - 1, used + static_cast<size_t>(std::max(n, 0)));
                progress_stream_rx_[k] = c.packets;
            }
            lat = &progress_latency_;
        }
        const uint64_t tx_all = tx_all_.load(std::memory_order_relaxed);
        const uint64_t rx_all = rx_win + rx_stats_.outside_window + rx_stats_.unstamped;
        const uint64_t txw = tx_packets_.load(std::memory_order_relaxed);
        const uint64_t rxw = rx_win + (replay_ ? rx_stats_.unstamped : 0);
        const double loss = txw ? 100.0 * (static_cast<double>(txw) - static_cast<double>(rxw)) /
                                      static_cast<double>(txw)
                                : 0.0;
        std::fprintf(stderr, "[%s%s] tx %.3f Mpps rx %.3f Mpps loss %.3f%% p99 %.1f us%s\n",
                     progress_label_.c_str(), now < ws_ ? " warm-up" : "",
                     static_cast<double>(tx_all - last_progress_tx_) / dt / 1e6,
                     static_cast<double>(rx_all - last_progress_rx_) / dt / 1e6, loss < 0 ? 0 : loss,
                     static_cast<double>(lat->percentile(0.99)) / 1e3, per_stream);
        last_progress_tsc_ = now;
        last_progress_tx_ = tx_all;
        last_progress_rx_ = rx_all;
    }

    const Profile& p_;
    PortInfo tx_;
    PortInfo rx_;
    rte_mempool* tx_pool_;
    const PcapFrames* replay_;
    unsigned tx_lcore_;
    uint64_t hz_;
    double ns_per_cycle_;
    Mac src_mac_{};
    Mac dst_mac_{};
    Mac arp_mac_{};
    bool multi_;           ///< the profile has `streams:` (per-stream counting)
    uint32_t total_flows_; ///< stamp flow indexes in use: [0, total_flows_)
    rte_ring* arp_ring_ = nullptr;

    // Trial window (written before the tx lcore is launched; read-only during the trial).
    double pps_ = 0;
    uint64_t max_backlog_ = 128;
    uint64_t t0_ = 0, ws_ = 0, we_ = 0;

    // TX lcore state.
    std::vector<StreamTx> streams_; ///< sized once, in the constructor
    size_t mix_idx_ = 0;            ///< position in p_.stream_pattern
    size_t replay_idx_ = 0;
    uint64_t built_ = 0;
    bool window_started_ = false;
    uint64_t tx_end_tsc_ = ~uint64_t{0};
    Pending pending_[kMaxBurst];
    uint16_t npending_ = 0;
    std::vector<uint32_t> flow_seq_;
    std::vector<uint32_t> flow_tx_;
    uint64_t tx_refused_ = 0, tx_alloc_fail_ = 0, tx_behind_ = 0, tx_unsent_ = 0;
    alignas(64) std::atomic<uint64_t> tx_packets_{0};
    std::atomic<uint64_t> tx_bytes_{0};
    std::atomic<uint64_t> tx_all_{0};
    // Release on the tx lcore / acquire here: every tx counter and pending_ free is done.
    std::atomic<bool> tx_done_{false};

    // RX (main lcore) state.
    alignas(64) RxStats rx_stats_;
    uint64_t next_progress_ = 0;
    uint64_t last_progress_tsc_ = 0;
    uint64_t last_progress_tx_ = 0;
    uint64_t last_progress_rx_ = 0;
    std::vector<uint64_t> progress_stream_rx_; ///< per stream, at the last progress line
    LatencyHistogram progress_latency_;        ///< scratch: the streams' merged latencies
    std::string progress_label_;
};

} // namespace

int main(int argc, char** argv) {
    int split = argc;
    for (int i = 1; i < argc; ++i) {
        if (std::string(argv[i]) == "--") {
            split = i;
            break;
        }
    }
    std::string profile_path;
    std::string json_out;
    std::string plot_dir;
    double link_wait_s = 10;
    po::options_description desc(
        "sluice-pktgen: DPDK traffic generator (rate, loss, reordering, latency, where packets "
        "went).\nusage: sluice-pktgen --profile FILE.yaml [--json OUT] [--plot DIR] [--search] "
        "-- [EAL arguments]\n\nOptions");
    desc.add_options()("help,h", "this help")(
        "profile", po::value(&profile_path), "traffic profile (YAML; see tools/pktgen/README.md)")(
        "json", po::value(&json_out), "write the results as JSON to this file")(
        "plot", po::value(&plot_dir), "write PNG charts (gnuplot) into this directory")(
        "search", "RFC 2544-style zero-loss throughput search (the profile's search: block), "
                  "then the latency sweep (sweep:) at shares of the rate found")(
        "link-wait", po::value(&link_wait_s)->default_value(link_wait_s),
        "seconds to wait for the ports' link (a memif peer) to come up");
    po::variables_map vm;
    try {
        po::store(po::parse_command_line(split, argv, desc), vm);
        po::notify(vm);
    } catch (const po::error& e) {
        std::cerr << "sluice-pktgen: " << e.what() << "\n" << desc;
        return 2;
    }
    if (vm.count("help")) {
        std::cout << desc
                  << "\nExample (a ring port loops tx back to rx; no NIC, no hugepages):\n"
                     "  sluice-pktgen --profile tools/pktgen/profiles/ring_udp.yaml --json "
                     "out.json -- -l 0 --no-huge -m 512 --no-pci --vdev=net_ring0\n";
        return 0;
    }
    if (profile_path.empty()) {
        std::cerr << "sluice-pktgen: --profile is required\n" << desc;
        return 2;
    }
    auto prof = load_profile(profile_path);
    if (!prof) {
        return die(prof.error().message);
    }
    Profile p = std::move(*prof);
    const bool search = vm.count("search") > 0;
    for (const std::string& n : p.notes) {
        std::cerr << "sluice-pktgen: note: " << n << std::endl;
    }
    if (p.multi_stream) {
        for (const Stream& s : p.streams) {
            std::cerr << "sluice-pktgen: stream " << s.name << ": " << proto_name(s.proto)
                      << ", " << s.flows << " flows (stamp flow index " << s.flow_base << "-"
                      << s.flow_base + s.flows - 1 << "), " << 100 * s.fraction
                      << "% of the packets" << std::endl;
        }
    }
    // The trial's summary line, then one per stream.
    auto print_summary = [](const TrialResult& r, const std::string& suffix) {
        std::cerr << "sluice-pktgen: " << summary_line(r) << suffix << std::endl;
        for (const std::string& l : stream_lines(r)) {
            std::cerr << "sluice-pktgen: " << l << std::endl;
        }
    };
    PcapFrames replay_frames;
    if (!p.pcap_replay.empty()) {
        auto fr = read_pcap(p.pcap_replay, 1u << 20, 2048 - RTE_PKTMBUF_HEADROOM);
        if (!fr) {
            return die(fr.error().message);
        }
        replay_frames = std::move(*fr);
        std::cerr << "sluice-pktgen: " << replay_frames.size() << " frames from "
                  << p.pcap_replay << std::endl;
    }

    std::vector<char*> eal_argv = {argv[0]};
    for (int i = split + 1; i < argc; ++i) {
        eal_argv.push_back(argv[i]);
    }
    if (rte_eal_init(static_cast<int>(eal_argv.size()), eal_argv.data()) < 0) {
        return die("EAL initialisation failed (see the EAL messages above)");
    }
    std::signal(SIGINT, on_signal);
    std::signal(SIGTERM, on_signal);
    int rc = 0;
    {
        const uint16_t nports = rte_eth_dev_count_avail();
        if (p.tx_port >= nports || p.rx_port >= nports) {
            rte_eal_cleanup();
            return die("tx_port/rx_port " + std::to_string(p.tx_port) + "/" +
                       std::to_string(p.rx_port) + " but the EAL has " + std::to_string(nports) +
                       " port(s): add --vdev=... or a NIC");
        }
        unsigned tx_lcore = LCORE_ID_ANY;
        if (rte_lcore_count() >= 2) {
            tx_lcore = rte_get_next_lcore(rte_get_main_lcore(), 1, 0);
        }
        rte_mempool* rx_pool = rte_pktmbuf_pool_create("pktgen_rx", kPoolSize, 256, 0,
                                                       RTE_MBUF_DEFAULT_BUF_SIZE, rte_socket_id());
        rte_mempool* tx_pool = rte_pktmbuf_pool_create("pktgen_tx", kPoolSize, 256, 0,
                                                       RTE_MBUF_DEFAULT_BUF_SIZE, rte_socket_id());
        if (!rx_pool || !tx_pool) {
            rte_eal_cleanup();
            return die("cannot create the mbuf pools (more -m memory?)");
        }
        // Bytes after a generated frame's stamp must be zero (the checksums count them so):
        // only headers + stamp are ever written into tx mbufs.
        rte_mempool_obj_iter(tx_pool, zero_mbuf_data, nullptr);
        auto txp = port_setup(p.tx_port, rx_pool, 1);
        if (!txp) {
            rte_eal_cleanup();
            return die(txp.error().message);
        }
        PortInfo rxp = *txp;
        if (p.rx_port != p.tx_port) {
            auto r = port_setup(p.rx_port, rx_pool, 1);
            if (!r) {
                rte_eal_cleanup();
                return die(r.error().message);
            }
            rxp = *r;
        }
        for (PortInfo* pi : {&*txp, &rxp}) {
            uint32_t speed = 0;
            if (!wait_link(pi->id, link_wait_s, speed)) {
                std::cerr << "sluice-pktgen: port " << pi->id << " (" << pi->name
                          << "): link still down after " << link_wait_s << " s" << std::endl;
                rc = 1;
            }
            pi->speed_mbps = pi->is_vdev ? 0 : speed;
        }
        // The base rate of the main run (and of the sweep without --search).
        double base_pps = p.rate_pps;
        if (!p.pcap_replay.empty()) {
            base_pps = p.replay_pps >= 0 ? p.replay_pps : p.rate_pps;
        } else if (p.rate_percent >= 0) {
            if (txp->speed_mbps == 0) {
                std::cerr << "sluice-pktgen: rate_percent needs a port with a known link speed; "
                          << txp->name << " is a virtual device (or reports none): give rate_pps"
                          << std::endl;
                rc = 1;
            }
            base_pps =
                p.rate_percent / 100.0 * txp->speed_mbps * 1e6 / ((p.mix_mean_frame() + 20) * 8);
        }
        if (!search && base_pps < 0 && rc == 0) {
            std::cerr << "sluice-pktgen: the profile gives no rate (rate_pps or rate_percent) "
                         "and --search was not asked"
                      << std::endl;
            rc = 1;
        }
        Json doc;
        doc["tool"] = "sluice-pktgen";
        doc["version"] = 1;
        doc["profile_file"] = profile_path;
        doc["profile"] = profile_json(p);
        doc["tsc_hz"] = rte_get_tsc_hz();
        doc["lcores"] = tx_lcore == LCORE_ID_ANY ? 1 : 2;
        auto port_json = [](const PortInfo& pi) {
            return Json{{"port", pi.id},         {"name", pi.name},
                        {"driver", pi.driver},   {"virtual", pi.is_vdev},
                        {"speed_mbps", pi.speed_mbps}, {"mac", format_mac(pi.mac)}};
        };
        doc["ports"] = {{"tx", port_json(*txp)}, {"rx", port_json(rxp)}};
        std::vector<TrialResult> runs;
        std::vector<TrialResult> searches;
        std::vector<TrialResult> sweeps;
        if (rc == 0) {
            Generator gen(p, *txp, rxp, tx_pool, replay_frames.empty() ? nullptr : &replay_frames,
                          tx_lcore);
            if (p.dst_mac_mode == Profile::DstMacMode::Arp) {
                if (!gen.resolve_dst_mac(3)) {
                    std::cerr << "sluice-pktgen: no ARP reply for " << format_addr(4, p.dst.lo)
                              << std::endl;
                    rc = 1;
                } else {
                    std::cerr << "sluice-pktgen: " << format_addr(4, p.dst.lo) << " is at "
                              << format_mac(gen.dst_mac()) << std::endl;
                }
            }
            doc["dst_mac"] = format_mac(gen.dst_mac());
            double sweep_base = base_pps;
            if (rc == 0 && !search) {
                TrialSpec ts{base_pps, p.warmup_s, p.duration_s, p.drain_s};
                runs.push_back(gen.run_trial("run", ts));
                print_summary(runs.back(), "");
                if (sweep_base == 0) {
                    sweep_base = runs.back().tx_pps;
                }
            }
            if (rc == 0 && search) {
                const SearchSpec& ss = p.search;
                auto trial = [&](double pps) {
                    TrialSpec ts{pps, ss.warmup_s, ss.trial_s, p.drain_s};
                    TrialResult r = gen.run_trial("search", ts);
                    // The offered rate must also have been sent: a port that pushes back
                    // (memif's ring full) or a generator that cannot keep up fails the trial.
                    const bool reached = r.tx_pps >= 0.98 * pps;
                    r.passed = r.loss_ratio <= ss.loss_threshold && reached;
                    r.json["passed"] = r.passed;
                    r.json["sent_offered_rate"] = reached;
                    print_summary(r, std::string(r.passed ? "  PASS" : "  FAIL") +
                                         (reached ? ""
                                                  : " (offered rate not sent: port back-pressure "
                                                    "or generator limit)"));
                    searches.push_back(r);
                    return searches.back();
                };
                double lo = ss.min_pps;
                double hi = ss.max_pps;
                double best = 0;
                double best_rx = 0;
                TrialResult top = trial(hi);
                if (top.passed) {
                    best = hi;
                    best_rx = top.rx_pps;
                } else {
                    TrialResult bottom = trial(lo);
                    if (bottom.passed) {
                        best = lo;
                        best_rx = bottom.rx_pps;
                        while (hi - lo > ss.precision_pps && !g_stop.load()) {
                            const double mid = (lo + hi) / 2;
                            TrialResult r = trial(mid);
                            if (r.passed) {
                                lo = mid;
                                best = mid;
                                best_rx = r.rx_pps;
                            } else {
                                hi = mid;
                            }
                        }
                    }
                }
                Json trials = Json::array();
                for (const TrialResult& r : searches) {
                    trials.push_back(r.json);
                }
                doc["search"] = {{"zero_loss_pps", best},
                                 {"zero_loss_rx_pps", best_rx},
                                 {"zero_loss_mbps", best * p.mix_mean_frame() * 8 / 1e6},
                                 {"loss_threshold", ss.loss_threshold},
                                 {"lowest_failing_pps", best < ss.max_pps ? hi : 0.0},
                                 {"trials", trials}};
                std::cerr << "sluice-pktgen: zero-loss throughput " << best / 1e6 << " Mpps (loss <= "
                          << ss.loss_threshold << ")" << std::endl;
                sweep_base = best;
            }
            if (rc == 0 && !p.sweep.empty() && sweep_base > 0 && !g_stop.load()) {
                const double sweep_s = search ? p.search.trial_s : p.duration_s;
                const double sweep_warm = search ? p.search.warmup_s : p.warmup_s;
                Json arr = Json::array();
                for (double pct : p.sweep) {
                    if (g_stop.load()) {
                        break;
                    }
                    TrialSpec ts{sweep_base * pct / 100.0, sweep_warm, sweep_s, p.drain_s};
                    TrialResult r = gen.run_trial("sweep " + std::to_string(static_cast<int>(pct)) + "%", ts);
                    r.percent = pct;
                    r.json["percent"] = pct;
                    print_summary(r, "");
                    arr.push_back({{"percent", pct},
                                   {"offered_pps", r.offered_pps},
                                   {"tx_pps", r.tx_pps},
                                   {"rx_pps", r.rx_pps},
                                   {"loss_ratio", r.loss_ratio},
                                   {"p50_ns", r.latency.percentile(0.5)},
                                   {"p90_ns", r.latency.percentile(0.9)},
                                   {"p99_ns", r.latency.percentile(0.99)},
                                   {"p999_ns", r.latency.percentile(0.999)},
                                   {"max_ns", r.latency.max()},
                                   {"trial", r.json}});
                    sweeps.push_back(std::move(r));
                }
                doc["sweep"] = {{"base_pps", sweep_base}, {"points", arr}};
            }
        }
        if (!runs.empty()) {
            doc["run"] = runs.front().json;
        }
        doc["interrupted"] = g_stop.load();
        if (!json_out.empty()) {
            std::ofstream f(json_out);
            f << doc.dump(2) << "\n";
            if (!f) {
                std::cerr << "sluice-pktgen: cannot write " << json_out << std::endl;
                rc = 1;
            }
        }
        if (!plot_dir.empty() && (!runs.empty() || !searches.empty() || !sweeps.empty())) {
            std::vector<const TrialResult*> cdfs;
            for (const TrialResult& r : runs) {
                cdfs.push_back(&r);
            }
            for (const TrialResult& r : sweeps) {
                cdfs.push_back(&r);
            }
            auto pngs = write_plots(plot_dir, cdfs, searches, sweeps);
            if (!pngs) {
                std::cerr << "sluice-pktgen: --plot: " << pngs.error().message << std::endl;
                rc = 1;
            } else {
                for (const std::string& f : *pngs) {
                    std::cerr << "sluice-pktgen: wrote " << f << std::endl;
                }
            }
        }
        rte_eth_dev_stop(p.tx_port);
        rte_eth_dev_close(p.tx_port);
        if (p.rx_port != p.tx_port) {
            rte_eth_dev_stop(p.rx_port);
            rte_eth_dev_close(p.rx_port);
        }
    }
    rte_eal_cleanup();
    return rc;
}
