#include "cases.h"

#include <fstream>
#include <sstream>

namespace sluice::conformance {

NsName split_ns_name(const std::string& s) {
    const size_t slash = s.find('/');
    if (slash == std::string::npos) {
        return {"", s};
    }
    return {s.substr(0, slash), s.substr(slash + 1)};
}

Result<CaseFile> parse_case_file(const std::string& text) {
    Json root;
    try {
        root = Json::parse(text);
    } catch (const Json::exception& e) {
        return fail(Errc::Invalid, std::string("cases file is not valid JSON: ") + e.what());
    }
    if (!root.is_object()) {
        return fail(Errc::Invalid, "cases file: top level is not an object");
    }
    const Json* tests = jget(root, "tests");
    if (!tests || !tests->is_object()) {
        return fail(Errc::Invalid, "cases file: no \"tests\" object");
    }
    CaseFile out;
    for (auto it = tests->begin(); it != tests->end(); ++it) {
        const Json& t = it.value();
        if (!t.is_object()) {
            return fail(Errc::Invalid, "cases file: test " + it.key() + " is not an object");
        }
        TestSpec spec;
        spec.name = it.key();
        spec.manifests = jstrs(t, "manifests");
        spec.features = jstrs(t, "features");
        spec.status_notes = jstr(t, "status_notes");
        if (const Json* checks = jget(t, "status_checks"); checks && checks->is_array()) {
            for (const Json& c : *checks) {
                spec.checks.push_back(c);
            }
        }
        out.tests.emplace(spec.name, std::move(spec));
    }
    if (const Json* cases = jget(root, "cases"); cases) {
        if (!cases->is_array()) {
            return fail(Errc::Invalid, "cases file: \"cases\" is not an array");
        }
        for (const Json& c : *cases) {
            CaseSpec cs;
            cs.id = jstr(c, "id");
            cs.test = jstr(c, "test");
            if (cs.id.empty() || cs.test.empty() || !c.is_object()) {
                return fail(Errc::Invalid, "cases file: a case without id or test: " + jdump(c));
            }
            cs.raw = c;
            out.cases.push_back(std::move(cs));
        }
    }
    return out;
}

Result<CaseFile> load_case_file(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) {
        return fail(Errc::Io, "cannot read " + path);
    }
    std::ostringstream ss;
    ss << in.rdbuf();
    if (in.bad()) {
        return fail(Errc::Io, "cannot read " + path);
    }
    return parse_case_file(ss.str());
}

} // namespace sluice::conformance
