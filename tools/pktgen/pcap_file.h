#pragma once

/// @file
/// Classic pcap files (not pcapng), read and written without libpcap: a 24-byte global
/// header (magic a1b2c3d4 for microseconds or a1b23c4d for nanoseconds, either byte
/// order; link type 1 = Ethernet) followed by records of a 16-byte header (seconds,
/// sub-seconds, captured length, original length) and the captured bytes.
/// Thread: any (allocates; used before the generator starts and by tests).

#include <cstdint>
#include <string>
#include <vector>

#include "result.h"

namespace sluice::pktgen {

using PcapFrames = std::vector<std::vector<uint8_t>>;

/// Reads every frame of an Ethernet pcap file. Frames longer than `max_frame` bytes are
/// truncated to it; reading stops at `max_frames` frames.
/// Thread: any; blocks on the file.
[[nodiscard]] Result<PcapFrames> read_pcap(const std::string& path, size_t max_frames = 1u << 20,
                                           uint32_t max_frame = 2048);

/// Writes frames as a microsecond pcap file (time stamps 1 ms apart). Thread: any.
[[nodiscard]] Result<void> write_pcap(const std::string& path, const PcapFrames& frames);

} // namespace sluice::pktgen
