#pragma once

/// @file
/// The L7 routing decision over a compiled IR: listener selection by port, SNI and Host
/// (the most specific listener only: isolation), then rule precedence (REFERENCE 7.1),
/// then filters. match() allocates nothing; apply() builds the forwarded request and is
/// used by tools (explain, conformance) and by the L7 engine's request setup.
/// Thread: any; the IR must stay alive for the duration of the call.

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "ir.h"

namespace sluice::route {

struct Header {
    std::string name; ///< as received
    std::string value;
};

struct Request {
    std::string gateway_ns, gateway_name; ///< which Gateway (address) the client reached
    uint16_t port = 80;
    std::string scheme = "http"; ///< http | https
    std::string sni;             ///< TLS server name; "" for plaintext
    std::string method = "GET";
    std::string target = "/"; ///< request-target: path [? query]
    std::string host;         ///< Host / :authority as sent (may carry a port)
    std::vector<Header> headers;
    bool grpc = false; ///< route with the GRPCRoute tables (content-type application/grpc)
};

enum class Outcome {
    Forward,   ///< proxy to a backend of `rule`
    Respond,   ///< the gateway answers itself with `status` (404, 421, 500, CORS preflight)
    Redirect,  ///< 3xx with `location`
    NoListener ///< nothing listens there: connection refused / reset
};

struct Match {
    Outcome outcome = Outcome::NoListener;
    uint16_t status = 0;
    uint32_t listener = ir::kNone; ///< index into Ir::listeners
    uint32_t sni_listener = ir::kNone;
    uint32_t rule = ir::kNone;  ///< index into Ir::rules
    uint32_t match = ir::kNone; ///< index into http_matches / grpc_matches
    std::string_view why;       ///< short reason for explain ("no listener for host", ...)
};

/// Selects listener and rule. Thread: any; no allocation.
[[nodiscard]] Match match(const ir::Ir& ir, const Request& req) noexcept;

struct Forwarded {
    std::string method, path, host; ///< what the backend sees
    std::vector<Header> headers;     ///< after request header filters
    ir::HeaderOps response_ops;      ///< to apply to the backend's response
    std::vector<std::pair<std::string, std::string>> response_headers; ///< CORS etc.
    std::vector<uint32_t> mirrors;   ///< backend groups that get a copy
};

struct Decision {
    Match m;
    Outcome outcome = Outcome::NoListener;
    uint16_t status = 0;
    std::string location; ///< Redirect
    uint32_t backend = ir::kNone; ///< index into the rule's backends (Forward)
    uint32_t group = ir::kNone;   ///< chosen backend group
    Forwarded fwd;
};

/// Full decision for one request. `pick` in [0, total weight) chooses the backend by weight
/// (callers pass a random number; tests pass fixed ones). A chosen backend whose ref is
/// invalid turns the answer into its status (500). Thread: any.
[[nodiscard]] Decision decide(const ir::Ir& ir, const Request& req, uint64_t pick);

/// Sum of the weights of a rule's backends.
[[nodiscard]] uint64_t total_weight(const ir::Rule& r) noexcept;

/// Applies header operations to a header list (names compared case-insensitively):
/// set replaces every value, add appends another line, remove deletes. Thread: any.
void apply_header_ops(const ir::HeaderOps& ops, std::vector<Header>& headers);

/// ReplacePrefixMatch: replaces the matched prefix `prefix` of `path` with `with`, element-
/// wise, never producing "" or "//" at the seam. Thread: any.
[[nodiscard]] std::string replace_prefix(std::string_view path, std::string_view prefix,
                                         std::string_view with);

} // namespace sluice::route
