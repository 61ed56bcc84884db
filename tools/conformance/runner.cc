#include "runner.h"

#include <algorithm>
#include <fstream>
#include <map>
#include <memory>
#include <optional>
#include <ostream>
#include <set>
#include <sstream>

#include "cases.h"
#include "checks.h"
#include "compile.h"
#include "fixtures.h"
#include "loader.h"
#include "mutations.h"
#include "traffic.h"
#include "yaml_doc.h"

namespace sluice::conformance {

namespace {

constexpr const char* kClassName = "sluice";
constexpr int64_t kBaseTime = 1767225600; // 2026-01-01T00:00:00Z

struct Counts {
    int passed = 0, failed = 0, skipped = 0, xfail = 0, xpass = 0;
};

struct KnownFailures {
    std::set<std::string> items;
    [[nodiscard]] bool has(const std::string& k) const { return items.count(k) > 0; }
};

std::optional<std::string> read_file(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) {
        return std::nullopt;
    }
    std::ostringstream ss;
    ss << in.rdbuf();
    if (in.bad()) {
        return std::nullopt;
    }
    return ss.str();
}

std::optional<KnownFailures> load_known_failures(const std::string& path) {
    KnownFailures kf;
    if (path.empty()) {
        return kf;
    }
    auto text = read_file(path);
    if (!text) {
        return std::nullopt;
    }
    std::istringstream in(*text);
    std::string line;
    while (std::getline(in, line)) {
        // A '#' preceded by a letter or digit belongs to a case id ("Test#3"); a comment
        // starts at a '#' at the start of the line or after whitespace.
        for (size_t i = 0; i < line.size(); ++i) {
            if (line[i] == '#' && (i == 0 || line[i - 1] == ' ' || line[i - 1] == '\t')) {
                line.resize(i);
                break;
            }
        }
        while (!line.empty() &&
               (line.back() == ' ' || line.back() == '\t' || line.back() == '\r')) {
            line.pop_back();
        }
        size_t start = 0;
        while (start < line.size() && (line[start] == ' ' || line[start] == '\t')) {
            ++start;
        }
        if (start < line.size()) {
            kf.items.insert(line.substr(start));
        }
    }
    return kf;
}

std::string replace_all(std::string s, const std::string& from, const std::string& to) {
    size_t pos = 0;
    while ((pos = s.find(from, pos)) != std::string::npos) {
        s.replace(pos, from.size(), to);
        pos += to.size();
    }
    return s;
}

/// One item of a test's timeline: a status check or a traffic case.
struct Item {
    bool is_check = true;
    int index = 0;     ///< check index (checks) or position in `cases` (cases)
    std::string key;   ///< "<Test>:check:<i>" or the case id
    std::string label; ///< for reports
    int phase = 0;     ///< how many mutations precede it
    Outcome outcome;
};

/// The state after k mutations: the store and its compile output.
struct Phase {
    cp::Store store;
    std::unique_ptr<cp::CompileOutput> out;
    std::string broken; ///< a mutation up to here could not be applied
};

class Runner {
public:
    Runner(const RunOptions& o, std::ostream& out, std::ostream& err)
        : o_(o)
        , out_(out)
        , err_(err) {}

