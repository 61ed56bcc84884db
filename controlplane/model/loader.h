#pragma once

/// @file
/// Manifest loader: documents -> typed, defaulted and validated resources in a Store.
/// Invalid objects are dropped with an error diagnostic (as the API server would refuse
/// them); unknown fields get a warning and are ignored (as the API server prunes them).

#include <string>
#include <vector>

#include "diag.h"
#include "model.h"
#include "yaml_doc.h"

namespace sluice::cp {

struct LoadOptions {
    /// Replaces {GATEWAY_CLASS_NAME} in scalars (the conformance suite's placeholder).
    std::string gateway_class_name;
    /// Replaces {GATEWAY_CONTROLLER_NAME} in scalars.
    std::string controller_name;
    /// Namespace for namespaced objects that do not name one (kubectl's default).
    std::string default_namespace = "default";
};

/// Adds the objects of `docs` to `store`. Objects whose (kind, namespace, name) is already
/// in the store replace the earlier one when `replace` is set, else are refused as
/// duplicates. Thread: any (pure apart from `store` and `diags`).
void load_documents(const std::vector<Document>& docs, const LoadOptions& opts, Store& store,
                    Diagnostics& diags, bool replace = false);

/// Hostname syntax as the CRD validates it (RFC 1123 labels; `*.` only as the first label).
[[nodiscard]] bool valid_hostname(const std::string& h, bool allow_wildcard) noexcept;

/// Gateway API duration (`1h`, `500ms`, `1m30s`, at most 4 parts); milliseconds or -1.
[[nodiscard]] int64_t parse_duration_ms(const std::string& s) noexcept;

} // namespace sluice::cp
