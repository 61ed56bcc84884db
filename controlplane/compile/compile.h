#pragma once

/// @file
/// The compiler: Store -> (status of every object, IR). A pure function (STYLE C3): no I/O,
/// no clock, no globals; equal input gives byte-identical IR and identical status. User
/// mistakes become status conditions; nothing here fails the whole compile.

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "ir.h"
#include "model.h"

namespace sluice::cp {

inline constexpr const char* kControllerName = "sluice.dev/gateway-controller";

struct Condition {
    std::string type;
    std::string status; ///< "True" | "False" | "Unknown"
    std::string reason;
    std::string message;
    int64_t observed_generation = 0;
};

struct ListenerStatus {
    std::string name;
    std::vector<RouteGroupKind> supported_kinds;
    int attached_routes = 0;
    std::vector<Condition> conditions;
};

/// A Route's status.parents[] entry, or a policy's status.ancestors[] entry.
struct ParentStatus {
    ParentRef ref; ///< as written by the user, with CRD defaults (group, kind)
    std::string controller_name;
    std::vector<Condition> conditions;
};

struct ObjectStatus {
    ObjectKey key;
    int64_t generation = 1;
    std::vector<Condition> conditions; ///< GatewayClass, Gateway, ListenerSet
    std::vector<ListenerStatus> listeners;
    std::vector<GatewayAddress> addresses;
    int attached_listener_sets = 0;
    std::vector<ParentStatus> parents; ///< Routes: parents; BackendTLSPolicy: ancestors
    std::vector<std::string> supported_features; ///< GatewayClass

    [[nodiscard]] const Condition* condition(std::string_view type) const noexcept;
};

/// A GatewayClass's parameters: a ConfigMap named by its parametersRef (keys and values in
/// docs/configuration.md, "GatewayClass parameters").
struct ClassParams {
    std::string address_pool; ///< IPv4 CIDR; "" = the controlplane's --address-pool
    ir::FwdMode fwd_mode = ir::FwdMode::FullNat;
    std::vector<std::string> ports; ///< PCI addresses or DPDK vdev strings
    std::string lcores;             ///< DPDK lcore list ("1-3,5")
    std::string exception_interface;
};

/// Validates a class-parameters ConfigMap's data into `out`; returns "" or what is wrong
/// (the GatewayClass's Accepted=False message). Thread: any.
[[nodiscard]] std::string parse_class_params(const std::map<std::string, std::string>& data,
                                             ClassParams& out);

/// The sluice-dataplane arguments for a class's ports, lcores and exception interface, in
/// order: [--exception-tap NAME] -- [-l LCORES] then -a PCI / --vdev=VDEV per port. The
/// launcher appends its own EAL arguments after them. Thread: any.
[[nodiscard]] std::vector<std::string> dataplane_args(const ClassParams& p);

struct CompileOptions {
    std::string controller_name = kControllerName;
    /// Addresses given to Gateways that do not request any (the appliance's VIPs).
    std::vector<std::string> default_addresses = {"127.0.0.1"};
    /// IPv4 CIDR ("127.1.0.0/16"): when set, a Gateway that requests no address gets its own
    /// address from this pool (stable: chosen by a hash of namespace/name, the next free one
    /// on a collision) instead of default_addresses, so Gateways never share a VIP.
    std::string address_pool;
    /// Addresses a Gateway may request in spec.addresses; empty = any IP literal.
    std::vector<std::string> usable_addresses;
    /// Maglev-independent knobs of the compile that change the IR belong here.
};

struct CompileOutput {
    ir::Ir ir;
    std::vector<ObjectStatus> statuses; ///< sorted by key
    [[nodiscard]] const ObjectStatus* find(const ObjectKey& k) const noexcept;
    [[nodiscard]] ObjectStatus* find(const ObjectKey& k) noexcept;
};

/// The features sluice declares in GatewayClass status.supportedFeatures.
[[nodiscard]] const std::vector<std::string>& supported_features();

/// Compiles everything. Programmed conditions are written as pending (False, reason
/// Pending) until set_programmed() records a dataplane's ACK. Thread: any.
[[nodiscard]] CompileOutput compile(const Store& store, const CompileOptions& opts);

/// What changed in a Store since it was last compiled, when the caller knows (the
/// Kubernetes source does: its watches say which objects changed).
struct StoreDelta {
    bool other = false;         ///< anything else changed (another kind, objects added or
                                ///< removed, vectors reallocated): compile in full
    std::vector<size_t> routes; ///< Store::routes indices replaced in place (same key)
    std::vector<size_t> slices; ///< Store::slices indices replaced in place (same key)
};

/// compile() that keeps what it worked out, so that a change to a few HTTPRoutes or
/// EndpointSlices patches the last output instead of compiling everything again (ADR
/// 0011). A patched output equals, byte for byte in its IR and field for field in its
/// statuses, what compile() gives for the same Store. Thread: one owner.
class IncrementalCompiler {
public:
    IncrementalCompiler();
    ~IncrementalCompiler();
    IncrementalCompiler(IncrementalCompiler&&) noexcept;
    IncrementalCompiler& operator=(IncrementalCompiler&&) noexcept;

