#pragma once

/// @file
/// sluice-pktgen traffic profiles: the YAML keys documented in tools/pktgen/README.md,
/// parsed and checked into a Profile. No DPDK here, so the parser is unit-tested anywhere.
/// Thread: any (the parser allocates; it runs once, before the generator starts).

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "result.h"

namespace sluice::pktgen {

using Addr16 = std::array<uint8_t, 16>; ///< network order; IPv4 in bytes 12..15
using Mac = std::array<uint8_t, 6>;

enum class Proto : uint8_t {
    Udp,
    Tcp, ///< first packet of a flow (seq 0) is a SYN, the rest ACK|PSH
    Syn, ///< SYN flood: every packet a SYN with a random source port
};

/// An inclusive address range of one family. `count` is capped at 2^32 (enumeration).
struct AddrRange {
    uint8_t family = 4;
    Addr16 lo{};
    Addr16 hi{};
    uint64_t count = 1;

    /// lo + k (k < count), in the packet layout. Thread: any.
    [[nodiscard]] Addr16 at(uint64_t k) const noexcept;
    /// True when `a` (same family) lies in [lo, hi]. Thread: any.
    [[nodiscard]] bool contains(uint8_t fam, const Addr16& a) const noexcept;
};

struct PortRange {
    uint16_t lo = 0;
    uint16_t hi = 0;
    [[nodiscard]] uint32_t count() const noexcept { return uint32_t{hi} - lo + 1; }
};

/// RFC 2544-style zero-loss throughput search (binary search on the offered rate).
struct SearchSpec {
    double min_pps = 10000;
    double max_pps = 10e6;
    double loss_threshold = 0.0001; ///< a trial passes when lost/tx <= this
    double trial_s = 2;
    double precision_pps = 10000; ///< stop when hi - lo <= this
    double warmup_s = 0.5;        ///< before each trial (not measured)
};

/// What one stream of packets is made of: the per-stream profile keys (proto, addresses,
/// ports, flows, sizes, source MAC, TTL, seed). A profile without `streams:` has one, from
/// its top-level keys.
struct TrafficSpec {
    Proto proto = Proto::Udp;
    uint8_t ip = 4;
    AddrRange src;
    AddrRange dst;
    PortRange sport{1024, 1024};
    PortRange dport{5000, 5000};
    uint32_t flows = 1;
    /// Frame sizes in the order they are sent (IMIX expanded by smooth weighted round
    /// robin). Sizes include the 4-byte FCS, as in RFC 2544: the mbuf holds size - 4.
    std::vector<uint16_t> size_pattern{64};
    std::vector<std::pair<uint16_t, uint32_t>> imix; ///< as given (empty for `size`)
    bool src_mac_set = false;
    Mac src_mac{};
    uint8_t ttl = 64;
    uint64_t seed = 1;

