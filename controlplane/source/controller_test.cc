#include "controller.h"

#include <atomic>
#include <chrono>
#include <filesystem>
#include <memory>
#include <fstream>
#include <thread>

#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

namespace sluice::cp {
namespace {

using msg::encode_frame;
using msg::read_frame;
using msg::write_all;

namespace fs = std::filesystem;

class TempDir {
public:
    TempDir() {
        char tmpl[] = "/tmp/sluice-ctl-XXXXXX";
        path_ = mkdtemp(tmpl);
    }
    ~TempDir() {
        std::error_code ec;
        fs::remove_all(path_, ec);
    }
    const std::string& path() const { return path_; }

private:
    std::string path_;
};

void write(const fs::path& p, const std::string& s) {
    fs::create_directories(p.parent_path());
    std::ofstream(p) << s;
}

std::string read(const fs::path& p) {
    std::ifstream in(p);
    return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

constexpr const char* kGood = R"(
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: sluice}
spec: {controllerName: sluice.dev/gateway-controller}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw, namespace: default}
spec:
  gatewayClassName: sluice
  listeners: [{name: http, port: 80, protocol: HTTP}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: r, namespace: default}
spec: {parentRefs: [{name: gw}]}
)";

TEST(Controller, KeepsTheLastGoodConfigurationWhenInputBreaks) {
    TempDir cfg, status;
    write(fs::path(cfg.path()) / "a.yaml", kGood);
    ControllerOptions o;
    o.config_dir = cfg.path();
    o.status_dir = status.path();
    Controller c(o);
    ReconcileResult r = c.reconcile();
    ASSERT_TRUE(r.accepted_input);
    EXPECT_EQ(r.generation, 1u);
    const fs::path gw = fs::path(status.path()) / "Gateway/default/gw.yaml";
    ASSERT_TRUE(fs::exists(gw));
    EXPECT_NE(read(gw).find("reason: Pending"), std::string::npos);
    EXPECT_NE(read(fs::path(status.path()) / "HTTPRoute/default/r.yaml").find("reason: Accepted"),
              std::string::npos);

    // Unchanged input: same generation, nothing republished.
    r = c.reconcile();
    EXPECT_FALSE(r.changed);
    EXPECT_EQ(r.generation, 1u);

    // Broken YAML: the old configuration stays in force; diagnostics explain why.
    write(fs::path(cfg.path()) / "b.yaml", "kind: [unclosed");
    r = c.reconcile();
    EXPECT_FALSE(r.accepted_input);
    EXPECT_GT(r.errors, 0u);
    ASSERT_NE(c.current(), nullptr);
    EXPECT_EQ(c.current()->ir.gateways.size(), 1u);
    EXPECT_TRUE(fs::exists(gw));
    EXPECT_NE(read(fs::path(status.path()) / "diagnostics.txt").find("b.yaml"), std::string::npos);

    // Fixed: a new generation, stale status files removed.
    fs::remove(fs::path(cfg.path()) / "b.yaml");
    std::string without_route = kGood;
    without_route = without_route.substr(0, without_route.rfind("---"));
    write(fs::path(cfg.path()) / "a.yaml", without_route);
    r = c.reconcile();
    EXPECT_TRUE(r.accepted_input);
    EXPECT_TRUE(r.changed);
    EXPECT_EQ(r.generation, 2u);
    EXPECT_FALSE(fs::exists(fs::path(status.path()) / "HTTPRoute/default/r.yaml"));
    EXPECT_FALSE(fs::exists(fs::path(status.path()) / "diagnostics.txt"));
}

