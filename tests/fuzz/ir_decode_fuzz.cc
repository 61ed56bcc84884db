// libFuzzer target: hostile bytes -> sluice::ir::decode. It must answer with an error or an
// IR, never crash or allocate more than the input justifies; an IR it accepts must encode
// back to bytes that decode to the same IR.
//
// The input is decoded twice: as it is (header checks: magic, version, length, checksum) and
// as a body behind a valid header, since random bytes essentially never match the FNV-1a
// checksum and the body decoder would otherwise stay unreached.

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "ir_codec.h"

namespace {

void put_le(std::string& out, uint64_t v, int n) {
    for (int i = 0; i < n; ++i) {
        out.push_back(static_cast<char>((v >> (8 * i)) & 0xFF));
    }
}

void check(std::string_view bytes) {
    using namespace sluice;
    Result<ir::Ir> ir = ir::decode(bytes);
    if (!ir) {
        return;
    }
    const std::string again = ir::encode(*ir);
    Result<ir::Ir> back = ir::decode(again);
    if (!back || ir::encode(*back) != again) {
        __builtin_trap();
    }
    (void)ir::to_text(*ir);
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    const std::string_view input(reinterpret_cast<const char*>(data), size);
    check(input);

    std::string framed = "SLIR";
    put_le(framed, sluice::ir::kIrVersion, 4);
    put_le(framed, sluice::ir::hash_of(input), 8);
    put_le(framed, input.size(), 8);
    framed.append(input);
    check(framed);
    return 0;
}
