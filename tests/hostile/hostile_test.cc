// Hostile input: every malformed, oversized or malicious manifest must end in a precise
// diagnostic, never in a crash, a hang or a stack overflow, and must not stop the valid
// objects loaded beside it from compiling. Each test names the diagnostic it expects
// (severity, field path, message), so removing the check it covers makes the test fail.

#include <gtest/gtest.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <unistd.h>

#include "compile.h"
#include "ir_codec.h"
#include "loader.h"
#include "yaml_doc.h"

namespace sluice::cp {
namespace {

namespace fs = std::filesystem;

/// A valid Gateway + HTTPRoute (with what they need) that must keep working next to any
/// bad input.
constexpr const char* kGood = R"(
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: good-class}
spec: {controllerName: sluice.dev/gateway-controller}
---
apiVersion: v1
kind: Namespace
metadata: {name: good}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: good-gw, namespace: good}
spec:
  gatewayClassName: good-class
  listeners:
  - {name: http, port: 80, protocol: HTTP, allowedRoutes: {namespaces: {from: All}}}
---
apiVersion: v1
kind: Service
metadata: {name: good-svc, namespace: good}
spec: {ports: [{port: 8080}]}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: good-route, namespace: good}
spec:
  parentRefs: [{name: good-gw}]
  hostnames: [good.example.com]
  rules:
  - matches: [{path: {type: PathPrefix, value: /good}}]
    backendRefs: [{name: good-svc, port: 8080}]
)";

struct Loaded {
    Store store;
    Diagnostics diags;
    size_t docs = 0;
};

void parse_into(Loaded& run, const std::string& text, const std::string& file,
                const LoadLimits& limits = LoadLimits{}) {
    std::vector<Document> docs = parse_yaml(text, file, limits, run.diags);
    run.docs += docs.size();
    load_documents(docs, LoadOptions{}, run.store, run.diags);
}

std::string dump(const Diagnostics& d) {
    std::string s;
    for (const Diagnostic& x : d.items()) {
        s += "  " + x.str() + "\n";
    }
    return s.empty() ? "  (no diagnostics)\n" : s;
}

const Diagnostic* find_diag(const Diagnostics& d, Severity sev, const std::string& field_part,
                            const std::string& msg_part) {
    for (const Diagnostic& x : d.items()) {
        if (x.severity == sev && x.field.find(field_part) != std::string::npos &&
            x.message.find(msg_part) != std::string::npos) {
            return &x;
        }
    }
    return nullptr;
}

::testing::AssertionResult has_diag(const Diagnostics& d, Severity sev,
                                    const std::string& field_part, const std::string& msg_part) {
    if (find_diag(d, sev, field_part, msg_part)) {
        return ::testing::AssertionSuccess();
    }
    return ::testing::AssertionFailure()
           << "no " << (sev == Severity::Error ? "error" : "warning") << " with field ~ '"
           << field_part << "' and message ~ '" << msg_part << "'; got:\n"
           << dump(d);
}

template <typename T>
bool has_named(const std::vector<T>& v, const std::string& ns, const std::string& name) {
    for (const T& o : v) {
        if (o.meta.ns == ns && o.meta.name == name) {
            return true;
        }
    }
    return false;
}

