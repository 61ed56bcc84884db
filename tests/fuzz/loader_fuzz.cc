// libFuzzer target: bytes -> parse_yaml -> load_documents -> compile -> IR encode/decode.
// Any crash, sanitizer report or hang is a bug; so is an IR that does not survive its own
// codec unchanged (trapped below).

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "compile.h"
#include "ir_codec.h"
#include "loader.h"
#include "yaml_doc.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    using namespace sluice;
    const std::string_view text(reinterpret_cast<const char*>(data), size);

    cp::LoadLimits limits;
    limits.max_file_bytes = 1u << 20;
    limits.max_nodes = 200000;

    cp::Diagnostics diags;
    const std::vector<cp::Document> docs = cp::parse_yaml(text, "fuzz.yaml", limits, diags);
    cp::Store store;
    cp::load_documents(docs, cp::LoadOptions{}, store, diags);
    // Every diagnostic must render (it is what users read).
    for (const cp::Diagnostic& d : diags.items()) {
        (void)d.str();
    }

    const cp::CompileOutput out = cp::compile(store, {});
    for (const cp::ObjectStatus& st : out.statuses) {
        (void)cp::status_yaml(st);
    }

    const std::string bytes = ir::encode(out.ir);
    Result<ir::Ir> back = ir::decode(bytes);
    if (!back) {
        __builtin_trap(); // the encoder produced bytes its own decoder refuses
    }
    if (ir::encode(*back) != bytes) {
        __builtin_trap(); // the codec is not a round trip
    }
    return 0;
}
