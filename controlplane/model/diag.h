#pragma once

/// @file
/// Diagnostics: what the loader and validator say about user input. Each one names the
/// file, the document index in it, the object (Kind namespace/name) and the field path.

#include <string>
#include <vector>

namespace sluice::cp {

enum class Severity { Warning, Error };

struct Diagnostic {
    Severity severity = Severity::Error;
    std::string file;   ///< source file ("" when not from a file)
    int doc = -1;       ///< 0-based document index in the file, -1 when unknown
    int line = -1;      ///< 1-based line, -1 when unknown
    std::string object; ///< "Kind namespace/name" or "" before the object is known
    std::string field;  ///< field path, e.g. spec.rules[0].matches[0].path.value
    std::string message;

    [[nodiscard]] std::string str() const;
};

class Diagnostics {
public:
    void add(Diagnostic d) { items_.push_back(std::move(d)); }
    [[nodiscard]] const std::vector<Diagnostic>& items() const noexcept { return items_; }
    [[nodiscard]] size_t errors() const noexcept;
    [[nodiscard]] size_t size() const noexcept { return items_.size(); }
    void clear() noexcept { items_.clear(); }

private:
    std::vector<Diagnostic> items_;
};

} // namespace sluice::cp
