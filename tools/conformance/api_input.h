#pragma once

/// @file
/// `--input api`: the manifests take the Kubernetes API source's path into the loader
/// instead of the file source's. Each YAML document is turned into the JSON object an API
/// server would return for it (scalars typed as a YAML 1.2 core schema would, as kubectl
/// sends them; metadata.generation, resourceVersion and uid set as the server sets them),
/// then into a loader Document with the API source's own json_to_document()
/// (controlplane/source/k8s_source.h), so decide mode judges what the API source would
/// compile. Thread: any.

#include <vector>

#include "yaml_doc.h"

namespace sluice::conformance {

/// The documents as the API source would see them.
[[nodiscard]] std::vector<cp::Document> through_api(const std::vector<cp::Document>& docs);

} // namespace sluice::conformance
