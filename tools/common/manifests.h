#pragma once

/// @file
/// Shared by the command-line tools: load manifest paths into a Store, print diagnostics,
/// and (for offline use) assume that GatewayClasses the input does not define are sluice's.

#include <iosfwd>
#include <string>
#include <vector>

#include "compile.h"
#include "loader.h"

namespace sluice::tools {

struct Loaded {
    cp::Store store;
    cp::Diagnostics diags;
    bool unreadable = false;                ///< a path could not be read or parsed at all
    std::vector<std::string> assumed_classes; ///< GatewayClasses synthesized for offline use
};

/// Loads every path (file or directory). With `assume_classes`, a Gateway whose class is
/// not in the input gets a synthesized GatewayClass with sluice's controllerName.
[[nodiscard]] Loaded load_manifests(const std::vector<std::string>& paths, bool assume_classes,
                                    const std::string& controller_name = cp::kControllerName);

/// Prints diagnostics, one per line, to `out`. Returns the number of errors.
size_t print_diagnostics(const cp::Diagnostics& d, std::ostream& out);

} // namespace sluice::tools