TEST(Controller, FileSourceBumpsGenerationWhenAnObjectChanges) {
    TempDir cfg, status;
    write(fs::path(cfg.path()) / "a.yaml", kGood);
    ControllerOptions o;
    o.config_dir = cfg.path();
    o.status_dir = status.path();
    Controller c(o);
    ASSERT_TRUE(c.reconcile().accepted_input);
    const fs::path route = fs::path(status.path()) / "HTTPRoute/default/r.yaml";
    EXPECT_NE(read(route).find("observedGeneration: 1"), std::string::npos);
    // Unchanged content: same generation. Changed spec: generation 2, only for that object.
    ASSERT_TRUE(c.reconcile().accepted_input);
    EXPECT_NE(read(route).find("observedGeneration: 1"), std::string::npos);
    std::string edited = kGood;
    edited.replace(edited.find("spec: {parentRefs: [{name: gw}]}"),
                   std::string("spec: {parentRefs: [{name: gw}]}").size(),
                   "spec: {parentRefs: [{name: gw}], hostnames: [a.example.com]}");
    write(fs::path(cfg.path()) / "a.yaml", edited);
    ASSERT_TRUE(c.reconcile().accepted_input);
    EXPECT_NE(read(route).find("observedGeneration: 2"), std::string::npos) << read(route);
    EXPECT_NE(read(fs::path(status.path()) / "Gateway/default/gw.yaml").find("observedGeneration: 1"),
              std::string::npos);
    // A broken edit does not count; fixing it back to the content in force keeps 2.
    write(fs::path(cfg.path()) / "b.yaml", "kind: [unclosed");
    EXPECT_FALSE(c.reconcile().accepted_input);
    fs::remove(fs::path(cfg.path()) / "b.yaml");
    ASSERT_TRUE(c.reconcile().accepted_input);
    EXPECT_NE(read(route).find("observedGeneration: 2"), std::string::npos);
}

