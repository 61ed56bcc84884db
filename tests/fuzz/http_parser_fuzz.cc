// libFuzzer target: hostile bytes -> sluice::http::parse_request / parse_response and, for a
// complete chunked request, ChunkedDecoder over the bytes after the head (split in two at a
// data-derived position). Parsing must never crash or read outside the input; invariants
// (head_len within the input, every string_view inside the input, consumed <= input,
// segmentation-independent chunked verdicts) are checked with __builtin_trap().

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "parser.h"

namespace {

using namespace sluice::http;

bool inside(std::string_view v, std::string_view buf) {
    return v.empty() || (v.data() >= buf.data() && v.data() + v.size() <= buf.data() + buf.size());
}

void check(bool ok) {
    if (!ok) {
        __builtin_trap();
    }
}

void check_head(const Result& r, const Head& h, std::string_view buf, const Limits& l) {
    if (r.status == Status::Error) {
        check(r.error_status == 400 || r.error_status == 431 || r.error_status == 501 ||
              r.error_status == 505);
        check(!r.why.empty());
        return;
    }
    if (r.status != Status::Complete) {
        check(buf.size() <= l.max_head_bytes);
        return;
    }
    check(h.head_len >= 4 && h.head_len <= buf.size() && h.head_len <= l.max_head_bytes);
    check(buf.substr(h.head_len - 4, 4) == "\r\n\r\n");
    check(h.n_headers <= l.max_headers && h.n_headers <= kMaxHeaders);
    const std::string_view head = buf.substr(0, h.head_len);
    check(inside(h.method, head) && inside(h.target, head) && inside(h.reason, head) &&
          inside(h.host, head) && inside(h.upgrade_proto, head));
    for (size_t k = 0; k < h.n_headers; ++k) {
        check(!h.headers[k].name.empty());
        check(inside(h.headers[k].name, head) && inside(h.headers[k].value, head));
        check(find_header(h, h.headers[k].name) != nullptr);
    }
    check(h.upgrade || h.upgrade_proto.empty());
}

/// Runs the decoder over `body`, split at `cut`; returns the step that ended it.
ChunkedDecoder::Step decode(std::string_view body, size_t cut, uint64_t& payload) {
    ChunkedDecoder d;
    payload = 0;
    const std::string_view parts[2] = {body.substr(0, cut), body.substr(cut)};
    ChunkedDecoder::Step total;
    for (const std::string_view part : parts) {
        const ChunkedDecoder::Step s = d.feed(part, [&](std::string_view data) {
            check(!data.empty() && inside(data, part));
            payload += data.size();
        });
        check(s.consumed <= part.size());
        check(!(s.done && s.error));
        total.consumed += s.consumed;
        total.done = s.done;
        total.error = s.error;
        if (s.done || s.error) {
            break;
        }
        check(s.consumed == part.size());
    }
    return total;
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    if (size == 0) {
        return 0;
    }
    // The first byte picks the limits and the chunked split; the rest is the message, in
    // an exact-size copy so that ASan sees any read past its end.
    const uint8_t ctl = data[0];
    const std::vector<char> copy(data + 1, data + size);
    const std::string_view buf(copy.data(), copy.size());

    Limits limits[2];
    limits[1].max_head_bytes = 64 + (ctl & 0x3f) * 4;
    limits[1].max_headers = ctl % 8;

    static Head h; // 4 KiB: keep it off the fuzzer's stack frame
    for (const Limits& l : limits) {
        const Result r = parse_request(buf, l, h);
        check_head(r, h, buf, l);
        if (r.status == Status::Complete && h.body == BodyKind::Chunked) {
            const std::string_view body = buf.substr(h.head_len);
            const size_t cut = body.empty() ? 0 : (ctl * 131u) % (body.size() + 1);
            uint64_t split_payload = 0;
            uint64_t whole_payload = 0;
            const ChunkedDecoder::Step split = decode(body, cut, split_payload);
            const ChunkedDecoder::Step whole = decode(body, body.size(), whole_payload);
            check(split.consumed <= body.size());
            // Segmentation must not change the verdict or where the message ends.
            check(split.done == whole.done && split.error == whole.error);
            check(split.consumed == whole.consumed && split_payload == whole_payload);
            check(split_payload <= split.consumed);
        }
        for (const std::string_view method : {"GET", "HEAD", "CONNECT"}) {
            const Result rr = parse_response(buf, l, method, h);
            check_head(rr, h, buf, l);
            if (rr.status == Status::Complete) {
                check(h.status >= 100 && h.status <= 599);
                check(h.body != BodyKind::None || method == "HEAD" || h.status < 200 ||
                      h.status == 204 || h.status == 304);
            }
        }
    }
    return 0;
}