    /// A full compile, as compile(); remembers `store` (which must stay alive, at the same
    /// address, for patch()) and what it computed from it.
    [[nodiscard]] CompileOutput compile(const Store& store, const CompileOptions& opts);

    /// Updates `out`, the output of the last compile() (and of the patches since; its
    /// Programmed conditions may have been set), for `delta`: the same Store object with
    /// the routes/slices of `delta` replaced in place and nothing else changed. Returns
    /// false, `out` untouched, when the change needs a full compile: anything but
    /// HTTPRoutes and EndpointSlices, a route that moves in creation order, attaches to
    /// other listeners or hostnames, changes its number of rules, matches or filters, names
    /// a Service port no route named before, a slice that changes Service, BackendTLSPolicies
    /// in the Store along with a route change, or no compile() before.
    [[nodiscard]] bool patch(const Store& store, const StoreDelta& delta, CompileOutput& out);

    /// The indices in `out.statuses` (ascending) of the statuses the last successful
    /// patch() replaced: every other status is what it was before that patch (the set of
    /// statuses and their order never change in a patch). Empty after an EndpointSlice-only
    /// patch. For callers that pass statuses on (status write-back) and want to look only
    /// at those that can have changed.
    [[nodiscard]] const std::vector<size_t>& patched_statuses() const noexcept {
        return patched_statuses_;
    }

    /// Forgets the last compile (the next patch() fails).
    void reset() noexcept;

    [[nodiscard]] uint64_t full_compiles() const noexcept { return full_; }
    [[nodiscard]] uint64_t patches() const noexcept { return patched_; }

private:
    struct State;
    std::unique_ptr<State> st_;
    uint64_t full_ = 0, patched_ = 0;
    std::vector<size_t> patched_statuses_;
};

/// Records the dataplane's answer for this output: on ACK every Programmed condition that
/// waits for the dataplane becomes True(Programmed); on NACK False(Invalid) with `why`.
void set_programmed(CompileOutput& out, bool acked, const std::string& why = "");
/// set_programmed() for one status.
void set_programmed(ObjectStatus& st, bool acked, const std::string& why = "");

/// Renders one object's status as YAML (like `kubectl get -o yaml`, status block only,
/// with apiVersion/kind/metadata for orientation).
[[nodiscard]] std::string status_yaml(const ObjectStatus& st);

/// True when the object's status is healthy for `sluicectl validate`: Gateways and
/// listeners Accepted and ResolvedRefs, Routes Accepted and ResolvedRefs on every parent.
[[nodiscard]] bool status_ok(const ObjectStatus& st);

} // namespace sluice::cp
