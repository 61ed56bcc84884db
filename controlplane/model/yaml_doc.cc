#include "yaml_doc.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>

#include <yaml-cpp/depthguard.h>
#include <yaml-cpp/eventhandler.h>
#include <yaml-cpp/exceptions.h>
#include <yaml-cpp/parser.h>

namespace sluice::cp {

Node::Node() = default;
Node::Node(const Node&) = default;
Node::Node(Node&&) noexcept = default;
Node& Node::operator=(const Node&) = default;
Node& Node::operator=(Node&&) noexcept = default;
Node::~Node() = default;

const Node* Node::get(std::string_view key) const noexcept {
    if (kind != Kind::Map) {
        return nullptr;
    }
    for (const auto& [k, v] : fields) {
        if (k == key) {
            return &v;
        }
    }
    return nullptr;
}

bool valid_utf8(std::string_view s) noexcept {
    size_t i = 0;
    const size_t n = s.size();
    while (i < n) {
        const auto c = static_cast<unsigned char>(s[i]);
        size_t len = 0;
        uint32_t cp = 0;
        if (c < 0x80) {
            ++i;
            continue;
        } else if ((c & 0xE0) == 0xC0) {
            len = 2;
            cp = c & 0x1F;
        } else if ((c & 0xF0) == 0xE0) {
            len = 3;
            cp = c & 0x0F;
        } else if ((c & 0xF8) == 0xF0) {
            len = 4;
            cp = c & 0x07;
        } else {
            return false;
        }
        if (i + len > n) {
            return false;
        }
        for (size_t k = 1; k < len; ++k) {
            const auto cc = static_cast<unsigned char>(s[i + k]);
            if ((cc & 0xC0) != 0x80) {
                return false;
            }
            cp = (cp << 6) | (cc & 0x3F);
        }
        if ((len == 2 && cp < 0x80) || (len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) ||
            cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) {
            return false;
        }
        i += len;
    }
    return true;
}

namespace {

struct LimitHit {
    std::string what;
};

size_t count_nodes(const Node& n) {
    size_t c = 1;
    for (const Node& i : n.items) {
        c += count_nodes(i);
    }
    for (const auto& f : n.fields) {
        c += count_nodes(f.second);
    }
    return c;
}

/// Builds Nodes from yaml-cpp parser events under limits. Errors are recorded, not thrown
/// across yaml-cpp (its parser is not written for exceptions from handlers other than its
/// own); after the first error the rest of the document is ignored.
class TreeBuilder : public YAML::EventHandler {
public:
    TreeBuilder(const LoadLimits& limits, size_t& nodes_used)
        : limits_(limits)
        , nodes_(nodes_used) {}

    void OnDocumentStart(const YAML::Mark&) override {
        stack_.clear();
        root_ = Node{};
        have_root_ = false;
        error_.clear();
        anchors_.clear();
    }
    void OnDocumentEnd() override {}

    void OnNull(const YAML::Mark& mark, YAML::anchor_t anchor) override {
        Node n;
        n.kind = Node::Kind::Null;
        n.line = mark.line + 1;
        finish(std::move(n), anchor);
    }
    void OnAlias(const YAML::Mark& mark, YAML::anchor_t anchor) override {
        if (!error_.empty()) {
            return;
        }
        auto it = anchors_.find(anchor);
        if (it == anchors_.end()) {
            set_error(mark, "unknown alias");
            return;
        }
        // An alias is a copy of the anchored subtree: count it again, so that a chain of
        // aliases that doubles at each step runs into the node limit instead of memory.
        // Expansion is also capped relative to the nodes really written in the file (a
        // 300-byte "billion laughs" stops after a few thousand copies, not millions).
        const size_t real = nodes_ - expanded_; // nodes written out in the file so far
        expanded_ += it->second.second;
        if (expanded_ > kAliasFactor * real + kAliasSlack) {
            set_error(mark, "YAML aliases expand to " + std::to_string(expanded_) +
                                " nodes, far more than the file holds; refusing the file");
            return;
        }
        if (!take(it->second.second, mark)) {
            return;
        }
        Node copy = it->second.first;
        finish(std::move(copy), 0, /*counted=*/true);
    }
    void OnScalar(const YAML::Mark& mark, const std::string& tag, YAML::anchor_t anchor,
                  const std::string& value) override {
        Node n;
        n.kind = Node::Kind::Scalar;
        n.line = mark.line + 1;
        n.quoted = tag == "!" || (!tag.empty() && tag != "?" && tag.find("str") != std::string::npos);
        // A plain "~" or "null" is YAML null.
        if (!n.quoted && (value == "~" || value == "null" || value == "Null" || value == "NULL")) {
            n.kind = Node::Kind::Null;
        } else {
            n.scalar = value;
        }
        finish(std::move(n), anchor);
    }
    void OnSequenceStart(const YAML::Mark& mark, const std::string&, YAML::anchor_t anchor,
                         YAML::EmitterStyle::value) override {
        open(Node::Kind::Seq, mark, anchor);
    }
    void OnSequenceEnd() override { close(); }
    void OnMapStart(const YAML::Mark& mark, const std::string&, YAML::anchor_t anchor,
                    YAML::EmitterStyle::value) override {
        open(Node::Kind::Map, mark, anchor);
    }
    void OnMapEnd() override { close(); }