/// The good objects are in the store, compile, are accepted, and the IR survives its codec.
void expect_good_works(const Loaded& run) {
    EXPECT_TRUE(has_named(run.store.gateways, "good", "good-gw")) << dump(run.diags);
    EXPECT_TRUE(has_named(run.store.routes, "good", "good-route")) << dump(run.diags);
    for (const Diagnostic& d : run.diags.items()) {
        EXPECT_FALSE(d.severity == Severity::Error && d.object.find("good-") != std::string::npos)
            << "the good objects got an error: " << d.str();
    }
    const CompileOutput out = compile(run.store, {});
    const ObjectStatus* gw = out.find(ObjectKey{"Gateway", "good", "good-gw"});
    ASSERT_NE(gw, nullptr);
    const Condition* gw_acc = gw->condition("Accepted");
    ASSERT_NE(gw_acc, nullptr);
    EXPECT_EQ(gw_acc->status, "True") << gw_acc->reason << ": " << gw_acc->message;
    const ObjectStatus* rt = out.find(ObjectKey{"HTTPRoute", "good", "good-route"});
    ASSERT_NE(rt, nullptr);
    ASSERT_EQ(rt->parents.size(), 1u);
    for (const char* type : {"Accepted", "ResolvedRefs"}) {
        const Condition* c = nullptr;
        for (const Condition& x : rt->parents[0].conditions) {
            if (x.type == type) {
                c = &x;
            }
        }
        ASSERT_NE(c, nullptr) << type;
        EXPECT_EQ(c->status, "True") << type << " " << c->reason << ": " << c->message;
    }
    EXPECT_FALSE(out.ir.listeners.empty());
    const std::string bytes = ir::encode(out.ir);
    auto back = ir::decode(bytes);
    ASSERT_TRUE(back.has_value()) << back.error().message;
    EXPECT_EQ(ir::encode(*back), bytes);
}

/// `bad` and the good objects in one file: per-document problems must not stop the rest.
Loaded bad_then_good(const std::string& bad, const LoadLimits& limits = LoadLimits{}) {
    Loaded run;
    parse_into(run, bad + "\n---\n" + kGood, "bad.yaml", limits);
    return run;
}

/// `bad` as a file of its own, then the good objects from another file.
Loaded bad_file_and_good_file(const std::string& bad, const LoadLimits& limits = LoadLimits{}) {
    Loaded run;
    parse_into(run, bad, "bad.yaml", limits);
    parse_into(run, kGood, "good.yaml");
    return run;
}

class TempDir {
public:
    TempDir() {
        std::string tmpl = (fs::temp_directory_path() / "sluice-hostile-XXXXXX").string();
        if (mkdtemp(tmpl.data()) != nullptr) {
            path_ = tmpl;
        }
    }
    TempDir(const TempDir&) = delete;
    TempDir& operator=(const TempDir&) = delete;
    ~TempDir() {
        if (!path_.empty()) {
            std::error_code ec;
            fs::remove_all(path_, ec);
        }
    }
    [[nodiscard]] const fs::path& path() const noexcept { return path_; }

private:
    fs::path path_;
};

double seconds_since(std::chrono::steady_clock::time_point t0) {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// ------------------------------------------------------------------ unknown things

TEST(Hostile, UnknownKindIsAWarningAndIgnored) {
    Loaded run = bad_then_good(R"(
apiVersion: gateway.networking.k8s.io/v1
kind: Frobnicator
metadata: {name: x, namespace: good}
spec: {anything: [1, 2, 3]}
)");
    EXPECT_TRUE(has_diag(run.diags, Severity::Warning, "kind", "unknown kind"));
    const Diagnostic* d = find_diag(run.diags, Severity::Warning, "kind", "unknown kind");
    ASSERT_NE(d, nullptr);
    EXPECT_NE(d->message.find("Frobnicator"), std::string::npos);
    EXPECT_EQ(run.diags.errors(), 0u) << dump(run.diags);
    expect_good_works(run);
}

TEST(Hostile, UnknownFieldsWarnWithTheirPathAndTheObjectStillLoads) {
    Loaded run = bad_then_good(R"(
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: extra, namespace: good, colour: blue}
spec:
  gatewayClassName: good-class
  frobnicate: true
  listeners:
  - {name: http, port: 8081, protocol: HTTP, turbo: on}
extraTopLevel: 1
)");
    EXPECT_TRUE(has_diag(run.diags, Severity::Warning, "spec.frobnicate", "unknown field"));
    EXPECT_TRUE(has_diag(run.diags, Severity::Warning, "spec.listeners[0].turbo", "unknown field"));
    EXPECT_TRUE(has_diag(run.diags, Severity::Warning, "metadata.colour", "unknown field"));
    EXPECT_TRUE(has_diag(run.diags, Severity::Warning, "extraTopLevel", "unknown field"));
    EXPECT_EQ(run.diags.errors(), 0u) << dump(run.diags);
    EXPECT_TRUE(has_named(run.store.gateways, "good", "extra"));
    expect_good_works(run);
}

