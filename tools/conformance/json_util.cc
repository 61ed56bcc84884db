#include "json_util.h"

#include <cctype>

namespace sluice::conformance {

const Json* jget(const Json& j, std::string_view key) noexcept {
    if (!j.is_object()) {
        return nullptr;
    }
    auto it = j.find(key);
    if (it == j.end()) {
        return nullptr;
    }
    return &*it;
}

std::string jstr(const Json& j, std::string_view key, const std::string& def) {
    const Json* v = jget(j, key);
    if (!v || !v->is_string()) {
        return def;
    }
    return v->get_ref<const std::string&>();
}

std::optional<std::string> jopt_str(const Json& j, std::string_view key) {
    const Json* v = jget(j, key);
    if (!v || !v->is_string()) {
        return std::nullopt;
    }
    return v->get_ref<const std::string&>();
}

std::optional<int64_t> jint(const Json& j, std::string_view key) {
    const Json* v = jget(j, key);
    if (!v) {
        return std::nullopt;
    }
    if (v->is_number_integer()) {
        return v->get<int64_t>();
    }
    if (v->is_number_float()) {
        return static_cast<int64_t>(v->get<double>());
    }
    if (v->is_string()) {
        const std::string& s = v->get_ref<const std::string&>();
        if (s.empty() || s.size() > 18) {
            return std::nullopt;
        }
        int64_t n = 0;
        for (char c : s) {
            if (!std::isdigit(static_cast<unsigned char>(c))) {
                return std::nullopt;
            }
            n = n * 10 + (c - '0');
        }
        return n;
    }
    return std::nullopt;
}

std::optional<double> jnum(const Json& j, std::string_view key) {
    const Json* v = jget(j, key);
    if (!v || !v->is_number()) {
        return std::nullopt;
    }
    return v->get<double>();
}

bool jbool(const Json& j, std::string_view key, bool def) {
    const Json* v = jget(j, key);
    if (!v || !v->is_boolean()) {
        return def;
    }
    return v->get<bool>();
}

namespace {

void push_split(const std::string& s, bool split_commas, std::vector<std::string>& out) {
    if (!split_commas) {
        out.push_back(s);
        return;
    }
    size_t start = 0;
    while (start <= s.size()) {
        size_t comma = s.find(',', start);
        if (comma == std::string::npos) {
            comma = s.size();
        }
        std::string part = s.substr(start, comma - start);
        while (!part.empty() && part.front() == ' ') {
            part.erase(part.begin());
        }
        while (!part.empty() && part.back() == ' ') {
            part.pop_back();
        }
        if (!part.empty()) {
            out.push_back(part);
        }
        start = comma + 1;
    }
}

} // namespace

std::vector<std::string> jstrs(const Json& j, std::string_view key, bool split_commas) {
    std::vector<std::string> out;
    const Json* v = jget(j, key);
    if (!v) {
        return out;
    }
    if (v->is_string()) {
        push_split(v->get_ref<const std::string&>(), split_commas, out);
    } else if (v->is_array()) {
        for (const Json& x : *v) {
            if (x.is_string()) {
                push_split(x.get_ref<const std::string&>(), split_commas, out);
            }
        }
    }
    return out;
}

std::string jdump(const Json& j, size_t max) {
    std::string s = j.dump(-1, ' ', false, Json::error_handler_t::replace);
    if (s.size() > max) {
        s.resize(max);
        s += "...";
    }
    return s;
}

} // namespace sluice::conformance
