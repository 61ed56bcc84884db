#pragma once

/// @file
/// The admin endpoint of sluice-dataplane and sluice-l7: a minimal HTTP/1.0 server on one
/// blocking thread for GET /metrics (Prometheus text) and GET /stats (JSON). Control path
/// only: it reads counters the workers publish, never the workers' own state.
/// Thread: listen on any; serve() blocks on its own thread until `stop`.

#include <atomic>
#include <functional>
#include <string>

#include "result.h"

namespace sluice::dp {

struct AdminAnswer {
    int status = 200;
    std::string content_type = "text/plain; version=0.0.4";
    std::string body;
};

class AdminServer {
public:
    /// `handler` gets the request path ("/metrics") and builds the answer.
    using Handler = std::function<AdminAnswer(const std::string& path)>;

    AdminServer() = default;
    ~AdminServer();
    AdminServer(const AdminServer&) = delete;
    AdminServer& operator=(const AdminServer&) = delete;

    /// Binds "ADDR:PORT" ("[::1]:9100" for IPv6). Thread: any, before serve().
    [[nodiscard]] Result<void> listen(const std::string& spec);
    /// Answers requests until `stop` is set (checked every 200 ms). Thread: its own.
    void serve(const std::atomic<bool>& stop, const Handler& handler);

private:
    int fd_ = -1;
};

/// Prometheus label value escaping (backslash, quote, newline). Thread: any.
[[nodiscard]] std::string prom_escape(const std::string& v);

} // namespace sluice::dp
