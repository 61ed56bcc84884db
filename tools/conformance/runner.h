#pragma once

/// @file
/// The conformance runner: for every test of a cases file, builds the Store the suite
/// would create (base manifests, fixtures, the test's manifests), compiles it, plays the
/// suite's mid-test mutations, and evaluates status checks and traffic cases.

#include <iosfwd>
#include <string>
#include <vector>

namespace sluice::conformance {

struct RunOptions {
    std::string mode = "decide"; ///< decide | traffic
    std::string cases_file;
    std::string manifests_dir;      ///< holds base/manifests.yaml and tests/*.yaml
    std::vector<std::string> tests; ///< only these tests (empty = all)
    std::string run_regex;          ///< only tests whose name matches (ECMAScript, search)
    std::string known_failures_file;
    bool verbose = false;
    /// decide mode: "files" (the file source's loader path) or "api" (each object as the
    /// API server returns it, through the Kubernetes source's conversion; api_input.h)
    std::string input = "files";
    // traffic mode
    std::string build_dir;      ///< sluice-controlplane and sluice-l7 are found below it
    std::string source_dir;     ///< tools/echo/sluice-echo is found below it
    int consistency_ms = 10000; ///< per case: time to reach 3 good answers in a row
    int ready_ms = 10000;       ///< per configuration: time for status and sluice-l7 to follow
    bool keep_temp = false;     ///< keep the temporary directory of the processes
};

/// Runs the tests and prints the report to `out` (diagnostics to `err`). Returns the exit
/// status: 0 when nothing failed (known failures excluded), 1 on failures, 2 when an input
/// could not be read or the processes of traffic mode could not be started, 77 when
/// traffic mode cannot bind the Gateways' ports (not root). Thread: main (traffic mode
/// forks and handles SIGINT/SIGTERM/SIGHUP); blocks on I/O.
[[nodiscard]] int run(const RunOptions& opts, std::ostream& out, std::ostream& err);

} // namespace sluice::conformance