    [[nodiscard]] const std::string& error() const noexcept { return error_; }
    [[nodiscard]] int error_line() const noexcept { return error_line_; }
    [[nodiscard]] bool have_root() const noexcept { return have_root_; }
    Node take_root() { return std::move(root_); }

private:
    struct Frame {
        Node node;
        YAML::anchor_t anchor = 0;
        bool have_key = false;
        std::string key;
    };

    static constexpr size_t kAliasFactor = 16;
    static constexpr size_t kAliasSlack = 65536;

    bool take(size_t n, const YAML::Mark& mark) {
        nodes_ += n;
        if (nodes_ > limits_.max_nodes) {
            set_error(mark, "more than " + std::to_string(limits_.max_nodes) +
                                " YAML nodes (alias expansion counted); refusing the file");
            return false;
        }
        return true;
    }

    void set_error(const YAML::Mark& mark, std::string msg) {
        if (error_.empty()) {
            error_ = std::move(msg);
            error_line_ = mark.line + 1;
        }
    }

    void open(Node::Kind kind, const YAML::Mark& mark, YAML::anchor_t anchor) {
        ++depth_all_;
        if (!error_.empty()) {
            return;
        }
        if (static_cast<int>(stack_.size()) >= limits_.max_depth) {
            set_error(mark, "nesting deeper than " + std::to_string(limits_.max_depth) + " levels");
            return;
        }
        if (!take(1, mark)) {
            return;
        }
        Frame f;
        f.node.kind = kind;
        f.node.line = mark.line + 1;
        f.anchor = anchor;
        stack_.push_back(std::move(f));
    }

    void close() {
        --depth_all_;
        if (!error_.empty()) {
            return;
        }
        Frame f = std::move(stack_.back());
        stack_.pop_back();
        if (f.node.kind == Node::Kind::Map && f.have_key) {
            // A key without value cannot happen with a well-formed event stream; be safe.
            f.node.fields.emplace_back(std::move(f.key), Node{});
        }
        finish(std::move(f.node), f.anchor, /*counted=*/true);
    }

    void finish(Node n, YAML::anchor_t anchor, bool counted = false) {
        if (!error_.empty()) {
            return;
        }
        if (!counted && !take(1, YAML::Mark())) {
            return;
        }
        if (anchor != 0) {
            anchors_[anchor] = {n, count_nodes(n)};
        }
        if (stack_.empty()) {
            root_ = std::move(n);
            have_root_ = true;
            return;
        }
        Frame& p = stack_.back();
        if (p.node.kind == Node::Kind::Seq) {
            p.node.items.push_back(std::move(n));
            return;
        }
        if (!p.have_key) {
            if (n.kind == Node::Kind::Null) {
                p.key = "";
            } else if (n.kind != Node::Kind::Scalar) {
                error_ = "a mapping key must be a scalar";
                error_line_ = n.line;
                return;
            } else {
                p.key = std::move(n.scalar);
            }
            for (const auto& f : p.node.fields) {
                if (f.first == p.key) {
                    error_ = "duplicate key '" + p.key + "'";
                    error_line_ = n.line;
                    return;
                }
            }
            p.have_key = true;
            return;
        }
        p.node.fields.emplace_back(std::move(p.key), std::move(n));
        p.have_key = false;
        p.key.clear();
    }

