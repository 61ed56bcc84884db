#pragma once

/// @file
/// Traffic cases: what the compiled IR decides for a case's request (route::decide for
/// HTTP/gRPC, the listener's SNI routes or L4 rule for TLS/TCP/UDP), compared with the
/// case's `expect` per REFERENCE.md section 6. Cases whose outcome depends on live traffic
/// (timeouts, retries, handshakes the IR does not decide, websocket, DNS) are skipped.

#include <string>

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

} // namespace sluice::conformance
