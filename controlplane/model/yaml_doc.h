#pragma once

/// @file
/// A bounded, owned document tree built from YAML (or JSON) text with yaml-cpp. The loader
/// converts yaml-cpp's nodes into this tree under hard limits (bytes, node count, depth),
/// so aliases that expand exponentially, deep nesting and huge files end in a diagnostic,
/// never in a crash or a hang. yaml-cpp exceptions are caught here and nowhere else.

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "diag.h"

namespace sluice::cp {

struct Node {
    enum class Kind : uint8_t { Null, Scalar, Seq, Map };
    Kind kind = Kind::Null;
    bool quoted = false; ///< scalar was quoted (so it is a string even if it looks like 80)
    int line = -1;
    std::string scalar;
    std::vector<Node> items;                         ///< Seq
    std::vector<std::pair<std::string, Node>> fields; ///< Map, in document order

    // Declared here, defaulted in yaml_doc.cc: with implicit inline special members, clang
    // (with libstdc++) instantiates pair<string, Node> while Node is still incomplete and
    // rejects the header, which stops the libFuzzer build (clang only).
    Node();
    Node(const Node&);
    Node(Node&&) noexcept;
    Node& operator=(const Node&);
    Node& operator=(Node&&) noexcept;
    ~Node();

    [[nodiscard]] const Node* get(std::string_view key) const noexcept;
    [[nodiscard]] bool is_map() const noexcept { return kind == Kind::Map; }
    [[nodiscard]] bool is_seq() const noexcept { return kind == Kind::Seq; }
    [[nodiscard]] bool is_scalar() const noexcept { return kind == Kind::Scalar; }
    [[nodiscard]] bool is_null() const noexcept { return kind == Kind::Null; }
};

struct Document {
    std::string file;
    int index = 0; ///< 0-based position in the file
    Node root;
};

struct LoadLimits {
    size_t max_file_bytes = 32u << 20; ///< a larger file is refused whole
    size_t max_nodes = 4u << 20;       ///< per file, counting alias expansions
    int max_depth = 64;                ///< Gateway API objects are < 15 deep
    size_t max_docs = 200000;
};

/// Parses every document of `text`. Documents that fail get a diagnostic and are skipped;
/// the others are returned. Thread: any.
[[nodiscard]] std::vector<Document> parse_yaml(std::string_view text, const std::string& file,
                                               const LoadLimits& limits, Diagnostics& diags);

/// Reads and parses a file (or every *.yaml/*.yml/*.json file of a directory, sorted by
/// name, recursively). Thread: any; blocks on I/O.
[[nodiscard]] std::vector<Document> load_path(const std::string& path, const LoadLimits& limits,
                                              Diagnostics& diags);

/// True when `s` is well-formed UTF-8.
[[nodiscard]] bool valid_utf8(std::string_view s) noexcept;

} // namespace sluice::cp
