#pragma once

/// @file
/// The compiler: Store -> (status of every object, IR). A pure function (STYLE C3): no I/O,
/// no clock, no globals; equal input gives byte-identical IR and identical status. User
/// mistakes become status conditions; nothing here fails the whole compile.

#include <cstdint>
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

/// Records the dataplane's answer for this output: on ACK every Programmed condition that
/// waits for the dataplane becomes True(Programmed); on NACK False(Invalid) with `why`.
void set_programmed(CompileOutput& out, bool acked, const std::string& why = "");

/// Renders one object's status as YAML (like `kubectl get -o yaml`, status block only,
/// with apiVersion/kind/metadata for orientation).
[[nodiscard]] std::string status_yaml(const ObjectStatus& st);

/// True when the object's status is healthy for `sluicectl validate`: Gateways and
/// listeners Accepted and ResolvedRefs, Routes Accepted and ResolvedRefs on every parent.
[[nodiscard]] bool status_ok(const ObjectStatus& st);

} // namespace sluice::cp
