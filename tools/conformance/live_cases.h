#pragma once

/// @file
/// Traffic mode's cases: each case of cases.json sent as real traffic to the Gateway's
/// status address (HTTP/1.1, HTTPS with the case's SNI, trust root and client
/// certificate, HTTP/2 over TLS or h2c, gRPC, WebSocket, and the TCP echo dialogue over
/// TLSRoute listeners), judged with the suite's rules (REFERENCE.md section 6, including
/// the SNI and client certificate a TLS backend saw from the gateway):
/// 3 consecutive successes within a time limit, 5 consecutive non-200 answers for
/// expect_failure_not_200, 408/504 equivalence, a weighted distribution over 500
/// requests (10 at a time, +/- the case's tolerance, zero for weight 0), mirrors read from
/// the echo pods' logs (and counted within 3 sigma for a percentage), redirects not
/// followed.

#include <chrono>
#include <string>
#include <vector>

#include "cases.h"
#include "fixtures.h"
#include "live.h"
#include "world.h"

namespace sluice::conformance {

struct LiveCaseEnv {
    const cp::CompileOutput* status = nullptr; ///< the status files: Gateway addresses
    const std::vector<EchoPod>* pods = nullptr;
    const Fixtures* fixtures = nullptr;           ///< certificates the cases trust and present
    std::string test;                             ///< the test's name (WebSocket Origin)
    std::chrono::milliseconds consistency{10000}; ///< time to reach 3 successes in a row
    std::chrono::milliseconds request_timeout{10000};
};

/// Why a case cannot be sent over the real engine by this runner ("" when it can).
[[nodiscard]] std::string live_skip_reason(const Json& c, const TestSpec& t);

/// Sends the case and judges the answers. Thread: main (starts and joins worker threads
/// for distributions).
[[nodiscard]] Outcome evaluate_live_case(const Json& c, const LiveCaseEnv& env);

} // namespace sluice::conformance
