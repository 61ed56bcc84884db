#include "diag.h"

namespace sluice::cp {

std::string Diagnostic::str() const {
    std::string out;
    if (!file.empty()) {
        out += file;
        if (line > 0) {
            out += ":" + std::to_string(line);
        }
        if (doc >= 0) {
            out += " (document " + std::to_string(doc + 1) + ")";
        }
        out += ": ";
    }
    out += severity == Severity::Error ? "error: " : "warning: ";
    if (!object.empty()) {
        out += object + ": ";
    }
    if (!field.empty()) {
        out += field + ": ";
    }
    out += message;
    return out;
}

size_t Diagnostics::errors() const noexcept {
    size_t n = 0;
    for (const Diagnostic& d : items_) {
        n += d.severity == Severity::Error ? 1 : 0;
    }
    return n;
}

} // namespace sluice::cp