    int run() {
        auto cf = load_case_file(o_.cases_file);
        if (!cf) {
            err_ << "sluice-conformance: " << cf.error().message << "\n";
            return 2;
        }
        auto kf = load_known_failures(o_.known_failures_file);
        if (!kf) {
            err_ << "sluice-conformance: cannot read " << o_.known_failures_file << "\n";
            return 2;
        }
        kf_ = *kf;
        const std::string base_path = o_.manifests_dir + "/base/manifests.yaml";
        auto base = read_file(base_path);
        if (!base) {
            err_ << "sluice-conformance: cannot read " << base_path << "\n";
            return 2;
        }
        cp::Diagnostics diags;
        base_docs_ = cp::parse_yaml(*base, base_path, cp::LoadLimits{}, diags);
        if (diags.errors() > 0) {
            for (const cp::Diagnostic& d : diags.items()) {
                err_ << d.str() << "\n";
            }
            return 2;
        }
        auto fx = make_fixtures();
        if (!fx) {
            err_ << "sluice-conformance: fixtures: " << fx.error().message << "\n";
            return 2;
        }
        fx_ = std::move(*fx);
        const std::string klass = "apiVersion: gateway.networking.k8s.io/v1\nkind: GatewayClass\n"
                                  "metadata:\n  name: " +
                                  std::string(kClassName) +
                                  "\nspec:\n  controllerName: " + cp::kControllerName + "\n";
        fixture_docs_ = cp::parse_yaml(klass + "---\n" + fx_.yaml, "<runner fixtures>",
                                       cp::LoadLimits{}, diags);
        if (diags.errors() > 0) {
            for (const cp::Diagnostic& d : diags.items()) {
                err_ << d.str() << "\n";
            }
            return 2;
        }
        for (const std::string& f : cp::supported_features()) {
            features_.insert(f);
        }
        for (const std::string& t : o_.tests) {
            if (!cf->tests.count(t)) {
                err_ << "sluice-conformance: no test " << t << " in " << o_.cases_file << "\n";
                unreadable_ = true;
            }
        }
        for (const auto& [name, spec] : cf->tests) {
            if (!o_.tests.empty() &&
                std::find(o_.tests.begin(), o_.tests.end(), name) == o_.tests.end()) {
                continue;
            }
            std::vector<const CaseSpec*> cases;
            for (const CaseSpec& c : cf->cases) {
                if (c.test == name) {
                    cases.push_back(&c);
                }
            }
            run_test(spec, cases);
        }
        out_ << c_.xfail << " xfail, " << c_.xpass << " xpass\n";
        out_ << c_.passed << " passed, " << c_.failed << " failed, " << c_.skipped << " skipped\n";
        if (unreadable_) {
            return 2;
        }
        return c_.failed > 0 ? 1 : 0;
    }

private:
    void run_test(const TestSpec& t, const std::vector<const CaseSpec*>& cases) {
        const int n_items = static_cast<int>(t.checks.size() + cases.size());
        for (const std::string& f : t.features) {
            if (!features_.count(f)) {
                out_ << "SKIP " << t.name << ": needs feature " << f << "\n";
                c_.skipped += n_items;
                return;
            }
        }
        // Negative tests that the upstream suite skips when the implementation claims the
        // feature they probe for absence (their Go code returns early; the data cannot
        // say so in `features`).
        static const std::map<std::string, std::string> kSkipWhenClaimed = {
            {"TLSRouteListenerTerminateNotSupported", "TLSRouteModeTerminate"},
            {"TLSRouteListenerMixedTerminationNotSupported", "TLSRouteModeMixed"},
        };
        if (auto it = kSkipWhenClaimed.find(t.name);
            it != kSkipWhenClaimed.end() && features_.count(it->second)) {
            out_ << "SKIP " << t.name << ": only for implementations without " << it->second
                 << "\n";
            c_.skipped += n_items;
            return;
        }
        // ---------------------------------------------------------- the Store
        cp::LoadOptions lo;
        lo.gateway_class_name = kClassName;
        lo.controller_name = cp::kControllerName;
        cp::Diagnostics diags;
        Phase p0;
        cp::load_documents(base_docs_, lo, p0.store, diags);
        cp::load_documents(fixture_docs_, lo, p0.store, diags);
        stamp_creation(p0.store, kBaseTime);
        std::set<std::string> test_files;
        bool placeholders = false;
        for (const std::string& m : t.manifests) {
            const std::string path = o_.manifests_dir + "/tests/" + m;
            auto text = read_file(path);
            if (!text) {
                out_ << "ERROR " << t.name << ": cannot read " << path << "\n";
                err_ << "sluice-conformance: cannot read " << path << "\n";
                unreadable_ = true;
                c_.skipped += n_items;
                return;
            }
            if (text->find("PLACEHOLDER_") != std::string::npos) {
                placeholders = true;
                *text = replace_all(*text, "PLACEHOLDER_USABLE_ADDRS", kUsableAddress);
                *text = replace_all(*text, "PLACEHOLDER_UNUSABLE_ADDRS", kUnusableAddress);
            }
            test_files.insert(path);
            const size_t before = diags.size();
            auto docs = cp::parse_yaml(*text, path, cp::LoadLimits{}, diags);
            for (size_t i = before; i < diags.size(); ++i) {
                if (diags.items()[i].object.empty() &&
                    diags.items()[i].severity == cp::Severity::Error) {
                    out_ << "ERROR " << t.name << ": " << diags.items()[i].str() << "\n";
                    unreadable_ = true;
                }
            }
            cp::load_documents(docs, lo, p0.store, diags);
        }
        stamp_creation(p0.store, kBaseTime + 60);
        if (o_.verbose) {
            for (const cp::Diagnostic& d : diags.items()) {
                out_ << "  diag: " << d.str() << "\n";
            }
        }
        cp::CompileOptions copts;
        if (placeholders) {
            copts.usable_addresses = copts.default_addresses;
            copts.usable_addresses.push_back(kUsableAddress);
        }

        // ---------------------------------------------------------- the timeline
        std::vector<Item> items;
        for (size_t i = 0; i < t.checks.size(); ++i) {
            Item it;
            it.is_check = true;
            it.index = static_cast<int>(i);
            it.key = t.name + ":check:" + std::to_string(i);
            it.label = "check " + std::to_string(i) + " " + describe_check(t.checks[i]);
            items.push_back(std::move(it));
        }
        for (size_t i = 0; i < cases.size(); ++i) {
            Item it;
            it.is_check = false;
            it.index = static_cast<int>(i);
            it.key = cases[i]->id;
            it.label = "case " + cases[i]->id;
            items.push_back(std::move(it));
        }
        const std::vector<Mutation> muts = mutations_for(t.name);
        std::vector<std::string> unplaced(muts.size());
        for (size_t k = 0; k < muts.size(); ++k) {
            const Mutation& m = muts[k];
            int at = -1; // first check index that sees the mutation
            const std::string& anchor = m.after_check.empty() ? m.before_check : m.after_check;
            if (!anchor.empty()) {
                int seen = 0;
                for (size_t i = 0; i < t.checks.size(); ++i) {
                    if (jstr(t.checks[i], "check") == anchor && ++seen == m.nth) {
                        at = static_cast<int>(i) + (m.after_check.empty() ? 0 : 1);
                        break;
                    }
                }
                if (at < 0) {
                    unplaced[k] = "cannot place step \"" + m.what + "\": no check #" +
                                  std::to_string(m.nth) + " named " + anchor;
                }
            }
            for (Item& it : items) {
                bool after = false;
                if (it.is_check) {
                    after = at >= 0 && it.index >= at;
                } else {
                    for (const std::string& c : m.cases) {
                        after = after || c == "*" || c == it.key ||
                                (c.starts_with("#") && it.key == t.name + c);
                    }
                }
                if (after) {
                    it.phase = static_cast<int>(k) + 1;
                }
                if (!unplaced[k].empty() && it.is_check && at < 0 && !anchor.empty()) {
                    // Checks we cannot place relative to the step: judged at the end state.
                    it.phase = std::max(it.phase, static_cast<int>(k) + 1);
                }
            }
        }

        // ---------------------------------------------------------- phases
        std::vector<Phase> phases;
        phases.push_back(std::move(p0));
        for (size_t k = 0; k < muts.size(); ++k) {
            Phase next;
            next.store = phases.back().store;
            next.broken = phases.back().broken;
            if (next.broken.empty()) {
                next.broken = unplaced[k];
            }
            if (next.broken.empty()) {
                MutEnv env{next.store,
                           test_files,
                           lo,
                           diags,
                           kBaseTime + 120 + 10 * static_cast<int64_t>(k),
                           fx_};
                const std::string why = muts[k].apply(env);
                if (!why.empty()) {
                    next.broken = "step \"" + muts[k].what + "\" failed: " + why;
                }
            }
            phases.push_back(std::move(next));
        }
        auto compiled = [&](int k) -> const cp::CompileOutput& {
            Phase& p = phases[static_cast<size_t>(k)];
            if (!p.out) {
                p.out = std::make_unique<cp::CompileOutput>(cp::compile(p.store, copts));
                cp::set_programmed(*p.out, true);
            }
            return *p.out;
        };

        // ---------------------------------------------------------- evaluate
        for (Item& it : items) {
            Phase& p = phases[static_cast<size_t>(it.phase)];
            if (!p.broken.empty()) {
                it.outcome = skipped(p.broken);
                continue;
            }
            World w;
            w.store = &p.store;
            w.out = &compiled(it.phase);
            w.test_files = test_files;
            it.outcome = it.is_check
                             ? evaluate_check(t.checks[static_cast<size_t>(it.index)], w)
                             : evaluate_case(cases[static_cast<size_t>(it.index)]->raw, w, fx_);
        }
        report(t, items);
    }

