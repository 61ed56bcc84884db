#pragma once

/// @file
/// The controlplane's end of the IR channel to the dataplane's dp-control thread (frames:
/// dataplane/api/msg.h). A reconnect re-sends the current IR, so a restarted dataplane gets
/// it without asking, and a restarted controlplane resyncs the dataplane.
/// Thread: one owner thread per DpLink; blocking calls are bounded by timeouts.

#include <cstdint>
#include <string>
#include <string_view>

#include "msg.h"
#include "result.h"

namespace sluice::cp {

using msg::Frame;
using msg::FrameType;

struct PushResult {
    bool acked = false;
    std::string reason; ///< NACK reason, or the ACK note (listeners not served, msg.h)
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
    /// True when the dataplane at the other end of the connection has gone away (EOF,
    /// hang-up or error on the socket: the process exited or restarted); the connection is
    /// closed then, and the next push() connects again. Never blocks; false when not
    /// connected. The dataplane sends nothing unasked, so a readable socket between pushes
    /// is an EOF or a late answer (the latter is left for push() to skip).
    [[nodiscard]] bool peer_gone() noexcept;

private:
    Result<void> connect_once();
    void close_fd() noexcept;

    std::string path_;
    int fd_ = -1;
};

} // namespace sluice::cp