// ------------------------------------------------------------------ wrong types

TEST(Hostile, WrongTypeNamesFileDocumentObjectAndField) {
    // Document 0 is fine; document 1 has a string where an integer is expected.
    Loaded run = bad_then_good(R"(
apiVersion: v1
kind: Namespace
metadata: {name: typed}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: typed-gw, namespace: typed}
spec:
  gatewayClassName: good-class
  listeners:
  - {name: http, port: "80", protocol: HTTP}
)");
    const Diagnostic* d =
        find_diag(run.diags, Severity::Error, "spec.listeners[0].port", "must be an integer");
    ASSERT_NE(d, nullptr) << dump(run.diags);
    EXPECT_EQ(d->file, "bad.yaml");
    EXPECT_EQ(d->doc, 1);
    EXPECT_EQ(d->object, "Gateway typed/typed-gw");
    EXPECT_EQ(d->field, "spec.listeners[0].port");
    EXPECT_GT(d->line, 0);
    EXPECT_NE(d->str().find("bad.yaml"), std::string::npos);
    EXPECT_FALSE(has_named(run.store.gateways, "typed", "typed-gw")); // refused whole
    EXPECT_TRUE(has_named(run.store.namespaces, "", "typed"));        // its neighbour is not
    expect_good_works(run);
}

TEST(Hostile, MoreWrongTypes) {
    Loaded run = bad_then_good(R"(
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: t1, namespace: good}
spec:
  parentRefs: {name: good-gw}
  hostnames: [good.example.com]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: t2, namespace: good}
spec:
  parentRefs: [{name: good-gw}]
  rules:
  - backendRefs: [{name: good-svc, port: eighty}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: t3, namespace: good}
spec:
  parentRefs: [{name: [good-gw]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: [t4]
spec: {}
---
apiVersion: [gateway.networking.k8s.io/v1]
kind: HTTPRoute
metadata: {name: t5}
)");
    EXPECT_TRUE(has_diag(run.diags, Severity::Error, "spec.parentRefs", "must be a list"));
    const Diagnostic* port =
        find_diag(run.diags, Severity::Error, "spec.rules[0].backendRefs[0].port", "eighty");
    ASSERT_NE(port, nullptr) << dump(run.diags);
    EXPECT_EQ(port->object, "HTTPRoute good/t2");
    EXPECT_EQ(port->doc, 1);
    EXPECT_TRUE(
        has_diag(run.diags, Severity::Error, "spec.parentRefs[0].name", "must be a string"));
    EXPECT_TRUE(has_diag(run.diags, Severity::Error, "metadata", "must be an object"));
    EXPECT_TRUE(has_diag(run.diags, Severity::Error, "", "apiVersion and kind are required"));
    for (const char* n : {"t1", "t2", "t3"}) {
        EXPECT_FALSE(has_named(run.store.routes, "good", n)) << n;
    }
    expect_good_works(run);
}

// ------------------------------------------------------------------ resource exhaustion

