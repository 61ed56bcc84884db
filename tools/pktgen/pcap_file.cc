#include "pcap_file.h"

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <memory>

namespace sluice::pktgen {

namespace {

uint32_t rd32(const uint8_t* p, bool swap) {
    uint32_t v = 0;
    std::memcpy(&v, p, 4);
    return swap ? __builtin_bswap32(v) : v;
}

struct FileCloser {
    void operator()(FILE* f) const noexcept { std::fclose(f); }
};

} // namespace

Result<PcapFrames> read_pcap(const std::string& path, size_t max_frames, uint32_t max_frame) {
    std::unique_ptr<FILE, FileCloser> f(std::fopen(path.c_str(), "rb"));
    if (!f) {
        return fail(Errc::NotFound, "cannot open pcap file " + path);
    }
    uint8_t gh[24];
    if (std::fread(gh, 1, sizeof gh, f.get()) != sizeof gh) {
        return fail(Errc::Invalid, path + ": shorter than a pcap header");
    }
    uint32_t magic = 0;
    std::memcpy(&magic, gh, 4);
    bool swap = false;
    if (magic == 0xa1b2c3d4 || magic == 0xa1b23c4d) {
        swap = false;
    } else if (magic == 0xd4c3b2a1 || magic == 0x4d3cb2a1) {
        swap = true;
    } else if (magic == 0x0a0d0d0a) {
        return fail(Errc::Invalid, path + ": pcapng is not supported (convert with "
                                          "'editcap -F pcap')");
    } else {
        return fail(Errc::Invalid, path + ": not a pcap file (bad magic)");
    }
    const uint32_t linktype = rd32(gh + 20, swap) & 0x0FFFFFFF;
    if (linktype != 1) {
        return fail(Errc::Invalid, path + ": link type " + std::to_string(linktype) +
                                       " (only Ethernet, 1, can be replayed)");
    }
    PcapFrames out;
    uint8_t rh[16];
    std::vector<uint8_t> buf;
    while (out.size() < max_frames) {
        const size_t n = std::fread(rh, 1, sizeof rh, f.get());
        if (n == 0) {
            break;
        }
        if (n != sizeof rh) {
            return fail(Errc::Invalid, path + ": truncated record header");
        }
        const uint32_t incl = rd32(rh + 8, swap);
        if (incl > (1u << 18)) {
            return fail(Errc::Invalid, path + ": record of " + std::to_string(incl) + " bytes");
        }
        buf.resize(incl);
        if (incl && std::fread(buf.data(), 1, incl, f.get()) != incl) {
            return fail(Errc::Invalid, path + ": truncated record");
        }
        if (incl < 14) {
            continue; // not even an Ethernet header
        }
        out.emplace_back(buf.begin(), buf.begin() + std::min(incl, max_frame));
    }
    if (out.empty()) {
        return fail(Errc::Invalid, path + ": no frames");
    }
    return out;
}

Result<void> write_pcap(const std::string& path, const PcapFrames& frames) {
    std::unique_ptr<FILE, FileCloser> f(std::fopen(path.c_str(), "wb"));
    if (!f) {
        return fail(Errc::Io, "cannot create " + path);
    }
    const uint32_t gh[6] = {0xa1b2c3d4, 0x00040002, 0, 0, 65535, 1};
    bool ok = std::fwrite(gh, sizeof gh, 1, f.get()) == 1;
    uint32_t usec = 0;
    for (const auto& fr : frames) {
        const auto len = static_cast<uint32_t>(fr.size());
        const uint32_t rh[4] = {1, usec, len, len};
        usec += 1000;
        ok = ok && std::fwrite(rh, sizeof rh, 1, f.get()) == 1 &&
             (fr.empty() || std::fwrite(fr.data(), fr.size(), 1, f.get()) == 1);
    }
    if (!ok) {
        return fail(Errc::Io, "writing " + path + " failed");
    }
    return {};
}

} // namespace sluice::pktgen