    void report(const TestSpec& t, const std::vector<Item>& items) {
        const bool test_known = kf_.has(t.name);
        int checks = 0, checks_ok = 0, cases = 0, cases_ok = 0, skips = 0;
        int fails = 0, xfails = 0;
        std::vector<std::string> lines;
        std::string first_skip;
        for (const Item& it : items) {
            (it.is_check ? checks : cases) += 1;
            const bool known = test_known || kf_.has(it.key);
            switch (it.outcome.verdict) {
            case Verdict::Pass:
                (it.is_check ? checks_ok : cases_ok) += 1;
                ++c_.passed;
                if (kf_.has(it.key)) {
                    ++c_.xpass;
                    lines.push_back("  XPASS " + it.label + " (listed as a known failure)");
                } else if (o_.verbose) {
                    lines.push_back("  ok    " + it.label);
                }
                break;
            case Verdict::Skip:
                ++skips;
                ++c_.skipped;
                if (first_skip.empty()) {
                    first_skip = it.outcome.why;
                }
                if (o_.verbose) {
                    lines.push_back("  skip  " + it.label + ": " + it.outcome.why);
                }
                break;
            case Verdict::Fail:
                if (known) {
                    ++xfails;
                    ++c_.xfail;
                    lines.push_back("  XFAIL " + it.label + ": " + it.outcome.why);
                } else {
                    ++fails;
                    ++c_.failed;
                    lines.push_back("  " + it.label + ": " + it.outcome.why);
                }
                break;
            }
        }
        const std::string figures = "(checks " + std::to_string(checks_ok) + "/" +
                                    std::to_string(checks) + ", cases " + std::to_string(cases_ok) +
                                    "/" + std::to_string(cases) +
                                    (skips ? ", " + std::to_string(skips) + " skipped" : "") +
                                    (xfails ? ", " + std::to_string(xfails) + " xfail" : "") + ")";
        if (fails > 0) {
            out_ << "FAIL " << t.name << " " << figures << "\n";
        } else if (skips == static_cast<int>(items.size()) && !items.empty()) {
            out_ << "SKIP " << t.name << ": " << first_skip << "\n";
        } else if (xfails > 0) {
            out_ << "XFAIL " << t.name << " " << figures << "\n";
        } else {
            out_ << (test_known ? "XPASS " : "PASS ") << t.name << " " << figures << "\n";
            if (test_known) {
                ++c_.xpass;
            }
        }
        for (const std::string& l : lines) {
            out_ << l << "\n";
        }
    }

    const RunOptions& o_;
    std::ostream& out_;
    std::ostream& err_;
    KnownFailures kf_;
    std::vector<cp::Document> base_docs_, fixture_docs_;
    Fixtures fx_;
    std::set<std::string> features_;
    Counts c_;
    bool unreadable_ = false;
};

} // namespace

int run(const RunOptions& opts, std::ostream& out, std::ostream& err) {
    Runner r(opts, out, err);
    return r.run();
}

} // namespace sluice::conformance