TEST(Hostile, AliasBombHitsTheNodeLimitQuickly) {
    // "Billion laughs": 10 levels of 10 aliases each, 10^10 nodes if expanded.
    std::string bomb = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: lol}\n";
    bomb += "l0: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]\n";
    for (int i = 1; i < 10; ++i) {
        bomb += "l" + std::to_string(i) + ": &l" + std::to_string(i) + " [";
        for (int k = 0; k < 10; ++k) {
            bomb += (k ? ", *l" : "*l") + std::to_string(i - 1);
        }
        bomb += "]\n";
    }
    const auto t0 = std::chrono::steady_clock::now();
    Loaded run = bad_file_and_good_file(bomb); // LoadLimits defaults: what production uses
    const double secs = seconds_since(t0);
    EXPECT_TRUE(has_diag(run.diags, Severity::Error, "", "YAML aliases expand to"));
    const Diagnostic* d = find_diag(run.diags, Severity::Error, "", "far more than the file holds");
    ASSERT_NE(d, nullptr);
    EXPECT_EQ(d->file, "bad.yaml");
    EXPECT_TRUE(run.store.config_maps.empty());
    // A hang guard, not a benchmark (the machine may be busy).
    EXPECT_LT(secs, 20.0);
    expect_good_works(run);
}

TEST(Hostile, AliasBombUnderSmallLimitsIsFast) {
    std::string bomb = "a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n";
    for (int i = 1; i < 10; ++i) {
        bomb += "a" + std::to_string(i) + ": &a" + std::to_string(i) + " [";
        for (int k = 0; k < 10; ++k) {
            bomb += (k ? ", *a" : "*a") + std::to_string(i - 1);
        }
        bomb += "]\n";
    }
    LoadLimits limits;
    limits.max_nodes = 200000;
    const auto t0 = std::chrono::steady_clock::now();
    Loaded run = bad_file_and_good_file(bomb, limits);
    EXPECT_LT(seconds_since(t0), 5.0);
    EXPECT_TRUE(has_diag(run.diags, Severity::Error, "", "YAML aliases expand to"));
    expect_good_works(run);
}

TEST(Hostile, TenThousandDeepFlowNestingIsRefused) {
    const int depth = 10000;
    const std::string seq = std::string(depth, '[') + std::string(depth, ']') + "\n";
    Loaded run = bad_file_and_good_file(seq);
    EXPECT_TRUE(has_diag(run.diags, Severity::Error, "", "nesting deeper than"));
    EXPECT_EQ(run.diags.items().front().file, "bad.yaml");
    EXPECT_EQ(run.docs, 5u); // only the good file's documents

    std::string map;
    for (int i = 0; i < depth; ++i) {
        map += "{a: ";
    }
    map += "b" + std::string(depth, '}') + "\n";
    Loaded run2 = bad_file_and_good_file(map);
    EXPECT_TRUE(has_diag(run2.diags, Severity::Error, "", "nesting deeper than"));
    EXPECT_EQ(run2.docs, 5u);
    expect_good_works(run2);
}

TEST(Hostile, TenThousandDeepBlockNestingIsRefused) {
    const int depth = 10000;
    // Block maps, one space of indentation per level (~50 MB: raise the byte limit so that
    // the nesting, not the size, is what gets refused).
    std::string map;
    map.reserve(static_cast<size_t>(depth) * (depth + 4) / 2 + depth);
    for (int i = 0; i < depth; ++i) {
        map.append(static_cast<size_t>(i), ' ');
        map += "a:\n";
    }
    map.append(static_cast<size_t>(depth), ' ');
    map += "b\n";
    LoadLimits limits;
    limits.max_file_bytes = 64u << 20;
    Loaded run = bad_file_and_good_file(map, limits);
    const Diagnostic* d = find_diag(run.diags, Severity::Error, "", "");
    ASSERT_NE(d, nullptr) << dump(run.diags);
    EXPECT_EQ(d->file, "bad.yaml");
    EXPECT_EQ(run.docs, 5u);
    expect_good_works(run);

    // Block sequences nest on one line.
    std::string seq;
    for (int i = 0; i < depth; ++i) {
        seq += "- ";
    }
    seq += "x\n";
    Loaded run2 = bad_file_and_good_file(seq);
    EXPECT_TRUE(has_diag(run2.diags, Severity::Error, "", "nesting deeper than"));
    EXPECT_EQ(run2.docs, 5u);
    expect_good_works(run2);
}

