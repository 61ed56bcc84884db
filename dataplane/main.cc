// sluice-dataplane: the DPDK primary process. Usage:
//   sluice-dataplane [options] -- [EAL arguments]
// EAL arguments pass through unchanged, so real NICs, hugepages and lcore maps work the DPDK
// way; the defaults here work with --no-huge and virtual devices.

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <filesystem>
#include <csignal>
#include <cstdio>
#include <iostream>
#include <memory>
#include <thread>
#include <vector>

#include <boost/program_options.hpp>
#include <rte_eal.h>
#include <rte_ethdev.h>
#include <rte_lcore.h>
#include <rte_malloc.h>
#include <rte_mbuf.h>
#include <rte_ring.h>

#include "admin.h"
#include "ctl_server.h"
#include "lb_fp.h"
#include "service_table.h"
#include "snapshot.h"
#include "worker.h"

namespace po = boost::program_options;
using namespace sluice;
using namespace sluice::dp;

namespace {

std::atomic<bool> g_stop{false};
void on_signal(int) { g_stop.store(true, std::memory_order_relaxed); }

struct Options {
    std::string dp_socket = "/run/sluice/dp.sock";
    std::string stats_file = "/run/sluice/dataplane-stats.json";
    std::string exception_tap;
    std::string admin;
    std::vector<std::string> snat;
    uint32_t ct_capacity = 1u << 20;
    uint32_t ct_half_open = 0; ///< 0: capacity / 8
    uint32_t maglev_size = kMaglevDefaultSize;
    uint32_t mbufs = 0; ///< 0: sized for the workers' queues and rings
};

int die(const std::string& msg) {
    std::cerr << "sluice-dataplane: " << msg << std::endl;
    return 1;
}

/// Configures `port` for `workers` workers: one transmit queue each, and as many receive
/// queues as the device offers up to `workers` (RSS with a symmetric key when it has more
/// than one and the device hashes). Returns the receive queue count, or an error.
Result<uint16_t> port_init(uint16_t port, rte_mempool* pool, uint16_t workers) {
    rte_eth_conf conf{};
    rte_eth_dev_info info{};
    if (rte_eth_dev_info_get(port, &info) != 0) {
        return fail(Errc::Io, "cannot read the device's information");
    }
    if (info.max_tx_queues < workers) {
        return fail(Errc::Io, "the device offers " + std::to_string(info.max_tx_queues) +
                    " transmit queues; each of the " + std::to_string(workers) +
                    " worker lcores needs one (net_af_packet: qpairs=N; net_tap: up to 16)");
    }
    const uint16_t nrx = std::min<uint16_t>(workers, info.max_rx_queues);
    // 0x6d5a repeated: a Toeplitz key for which a flow and its reverse hash alike.
    static uint8_t symmetric_key[52];
    for (size_t i = 0; i < sizeof symmetric_key; i += 2) {
        symmetric_key[i] = 0x6d;
        symmetric_key[i + 1] = 0x5a;
    }
    const uint64_t hf = (RTE_ETH_RSS_IP | RTE_ETH_RSS_TCP | RTE_ETH_RSS_UDP) & info.flow_type_rss_offloads;
    if (nrx > 1 && hf != 0) {
        conf.rxmode.mq_mode = RTE_ETH_MQ_RX_RSS;
        conf.rx_adv_conf.rss_conf.rss_key = symmetric_key;
        conf.rx_adv_conf.rss_conf.rss_key_len =
            info.hash_key_size ? std::min<uint8_t>(info.hash_key_size, sizeof symmetric_key) : 40;
        conf.rx_adv_conf.rss_conf.rss_hf = hf;
    }
    if (rte_eth_dev_configure(port, nrx, workers, &conf) != 0) {
        return fail(Errc::Io, "rte_eth_dev_configure(" + std::to_string(nrx) + " rx, " +
                    std::to_string(workers) + " tx queues) failed");
    }
    uint16_t rxd = 1024, txd = 1024;
    rte_eth_dev_adjust_nb_rx_tx_desc(port, &rxd, &txd);
    const int socket = rte_eth_dev_socket_id(port);
    for (uint16_t q = 0; q < nrx; ++q) {
        if (rte_eth_rx_queue_setup(port, q, rxd, socket < 0 ? 0 : socket, nullptr, pool) != 0) {
            return fail(Errc::Io, "receive queue " + std::to_string(q) + " setup failed");
        }
    }
    for (uint16_t q = 0; q < workers; ++q) {
        if (rte_eth_tx_queue_setup(port, q, txd, socket < 0 ? 0 : socket, nullptr) != 0) {
            return fail(Errc::Io, "transmit queue " + std::to_string(q) + " setup failed");
        }
    }
    if (rte_eth_dev_start(port) != 0) {
        return fail(Errc::Io, "cannot start the device");
    }
    rte_eth_promiscuous_enable(port);
    return nrx;
}

int worker_main(void* arg) {
    static_cast<Worker*>(arg)->run(g_stop);
    return 0;
}

} // namespace

