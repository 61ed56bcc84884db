/// sluice-l7: the L7 engine process. Receives the IR from sluice-controlplane on its own
/// dp-control socket (the same channel as sluice-dataplane), serves the HTTP and HTTPS
/// listeners of every Gateway on kernel sockets, and exports its counters as a JSON file
/// (sluicectl stats) and as Prometheus text on an admin port.

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <string>
#include <thread>

#include <boost/program_options.hpp>

#include "admin.h"
#include "ctl_server.h"
#include "engine.h"
#include "imb_provider.h"
#include "records.h"
#include "tls_ctx.h"

namespace po = boost::program_options;
using namespace sluice;

namespace {

l7::Engine* g_engine = nullptr;
std::atomic<bool> g_stop{false};
bool g_imb_on = false; ///< --tls-ipsec-mb took effect (set before any thread starts)

void on_signal(int) {
    g_stop.store(true, std::memory_order_relaxed);
    if (g_engine) {
        g_engine->stop();
    }
}

std::string stats_json(const l7::EngineStats& s) {
    std::string j = "{\"generation\":" + std::to_string(s.generation) + ",\"l7\":{";
    auto f = [&](const char* k, uint64_t v, bool last = false) {
        j += std::string("\"") + k + "\":" + std::to_string(v) + (last ? "" : ",");
    };
    f("connections", s.connections);
    f("active_connections", s.active_connections);
    f("tls_handshakes", s.tls_handshakes);
    f("tls_failures", s.tls_failures);
    f("tls_resumed", s.tls_resumed);
    f("requests", s.requests);
    f("status_1xx", s.status_1xx);
    f("status_2xx", s.status_2xx);
    f("status_3xx", s.status_3xx);
    f("status_4xx", s.status_4xx);
    f("status_5xx", s.status_5xx);
    f("upstream_connects", s.upstream_connects);
    f("upstream_reused", s.upstream_reused);
    f("upstream_failures", s.upstream_failures);
    f("retries", s.retries);
    f("ejections", s.ejections);
    f("mirrors", s.mirrors);
    f("bad_requests", s.bad_requests);
    f("timeouts", s.timeouts);
    f("tunnels", s.tunnels);
    f("tunnel_refused", s.tunnel_refused);
    f("h2_connections", s.h2_connections);
    f("h2_streams", s.h2_streams);
    f("h2_abuse", s.h2_abuse);
    f("backend_tls_handshakes", s.backend_tls_handshakes);
    f("backend_tls_failures", s.backend_tls_failures);
    f("tls_buffers_freed", s.tls_buffers_freed);
    f("tls_own_records", s.tls_own_records);
    f("ocsp_staples", s.ocsp_staples);
    f("ocsp_staples_refused", s.ocsp_staples_refused);
    f("bytes_in", s.bytes_in);
    f("bytes_out", s.bytes_out);
    // TLS records sealed/opened by the "sluice-imb" provider (--tls-ipsec-mb).
    const l7::ImbCounters imb = l7::imb_provider_counters();
    f("tls_ipsec_mb", g_imb_on ? 1 : 0);
    f("tls_imb_records_sealed", imb.sealed);
    f("tls_imb_records_opened", imb.opened);
    f("tls_imb_open_failures", imb.open_failures, true);
    return j + "}}\n";
}


std::string route_metrics(const l7::Engine& engine) {
    std::string t =
        "# HELP sluice_l7_route_responses_total responses by route rule, backend and class\n"
        "# TYPE sluice_l7_route_responses_total counter\n";
    std::string h = "# HELP sluice_l7_route_duration_seconds request duration (head received "
                    "to response end) by route rule and backend\n"
                    "# TYPE sluice_l7_route_duration_seconds histogram\n";
    for (const auto& [key, rs] : engine.route_stats()) {
        const size_t a = key.find('\t'), b = key.find('\t', a + 1);
        const std::string labels = "route=\"" + dp::prom_escape(key.substr(0, a)) + "\",rule=\"" +
                                   dp::prom_escape(key.substr(a + 1, b - a - 1)) + "\",backend=\"" +
                                   dp::prom_escape(key.substr(b + 1)) + "\"";
        for (int i = 0; i < 5; ++i) {
            if (rs.by_class[i]) {
                t += "sluice_l7_route_responses_total{" + labels + ",class=\"" +
                     std::to_string(i + 1) + "xx\"} " + std::to_string(rs.by_class[i]) + "\n";
            }
        }
        uint64_t cum = 0;
        for (size_t i = 0; i < l7::RouteStats::kBuckets; ++i) {
            cum += rs.hist[i];
            char le[32];
            std::snprintf(le, sizeof le, "%g", l7::RouteStats::kBucketsMs[i] / 1000.0);
            h += "sluice_l7_route_duration_seconds_bucket{" + labels + ",le=\"" + le + "\"} " +
                 std::to_string(cum) + "\n";
        }
        h += "sluice_l7_route_duration_seconds_bucket{" + labels + ",le=\"+Inf\"} " +
             std::to_string(rs.count) + "\n";
        char sum[32];
        std::snprintf(sum, sizeof sum, "%.6f", rs.sum_us / 1e6);
        h += "sluice_l7_route_duration_seconds_sum{" + labels + "} " + sum + "\n";
        h += "sluice_l7_route_duration_seconds_count{" + labels + "} " + std::to_string(rs.count) + "\n";
    }
    return t + h;
}

std::string prometheus(const l7::EngineStats& s) {
    std::string t;
    auto counter = [&](const char* name, const char* help, uint64_t v, const char* labels = "") {
        t += std::string("# HELP sluice_l7_") + name + " " + help + "\n# TYPE sluice_l7_" + name +
             " counter\nsluice_l7_" + name + labels + " " + std::to_string(v) + "\n";
    };
    counter("connections_total", "client connections accepted", s.connections);
    t += "# HELP sluice_l7_active_connections client connections open\n"
         "# TYPE sluice_l7_active_connections gauge\nsluice_l7_active_connections " +
         std::to_string(s.active_connections) + "\n";
    counter("tls_handshakes_total", "TLS handshakes completed", s.tls_handshakes);
    counter("tls_failures_total", "TLS handshakes failed", s.tls_failures);
    counter("tls_resumed_total", "TLS handshakes that resumed a session (ticket)", s.tls_resumed);
    t += "# HELP sluice_l7_responses_total responses by status class\n"
         "# TYPE sluice_l7_responses_total counter\n";
    const uint64_t cls[] = {s.status_1xx, s.status_2xx, s.status_3xx, s.status_4xx, s.status_5xx};
    for (int i = 0; i < 5; ++i) {
        t += "sluice_l7_responses_total{class=\"" + std::to_string(i + 1) + "xx\"} " +
             std::to_string(cls[i]) + "\n";
    }
    counter("requests_total", "requests received", s.requests);
    counter("upstream_connects_total", "backend connections opened", s.upstream_connects);
    counter("upstream_reused_total", "requests sent on a pooled backend connection", s.upstream_reused);
    counter("upstream_failures_total", "backend connect or response failures", s.upstream_failures);
    counter("retries_total", "requests sent again to a backend", s.retries);
    counter("ejections_total", "endpoints ejected by passive health checking", s.ejections);
    counter("mirrors_total", "mirrored requests", s.mirrors);
    counter("bad_requests_total", "requests rejected as malformed (400/431/501/505)", s.bad_requests);
    counter("timeouts_total", "408 and 504 answers", s.timeouts);
    counter("tunnels_total", "TLSRoute connections relayed to a backend", s.tunnels);
    counter("tunnel_refused_total", "TLS connections reset: no listener/route/backend for the SNI", s.tunnel_refused);
    counter("h2_connections_total", "HTTP/2 client connections (ALPN h2, h2c)", s.h2_connections);
    counter("h2_streams_total", "HTTP/2 requests (streams)", s.h2_streams);
    counter("h2_abuse_total", "HTTP/2 connections closed by a defence (rapid reset, floods)", s.h2_abuse);
    counter("backend_tls_handshakes_total",
            "TLS handshakes with backends completed (BackendTLSPolicy)", s.backend_tls_handshakes);
    counter("backend_tls_failures_total",
            "TLS handshakes with backends failed (verification, alert, close)",
            s.backend_tls_failures);
    t += "# HELP sluice_l7_ocsp_staples OCSP staples (tls.ocsp-staple) of the configuration in "
         "force: stapled, or refused (invalid, expired)\n# TYPE sluice_l7_ocsp_staples gauge\n"
         "sluice_l7_ocsp_staples{state=\"stapled\"} " +
         std::to_string(s.ocsp_staples) + "\nsluice_l7_ocsp_staples{state=\"refused\"} " +
         std::to_string(s.ocsp_staples_refused) + "\n";
    counter("bytes_in_total", "bytes read from clients", s.bytes_in);
    counter("bytes_out_total", "bytes written to clients", s.bytes_out);
    const l7::ImbCounters imb = l7::imb_provider_counters();
    counter("tls_imb_records_sealed_total",
            "TLS records encrypted with Intel ipsec-mb (--tls-ipsec-mb)", imb.sealed);
    counter("tls_imb_records_opened_total",
            "TLS records decrypted and verified with Intel ipsec-mb (--tls-ipsec-mb)", imb.opened);
    counter("tls_imb_open_failures_total",
            "TLS records whose tag did not verify (ipsec-mb)", imb.open_failures);
    t += "# HELP sluice_l7_generation IR generation in force\n# TYPE sluice_l7_generation gauge\n"
         "sluice_l7_generation " + std::to_string(s.generation) + "\n";
    return t;
}

} // namespace

