#pragma once

/// @file
/// Traffic cases: what the compiled IR decides for a case's request (route::decide for
/// HTTP/gRPC, the listener's SNI routes or L4 rule for TLS/TCP/UDP), compared with the
/// case's `expect` per REFERENCE.md section 6. Cases whose outcome depends on live traffic
/// (timeouts, retries, handshakes the IR does not decide, websocket, DNS) are skipped.

#include <string>
#include <utility>
#include <vector>

#include "fixtures.h"
#include "json_util.h"
#include "world.h"

namespace sluice::conformance {

/// A deterministic pod IP for a Deployment (the runner plays the endpoint controller when
/// a test patches EndpointSlices with pod IPs). Empty when the Deployment is unknown.
[[nodiscard]] std::string pod_ip(const cp::Store& store, const std::string& ns,
                                 const std::string& deployment, bool v6);

/// The echo pod name prefix a backend group answers with: the Deployment whose pod
/// template labels match the Service's selector (or whose pod IPs the Service's endpoints
/// name), else the Service name.
[[nodiscard]] std::string backend_identity(const World& w, uint32_t group);

/// Evaluates one case record. Thread: any.
[[nodiscard]] Outcome evaluate_case(const Json& c, const World& w, const Fixtures& fx);

/// One real HTTP exchange (traffic mode), in the terms of the comparison.
struct LiveExchange {
    // The request as sent.
    std::string scheme = "http";
    std::string method = "GET";
    std::string target = "/"; ///< path [? query]
    std::string host;         ///< Host header as sent
    // The answer.
    bool transport_error = false; ///< no HTTP response (refused, reset, timeout, garbage)
    std::string error;
    int status = 0;
    std::vector<std::pair<std::string, std::string>> headers; ///< response headers, in order
    bool echoed = false; ///< the body is the echo backend's JSON (it saw the request)
    std::string pod, ns; ///< the echo pod's name and namespace
    std::string backend_method, backend_path, backend_host;
    std::vector<std::pair<std::string, std::string>> backend_headers; ///< as the echo saw them
    // The gateway-to-backend TLS connection as the echo saw it (its JSON "tls" object).
    bool backend_tls = false;
    std::string backend_sni;                     ///< tls.serverName
    std::vector<std::string> backend_peer_certs; ///< tls.peerCertificates (PEM)
};

/// Compares a real exchange with the expectation of an eventually-consistent HTTP case
/// (status, redirect Location, the request the backend saw, which pod answered, response
/// headers, and the SNI and client certificate the backend saw on a gateway-to-backend TLS
/// connection, the latter looked up in `fx`), with the same rules evaluate_case applies to
/// a simulated answer. Mirrors and weights are judged by the caller (pod logs, request
/// samples). Thread: any.
[[nodiscard]] Outcome compare_live(const Json& c, const LiveExchange& x,
                                   const Fixtures* fx = nullptr);

} // namespace sluice::conformance
