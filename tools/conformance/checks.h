#pragma once

/// @file
/// Status checks: the suite's helper calls transcribed in cases.json `status_checks`,
/// evaluated against compiled status with the semantics of REFERENCE.md section 5.

#include "json_util.h"
#include "world.h"

namespace sluice::conformance {

/// Evaluates one status_checks entry. Arguments of the form {"for_each": [...]} are
/// expanded (every expansion must pass). Unknown helpers are skipped, never passed.
/// Thread: any.
[[nodiscard]] Outcome evaluate_check(const Json& check, const World& w);

/// One line describing a check for reports: helper name and its main arguments.
[[nodiscard]] std::string describe_check(const Json& check);

} // namespace sluice::conformance
