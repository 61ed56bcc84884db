#pragma once

/// @file
/// sluice::Result<T>: the error convention of every control-path function (STYLE C1).
/// Fallible functions return Result<T> = tl::expected<T, Error>; our code never throws.
/// Thread: any.

#include <string>
#include <utility>

#include <tl/expected.hpp>

namespace sluice {

enum class Errc {
    Invalid,       ///< input does not follow the format or the schema
    NotFound,      ///< a named file, object or key does not exist
    LimitExceeded, ///< a size, depth or count limit was hit
    Io,            ///< the operating system refused (open, read, socket ...)
    Version,       ///< wire format version mismatch
    Internal,      ///< an invariant broke; a bug in sluice
};

struct Error {
    Errc code = Errc::Invalid;
    std::string message;
};

template <typename T>
using Result = tl::expected<T, Error>;

/// Builds the error side of a Result: `return fail(Errc::Invalid, "why");`
[[nodiscard]] inline tl::unexpected<Error> fail(Errc code, std::string message) {
    return tl::unexpected<Error>(Error{code, std::move(message)});
}

[[nodiscard]] inline const char* errc_name(Errc c) noexcept {
    switch (c) {
    case Errc::Invalid:
        return "invalid";
    case Errc::NotFound:
        return "not-found";
    case Errc::LimitExceeded:
        return "limit-exceeded";
    case Errc::Io:
        return "io";
    case Errc::Version:
        return "version";
    case Errc::Internal:
        return "internal";
    }
    return "?";
}

} // namespace sluice
