#pragma once

/// @file
/// Traffic mode's world: the real processes on loopback (sluice-controlplane watching a
/// config directory, sluice-l7, one sluice-echo per Deployment replica), the config files
/// the runner writes, the status files the controlplane writes back, and a small blocking
/// HTTP/1.1 (and WebSocket) client, over TLS too (live_conn.h has the TLS, HTTP/2, gRPC
/// and TCP echo clients). Every child runs in its own process group and dies
/// with the runner (PR_SET_PDEATHSIG); stop(), the destructor and SIGINT/SIGTERM/SIGHUP
/// kill them and remove the temporary directory.

#include <chrono>
#include <cstdint>
#include <iosfwd>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <sys/types.h>

#include "compile.h"
#include "live_conn.h"
#include "result.h"

namespace sluice::conformance {

using Clock = std::chrono::steady_clock;

/// One echo process standing in for one pod of a Deployment.
struct EchoPod {
    std::string ns, deployment;
    std::string pod;     ///< "<deployment>-<rs hash>-<pod id>", as Kubernetes names pods
    std::string address; ///< its own loopback address, 127.2.<deployment>.<replica>
    std::vector<int> http_ports, h2c_ports;
    std::vector<int> tls_ports;     ///< HTTPS (echo-basic with TLS_SERVER_CERT: 8443)
    std::vector<int> grpc_ports;    ///< gRPC echo (GRPC_ECHO_SERVER)
    std::vector<int> tcp_ports;     ///< TCP echo, plain (TCP_ECHO_SERVER)
    std::vector<int> tcp_tls_ports; ///< TCP echo over TLS (TCP_ECHO_SERVER, TLS_PORT)
    std::string cert_pem, key_pem;  ///< the serving certificate of the TLS ports
    std::string client_ca_pem;      ///< TLS_CLIENT_CACERTS: client certificates requested
    std::string extra_listen;       ///< another HTTP listener ("[::1]:3000"), or ""
    std::string log;                ///< its stdout: the "Echoing back request made to" lines
    pid_t pid = -1;
};

struct LiveOptions {
    std::string build_dir;  ///< holds controlplane/sluice-controlplane, dataplane/sluice-l7
    std::string source_dir; ///< holds tools/echo/sluice-echo
    bool keep = false;      ///< keep the temporary directory (debugging)
};

/// What one reconcile of the controlplane reported.
struct Reconcile {
    bool seen = false;
    bool refused = false;    ///< the configuration had errors: the last good one is kept
    uint64_t generation = 0; ///< IR generation in force after it
    bool programmed = false; ///< the dataplane ACKed it
    std::string line;        ///< the log line
    std::string diagnostics; ///< lines the controlplane logged before it (errors, warnings)
};

class Live {
public:
    explicit Live(LiveOptions o);
    ~Live();
    Live(const Live&) = delete;
    Live& operator=(const Live&) = delete;

    /// Creates the temporary directory, starts the echo pods, sluice-l7 and the
    /// controlplane with `base_yaml` as the first config file, and waits for them.
    [[nodiscard]] Result<void> start(const std::string& base_yaml, std::vector<EchoPod> pods,
                                     std::ostream& err);
    /// Kills every child (process groups) and removes the temporary directory. Idempotent.
    void stop();

    /// Replaces the test's config file (written beside, then renamed into the watched
    /// directory: one inotify event). Returns the number of reconciles logged before it.
    [[nodiscard]] size_t write_test_config(const std::string& yaml);
    /// The first reconcile logged after `since` reconciles, or one with seen=false at the
    /// deadline.
    [[nodiscard]] Reconcile wait_reconcile(size_t since, Clock::time_point deadline);
    /// The last reconcile logged (seen=false before the first).
    [[nodiscard]] Reconcile last_reconcile();

    /// Every status file the controlplane wrote, parsed back (statuses sorted by key).
    [[nodiscard]] cp::CompileOutput read_status() const;
    /// sluice-l7's IR generation in force (its admin /stats), nullopt when unreachable.
    [[nodiscard]] std::optional<uint64_t> l7_generation() const;
    /// True while every child is alive; names the first dead one in `why`.
    [[nodiscard]] bool alive(std::string& why);

    [[nodiscard]] const std::vector<EchoPod>& pods() const noexcept { return pods_; }
    [[nodiscard]] const std::string& dir() const noexcept { return dir_; }

private:
    void poll_log();

    LiveOptions o_;
    std::string dir_, config_dir_, status_dir_, l7_socket_;
    std::string cp_log_, l7_log_;
    int admin_port_ = 0;
    pid_t cp_pid_ = -1, l7_pid_ = -1;
    std::vector<EchoPod> pods_;
    // The controlplane's log, read incrementally.
    size_t log_offset_ = 0;
    std::string log_partial_;
    std::string pending_diags_;
    std::vector<Reconcile> reconciles_;
    bool stopped_ = false;
};

// ------------------------------------------------------------------ clients

/// A parsed HTTP response (or why there is none).
struct HttpResponse {
    bool ok = false; ///< a complete status line and header block arrived
    std::string error;
    ConnFail fail = ConnFail::None; ///< how the connection failed when !ok
    int status = 0;
    std::vector<std::pair<std::string, std::string>> headers;
    std::string body;
};

/// Sends `request` (a whole HTTP/1.1 request: line, headers, blank line, body) on a new
/// connection to address:port (over TLS with `tls`) and reads the answer until the server
/// closes (the request carries Connection: close). Interim 1xx answers are skipped; a
/// chunked body is decoded. Thread: any; blocks at most about `timeout`.
[[nodiscard]] HttpResponse http_exchange(const std::string& address, uint16_t port,
                                         const std::string& request,
                                         std::chrono::milliseconds timeout,
                                         const TlsOptions* tls = nullptr);

/// A WebSocket round trip: handshake on `path` with `host` and `origin`, then each frame
/// (opcode 1 text / 2 binary, payload) sent masked must come back with the same opcode and
/// payload. Returns "" or what went wrong. Thread: any.
[[nodiscard]] std::string websocket_echo(const std::string& address, uint16_t port,
                                         const std::string& path, const std::string& host,
                                         const std::string& origin,
                                         const std::vector<std::pair<int, std::string>>& frames,
                                         std::chrono::milliseconds timeout);

/// A random RFC 4122 version 4 UUID. Thread: any.
[[nodiscard]] std::string uuid4();

} // namespace sluice::conformance
