#pragma once

/// @file
/// The suite's mid-test changes (REFERENCE.md end of section 5, `status_notes`): patches,
/// deletions and creations done while a test runs, as small hand-written steps keyed by
/// test name. Each step is placed in the test's timeline relative to a status check
/// (after/before its nth occurrence) and names the traffic cases that run after it.

#include <cstdint>
#include <functional>
#include <set>
#include <string>
#include <vector>

#include "fixtures.h"
#include "loader.h"

namespace sluice::conformance {

/// Address pools the runner supplies for PLACEHOLDER_USABLE_ADDRS / _UNUSABLE_ADDRS.
inline constexpr const char* kUsableAddress = "192.0.2.100";
inline constexpr const char* kUnusableAddress = "203.0.113.100";

struct MutEnv {
    cp::Store& store;
    const std::set<std::string>& test_files; ///< Meta::source.file of the test's manifests
    const cp::LoadOptions& load;
    cp::Diagnostics& diags;
    int64_t now = 0; ///< creationTimestamp (seconds) for objects created by the step
    const Fixtures& fx;
};

/// One YAML document of the manifests traffic mode writes to the controlplane's config
/// directory, with what it is.
struct TextDoc {
    std::string kind, ns, name;
    std::string text; ///< the document, without its "---" separator
};

/// What a step replayed over traffic edits: the test's documents, and the addresses of
/// the echo pods (the pod IPs the suite would patch in).
struct LiveMutEnv {
    std::vector<TextDoc>& docs;
    /// Addresses of a Deployment's echo pods (IPv6 ones when `v6`).
    std::function<std::vector<std::string>(const std::string& ns, const std::string& deployment,
                                           bool v6)>
        pod_addresses;
    const Fixtures* fx = nullptr; ///< the runtime fixtures (CA certificates to copy)
};

struct Mutation {
    std::string what;
    std::string after_check;  ///< placed right after the nth check with this name, or
    std::string before_check; ///< right before the nth check with this name
    int nth = 1;
    std::vector<std::string> cases;            ///< case ids (or "#N" suffixes, or "*") run after it
    std::function<std::string(MutEnv&)> apply; ///< returns "" or why it could not be applied
    /// The same step on the config files of traffic mode; empty = not replayed there.
    std::function<std::string(LiveMutEnv&)> live = {};
};

/// The steps of one test, in timeline order (empty for tests without mutations).
[[nodiscard]] std::vector<Mutation> mutations_for(const std::string& test);

/// Sets Meta::creation of every object that has none (the API server's creationTimestamp).
void stamp_creation(cp::Store& store, int64_t when);

/// Parses YAML text and adds its objects to the store. Returns "" or an error.
[[nodiscard]] std::string load_yaml_text(const std::string& text, const std::string& label,
                                         const cp::LoadOptions& lo, cp::Store& store,
                                         cp::Diagnostics& diags);

} // namespace sluice::conformance