    const LoadLimits& limits_;
    size_t& nodes_;
    size_t expanded_ = 0;       ///< nodes copied by aliases (counted in nodes_ too)
    std::vector<Frame> stack_;
    std::map<YAML::anchor_t, std::pair<Node, size_t>> anchors_;
    Node root_;
    bool have_root_ = false;
    std::string error_;
    int error_line_ = -1;
    int depth_all_ = 0;
};

} // namespace

std::vector<Document> parse_yaml(std::string_view text, const std::string& file,
                                 const LoadLimits& limits, Diagnostics& diags) {
    std::vector<Document> out;
    auto diag = [&](int doc, int line, std::string msg) {
        diags.add({.severity = Severity::Error,
                   .file = file,
                   .doc = doc,
                   .line = line,
                   .object = "",
                   .field = "",
                   .message = std::move(msg)});
    };
    if (text.size() > limits.max_file_bytes) {
        diag(-1, -1,
             "file is " + std::to_string(text.size()) + " bytes, over the limit of " +
                 std::to_string(limits.max_file_bytes) + "; not loaded");
        return out;
    }
    if (!valid_utf8(text)) {
        diag(-1, -1, "file is not valid UTF-8; not loaded");
        return out;
    }
    std::istringstream in{std::string(text)};
    size_t nodes = 0;
    int index = 0;
    try {
        YAML::Parser parser(in);
        TreeBuilder builder(limits, nodes);
        while (true) {
            if (out.size() >= limits.max_docs) {
                diag(index, -1, "more than " + std::to_string(limits.max_docs) + " documents");
                break;
            }
            if (!parser.HandleNextDocument(builder)) {
                break;
            }
            if (!builder.error().empty()) {
                diag(index, builder.error_line(), builder.error());
                if (nodes > limits.max_nodes) {
                    break; // the budget is per file
                }
            } else if (builder.have_root()) {
                Node root = builder.take_root();
                if (!root.is_null()) {
                    out.push_back(Document{file, index, std::move(root)});
                }
            }
            ++index;
        }
    } catch (const YAML::DeepRecursion& e) {
        diag(index, e.mark.is_null() ? -1 : e.mark.line + 1,
             "nesting deeper than yaml-cpp's limit (2000 levels); refusing the file");
    } catch (const YAML::Exception& e) {
        // A syntax error ends the stream: documents after it cannot be delimited reliably.
        diag(index, e.mark.is_null() ? -1 : e.mark.line + 1, std::string("YAML: ") + e.msg);
    } catch (const std::exception& e) {
        diag(index, -1, std::string("YAML: ") + e.what());
    }
    return out;
}

std::vector<Document> load_path(const std::string& path, const LoadLimits& limits,
                                Diagnostics& diags) {
    namespace fs = std::filesystem;
    std::vector<std::string> files;
    std::error_code ec;
    if (fs::is_directory(path, ec)) {
        for (fs::recursive_directory_iterator it(path, fs::directory_options::skip_permission_denied,
                                                 ec),
             end;
             it != end; it.increment(ec)) {
            if (ec) {
                break;
            }
            const fs::path& p = it->path();
            const std::string ext = p.extension().string();
            const std::string name = p.filename().string();
            if (!name.empty() && name[0] == '.') {
                if (it->is_directory()) {
                    it.disable_recursion_pending();
                }
                continue;
            }
            if (it->is_regular_file() && (ext == ".yaml" || ext == ".yml" || ext == ".json")) {
                files.push_back(p.string());
            }
        }
        std::sort(files.begin(), files.end());
    } else {
        files.push_back(path);
    }
    std::vector<Document> out;
    for (const std::string& f : files) {
        std::error_code sec;
        const auto size = fs::file_size(f, sec);
        if (sec) {
            diags.add({.severity = Severity::Error,
                       .file = f,
                       .doc = -1,
                       .line = -1,
                       .object = "",
                       .field = "",
                       .message = "cannot read: " + sec.message()});
            continue;
        }
        if (size > limits.max_file_bytes) {
            diags.add({.severity = Severity::Error,
                       .file = f,
                       .doc = -1,
                       .line = -1,
                       .object = "",
                       .field = "",
                       .message = "file is " + std::to_string(size) +
                                  " bytes, over the limit of " +
                                  std::to_string(limits.max_file_bytes) + "; not loaded"});
            continue;
        }
        std::ifstream in(f, std::ios::binary);
        if (!in) {
            diags.add({.severity = Severity::Error,
                       .file = f,
                       .doc = -1,
                       .line = -1,
                       .object = "",
                       .field = "",
                       .message = "cannot open"});
            continue;
        }
        std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
        auto docs = parse_yaml(text, f, limits, diags);
        for (auto& d : docs) {
            out.push_back(std::move(d));
        }
    }
    return out;
}

} // namespace sluice::cp