/// A stand-in dp-control: accepts one connection, answers every IR frame with `answer`.
class FakeDataplane {
public:
    FakeDataplane(const std::string& path, FrameType answer, std::string reason = "")
        : path_(path) {
        fd_ = ::socket(AF_UNIX, SOCK_STREAM, 0);
        sockaddr_un a{};
        a.sun_family = AF_UNIX;
        std::snprintf(a.sun_path, sizeof a.sun_path, "%s", path.c_str());
        EXPECT_EQ(::bind(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
        EXPECT_EQ(::listen(fd_, 4), 0);
        thread_ = std::thread([this, answer, reason] {
            const int c = ::accept(fd_, nullptr, nullptr);
            if (c < 0) {
                return;
            }
            while (true) {
                auto f = read_frame(c, 3000);
                if (!f) {
                    break;
                }
                ++frames_;
                last_payload_ = f->payload;
                Frame reply{answer, f->generation, reason};
                if (!write_all(c, encode_frame(reply), 1000)) {
                    break;
                }
            }
            ::close(c);
        });
    }
    ~FakeDataplane() {
        ::shutdown(fd_, SHUT_RDWR);
        ::close(fd_);
        thread_.join();
        ::unlink(path_.c_str());
    }
    int frames() const { return frames_; }

private:
    std::string path_;
    int fd_ = -1;
    std::thread thread_;
    std::atomic<int> frames_{0};
    std::string last_payload_;
};

/// kGood in `cfg`; the dataplane socket path beside it.
std::string dataplane_setup(const TempDir& cfg) {
    write(fs::path(cfg.path()) / "a.yaml", kGood);
    return cfg.path() + "/../" + fs::path(cfg.path()).filename().string() + ".sock";
}

ControllerOptions dataplane_options(const TempDir& cfg, const TempDir& status,
                                    const std::string& sock) {
    ControllerOptions o;
    o.config_dir = cfg.path();
    o.status_dir = status.path();
    o.dp_sockets = {sock};
    return o;
}

TEST(Controller, ProgrammedOnlyAfterTheDataplaneAcks) {
    TempDir cfg, status;
    const std::string sock = dataplane_setup(cfg);
    ControllerOptions o = dataplane_options(cfg, status, sock);
    {
        // No dataplane listening: Programmed stays Pending.
        Controller c(o);
        ReconcileResult r = c.reconcile();
        EXPECT_FALSE(r.acked);
        EXPECT_NE(read(fs::path(status.path()) / "Gateway/default/gw.yaml").find("reason: Pending"),
                  std::string::npos);
    }
    {
        FakeDataplane dp(sock, FrameType::Ack);
        Controller c(o);
        ReconcileResult r = c.reconcile();
        EXPECT_TRUE(r.acked);
        const std::string st = read(fs::path(status.path()) / "Gateway/default/gw.yaml");
        EXPECT_NE(st.find("reason: Programmed"), std::string::npos) << st;
        EXPECT_EQ(dp.frames(), 1);
        r = c.reconcile(); // unchanged IR is not republished
        EXPECT_TRUE(r.acked);
        EXPECT_EQ(dp.frames(), 1);
    }
    {
        // ACK with a note: the HTTP listener is accepted but not served by this dataplane.
        FakeDataplane dp(sock, FrameType::Ack, "default/gw/http\tno L7 engine in this dataplane\n");
        Controller c(o);
        ReconcileResult r = c.reconcile();
        EXPECT_TRUE(r.acked);
        const std::string st = read(fs::path(status.path()) / "Gateway/default/gw.yaml");
        EXPECT_NE(st.find("no L7 engine in this dataplane"), std::string::npos) << st;
        const ObjectStatus* gw = c.current()->find({"Gateway", "default", "gw"});
        ASSERT_NE(gw, nullptr);
        EXPECT_EQ(gw->listeners[0].conditions.back().type, "Programmed");
        EXPECT_EQ(gw->listeners[0].conditions.back().status, "False");
        EXPECT_EQ(gw->listeners[0].conditions.back().reason, "Pending");
    }
    {
        FakeDataplane dp(sock, FrameType::Nack, "table too large");
        Controller c(o);
        ReconcileResult r = c.reconcile();
        EXPECT_FALSE(r.acked);
        const std::string st = read(fs::path(status.path()) / "Gateway/default/gw.yaml");
        EXPECT_NE(st.find("table too large"), std::string::npos) << st;
    }
}

TEST(Controller, RestartedDataplaneGetsTheIrWithoutAManifestChange) {
    TempDir cfg, status;
    const std::string sock = dataplane_setup(cfg);
    ControllerOptions o = dataplane_options(cfg, status, sock);
    o.retry_ms = 200;
    const fs::path gw = fs::path(status.path()) / "Gateway/default/gw.yaml";
    auto wait_for = [](auto&& pred) {
        for (int i = 0; i < 200 && !pred(); ++i) {
            std::this_thread::sleep_for(std::chrono::milliseconds(50));
        }
        return pred();
    };
    auto dp = std::make_unique<FakeDataplane>(sock, FrameType::Ack);
    Controller c(o);
    std::atomic<bool> stop{false};
    std::thread loop([&] { c.run(stop); });
    ASSERT_TRUE(wait_for([&] { return dp->frames() == 1; }));
    ASSERT_TRUE(wait_for([&] { return read(gw).find("reason: Programmed") != std::string::npos; }));
    // The dataplane exits (its end of the connection closes) and comes back on the same
    // socket: it gets the IR in force again, and meanwhile Programmed says it is pending.
    dp.reset();
    EXPECT_TRUE(wait_for([&] { return read(gw).find("reason: Pending") != std::string::npos; }))
        << read(gw);
    dp = std::make_unique<FakeDataplane>(sock, FrameType::Ack);
    EXPECT_TRUE(wait_for([&] { return dp->frames() >= 1; })) << "the IR was not sent again";
    EXPECT_TRUE(wait_for([&] { return read(gw).find("reason: Programmed") != std::string::npos; }))
        << read(gw);
    stop = true;
    loop.join();
    dp.reset();
}

} // namespace
} // namespace sluice::cp