int main(int argc, char** argv) {
    // Split our options from the EAL's at "--".
    int split = argc;
    for (int i = 1; i < argc; ++i) {
        if (std::string(argv[i]) == "--") {
            split = i;
            break;
        }
    }
    Options o;
    po::options_description desc(
        "sluice-dataplane: DPDK L4 load balancer (full-NAT) fed by sluice-controlplane.\n"
        "usage: sluice-dataplane [options] -- [EAL arguments]\n\nOptions");
    desc.add_options()("help,h", "this help")(
        "dp-socket", po::value(&o.dp_socket)->default_value(o.dp_socket),
        "unix socket dp-control listens on for the controlplane's IR")(
        "snat", po::value(&o.snat)->composing(),
        "full-NAT source address (repeatable, one per family at least; up to 16, each gives ~64k concurrent flows)")(
        "ct-capacity", po::value(&o.ct_capacity)->default_value(o.ct_capacity),
        "connection-tracking entries per worker lcore (64 bytes each)")(
        "ct-half-open", po::value(&o.ct_half_open)->default_value(o.ct_half_open),
        "half-open (SYN seen) TCP entries per worker allowed at once, so a SYN flood cannot "
        "fill the table (0: an eighth of --ct-capacity; at most --ct-capacity)")(
        "maglev-size", po::value(&o.maglev_size)->default_value(o.maglev_size),
        "Maglev table size per service (a prime)")(
        "mbufs", po::value(&o.mbufs)->default_value(o.mbufs),
        "mbuf pool size (0: enough for every worker's queues and rings)")(
        "exception-tap", po::value(&o.exception_tap)->default_value(""),
        "name of a TAP interface (net_tap) made for the kernel: frames that are not L4 VIP "
        "traffic (management, ARP/ND of the kernel's addresses, HTTP/HTTPS/TLS listeners "
        "served by sluice-l7) go to it, and what the kernel sends on it leaves through the port")(
        "admin", po::value(&o.admin)->default_value(""),
        "ADDR:PORT for GET /metrics (Prometheus text) and GET /stats (JSON); '' = off")(
        "stats-file", po::value(&o.stats_file)->default_value(o.stats_file),
        "JSON counters rewritten every second (sluicectl stats reads it); '' = off");
    po::variables_map vm;
    try {
        po::store(po::parse_command_line(split, argv, desc), vm);
        po::notify(vm);
    } catch (const po::error& e) {
        std::cerr << "sluice-dataplane: " << e.what() << "\n" << desc;
        return 2;
    }
    if (vm.count("help")) {
        std::cout << desc << "\nExample (no NIC, no hugepages):\n  sluice-dataplane --snat "
                             "10.0.0.99 -- -l 1 --no-huge -m 512 --no-pci "
                             "--vdev=net_af_packet0,iface=eth0\n";
        return 0;
    }
    if (!is_prime(o.maglev_size)) {
        return die("--maglev-size must be a prime, got " + std::to_string(o.maglev_size));
    }
    std::vector<char*> eal_argv = {argv[0]};
    for (int i = split + 1; i < argc; ++i) {
        eal_argv.push_back(argv[i]);
    }
    if (rte_eal_init(static_cast<int>(eal_argv.size()), eal_argv.data()) < 0) {
        return die("EAL initialisation failed (see the EAL messages above)");
    }
    if (rte_eth_dev_count_avail() == 0) {
        rte_eal_cleanup();
        return die("no ports: give the EAL a NIC or a --vdev");
    }
    const uint16_t port = 0;
    // Every lcore of the EAL's map is a worker (the main lcore is worker 0).
    const unsigned nworkers = rte_lcore_count();
    if (nworkers > kMaxWorkers) {
        rte_eal_cleanup();
        return die("at most " + std::to_string(kMaxWorkers) + " worker lcores, the EAL gave " +
                   std::to_string(nworkers));
    }
    const auto workers = static_cast<uint16_t>(nworkers);
    constexpr unsigned kRingSize = 1024;
    const uint32_t mbufs = o.mbufs ? o.mbufs
                                   : std::max<uint32_t>(8191, workers * (4 * 1024 + 512) +
                                                                  workers * workers * kRingSize);
    rte_mempool* pool = rte_pktmbuf_pool_create("sluice_mbufs", mbufs, 256, 0,
                                                RTE_MBUF_DEFAULT_BUF_SIZE, rte_socket_id());
    if (!pool) {
        rte_eal_cleanup();
        return die("cannot create the mbuf pool (" + std::to_string(mbufs) + " mbufs)");
    }
    auto rxq = port_init(port, pool, workers);
    if (!rxq) {
        rte_eal_cleanup();
        return die("port 0: " + rxq.error().message);
    }

    rte_ether_addr mac{};
    rte_eth_macaddr_get(port, &mac);
    int host_port = -1;
    if (!o.exception_tap.empty()) {
        // The kernel's side gets the port's MAC, so frames to the port's MAC for the
        // kernel's addresses are accepted as they are, and its frames need no rewrite.
        char macs[32];
        std::snprintf(macs, sizeof macs, "%02x:%02x:%02x:%02x:%02x:%02x", mac.addr_bytes[0],
                      mac.addr_bytes[1], mac.addr_bytes[2], mac.addr_bytes[3], mac.addr_bytes[4],
                      mac.addr_bytes[5]);
        const std::string args = "iface=" + o.exception_tap + ",mac=" + macs;
        uint16_t hp = 0;
        Result<uint16_t> hq = fail(Errc::Io, "cannot create the device");
        if (rte_eal_hotplug_add("vdev", "net_tap_sluice", args.c_str()) == 0 &&
            rte_eth_dev_get_port_by_name("net_tap_sluice", &hp) == 0) {
            hq = port_init(hp, pool, workers);
        }
        if (!hq || *hq != workers) {
            rte_eal_cleanup();
            return die("cannot create the exception interface " + o.exception_tap + ": " +
                       (hq ? "too few queues" : hq.error().message));
        }
        host_port = hp;
        std::cerr << "sluice-dataplane: exception interface " << o.exception_tap
                  << " (give it the kernel's addresses: management, L7 VIPs)" << std::endl;
    }
    if (o.snat.empty() || o.snat.size() > kMaxSnat) {
        rte_eal_cleanup();
        return die("give 1 to " + std::to_string(kMaxSnat) + " --snat addresses (full-NAT source addresses)");
    }
    std::array<std::pair<uint8_t, Addr>, kMaxSnat> snat{};
    for (size_t i = 0; i < o.snat.size(); ++i) {
        if (!parse_addr(o.snat[i], snat[i].first, snat[i].second)) {
            rte_eal_cleanup();
            return die("--snat " + o.snat[i] + " is not an IP address");
        }
    }
    // Worker 0 runs on the main lcore, the others on the EAL's worker lcores in order.
    std::vector<unsigned> lcores = {rte_lcore_id()};
    unsigned lc = 0;
    RTE_LCORE_FOREACH_WORKER(lc) {
        lcores.push_back(lc);
    }
    // Per worker: its LbContext, conntrack (on its lcore's NUMA node) and SNAT port owners;
    // the neighbour table is shared (lock-free, see NeighborTable).
    auto neighbors = std::make_unique<NeighborTable>();
    std::vector<std::unique_ptr<LbContext>> ctxs;
    std::vector<std::unique_ptr<ConnTrack>> cts;
    // SNAT port owners (8 MiB per worker) from the EAL's memory on the worker's socket
    // (hugepages when the EAL has them; STYLE H2), or the heap when the EAL's -m is short.
    // EAL memory is not freed one table at a time: these live as long as the process, and
    // rte_eal_cleanup() (which every exit path calls before these destructors run) gives
    // all of it back.
    struct SnatPortsFree {
        bool from_eal = false;
        void operator()(SnatPorts* p) const noexcept {
            if (!from_eal) {
                delete p;
            }
        }
    };
    std::vector<std::unique_ptr<SnatPorts, SnatPortsFree>> snat_ports;
    for (uint16_t w = 0; w < workers; ++w) {
        ConnTrackConfig cc;
        cc.capacity = o.ct_capacity;
        cc.half_open_max = o.ct_half_open;
        cc.numa_socket = static_cast<int>(rte_lcore_to_socket_id(lcores[w]));
        auto ct = ConnTrack::create(cc);
        if (!ct) {
            rte_eal_cleanup();
            return die("conntrack: " + ct.error().message);
        }
        auto ctx = std::make_unique<LbContext>();
        std::copy(std::begin(mac.addr_bytes), std::end(mac.addr_bytes), ctx->our_mac.begin());
        ctx->snat = snat;
        ctx->index_snat();
        ctx->exception = host_port >= 0;
        ctx->worker = w;
        ctx->workers = workers;
        ctx->ct = ct->get();
        ctx->neighbors = neighbors.get();
        if (void* mem = rte_zmalloc_socket("sluice_snat_ports", sizeof(SnatPorts),
                                           RTE_CACHE_LINE_SIZE, cc.numa_socket);
            mem != nullptr) {
            snat_ports.emplace_back(static_cast<SnatPorts*>(mem), SnatPortsFree{true});
        } else {
            std::cerr << "sluice-dataplane: worker " << w
                      << "'s SNAT port table (8 MiB) is on the heap: the EAL's memory (-m) "
                         "had no room on socket "
                      << cc.numa_socket << std::endl;
            snat_ports.emplace_back(new SnatPorts{}, SnatPortsFree{false});
        }
        ctx->ports = snat_ports.back().get();
        cts.push_back(std::move(*ct));
        ctxs.push_back(std::move(ctx));
    }
    // Rings between every pair of workers: rings[from][to].
    std::vector<std::vector<rte_ring*>> rings(workers, std::vector<rte_ring*>(workers, nullptr));
    for (uint16_t a = 0; workers > 1 && a < workers; ++a) {
        for (uint16_t b = 0; b < workers; ++b) {
            if (a == b) {
                continue;
            }
            const std::string name = "sluice_w" + std::to_string(a) + "_" + std::to_string(b);
            rings[a][b] = rte_ring_create(name.c_str(), kRingSize, rte_socket_id(),
                                          RING_F_SP_ENQ | RING_F_SC_DEQ);
            if (!rings[a][b]) {
                rte_eal_cleanup();
                return die("cannot create the ring " + name);
            }
        }
    }

    const size_t qsz = rte_rcu_qsbr_get_memsize(RTE_MAX_LCORE);
    auto* qsbr = static_cast<rte_rcu_qsbr*>(rte_zmalloc("sluice_qsbr", qsz, RTE_CACHE_LINE_SIZE));
    if (!qsbr || rte_rcu_qsbr_init(qsbr, RTE_MAX_LCORE) != 0) {
        rte_eal_cleanup();
        return die("cannot create the QSBR variable");
    }
    Snapshot<ServiceTable> services(qsbr);
    services.publish(std::make_unique<const ServiceTable>());

    ServiceTableOptions sto;
    sto.maglev_size = o.maglev_size;
    CtlServer ctl(o.dp_socket, [&](ir::Ir&& ir, uint64_t generation) -> Result<std::string> {
        auto table = build_service_table(ir, sto);
        if (!table) {
            return tl::unexpected(table.error());
        }
        // Listeners for the L7 engine: not served by this process (their packets go to the
        // kernel through the exception interface, where sluice-l7 listens; the controlplane
        // counts a listener as served when any consumer serves it).
        std::string note;
        for (const ir::Listener& l : ir.listeners) {
            if (l.protocol == ir::Protocol::HTTP || l.protocol == ir::Protocol::HTTPS ||
                l.protocol == ir::Protocol::TLS) {
                note += l.gateway_ns + "/" + l.gateway_name + "/" + l.name +
                        "\tsluice-dataplane does not terminate HTTP, HTTPS or TLS: run sluice-l7 "
                        "(behind --exception-tap) for these listeners\n";
            }
        }
        const size_t n = table->services.size();
        services.publish(std::make_unique<const ServiceTable>(std::move(*table)));
        std::cerr << "sluice-dataplane: generation " << generation << " published (" << n
                  << " services)" << std::endl;
        return note;
    });
    if (auto l = ctl.listen(); !l) {
        rte_eal_cleanup();
        return die(l.error().message);
    }
    std::signal(SIGINT, on_signal);
    std::signal(SIGTERM, on_signal);
    std::thread ctl_thread([&] { ctl.run(); });
    std::cerr << "sluice-dataplane: port 0 up, listening on " << o.dp_socket << std::endl;

    std::vector<std::unique_ptr<Worker>> ws;
    for (uint16_t w = 0; w < workers; ++w) {
        WorkerConfig wc;
        wc.port = port;
        wc.rx_queue = w < *rxq ? w : -1; // a single-queue port: worker 0 receives for all
        wc.tx_queue = w;
        wc.lcore = lcores[w];
        wc.host_port = host_port;
        wc.host_queue = w;
        if (workers > 1) {
            for (uint16_t b = 0; b < workers; ++b) {
                wc.to.push_back(rings[w][b]);
                wc.from.push_back(rings[b][w]);
            }
        }
        ws.push_back(std::make_unique<Worker>(wc, qsbr, services, *ctxs[w]));
    }
    std::cerr << "sluice-dataplane: " << workers << " worker lcore(s), " << *rxq
              << " receive queue(s) on port 0" << std::endl;
    // The stats exporters: read what the workers publish (relaxed atomics on their own
    // cache lines) and the conntracks' atomics; never a worker's own state.
    auto stats_json = [&] {
        std::string j = "{\"generation\":" + std::to_string(ctl.applied_generation()) +
                        ",\"lcores\":[";
        for (uint16_t w = 0; w < workers; ++w) {
            const Worker& wk = *ws[w];
            const ConnTrackStats cs = ctxs[w]->ct->stats();
            j += std::string(w ? "," : "") + "{\"lcore\":" + std::to_string(lcores[w]) +
                 ",\"worker\":" + std::to_string(w) + ",\"counters\":{";
            for (size_t i = 0; i < kLbCounterCount; ++i) {
                j += std::string(i ? "," : "") + "\"" + lb_counter_name(static_cast<LbCounter>(i)) +
                     "\":" + std::to_string(wk.counter(i));
            }
            j += "},\"drops\":{";
            bool first = true;
            for (size_t i = 1; i < kDropReasonCount; ++i) {
                j += std::string(first ? "" : ",") + "\"" +
                     std::string(drop_reason_name(static_cast<DropReason>(i))) +
                     "\":" + std::to_string(wk.drops(i));
                first = false;
            }
            j += "},\"flows\":{\"entries\":" + std::to_string(cs.entries) +
                 ",\"half_open\":" + std::to_string(cs.half_open) +
                 ",\"inserts\":" + std::to_string(cs.inserts) +
                 ",\"insert_full\":" + std::to_string(cs.insert_full) +
                 ",\"inserts_third\":" + std::to_string(cs.inserts_third) +
                 ",\"insert_budget\":" + std::to_string(cs.insert_budget) +
                 ",\"expired\":" + std::to_string(cs.expired) +
                 ",\"capacity\":" + std::to_string(ctxs[w]->ct->capacity()) + "}}";
        }
        return j + "]}\n";
    };
    auto prometheus = [&] {
        std::string t = "# HELP sluice_dp_packets_total worker events by kind (see docs/operations.md)\n"
                        "# TYPE sluice_dp_packets_total counter\n";
        auto lcl = [&](uint16_t w) { return "lcore=\"" + std::to_string(lcores[w]) + "\""; };
        for (uint16_t w = 0; w < workers; ++w) {
            for (size_t i = 0; i < kLbCounterCount; ++i) {
                t += "sluice_dp_packets_total{" + lcl(w) + ",kind=\"" +
                     lb_counter_name(static_cast<LbCounter>(i)) + "\"} " +
                     std::to_string(ws[w]->counter(i)) + "\n";
            }
        }
        t += "# HELP sluice_dp_drops_total frames dropped by the parser, by reason\n"
             "# TYPE sluice_dp_drops_total counter\n";
        for (uint16_t w = 0; w < workers; ++w) {
            for (size_t i = 1; i < kDropReasonCount; ++i) {
                t += "sluice_dp_drops_total{" + lcl(w) + ",reason=\"" +
                     std::string(drop_reason_name(static_cast<DropReason>(i))) + "\"} " +
                     std::to_string(ws[w]->drops(i)) + "\n";
            }
        }
        std::string flows = "# HELP sluice_dp_flows tracked flows\n# TYPE sluice_dp_flows gauge\n";
        std::string cap = "# HELP sluice_dp_flow_capacity conntrack slots\n# TYPE sluice_dp_flow_capacity gauge\n";
        std::string refused = "# HELP sluice_dp_flow_refused_total new flows not tracked\n"
                              "# TYPE sluice_dp_flow_refused_total counter\n";
        std::string third = "# HELP sluice_dp_flow_third_bucket_total new flows whose two conntrack "
                            "buckets were full (tracked in a third; a table filling up)\n"
                            "# TYPE sluice_dp_flow_third_bucket_total counter\n";
        for (uint16_t w = 0; w < workers; ++w) {
            const ConnTrackStats cs = ctxs[w]->ct->stats();
            flows += "sluice_dp_flows{" + lcl(w) + ",state=\"all\"} " + std::to_string(cs.entries) + "\n"
                     "sluice_dp_flows{" + lcl(w) + ",state=\"half_open\"} " + std::to_string(cs.half_open) + "\n";
            cap += "sluice_dp_flow_capacity{" + lcl(w) + "} " + std::to_string(ctxs[w]->ct->capacity()) + "\n";
            refused += "sluice_dp_flow_refused_total{" + lcl(w) + ",why=\"full\"} " +
                       std::to_string(cs.insert_full) + "\n"
                       "sluice_dp_flow_refused_total{" + lcl(w) + ",why=\"half_open_budget\"} " +
                       std::to_string(cs.insert_budget) + "\n";
            third += "sluice_dp_flow_third_bucket_total{" + lcl(w) + "} " +
                     std::to_string(cs.inserts_third) + "\n";
        }
        return t + flows + cap + refused + third +
               "# HELP sluice_dp_generation IR generation in force\n# TYPE sluice_dp_generation gauge\n"
               "sluice_dp_generation " + std::to_string(ctl.applied_generation()) + "\n";
    };
    std::thread stats_thread([&] {
        if (o.stats_file.empty()) {
            return;
        }
        const std::string tmp = o.stats_file + ".tmp";
        std::error_code ec;
        std::filesystem::create_directories(std::filesystem::path(o.stats_file).parent_path(), ec);
        while (!g_stop.load(std::memory_order_relaxed)) {
            if (FILE* f = std::fopen(tmp.c_str(), "w")) {
                std::fputs(stats_json().c_str(), f);
                std::fclose(f);
                std::rename(tmp.c_str(), o.stats_file.c_str());
            }
            for (int i = 0; i < 10 && !g_stop.load(std::memory_order_relaxed); ++i) {
                std::this_thread::sleep_for(std::chrono::milliseconds(100));
            }
        }
    });
    AdminServer admin;
    if (!o.admin.empty()) {
        if (auto a = admin.listen(o.admin); !a) {
            std::cerr << "sluice-dataplane: " << a.error().message << std::endl;
        }
    }
    std::thread admin_thread([&] {
        admin.serve(g_stop, [&](const std::string& path) {
            if (path == "/metrics") {
                return AdminAnswer{200, "text/plain; version=0.0.4", prometheus()};
            }
            if (path == "/stats") {
                return AdminAnswer{200, "application/json", stats_json()};
            }
            return AdminAnswer{404, "text/plain", "try /metrics or /stats\n"};
        });
    });
    for (uint16_t w = 1; w < workers; ++w) {
        rte_eal_remote_launch(worker_main, ws[w].get(), lcores[w]);
    }
    ws[0]->run(g_stop); // the main lcore is worker 0
    rte_eal_mp_wait_lcore();

    ctl.stop();
    ctl_thread.join();
    stats_thread.join();
    admin_thread.join();
    std::fprintf(stderr, "sluice-dataplane: counters:");
    for (size_t i = 0; i < kLbCounterCount; ++i) {
        uint64_t v = 0;
        for (const auto& c : ctxs) {
            v += c->counters[i];
        }
        std::fprintf(stderr, " %s=%lu", lb_counter_name(static_cast<LbCounter>(i)),
                     static_cast<unsigned long>(v));
    }
    for (size_t i = 1; i < kDropReasonCount; ++i) {
        uint64_t v = 0;
        for (const auto& c : ctxs) {
            v += c->drops[i];
        }
        if (v) {
            std::fprintf(stderr, " drop_%s=%lu", std::string(drop_reason_name(static_cast<DropReason>(i))).c_str(),
                         static_cast<unsigned long>(v));
        }
    }
    std::fprintf(stderr, "\n");
    rte_eth_dev_stop(port);
    rte_eth_dev_close(port);
    rte_eal_cleanup();
    return 0;
}
