#pragma once

/// @file
/// Control messages between sluice-controlplane and sluice-dataplane's dp-control thread,
/// over a unix stream socket. Frames are
///   u32 magic "SLCP" | u8 type | u64 generation | u32 length | payload
/// (little-endian). The controlplane sends IR (payload = ir::encode bytes); dp-control
/// answers ACK(generation) once the tables are published, or NACK(generation, reason) and
/// keeps its old tables. An ACK's payload lists the listeners the dataplane accepted but does
/// not serve (e.g. L7 listeners before the L7 engine exists), one
/// "namespace/gateway/listener<TAB>reason" per line; empty when it serves everything.
/// Part of the wire contract: no DPDK, no controlplane includes.
/// Thread: any; the calls block, bounded by their timeouts.

#include <cstdint>
#include <string>
#include <string_view>

#include "result.h"

namespace sluice::msg {

enum class FrameType : uint8_t { Ir = 1, Ack = 2, Nack = 3, Hello = 4 };

struct Frame {
    FrameType type = FrameType::Ir;
    uint64_t generation = 0;
    std::string payload;
};

inline constexpr uint32_t kFrameMagic = 0x50434c53; // "SLCP"
inline constexpr size_t kFrameHeader = 4 + 1 + 8 + 4;
inline constexpr size_t kMaxFramePayload = 256u << 20;

/// Encodes one frame (header + payload).
[[nodiscard]] std::string encode_frame(const Frame& f);
/// The header encode_frame() puts before a payload of `payload_size` bytes (to send a big
/// payload from where it is, without copying it into a frame).
[[nodiscard]] std::string encode_frame_header(FrameType type, uint64_t generation,
                                              size_t payload_size);
/// Reads exactly one frame from a blocking fd within `timeout_ms`.
[[nodiscard]] Result<Frame> read_frame(int fd, int timeout_ms);
/// Writes all bytes within `timeout_ms`.
[[nodiscard]] Result<void> write_all(int fd, std::string_view bytes, int timeout_ms);

} // namespace sluice::msg
