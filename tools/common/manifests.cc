#include "manifests.h"

#include <filesystem>
#include <ostream>
#include <set>

namespace sluice::tools {

Loaded load_manifests(const std::vector<std::string>& paths, bool assume_classes,
                      const std::string& controller_name) {
    Loaded out;
    cp::LoadLimits limits;
    for (const std::string& p : paths) {
        std::error_code ec;
        if (!std::filesystem::exists(p, ec)) {
            out.diags.add({.severity = cp::Severity::Error,
                           .file = p,
                           .doc = -1,
                           .line = -1,
                           .object = "",
                           .field = "",
                           .message = "no such file or directory"});
            out.unreadable = true;
            continue;
        }
        const size_t before = out.diags.size();
        std::vector<cp::Document> docs = cp::load_path(p, limits, out.diags);
        for (size_t i = before; i < out.diags.size(); ++i) {
            // Diagnostics from the reader itself (no object yet) mean the bytes were unusable.
            if (out.diags.items()[i].object.empty() &&
                out.diags.items()[i].severity == cp::Severity::Error) {
                out.unreadable = true;
            }
        }
        cp::LoadOptions lo;
        lo.controller_name = controller_name;
        cp::load_documents(docs, lo, out.store, out.diags);
    }
    if (assume_classes) {
        std::set<std::string> have;
        for (const cp::GatewayClass& c : out.store.classes) {
            have.insert(c.meta.name);
        }
        for (const cp::Gateway& g : out.store.gateways) {
            if (!have.count(g.class_name) && !g.class_name.empty()) {
                cp::GatewayClass c;
                c.meta.name = g.class_name;
                c.controller_name = controller_name;
                out.store.classes.push_back(c);
                have.insert(g.class_name);
                out.assumed_classes.push_back(g.class_name);
            }
        }
    }
    return out;
}

size_t print_diagnostics(const cp::Diagnostics& d, std::ostream& out) {
    for (const cp::Diagnostic& x : d.items()) {
        out << x.str() << "\n";
    }
    return d.errors();
}

} // namespace sluice::tools
