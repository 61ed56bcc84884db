#pragma once

/// @file
/// What a check or a case is evaluated against: the Store the runner built (the API
/// server's view) and the compiler's output for it (status + IR), plus the verdict type.

#include <set>
#include <string>

#include "compile.h"

namespace sluice::conformance {

enum class Verdict { Pass, Fail, Skip };

struct Outcome {
    Verdict verdict = Verdict::Pass;
    std::string why; ///< for Fail and Skip: expected vs actual, or why it cannot be judged
};

[[nodiscard]] inline Outcome pass() {
    return {Verdict::Pass, ""};
}
[[nodiscard]] inline Outcome failed(std::string why) {
    return {Verdict::Fail, std::move(why)};
}
[[nodiscard]] inline Outcome skipped(std::string why) {
    return {Verdict::Skip, std::move(why)};
}

struct World {
    const cp::Store* store = nullptr;
    const cp::CompileOutput* out = nullptr;
    std::set<std::string> test_files; ///< Meta::source.file values of the test's manifests
    std::string controller_name = cp::kControllerName;
};

} // namespace sluice::conformance