TEST(Hostile, NestingPastOurDepthLimitIsRefusedByIt) {
    // Deeper than LoadLimits::max_depth (64) but shallow for yaml-cpp: our own check answers.
    std::string deep = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: deep}\nspec:\n";
    for (int i = 1; i <= 100; ++i) {
        deep.append(static_cast<size_t>(i) * 2, ' ');
        deep += "a:\n";
    }
    Loaded run = bad_then_good(deep);
    EXPECT_TRUE(has_diag(run.diags, Severity::Error, "", "nesting deeper than 64 levels"));
    EXPECT_TRUE(run.store.config_maps.empty());
    expect_good_works(run); // the next documents of the same file still load

    Loaded run2 = bad_file_and_good_file(std::string(100, '[') + std::string(100, ']'));
    EXPECT_TRUE(has_diag(run2.diags, Severity::Error, "", "nesting deeper than 64 levels"));
    expect_good_works(run2);
}

TEST(Hostile, HundredMegabyteFileIsRefusedBySize) {
    TempDir dir;
    ASSERT_FALSE(dir.path().empty());
    const fs::path big = dir.path() / "big.yaml";
    {
        std::ofstream out(big, std::ios::binary);
        const std::string line = "# padding padding padding padding padding padding padding\n";
        std::string chunk;
        while (chunk.size() < (1u << 20)) {
            chunk += line;
        }
        chunk.resize(1u << 20);
        for (int i = 0; i < 100; ++i) {
            out.write(chunk.data(), static_cast<std::streamsize>(chunk.size()));
        }
        ASSERT_TRUE(out.good());
    }
    {
        std::ofstream out(dir.path() / "good.yaml");
        out << kGood;
    }
    ASSERT_EQ(fs::file_size(big), 100u << 20);

    Loaded run;
    std::vector<Document> docs = load_path(dir.path().string(), LoadLimits{}, run.diags);
    run.docs = docs.size();
    load_documents(docs, LoadOptions{}, run.store, run.diags);
    const Diagnostic* d = find_diag(run.diags, Severity::Error, "", "over the limit");
    ASSERT_NE(d, nullptr) << dump(run.diags);
    EXPECT_EQ(d->file, big.string());
    EXPECT_NE(d->message.find(std::to_string(100u << 20)), std::string::npos) << d->message;
    EXPECT_EQ(run.diags.errors(), 1u) << dump(run.diags);
    EXPECT_EQ(run.docs, 5u);
    expect_good_works(run);

    // The same bytes handed over in memory are refused the same way.
    Diagnostics mem;
    std::string text(100u << 20, '#');
    EXPECT_TRUE(parse_yaml(text, "mem.yaml", LoadLimits{}, mem).empty());
    EXPECT_TRUE(has_diag(mem, Severity::Error, "", "over the limit"));
}

// ------------------------------------------------------------------ encoding and syntax

TEST(Hostile, InvalidUtf8IsRefused) {
    const std::string bad = "apiVersion: v1\nkind: Namespace\nmetadata: {name: \"a\xff\xfe\"}\n";
    Loaded run = bad_file_and_good_file(bad);
    EXPECT_TRUE(has_diag(run.diags, Severity::Error, "", "not valid UTF-8"));
    EXPECT_FALSE(has_named(run.store.namespaces, "", "a\xff\xfe"));
    expect_good_works(run);

    // Overlong encoding and a UTF-16 surrogate are invalid too.
    for (const char* s : {"name: \xc0\xaf\n", "x: \xed\xa0\x80\n", "x: \xf0\x9f\x98\n"}) {
        Diagnostics d;
        EXPECT_TRUE(parse_yaml(s, "u.yaml", LoadLimits{}, d).empty());
        EXPECT_TRUE(has_diag(d, Severity::Error, "", "not valid UTF-8"));
    }
}

