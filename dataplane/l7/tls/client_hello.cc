#include "client_hello.h"

#include <cstdint>
#include <algorithm>
#include <cctype>
#include <cstring>

namespace sluice::l7 {

namespace {

struct Reader {
    const unsigned char* p;
    size_t n;
    size_t off = 0;
    bool ok = true;
    uint32_t u(size_t bytes) noexcept {
        if (!ok || n - off < bytes) {
            ok = false;
            return 0;
        }
        uint32_t v = 0;
        for (size_t i = 0; i < bytes; ++i) {
            v = (v << 8) | p[off + i];
        }
        off += bytes;
        return v;
    }
    void skip(size_t bytes) noexcept {
        if (!ok || n - off < bytes) {
            ok = false;
            return;
        }
        off += bytes;
    }
};

} // namespace

HelloStatus parse_client_hello(std::string_view buf, char* scratch, std::string_view& sni) noexcept {
    sni = {};
    // Reassemble the handshake message from consecutive handshake records.
    const auto* b = reinterpret_cast<const unsigned char*>(buf.data());
    size_t pos = 0, have = 0;
    size_t want = 0; // handshake message length incl. its 4-byte header, once known
    // Where each record's payload landed in `buf`, to map the SNI back to `buf` when the
    // name lies in one record (it always does in practice; otherwise it views `scratch`).
    while (true) {
        if (buf.size() - pos < 5) {
            return HelloStatus::Incomplete;
        }
        if (b[pos] != 0x16) {
            return pos == 0 ? HelloStatus::NotTls : HelloStatus::Error;
        }
        if (b[pos + 1] != 0x03) {
            return pos == 0 ? HelloStatus::NotTls : HelloStatus::Error;
        }
        const size_t rlen = (static_cast<size_t>(b[pos + 3]) << 8) | b[pos + 4];
        if (rlen == 0 || rlen > 16384 + 2048) {
            return HelloStatus::Error;
        }
        const size_t avail = std::min(rlen, buf.size() - pos - 5);
        const size_t take = std::min(avail, kMaxClientHello - have);
        std::memcpy(scratch + have, buf.data() + pos + 5, take);
        have += take;
        if (want == 0 && have >= 4) {
            if (static_cast<unsigned char>(scratch[0]) != 0x01) {
                return HelloStatus::Error; // the first handshake message must be a ClientHello
            }
            want = 4 + ((static_cast<size_t>(static_cast<unsigned char>(scratch[1])) << 16) |
                        (static_cast<size_t>(static_cast<unsigned char>(scratch[2])) << 8) |
                        static_cast<unsigned char>(scratch[3]));
            if (want > kMaxClientHello) {
                return HelloStatus::Error;
            }
        }
        if (want != 0 && have >= want) {
            break;
        }
        if (avail < rlen) {
            return HelloStatus::Incomplete; // this record is not complete yet
        }
        if (have >= kMaxClientHello) {
            return HelloStatus::Error;
        }
        pos += 5 + rlen;
    }
    Reader r{reinterpret_cast<const unsigned char*>(scratch), want};
    r.skip(4);       // handshake header
    r.skip(2 + 32);  // legacy_version, random
    const uint32_t sid = r.u(1);
    if (sid > 32) {
        return HelloStatus::Error;
    }
    r.skip(sid);
    const uint32_t cs = r.u(2);
    if (cs < 2 || cs % 2) {
        return HelloStatus::Error;
    }
    r.skip(cs);
    const uint32_t comp = r.u(1);
    if (comp < 1) {
        return HelloStatus::Error;
    }
    r.skip(comp);
    if (!r.ok) {
        return HelloStatus::Error;
    }
    if (r.off == want) {
        return HelloStatus::Ok; // no extensions at all
    }
    const uint32_t ext_len = r.u(2);
    if (!r.ok || ext_len != want - r.off) {
        return HelloStatus::Error;
    }
    bool seen_sni = false;
    while (r.ok && r.off < want) {
        const uint32_t type = r.u(2);
        const uint32_t len = r.u(2);
        if (!r.ok || want - r.off < len) {
            return HelloStatus::Error;
        }
        if (type != 0) {
            r.skip(len);
            continue;
        }
        if (seen_sni) {
            return HelloStatus::Error; // duplicate extension
        }
        seen_sni = true;
        Reader e{reinterpret_cast<const unsigned char*>(scratch) + r.off, len};
        r.skip(len);
        const uint32_t list = e.u(2);
        if (!e.ok || list != len - 2) {
            return HelloStatus::Error;
        }
        while (e.ok && e.off < len) {
            const uint32_t name_type = e.u(1);
            const uint32_t name_len = e.u(2);
            if (!e.ok || len - e.off < name_len) {
                return HelloStatus::Error;
            }
            const char* name = scratch + r.off - len + e.off;
            e.skip(name_len);
            if (name_type != 0 || !sni.empty()) {
                continue;
            }
            if (name_len == 0 || name_len > 253) {
                return HelloStatus::Error;
            }
            for (uint32_t i = 0; i < name_len; ++i) {
                const unsigned char ch = static_cast<unsigned char>(name[i]);
                if (!(std::isalnum(ch) || ch == '-' || ch == '.' || ch == '_')) {
                    return HelloStatus::Error;
                }
            }
            sni = std::string_view(name, name_len);
        }
        if (!e.ok) {
            return HelloStatus::Error;
        }
    }
    return r.ok ? HelloStatus::Ok : HelloStatus::Error;
}

} // namespace sluice::l7
