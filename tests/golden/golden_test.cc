// Golden tests: tests/golden/<case>/input.yaml compiles to exactly ir.txt and status.yaml.
// SLUICE_UPDATE_GOLDEN=1 rewrites the expected files (review the diff before committing).

#include <cstdlib>
#include <filesystem>
#include <fstream>

#include <gtest/gtest.h>

#include "compile.h"
#include "ir_codec.h"
#include "loader.h"

namespace sluice::cp {
namespace {

namespace fs = std::filesystem;

std::string read(const fs::path& p) {
    std::ifstream in(p);
    return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

class Golden : public testing::TestWithParam<std::string> {};

TEST_P(Golden, MatchesExpectedIrAndStatus) {
    const fs::path dir = fs::path(SLUICE_SOURCE_ROOT) / "tests/golden" / GetParam();
    Diagnostics diags;
    Store store;
    load_documents(load_path((dir / "input.yaml").string(), {}, diags), {}, store, diags);
    std::string status;
    for (const Diagnostic& d : diags.items()) {
        status += "# " + d.str().substr(d.str().find("input.yaml")) + "\n";
    }
    CompileOutput out = compile(store, {});
    set_programmed(out, true);
    for (const ObjectStatus& st : out.statuses) {
        status += "---\n" + status_yaml(st);
    }
    const std::string ir = ir::to_text(out.ir);
    // Determinism: a second compile of the same input gives the same bytes.
    EXPECT_EQ(ir::encode(compile(store, {}).ir), ir::encode(out.ir));
    if (std::getenv("SLUICE_UPDATE_GOLDEN")) {
        std::ofstream(dir / "ir.txt") << ir;
        std::ofstream(dir / "status.yaml") << status;
        GTEST_SKIP() << "golden files rewritten";
    }
    EXPECT_EQ(read(dir / "ir.txt"), ir) << "IR of " << GetParam() << " changed";
    EXPECT_EQ(read(dir / "status.yaml"), status) << "status of " << GetParam() << " changed";
}

std::vector<std::string> cases() {
    std::vector<std::string> out;
    for (const auto& e : fs::directory_iterator(fs::path(SLUICE_SOURCE_ROOT) / "tests/golden")) {
        if (e.is_directory() && fs::exists(e.path() / "input.yaml")) {
            out.push_back(e.path().filename().string());
        }
    }
    std::sort(out.begin(), out.end());
    return out;
}

INSTANTIATE_TEST_SUITE_P(Cases, Golden, testing::ValuesIn(cases()),
                         [](const auto& info) {
                             std::string n = info.param;
                             std::replace(n.begin(), n.end(), '-', '_');
                             return n;
                         });

} // namespace
} // namespace sluice::cp