TEST(Hostile, YamlSyntaxErrorIsADiagnostic) {
    Loaded run =
        bad_file_and_good_file("apiVersion: v1\nkind: Namespace\nmetadata: {name: \"open\n");
    const Diagnostic* d = find_diag(run.diags, Severity::Error, "", "YAML");
    ASSERT_NE(d, nullptr) << dump(run.diags);
    EXPECT_EQ(d->file, "bad.yaml");
    expect_good_works(run);
}

// ------------------------------------------------------------------ duplicates

TEST(Hostile, DuplicateObjectInTwoDocumentsKeepsTheFirst) {
    Loaded run = bad_then_good(R"(
apiVersion: v1
kind: Service
metadata: {name: twin, namespace: good}
spec: {ports: [{port: 1111}]}
---
apiVersion: v1
kind: Service
metadata: {name: twin, namespace: good}
spec: {ports: [{port: 2222}]}
)");
    const Diagnostic* d =
        find_diag(run.diags, Severity::Error, "metadata.name", "duplicate object");
    ASSERT_NE(d, nullptr) << dump(run.diags);
    EXPECT_EQ(d->doc, 1);
    EXPECT_EQ(d->object, "Service good/twin");
    int twins = 0;
    for (const Service& s : run.store.services) {
        if (s.meta.name == "twin") {
            ++twins;
            ASSERT_EQ(s.ports.size(), 1u);
            EXPECT_EQ(s.ports[0].port, 1111);
        }
    }
    EXPECT_EQ(twins, 1);
    expect_good_works(run);
}

TEST(Hostile, DuplicateMappingKeyRefusesTheDocument) {
    Loaded run = bad_then_good(R"(
apiVersion: v1
kind: Service
metadata: {name: dupkey, namespace: good}
metadata: {name: other, namespace: good}
spec: {ports: [{port: 80}]}
)");
    const Diagnostic* d = find_diag(run.diags, Severity::Error, "", "duplicate key 'metadata'");
    ASSERT_NE(d, nullptr) << dump(run.diags);
    EXPECT_EQ(d->doc, 0);
    EXPECT_GT(d->line, 0);
    EXPECT_FALSE(has_named(run.store.services, "good", "dupkey"));
    EXPECT_FALSE(has_named(run.store.services, "good", "other"));
    expect_good_works(run);
}

// ------------------------------------------------------------------ regular expressions

TEST(Hostile, CatastrophicBacktrackingRegexIsHarmless) {
    const auto t0 = std::chrono::steady_clock::now();
    Loaded run = bad_then_good(R"(
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: redos, namespace: good}
spec:
  parentRefs: [{name: good-gw}]
  hostnames: [redos.example.com]
  rules:
  - matches:
    - path: {type: RegularExpression, value: "/(a+)+$"}
    - headers: [{type: RegularExpression, name: x-evil, value: "^(a|aa)+$"}]
    - queryParams: [{type: RegularExpression, name: q, value: "(x+x+)+y"}]
    backendRefs: [{name: good-svc, port: 8080}]
)");
    const bool accepted = has_named(run.store.routes, "good", "redos");
    if (accepted) {
        // RE2 is linear time: the route is valid and compiles.
        const CompileOutput out = compile(run.store, {});
        const ObjectStatus* st = out.find(ObjectKey{"HTTPRoute", "good", "redos"});
        ASSERT_NE(st, nullptr);
        ASSERT_FALSE(st->parents.empty());
        bool route_accepted = false;
        for (const Condition& c : st->parents[0].conditions) {
            route_accepted = route_accepted || (c.type == "Accepted" && c.status == "True");
        }
        EXPECT_TRUE(route_accepted);
        // The regexes reach the IR unchanged; the dataplane compiles them with RE2 as well.
        EXPECT_NE(ir::to_text(out.ir).find("(a+)+$"), std::string::npos);
    } else {
        // Rejected: then cleanly, with the offending field named.
        EXPECT_TRUE(has_diag(run.diags, Severity::Error, "spec.rules[0].matches", "regular"));
    }
    EXPECT_LT(seconds_since(t0), 20.0);
    expect_good_works(run);
}

