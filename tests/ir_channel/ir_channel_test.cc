// The IR channel end to end: the controlplane's DpLink against dp-control's CtlServer.

#include <thread>

#include <gtest/gtest.h>
#include <unistd.h>

#include "ctl_server.h"
#include "dp_link.h"
#include "ir_codec.h"

namespace sluice {
namespace {

ir::Ir sample(uint16_t port) {
    ir::Ir ir;
    ir::Listener l;
    l.port = port;
    l.protocol = ir::Protocol::TCP;
    ir.listeners.push_back(l);
    ir.gateways.push_back({"ns", "gw", {"192.0.2.1"}, {0}, {}});
    return ir;
}

struct Server {
    explicit Server(const std::string& path)
        : srv(path, [this](ir::Ir&& ir, uint64_t) -> Result<std::string> {
            ++applies;
            if (ir.listeners.at(0).port == 666) {
                return fail(Errc::LimitExceeded, "port 666 refused by policy");
            }
            last_port = ir.listeners[0].port;
            return std::string(last_port == 80 ? "ns/gw/web\tno L7 engine\n" : "");
        }) {
        EXPECT_TRUE(srv.listen());
        thread = std::thread([this] { srv.run(); });
    }
    ~Server() {
        srv.stop();
        thread.join();
    }
    std::atomic<int> applies{0};
    std::atomic<int> last_port{0};
    dp::CtlServer srv;
    std::thread thread;
};

std::string sock_path() {
    return "/tmp/sluice-ir-channel-" + std::to_string(getpid()) + ".sock";
}

TEST(IrChannel, AckNackAndResync) {
    const std::string path = sock_path();
    Server s(path);
    cp::DpLink link(path);
    auto r = link.push(1, ir::encode(sample(80)));
    ASSERT_TRUE(r) << r.error().message;
    EXPECT_TRUE(r->acked);
    EXPECT_EQ(r->reason, "ns/gw/web\tno L7 engine\n") << "the ACK carries the note";
    EXPECT_EQ(s.last_port, 80);
    EXPECT_EQ(s.srv.applied_generation(), 1u);

    // A table the dataplane refuses: NACK with the reason; the old tables stay.
    r = link.push(2, ir::encode(sample(666)));
    ASSERT_TRUE(r);
    EXPECT_FALSE(r->acked);
    EXPECT_NE(r->reason.find("port 666"), std::string::npos);
    EXPECT_EQ(s.last_port, 80);
    EXPECT_EQ(s.srv.applied_generation(), 1u);

    // Corrupt bytes: NACK from the decoder, no apply.
    std::string bad = ir::encode(sample(81));
    bad[bad.size() - 1] ^= 1;
    const int before = s.applies;
    r = link.push(3, bad);
    ASSERT_TRUE(r);
    EXPECT_FALSE(r->acked);
    EXPECT_NE(r->reason.find("checksum"), std::string::npos);
    EXPECT_EQ(s.applies, before);

    // A restarted controlplane resends the IR in force: ACK without rebuilding.
    cp::DpLink again(path);
    const int applies = s.applies;
    r = again.push(7, ir::encode(sample(80)));
    ASSERT_TRUE(r);
    EXPECT_TRUE(r->acked);
    EXPECT_EQ(r->reason, "ns/gw/web\tno L7 engine\n") << "a resync repeats the note";
    EXPECT_EQ(s.applies, applies);
    EXPECT_EQ(s.srv.applied_generation(), 7u);
}

TEST(IrChannel, NoDataplaneIsAnErrorNotAHang) {
    cp::DpLink link("/tmp/sluice-nobody-listens.sock");
    auto r = link.push(1, ir::encode(sample(80)), 500);
    EXPECT_FALSE(r);
}

} // namespace
} // namespace sluice
