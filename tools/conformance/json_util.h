#pragma once

/// @file
/// Non-throwing accessors over nlohmann::json for the conformance runner: cases.json is
/// data from elsewhere, so every field may be absent or of another type. None of these
/// throws; a field of the wrong type reads as absent.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

namespace sluice::conformance {

using Json = nlohmann::json;

/// The member `key` of an object, or nullptr (not an object, or no such member).
[[nodiscard]] const Json* jget(const Json& j, std::string_view key) noexcept;

/// A string member, or `def` when absent or not a string.
[[nodiscard]] std::string jstr(const Json& j, std::string_view key, const std::string& def = "");

/// A string member, or nullopt when absent or not a string.
[[nodiscard]] std::optional<std::string> jopt_str(const Json& j, std::string_view key);

/// An integer member (a number, or a string of digits), or nullopt.
[[nodiscard]] std::optional<int64_t> jint(const Json& j, std::string_view key);

/// A number member as double, or nullopt.
[[nodiscard]] std::optional<double> jnum(const Json& j, std::string_view key);

/// A boolean member, or `def`.
[[nodiscard]] bool jbool(const Json& j, std::string_view key, bool def = false);

/// A list of strings: an array of strings, or a single string (one element), or a string
/// of comma-separated names when `split_commas`. Non-strings are skipped.
[[nodiscard]] std::vector<std::string> jstrs(const Json& j, std::string_view key,
                                             bool split_commas = false);

/// Renders a value compactly for messages (at most `max` characters).
[[nodiscard]] std::string jdump(const Json& j, size_t max = 200);

} // namespace sluice::conformance