TEST(Hostile, InvalidRegexIsAnError) {
    Loaded run = bad_then_good(R"(
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: badre, namespace: good}
spec:
  parentRefs: [{name: good-gw}]
  rules:
  - matches: [{path: {type: RegularExpression, value: "/(unclosed"}}]
    backendRefs: [{name: good-svc, port: 8080}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: badre2, namespace: good}
spec:
  parentRefs: [{name: good-gw}]
  rules:
  - matches: [{headers: [{type: RegularExpression, name: x, value: "a{2,1}"}]}]
    backendRefs: [{name: good-svc, port: 8080}]
)");
    const Diagnostic* d =
        find_diag(run.diags, Severity::Error, "spec.rules[0].matches[0].path.value",
                  "invalid regular expression");
    ASSERT_NE(d, nullptr) << dump(run.diags);
    EXPECT_EQ(d->object, "HTTPRoute good/badre");
    EXPECT_TRUE(has_diag(run.diags, Severity::Error, "spec.rules[0].matches[0].headers[0].value",
                         "invalid regular expression"));
    EXPECT_FALSE(has_named(run.store.routes, "good", "badre"));
    EXPECT_FALSE(has_named(run.store.routes, "good", "badre2"));
    expect_good_works(run);
}

// ------------------------------------------------------------------ odd documents

TEST(Hostile, ScalarAndListDocumentsAreRefused) {
    Loaded run = bad_then_good("just a scalar\n---\n42\n---\n- a\n- list\n");
    size_t n = 0;
    for (const Diagnostic& d : run.diags.items()) {
        if (d.severity == Severity::Error &&
            d.message.find("must be an object with apiVersion and kind") != std::string::npos) {
            ++n;
        }
    }
    EXPECT_EQ(n, 3u) << dump(run.diags);
    expect_good_works(run);
}

TEST(Hostile, EmptyFilesAreNotAnError) {
    for (const char* text : {"", "\n", "---\n", "---\n---\n...\n", "# only a comment\n"}) {
        Loaded run = bad_file_and_good_file(text);
        EXPECT_EQ(run.diags.errors(), 0u) << "input: '" << text << "'\n" << dump(run.diags);
        EXPECT_EQ(run.docs, 5u);
        expect_good_works(run);
    }
}

TEST(Hostile, JsonDocumentsLoad) {
    Loaded run = bad_file_and_good_file(R"({"apiVersion": "gateway.networking.k8s.io/v1",
 "kind": "HTTPRoute",
 "metadata": {"name": "json-route", "namespace": "good"},
 "spec": {"parentRefs": [{"name": "good-gw"}],
          "rules": [{"matches": [{"path": {"type": "Exact", "value": "/json"}}],
                     "backendRefs": [{"name": "good-svc", "port": 8080}]}]}})");
    EXPECT_EQ(run.diags.errors(), 0u) << dump(run.diags);
    EXPECT_TRUE(has_named(run.store.routes, "good", "json-route"));
    expect_good_works(run);

    // JSON with a wrong type gets the same diagnostic as YAML.
    Loaded run2 = bad_file_and_good_file(R"({"apiVersion": "v1", "kind": "Service",
 "metadata": {"name": "js", "namespace": "good"},
 "spec": {"ports": [{"port": "80"}]}})");
    EXPECT_TRUE(has_diag(run2.diags, Severity::Error, "spec.ports[0].port", "must be an integer"));
    expect_good_works(run2);
}

} // namespace
} // namespace sluice::cp
