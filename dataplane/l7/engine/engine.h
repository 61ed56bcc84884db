#pragma once

/// @file
/// The L7 engine: an HTTP/1.1 and HTTP/2 (and TLS-terminating) reverse proxy on kernel
/// sockets (HTTP/2: h2 by ALPN, h2c with prior knowledge or Upgrade; h2c and gRPC to
/// backends; see h2.h; TLS to backends under a BackendTLSPolicy, see backend_tls.h). One
/// event loop (epoll, level-triggered) per worker thread, each with its own SO_REUSEPORT
/// listening socket per bound (address, port), its own connections, upstream pools and
/// passive-health state: workers share nothing but the published tables.
///
/// Tables: dp-control (apply) builds the routing world beside the live one (the IR, the
/// bound ports, the TLS contexts), then publishes it with one pointer swap; each worker
/// picks the new tables up at its next loop turn (a version counter it reads per turn), and
/// every request reads the worker's tables once, when its head is complete, and keeps them
/// until it ends. Old tables (and their sockets, TLS contexts) go when the last request that
/// uses them ends. Existing connections are never dropped by a table change. Backend TLS
/// contexts are built with the tables and reused while their policy does not change; a
/// pooled backend connection only serves requests of the context it was made with.
///
/// Thread: apply() on dp-control; run() starts the workers and blocks; stop() from any
/// thread (signal-safe: one atomic store).

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "ir.h"
#include "parser.h"
#include "result.h"

namespace sluice::l7 {

struct EngineOptions {
    unsigned workers = 1;
    http::Limits limits;
    uint32_t header_timeout_ms = 10000;   ///< a request head must arrive within this (408)
    uint32_t idle_timeout_ms = 60000;     ///< keep-alive connection without a request
    uint32_t connect_timeout_ms = 3000;   ///< backend connect
    uint32_t upstream_idle_ms = 30000;    ///< pooled backend connection lifetime when idle
    uint32_t response_timeout_ms = 60000; ///< default backend response head timeout (504)
    size_t max_buffer = 256 * 1024;       ///< per direction before reading pauses
    /// Idle backend connections kept per endpoint per worker. 64 made h2 clients with 100
    /// concurrent streams (h2load -m100) close and reopen a third of them per round.
    size_t max_pool_per_endpoint = 256;
    uint32_t eject_after = 5;             ///< consecutive failures before ejection
    uint32_t eject_ms = 10000;            ///< ejection time
    std::string access_log;               ///< file path; "" = none, "-" = stderr
    bool offer_h2 = true; ///< HTTP/2 to clients: ALPN h2, h2c prior knowledge and Upgrade
};

/// Counters summed over workers (relaxed: statistics).
struct EngineStats {
    uint64_t connections = 0, active_connections = 0, tls_handshakes = 0, tls_failures = 0;
    uint64_t tls_resumed = 0; ///< of tls_handshakes: resumed sessions (tickets)
    /// Times an idle TLS client connection handed OpenSSL's record buffers back (~34 KiB).
    uint64_t tls_buffers_freed = 0;
    /// TLS 1.3 client connections whose records sluice seals and opens itself after
    /// OpenSSL's handshake (--tls-ipsec-mb, AES-GCM suites).
    uint64_t tls_own_records = 0;
    uint64_t requests = 0, status_1xx = 0, status_2xx = 0, status_3xx = 0, status_4xx = 0,
             status_5xx = 0;
    uint64_t upstream_connects = 0, upstream_failures = 0, upstream_reused = 0, retries = 0,
             ejections = 0, mirrors = 0, bad_requests = 0, timeouts = 0;
    uint64_t tunnels = 0, tunnel_refused = 0; ///< TLSRoute connections relayed / reset
    uint64_t h2_connections = 0, h2_streams = 0; ///< HTTP/2 client connections / requests
    uint64_t h2_abuse = 0; ///< HTTP/2 connections closed by a defence (rapid reset, floods)
    /// Gateway-to-backend TLS (BackendTLSPolicy): handshakes completed / failed (the chain,
    /// the host name or subjectAltNames did not verify, an alert, or the backend closed).
    uint64_t backend_tls_handshakes = 0, backend_tls_failures = 0;
    /// OCSP staples (tls.ocsp-staple) of the tables in force: being stapled / not stapled
    /// (refused when the tables were built, or expired since). Gauges.
    uint64_t ocsp_staples = 0, ocsp_staples_refused = 0;
    uint64_t bytes_in = 0, bytes_out = 0;
    uint64_t generation = 0;
};

/// Per route rule and backend: requests by status class and a latency histogram.
struct RouteStats {
    static constexpr uint32_t kBucketsMs[] = {1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000};
    static constexpr size_t kBuckets = sizeof(kBucketsMs) / sizeof(kBucketsMs[0]);
    uint64_t by_class[5] = {};      ///< 1xx..5xx
    uint64_t hist[kBuckets + 1] = {}; ///< cumulative-free counts; last = over the largest
    uint64_t sum_us = 0;
    uint64_t count = 0;
    void add(const RouteStats& o) noexcept;
};

class Engine {
public:
    explicit Engine(EngineOptions opts);
    ~Engine();
    Engine(const Engine&) = delete;
    Engine& operator=(const Engine&) = delete;

    /// Builds and publishes tables for `ir`. Returns the ACK note (listeners accepted but
    /// not served, "ns/gw/listener<TAB>reason" per line) or an error (tables unchanged).
    /// Thread: dp-control.
    [[nodiscard]] Result<std::string> apply(ir::Ir&& ir, uint64_t generation);

    /// Runs the workers until stop(). Thread: main; blocks.
    void run();
    void stop() noexcept { stop_.store(true, std::memory_order_relaxed); }

    [[nodiscard]] EngineStats stats() const;

    /// Stops stapling the OCSP staples of the tables in force whose nextUpdate has passed,
    /// logging one line to stderr for each (TlsPort::expire_staples). Call about once a
    /// second; apply() checks every staple again anyway.
    /// Thread: one housekeeping thread (not a worker).
    void expire_staples() const;

    /// Summed over workers; key "route<TAB>rule<TAB>backend" (published by each worker
    /// about once a second). Thread: any.
    [[nodiscard]] std::vector<std::pair<std::string, RouteStats>> route_stats() const;

    struct Impl;

private:
    std::unique_ptr<Impl> impl_;
    std::atomic<bool> stop_{false};
};

} // namespace sluice::l7
