#pragma once

/// @file
/// The controlplane's end of the IR channel to the dataplane's dp-control thread: a unix
/// stream socket that the dataplane listens on. Frames are
///   u32 magic "SLCP" | u8 type | u64 generation | u32 length | payload
/// (little-endian). The controlplane sends IR (payload = ir::encode bytes); dp-control
/// answers ACK(generation) once the tables are published, or NACK(generation, reason) and
/// keeps its old tables. A reconnect re-sends the current IR, so a restarted dataplane gets
/// it without asking, and a restarted controlplane resyncs the dataplane.
/// Thread: one owner thread per DpLink; blocking calls are bounded by timeouts.

#include <cstdint>
#include <string>
#include <string_view>

#include "result.h"

namespace sluice::cp {

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
/// Reads exactly one frame from a blocking fd within `timeout_ms`.
[[nodiscard]] Result<Frame> read_frame(int fd, int timeout_ms);
/// Writes all bytes within `timeout_ms`.
[[nodiscard]] Result<void> write_all(int fd, std::string_view bytes, int timeout_ms);

struct PushResult {
    bool acked = false;
    std::string reason; ///< NACK reason
};

class DpLink {
public:
    explicit DpLink(std::string socket_path)
        : path_(std::move(socket_path)) {}
    ~DpLink();
    DpLink(const DpLink&) = delete;
    DpLink& operator=(const DpLink&) = delete;

    /// Sends one IR generation and waits for its ACK/NACK. Connects (or reconnects) first.
    /// An error means no dataplane answered: the caller reports Programmed as pending.
    [[nodiscard]] Result<PushResult> push(uint64_t generation, std::string_view ir_bytes,
                                          int timeout_ms = 5000);
    [[nodiscard]] bool connected() const noexcept { return fd_ >= 0; }

private:
    Result<void> connect_once();
    void close_fd() noexcept;

    std::string path_;
    int fd_ = -1;
};

} // namespace sluice::cp
