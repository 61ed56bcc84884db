// libFuzzer target: sluice's TLS 1.3 record layer (records.h), the bytes a client sends
// after the handshake. Two modes, by the first byte:
//   even: the rest is wire bytes, opened in pieces of arbitrary sizes (forged records,
//         lengths, types): never a crash, never plaintext out of a record that did not
//         authenticate;
//   odd:  the rest is a script of plaintext chunks, KeyUpdates and a close_notify sealed by
//         one end and opened by the other in arbitrary splits: what comes out is exactly
//         what went in, whatever the record boundaries.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <string>
#include <string_view>

#include "records.h"

using sluice::l7::TlsRecords;

namespace {

std::unique_ptr<TlsRecords> make(bool client_side, size_t hash_len) {
    const std::string a(hash_len, '\x11'), b(hash_len, '\x22');
    return client_side ? TlsRecords::from_secrets(hash_len, b, a, 0, 0)
                       : TlsRecords::from_secrets(hash_len, a, b, 0, 0);
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    static const bool ok = sluice::l7::tls_records_enable();
    if (!ok || size < 2) {
        return 0;
    }
    const size_t hash_len = (data[1] & 1) ? 48 : 32;
    auto server = make(false, hash_len);
    auto client = make(true, hash_len);
    if (!server || !client) {
        std::abort();
    }
    std::string_view in(reinterpret_cast<const char*>(data + 2), size - 2);
    std::string plain, out, why;
    if ((data[0] & 1) == 0) {
        std::string wire;
        size_t step = 1 + data[0] % 97;
        while (!in.empty()) {
            const size_t n = in.size() < step ? in.size() : step;
            wire.append(in.substr(0, n));
            in.remove_prefix(n);
            if (server->open(wire, plain, out, why) != TlsRecords::Status::Ok) {
                break;
            }
        }
        if (!plain.empty() || server->opened() != 0) {
            std::abort(); // nothing authenticates without the key
        }
        return 0;
    }
    // Script: each byte b: b < 200 -> seal the next (b % 64) input bytes; 200..249 -> our
    // KeyUpdate (requesting one back if odd); 250.. -> split point for the reader.
    std::string sent, wire, received;
    bool closed = false;
    while (!in.empty() && !closed) {
        const uint8_t op = static_cast<uint8_t>(in.front());
        in.remove_prefix(1);
        if (op < 200) {
            const size_t n = std::min<size_t>(op % 64, in.size());
            client->seal(in.substr(0, n), wire);
            sent.append(in.substr(0, n));
            in.remove_prefix(n);
        } else if (op < 250) {
            client->seal_key_update(wire, (op & 1) != 0);
        } else if (op == 255) {
            client->seal_close_notify(wire);
            closed = true;
        }
        // The reader takes what has arrived so far, maybe a partial record.
        const size_t cut = op >= 250 ? wire.size() / 2 : wire.size();
        std::string part = wire.substr(0, cut);
        const size_t before = part.size();
        std::string back;
        const auto st = server->open(part, received, back, why);
        if (st == TlsRecords::Status::Error) {
            std::abort(); // everything here was sealed correctly
        }
        wire.erase(0, before - part.size());
        if (!back.empty()) {
            // The server's answer to a requested KeyUpdate opens on the client.
            std::string echo, none;
            if (client->open(back, echo, none, why) != TlsRecords::Status::Ok || !echo.empty() ||
                !back.empty()) {
                std::abort();
            }
        }
        if (st == TlsRecords::Status::CloseNotify && !closed) {
            std::abort();
        }
    }
    std::string rest;
    if (!closed && server->open(wire, received, rest, why) == TlsRecords::Status::Error) {
        std::abort();
    }
    if (received != sent) {
        std::abort();
    }
    return 0;
}
