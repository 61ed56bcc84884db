#include "api_input.h"

#include <atomic>
#include <regex>
#include <string>

#include <nlohmann/json.hpp>

#include "k8s_source.h"

namespace sluice::conformance {

namespace {

using nlohmann::json;

json scalar_json(const cp::Node& n) {
    if (n.quoted) {
        return n.scalar;
    }
    const std::string& s = n.scalar;
    if (s == "true" || s == "True" || s == "TRUE") {
        return true;
    }
    if (s == "false" || s == "False" || s == "FALSE") {
        return false;
    }
    if (s == "null" || s == "Null" || s == "NULL" || s == "~") {
        return nullptr;
    }
    static const std::regex kInt("[-+]?[0-9]+");
    static const std::regex kFloat("[-+]?(\\.[0-9]+|[0-9]+(\\.[0-9]*)?)([eE][-+]?[0-9]+)?");
    if (std::regex_match(s, kInt)) {
        try {
            return std::stoll(s);
        } catch (...) {
            return s; // out of range: the API server would refuse it; keep the text
        }
    }
    if (std::regex_match(s, kFloat)) {
        return std::stod(s);
    }
    return s;
}

json to_json(const cp::Node& n) {
    switch (n.kind) {
    case cp::Node::Kind::Map: {
        json o = json::object();
        for (const auto& [k, v] : n.fields) {
            o[k] = to_json(v);
        }
        return o;
    }
    case cp::Node::Kind::Seq: {
        json a = json::array();
        for (const cp::Node& i : n.items) {
            a.push_back(to_json(i));
        }
        return a;
    }
    case cp::Node::Kind::Scalar: return scalar_json(n);
    case cp::Node::Kind::Null: return nullptr;
    }
    return nullptr;
}

} // namespace

std::vector<cp::Document> through_api(const std::vector<cp::Document>& docs) {
    static std::atomic<uint64_t> rv{1000};
    std::vector<cp::Document> out;
    out.reserve(docs.size());
    for (const cp::Document& d : docs) {
        json j = to_json(d.root);
        if (j.is_object() && j.contains("metadata") && j["metadata"].is_object()) {
            json& m = j["metadata"];
            const uint64_t v = rv.fetch_add(1);
            if (!m.contains("generation")) {
                m["generation"] = 1; // a new object's generation
            }
            m["resourceVersion"] = std::to_string(v);
            m["uid"] = "00000000-0000-4000-8000-" + std::to_string(100000000000ull + v);
        }
        cp::Document nd = cp::json_to_document(j, d.file);
        nd.index = d.index;
        out.push_back(std::move(nd));
    }
    return out;
}

} // namespace sluice::conformance