int main(int argc, char** argv) {
    l7::EngineOptions eo;
    std::string dp_socket = "/run/sluice/l7.sock";
    std::string stats_file = "/run/sluice/l7-stats.json";
    std::string admin;
    std::string ticket_key_file;
    uint32_t ticket_rotate_s = 3600;
    po::options_description desc(
        "sluice-l7: the HTTP/HTTPS engine. Serves the HTTP and HTTPS listeners of the IR that "
        "sluice-controlplane sends to --dp-socket.\n\nOptions");
    desc.add_options()("help,h", "this help")(
        "dp-socket", po::value(&dp_socket)->default_value(dp_socket),
        "unix socket for the controlplane's IR channel")(
        "workers", po::value(&eo.workers)->default_value(1),
        "event-loop threads (one per core you give the engine)")(
        "stats-file", po::value(&stats_file)->default_value(stats_file),
        "JSON counters, rewritten every second ('' = off)")(
        "admin", po::value(&admin)->default_value(""),
        "ADDR:PORT for GET /metrics (Prometheus) and /stats ('' = off)")(
        "access-log", po::value(&eo.access_log)->default_value(""),
        "access log file, one line per request ('-' = stderr, '' = off)")(
        "max-header-bytes", po::value(&eo.limits.max_head_bytes)->default_value(eo.limits.max_head_bytes),
        "request line + headers limit (431 beyond)")(
        "header-timeout-ms", po::value(&eo.header_timeout_ms)->default_value(eo.header_timeout_ms),
        "time a client has to send a request head (408 beyond)")(
        "idle-timeout-ms", po::value(&eo.idle_timeout_ms)->default_value(eo.idle_timeout_ms),
        "keep-alive connection idle time")(
        "connect-timeout-ms", po::value(&eo.connect_timeout_ms)->default_value(eo.connect_timeout_ms),
        "backend connect timeout")(
        "response-timeout-ms", po::value(&eo.response_timeout_ms)->default_value(eo.response_timeout_ms),
        "backend response timeout when the route sets none (504)")(
        "eject-after", po::value(&eo.eject_after)->default_value(eo.eject_after),
        "consecutive failures that eject an endpoint")(
        "eject-ms", po::value(&eo.eject_ms)->default_value(eo.eject_ms), "ejection time")(
        "tls-ticket-key-file", po::value(&ticket_key_file)->default_value(""),
        "secret (>= 32 bytes, e.g. head -c 48 /dev/urandom) the TLS session-ticket keys derive "
        "from: give every node behind a VIP the same file and tickets resume on any of them "
        "('' = a random secret of this process)")(
        "tls-ticket-rotate-s", po::value(&ticket_rotate_s)->default_value(ticket_rotate_s),
        "ticket key rotation period in seconds (60 to 604800); a ticket resumes for at most "
        "two periods")(
        "tls-ipsec-mb", po::bool_switch(),
        "encrypt and decrypt TLS records (AES-128-GCM, AES-256-GCM; TLS 1.2 and 1.3, clients "
        "and backends) with Intel ipsec-mb through sluice's OpenSSL provider \"sluice-imb\"; "
        "OpenSSL keeps handshakes, KeyUpdate and alerts. If ipsec-mb cannot start, OpenSSL "
        "does it all (one log line says why)")(
        "no-h2", po::bool_switch(),
        "serve HTTP/1.1 only to clients: no ALPN h2, no h2c (backends may still be h2c)");
    po::variables_map vm;
    try {
        po::store(po::parse_command_line(argc, argv, desc), vm);
        po::notify(vm);
    } catch (const std::exception& ex) {
        std::cerr << "sluice-l7: " << ex.what() << "\n" << desc << std::endl;
        return 2;
    }
    if (vm.count("help")) {
        std::cout << desc << std::endl;
        return 0;
    }
    eo.offer_h2 = !vm["no-h2"].as<bool>();
    {
        auto keys = ticket_key_file.empty()
                        ? l7::TicketKeys::create({}, ticket_rotate_s)
                        : l7::TicketKeys::from_file(ticket_key_file, ticket_rotate_s);
        if (!keys) {
            std::cerr << "sluice-l7: --tls-ticket-key-file/--tls-ticket-rotate-s: "
                      << keys.error().message << std::endl;
            return 2;
        }
        l7::TlsPort::set_ticket_keys(std::move(*keys));
    }
    if (vm["tls-ipsec-mb"].as<bool>()) {
        // Before any SSL_CTX exists: libssl fetches its ciphers when a context is made.
        auto imb = l7::install_imb_provider(nullptr, true);
        if (imb) {
            g_imb_on = true;
            // Client connections: after OpenSSL's TLS 1.3 handshake, sluice's own record
            // layer (records.h); OpenSSL's records (handshakes, TLS 1.2, backends) go
            // through the provider.
            const bool own = l7::tls_records_enable();
            std::cerr << "sluice-l7: TLS records (AES-GCM) on Intel ipsec-mb " << imb->version
                      << ", " << imb->arch << " code path (OpenSSL provider "
                      << l7::kImbProviderName
                      << (own ? "; TLS 1.3 client records sealed and opened by sluice" : "")
                      << ")" << std::endl;
        } else {
            std::cerr << "sluice-l7: --tls-ipsec-mb: " << imb.error().message
                      << "; TLS records stay with OpenSSL" << std::endl;
        }
    }
    std::signal(SIGPIPE, SIG_IGN);
    // Every client and backend connection is a descriptor: take the hard limit.
    rlimit nofile{};
    if (getrlimit(RLIMIT_NOFILE, &nofile) == 0 && nofile.rlim_cur < nofile.rlim_max) {
        nofile.rlim_cur = nofile.rlim_max;
        setrlimit(RLIMIT_NOFILE, &nofile);
    }
    l7::Engine engine(eo);
    g_engine = &engine;
    dp::CtlServer ctl(dp_socket, [&](ir::Ir&& ir, uint64_t gen) {
        auto r = engine.apply(std::move(ir), gen);
        if (r) {
            std::cerr << "sluice-l7: generation " << gen << " in force" << std::endl;
        } else {
            std::cerr << "sluice-l7: generation " << gen << " refused: " << r.error().message
                      << std::endl;
        }
        return r;
    });
    if (auto l = ctl.listen(); !l) {
        std::cerr << "sluice-l7: " << l.error().message << std::endl;
        return 1;
    }
    dp::AdminServer admin_server;
    if (!admin.empty()) {
        if (auto a = admin_server.listen(admin); !a) {
            std::cerr << "sluice-l7: --admin: " << a.error().message << std::endl;
            return 1;
        }
    }
    std::signal(SIGINT, on_signal);
    std::signal(SIGTERM, on_signal);
    std::thread ctl_thread([&] { ctl.run(); });
    std::thread admin_thread([&] {
        admin_server.serve(g_stop, [&](const std::string& path) {
            if (path == "/metrics") {
                return dp::AdminAnswer{200, "text/plain; version=0.0.4",
                                       prometheus(engine.stats()) + route_metrics(engine)};
            }
            if (path == "/stats") {
                return dp::AdminAnswer{200, "application/json", stats_json(engine.stats())};
            }
            return dp::AdminAnswer{404, "text/plain", "try /metrics or /stats\n"};
        });
    });
    // Housekeeping, once a second: OCSP staples whose nextUpdate passed stop being stapled
    // (and are logged), and the stats file is rewritten.
    std::thread stats_thread([&] {
        std::error_code ec;
        if (!stats_file.empty()) {
            std::filesystem::create_directories(std::filesystem::path(stats_file).parent_path(),
                                                ec);
        }
        const std::string tmp = stats_file + ".tmp";
        while (!g_stop.load(std::memory_order_relaxed)) {
            engine.expire_staples();
            FILE* f = stats_file.empty() ? nullptr : std::fopen(tmp.c_str(), "w");
            if (f != nullptr) {
                std::fputs(stats_json(engine.stats()).c_str(), f);
                std::fclose(f);
                std::rename(tmp.c_str(), stats_file.c_str());
            }
            for (int i = 0; i < 10 && !g_stop.load(std::memory_order_relaxed); ++i) {
                std::this_thread::sleep_for(std::chrono::milliseconds(100));
            }
        }
    });
    std::cerr << "sluice-l7: " << eo.workers << " worker(s), IR channel " << dp_socket << std::endl;
    engine.run();
    g_stop.store(true);
    ctl.stop();
    ctl_thread.join();
    admin_thread.join();
    stats_thread.join();
    const l7::EngineStats s = engine.stats();
    std::fprintf(stderr, "sluice-l7: %llu requests, %llu connections\n",
                 static_cast<unsigned long long>(s.requests),
                 static_cast<unsigned long long>(s.connections));
    l7::uninstall_imb_providers();
    return 0;
}
