#pragma once

/// @file
/// The conformance data file (cases.json schema, REFERENCE.md section 6): tests with their
/// features, manifests and status checks, and the traffic cases. Loading never throws:
/// a malformed file becomes an Error.

#include <map>
#include <string>
#include <vector>

#include "json_util.h"
#include "result.h"

namespace sluice::conformance {

struct TestSpec {
    std::string name;
    std::vector<std::string> manifests; ///< file names under <dir>/tests/
    std::vector<std::string> features;
    std::string status_notes;
    std::vector<Json> checks; ///< status_checks entries, in source order
};

struct CaseSpec {
    std::string id;
    std::string test;
    Json raw; ///< the whole record (request, expect, ...)
};

struct CaseFile {
    std::map<std::string, TestSpec> tests; ///< sorted by name
    std::vector<CaseSpec> cases;           ///< in file order
};

/// Parses cases.json text. Thread: any.
[[nodiscard]] Result<CaseFile> parse_case_file(const std::string& text);

/// Reads and parses a cases.json file. Thread: any; blocks on I/O.
[[nodiscard]] Result<CaseFile> load_case_file(const std::string& path);

/// Splits "ns/name" into {ns, name}; a string without '/' is a cluster-scoped name.
struct NsName {
    std::string ns, name;
};
[[nodiscard]] NsName split_ns_name(const std::string& s);

} // namespace sluice::conformance
