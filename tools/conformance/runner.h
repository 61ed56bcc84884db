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
    std::string cases_file;
    std::string manifests_dir;      ///< holds base/manifests.yaml and tests/*.yaml
    std::vector<std::string> tests; ///< only these tests (empty = all)
    std::string known_failures_file;
    bool verbose = false;
};

/// Runs the tests and prints the report to `out` (diagnostics to `err`). Returns the exit
/// status: 0 when nothing failed (known failures excluded), 1 on failures, 2 when an input
/// could not be read. Thread: any; blocks on I/O.
[[nodiscard]] int run(const RunOptions& opts, std::ostream& out, std::ostream& err);

} // namespace sluice::conformance