    /// Bytes of Ethernet + IP + L4 headers of generated frames.
    [[nodiscard]] uint32_t header_len() const noexcept;
    /// Smallest frame (with FCS) that holds the headers and the 16-byte stamp.
    [[nodiscard]] uint32_t min_frame() const noexcept;
    /// Mean frame size (with FCS) of the pattern.
    [[nodiscard]] double mean_frame() const noexcept;
    /// Number of distinct 5-tuples the ranges allow (capped at 2^63).
    [[nodiscard]] uint64_t tuple_space() const noexcept;
};

/// One entry of `streams:`: its traffic, its weight in the mix and the range of stamp flow
/// indexes it owns ([flow_base, flow_base + flows): disjoint, so the receive side attributes
/// every packet to its stream from the stamp alone).
struct Stream : TrafficSpec {
    std::string name;
    double share = -1;      ///< as given (-1: not given)
    double rate_pps = -1;   ///< as given (-1: not given)
    uint32_t weight = 1;    ///< integer weight of the send order (`Profile::stream_pattern`)
    double fraction = 1;    ///< weight / total weight: this stream's part of the total rate
    uint32_t flow_base = 0; ///< first stamp flow index of the stream
};

/// A parsed profile. Its own TrafficSpec fields always describe `streams[0]` (the only
/// stream of a profile without `streams:`), so single-stream code reads them directly.
struct Profile : TrafficSpec {
    double rate_pps = -1;     ///< -1: not given; 0: as fast as the port takes them
    double rate_percent = -1; ///< -1: not given
    double duration_s = 10;
    double warmup_s = 1;
    double drain_s = 0.5; ///< rx keeps counting this long after the last packet
    enum class DstMacMode : uint8_t { Fixed, Arp } dst_mac_mode = DstMacMode::Fixed;
    Mac dst_mac{0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
    uint16_t tx_port = 0;
    uint16_t rx_port = 0;
    uint16_t burst = 32;
    std::string pcap_replay; ///< file; empty = generate
    double replay_pps = -1;
    std::vector<AddrRange> arp_reply_for; ///< IPv4 addresses we answer ARP requests for
    bool arp_mac_set = false;
    Mac arp_mac{}; ///< default: the receiving port's MAC
    bool has_search = false;
    SearchSpec search;
    std::vector<double> sweep; ///< percent of the zero-loss rate (or of the profile's rate)
    uint32_t per_flow_report = 64; ///< flows listed one by one in the JSON
    std::vector<std::string> notes; ///< adjustments the parser made (e.g. sizes raised)
    /// The streams sent (at least one; empty only for pcap_replay). Flow ranges are laid out
    /// in list order from 0.
    std::vector<Stream> streams;
    /// True when the profile has a `streams:` list: the results then get a per-stream section.
    bool multi_stream = false;
    /// Stream index of each packet in send order, repeated (smooth weighted round robin over
    /// the weights, as expand_imix interleaves sizes). {0} for one stream.
    std::vector<uint16_t> stream_pattern{0};

    /// Flows of all streams: the stamp flow indexes in use are [0, total_flows()).
    [[nodiscard]] uint32_t total_flows() const noexcept;
    /// Mean frame size (with FCS) of the whole mix (streams weighted by their shares).
    [[nodiscard]] double mix_mean_frame() const noexcept;
    /// Index of the stream owning stamp flow index `flow` (< total_flows()). Thread: any.
    [[nodiscard]] size_t stream_of(uint32_t flow) const noexcept;
};

inline constexpr uint32_t kMaxFlows = 1u << 24; ///< the stamp carries 24 bits of flow index
inline constexpr uint16_t kMaxFrame = 1518;
inline constexpr uint16_t kMinFrame = 64;
inline constexpr uint16_t kMaxBurst = 64;        ///< packets per tx burst at most
inline constexpr size_t kMaxStreams = 16;        ///< entries of `streams:` at most
inline constexpr uint32_t kMaxMixWeight = 10000; ///< send-order length (mix resolution 1e-4)

/// Parses a profile from YAML text. Every key is checked; unknown keys are errors.
/// Thread: any.
[[nodiscard]] Result<Profile> parse_profile(std::string_view yaml_text);
/// Reads and parses a profile file. Thread: any (blocks on the file).
[[nodiscard]] Result<Profile> load_profile(const std::string& path);

/// Parsers for single values (also used by the tests). Thread: any.
[[nodiscard]] Result<AddrRange> parse_addr_range(std::string_view text);
[[nodiscard]] Result<PortRange> parse_port_range(std::string_view text);
[[nodiscard]] Result<Mac> parse_mac(std::string_view text);
[[nodiscard]] std::string format_addr(uint8_t family, const Addr16& a);
[[nodiscard]] std::string format_mac(const Mac& m);
[[nodiscard]] const char* proto_name(Proto p) noexcept;

/// Expands IMIX weights into a send order (smooth weighted round robin, so sizes are
/// interleaved rather than sent in runs). Thread: any.
[[nodiscard]] std::vector<uint16_t> expand_imix(
    const std::vector<std::pair<uint16_t, uint32_t>>& mix);

} // namespace sluice::pktgen
