#pragma once

/// @file
/// IR wire format: "SLIR" magic, u32 format version, u64 FNV-1a hash of the body, u64 body
/// length, then the body: every io() field in order, integers little-endian fixed width,
/// strings and vectors as u32 length + elements. Deterministic: equal IR, equal bytes.
/// The decoder checks every length against the remaining input, so hostile bytes give an
/// error, never a crash or an allocation larger than the input.
/// Thread: any.

#include <cstdint>
#include <string>
#include <string_view>

#include "ir.h"
#include "result.h"

namespace sluice::ir {

[[nodiscard]] std::string encode(const Ir& ir);
/// encode() into `out`, reusing its memory (a caller that encodes again and again keeps one
/// buffer: no fresh pages to fault in for a multi-megabyte IR each time).
void encode_into(const Ir& ir, std::string& out);
[[nodiscard]] Result<Ir> decode(std::string_view bytes);
/// FNV-1a 64 of the encoded body: the IR's identity (an unchanged IR is not republished).
[[nodiscard]] uint64_t hash_of(std::string_view encoded) noexcept;
/// The body hash an encode() output carries in its header (= hash_of(the body), without
/// reading the body again); hash_of(encoded) when it is too short to have a header.
[[nodiscard]] uint64_t body_hash(std::string_view encoded) noexcept;
/// Human-readable, deterministic dump (golden files, `sluicectl ir`).
[[nodiscard]] std::string to_text(const Ir& ir);

} // namespace sluice::ir
