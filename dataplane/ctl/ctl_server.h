#pragma once

/// @file
/// dp-control's socket end of the IR channel (see controlplane/source/dp_link.h for the
/// frame format). Accepts one controlplane connection at a time; for every IR frame it
/// decodes the IR, hands it to `apply` (which builds the fast-path tables beside the live
/// ones and publishes them in one step), and answers ACK(generation) or NACK(generation,
/// reason). The last applied IR stays in force when the controlplane goes away.
/// Thread: run() blocks on its own thread (dp-control); stop() from any thread.

#include <atomic>
#include <cstdint>
#include <functional>
#include <string>

#include "ir.h"
#include "result.h"

namespace sluice::dp {

class CtlServer {
public:
    /// `apply` returns an error to NACK, or the ACK note: the listeners it accepted but does
    /// not serve, one "namespace/gateway/listener<TAB>reason" per line (msg.h). It runs on
    /// the dp-control thread.
    using Apply = std::function<Result<std::string>(ir::Ir&& ir, uint64_t generation)>;

    CtlServer(std::string socket_path, Apply apply)
        : path_(std::move(socket_path))
        , apply_(std::move(apply)) {}
    ~CtlServer();
    CtlServer(const CtlServer&) = delete;
    CtlServer& operator=(const CtlServer&) = delete;

    /// Binds the socket (replacing a stale one). Thread: any, before run().
    [[nodiscard]] Result<void> listen();
    /// Serves until stop(). Thread: dp-control; blocks.
    void run();
    void stop() noexcept { stop_.store(true, std::memory_order_relaxed); }

    [[nodiscard]] uint64_t applied_generation() const noexcept {
        return applied_.load(std::memory_order_relaxed);
    }
    [[nodiscard]] uint64_t applied_hash() const noexcept {
        return hash_.load(std::memory_order_relaxed);
    }

private:
    void serve(int fd);

    std::string path_;
    Apply apply_;
    int listen_fd_ = -1;
    std::atomic<bool> stop_{false};
    // Relaxed: statistics read by tools; nothing is published through them.
    std::atomic<uint64_t> applied_{0};
    std::atomic<uint64_t> hash_{0};
    std::string last_note_; ///< ACK note of the IR in force (dp-control thread only)
};

} // namespace sluice::dp
