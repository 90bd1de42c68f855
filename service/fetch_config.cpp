// SPDX-License-Identifier: Apache-2.0
#include "service/fetch_config.h"

#include "common/text.h"
#include <algorithm>
#include <cctype>
#include <charconv>
#include <cstdlib>
#include <fstream>
#include <system_error>

namespace estimator::service {
namespace fs = std::filesystem;

namespace {

// A config file is a handful of lines; anything bigger is not one.
constexpr std::size_t kMaxConfigBytes = 1U << 20U;
constexpr std::size_t kMaxValueBytes = 8192;

struct PrefixInfo {
  std::string_view output_type;
  std::string_view source;
};

// Kepler's model server: TOTAL is the platform meter (acpi), COMPONENTS is RAPL; node
// models include idle power (AbsPower), container and process models do not (DynPower).
PrefixInfo prefix_info(std::string_view prefix) {
  const bool node = prefix.starts_with("NODE_");
  const bool total = prefix.ends_with("_TOTAL");
  return {node ? "AbsPower" : "DynPower", total ? "acpi" : "rapl-sysfs"};
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.front())) != 0) s.remove_prefix(1);
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back())) != 0) s.remove_suffix(1);
  return s;
}

bool valid_key(std::string_view key) {
  return !key.empty() && key.size() <= 128 &&
         std::all_of(key.begin(), key.end(), [](char c) {
           return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                  c == '_';
         });
}

Status bad(const ConfigValue& v, std::string_view key, std::string_view why) {
  return Status(Code::kInvalidArgument, std::string(key) + " (" + v.origin + "): " +
                                            std::string(why) + ", got \"" + v.value + "\"");
}

Result<bool> parse_bool(const ConfigValue& v, std::string_view key) {
  const std::string s = lower(v.value);
  if (s == "true" || s == "1" || s == "yes" || s == "on") return true;
  if (s == "false" || s == "0" || s == "no" || s == "off") return false;
  return bad(v, key, "expected true or false (1 or 0)");
}

Result<long long> parse_int(const ConfigValue& v, std::string_view key, long long min,
                            long long max) {
  long long n = 0;
  const char* end = v.value.data() + v.value.size();
  auto [ptr, ec] = std::from_chars(v.value.data(), end, n);
  if (ec != std::errc() || ptr != end) return bad(v, key, "expected an integer");
  if (n < min || n > max) {
    return bad(v, key, "expected a value from " + std::to_string(min) + " to " + std::to_string(max));
  }
  return n;
}

Result<std::chrono::milliseconds> parse_ms(const ConfigValue& v, std::string_view key,
                                           long long min, long long max) {
  auto n = parse_int(v, key, min, max);
  if (!n.ok()) return n.status();
  return std::chrono::milliseconds(*n);
}

bool has_scheme(std::string_view url, std::string_view scheme) {
  return url.size() > scheme.size() && lower(url.substr(0, scheme.size())) == scheme;
}

Status check_url(const ConfigValue& v, std::string_view key, bool allow_file) {
  const std::string_view url = v.value;
  const bool http = has_scheme(url, "http://") || has_scheme(url, "https://");
  if (!http && !(allow_file && has_scheme(url, "file://"))) {
    return bad(v, key, allow_file ? "expected an http://, https:// or file:// URL"
                                  : "expected an http:// or https:// URL");
  }
  if (std::any_of(url.begin(), url.end(), [](unsigned char c) { return c <= ' ' || c == 0x7f; })) {
    return bad(v, key, "a URL cannot contain spaces or control characters");
  }
  return Status::Ok();
}

// Kepler's filter syntax: "attr:number;attr:number".
Status check_filters(const ConfigValue& v, std::string_view key) {
  std::string_view rest = v.value;
  while (!rest.empty()) {
    const std::size_t semi = rest.find(';');
    const std::string_view part = trim(rest.substr(0, semi));
    rest = semi == std::string_view::npos ? std::string_view() : rest.substr(semi + 1);
    if (part.empty()) continue;
    const std::size_t colon = part.find(':');
    if (colon == std::string_view::npos || !valid_key(trim(part.substr(0, colon)))) {
      return bad(v, key, "expected attribute:number pairs separated by ';' (e.g. mae:0.5;mape:10)");
    }
    const std::string number(trim(part.substr(colon + 1)));
    char* end = nullptr;
    std::strtod(number.c_str(), &end);
    if (number.empty() || end != number.c_str() + number.size()) {
      return bad(v, key, "the value of \"" + std::string(part) + "\" is not a number");
    }
  }
  return Status::Ok();
}

Status check_name(const ConfigValue& v, std::string_view key) {
  const bool ok = std::all_of(v.value.begin(), v.value.end(), [](unsigned char c) {
    return std::isalnum(c) != 0 || c == '_' || c == '-' || c == '.';
  });
  return ok ? Status::Ok() : bad(v, key, "expected a trainer name (letters, digits, _ - .)");
}

Result<std::string> read_small_file(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  if (!in) return Status(Code::kNotFound, "cannot open config " + p.string());
  std::string text;
  char chunk[8192];
  while (in) {
    in.read(chunk, sizeof chunk);
    text.append(chunk, static_cast<std::size_t>(in.gcount()));
    if (text.size() > kMaxConfigBytes) {
      return Status(Code::kTooLarge, "config " + p.string() + " is over " +
                                         std::to_string(kMaxConfigBytes) + " bytes");
    }
  }
  if (in.bad()) return Status(Code::kInvalidArgument, "cannot read config " + p.string());
  return text;
}

void merge(ConfigValues& into, ConfigValues from) {
  for (auto& [k, v] : from) into.insert_or_assign(k, std::move(v));
}

}  // namespace

bool FetchConfig::enabled() const {
  return model_server_enable ||
         std::any_of(prefixes.begin(), prefixes.end(),
                     [](const PrefixConfig& p) { return !p.init_url.empty(); });
}

const PrefixConfig* FetchConfig::find(std::string_view prefix) const {
  for (const PrefixConfig& p : prefixes) {
    if (p.prefix == prefix) return &p;
  }
  return nullptr;
}

std::vector<std::string> known_config_keys() {
  std::vector<std::string> keys;
  for (std::string_view p : kModelPrefixes) {
    for (std::string_view s : {"_INIT_URL", "_TRAINER", "_FILTERS"}) {
      keys.push_back(std::string(p) + std::string(s));
    }
  }
  for (const char* k :
       {"MODEL_SERVER_ENABLE", "MODEL_SERVER_URL", "MODEL_SERVER_PORT", "MODEL_SERVER_MODEL_REQ_PATH",
        "MODEL_SERVER_NODE_TYPE", "MODEL_SERVER_SEND_SPEC", "MODEL_SERVER_FEATURES",
        "FETCH_CONNECT_TIMEOUT_MS", "FETCH_TIMEOUT_MS", "FETCH_MAX_BYTES", "FETCH_RETRIES",
        "FETCH_PROGRESS_MS", "FETCH_BACKOFF_MS", "FETCH_BACKOFF_MAX_MS", "FETCH_NOT_FOUND_BACKOFF_MS",
        "FETCH_REFRESH_MS"}) {
    keys.emplace_back(k);
  }
  return keys;
}

Result<ConfigValues> parse_config_text(std::string_view text, std::string_view origin) {
  ConfigValues values;
  std::size_t line_no = 0;
  while (!text.empty()) {
    const std::size_t nl = text.find('\n');
    std::string_view line = text.substr(0, nl);
    text = nl == std::string_view::npos ? std::string_view() : text.substr(nl + 1);
    ++line_no;
    line = trim(line);
    if (line.empty() || line.front() == '#') continue;
    const std::string where = std::string(origin) + ":" + std::to_string(line_no);
    if (line.starts_with("export ")) line = trim(line.substr(7));  // shell-style files
    // KEY=VALUE, or KEY: VALUE as Kepler's documentation writes MODEL_SERVER_ENABLE inside
    // MODEL_CONFIG (a YAML habit): whichever separator comes first. A URL value keeps its
    // own ':' and '=' because the key before them has neither.
    const std::size_t sep = line.find_first_of("=:");
    if (sep == std::string_view::npos) {
      return Status(Code::kInvalidArgument, where + ": expected KEY=VALUE, got \"" +
                                                std::string(line.substr(0, 80)) + "\"");
    }
    const std::string_view key = trim(line.substr(0, sep));
    std::string_view value = trim(line.substr(sep + 1));
    if (!valid_key(key)) {
      return Status(Code::kInvalidArgument,
                    where + ": \"" + std::string(key.substr(0, 80)) +
                        "\" is not a key (letters, digits and _ only)");
    }
    if (value.size() >= 2 && (value.front() == '"' || value.front() == '\'') &&
        value.back() == value.front()) {
      value = value.substr(1, value.size() - 2);
    }
    if (value.size() > kMaxValueBytes) {
      return Status(Code::kTooLarge, where + ": the value of " + std::string(key) + " is over " +
                                         std::to_string(kMaxValueBytes) + " bytes");
    }
    values.insert_or_assign(std::string(key), ConfigValue{std::string(value), where});
  }
  return values;
}

Result<ConfigValues> read_config_path(const fs::path& path) {
  std::error_code ec;
  if (!fs::is_directory(path, ec)) {
    auto text = read_small_file(path);
    if (!text.ok()) return text.status();
    return parse_config_text(*text, path.string());
  }
  // A ConfigMap mounted as a directory: one file per key. Kepler's kepler-cfm also holds
  // keys of its own (and perhaps large ones): only the keys the estimator reads are opened,
  // plus MODEL_CONFIG, whose KEY=VALUE lines are parsed as its own layer above the files.
  const std::vector<std::string> known = known_config_keys();
  ConfigValues values;
  ConfigValues model_config;
  fs::directory_iterator it(path, ec);
  if (ec) return Status(Code::kPermissionDenied, "cannot list config " + path.string() + ": " + ec.message());
  for (; it != fs::directory_iterator(); it.increment(ec)) {
    const std::string name = it->path().filename().string();
    std::error_code sec;
    if (name.starts_with('.') || !valid_key(name)) continue;
    const bool lines = name == "MODEL_CONFIG";
    if (!lines && std::find(known.begin(), known.end(), name) == known.end()) continue;
    // A ConfigMap's key is a symlink into its ..data directory: follow it.
    if (!fs::is_regular_file(it->path(), sec)) continue;
    auto text = read_small_file(it->path());
    if (!text.ok()) return text.status();
    if (lines) {
      auto parsed = parse_config_text(*text, it->path().string());
      if (!parsed.ok()) return parsed.status();
      model_config = std::move(*parsed);
      continue;
    }
    const std::string_view value = trim(*text);
    if (value.size() > kMaxValueBytes) {
      return Status(Code::kTooLarge, it->path().string() + " is over " +
                                         std::to_string(kMaxValueBytes) + " bytes");
    }
    values.insert_or_assign(name, ConfigValue{std::string(value), it->path().string()});
  }
  if (ec) return Status(Code::kPermissionDenied, "cannot list config " + path.string() + ": " + ec.message());
  merge(values, std::move(model_config));
  return values;
}

Result<ConfigValues> environment_config() {
  ConfigValues values;
  if (const char* model_config = std::getenv("MODEL_CONFIG"); model_config != nullptr) {
    auto lines = parse_config_text(model_config, "MODEL_CONFIG");
    if (!lines.ok()) return lines.status();
    values = std::move(*lines);
  }
  for (const std::string& key : known_config_keys()) {
    if (const char* v = std::getenv(key.c_str()); v != nullptr) {
      const std::string_view value = trim(v);
      if (value.empty()) continue;  // set but empty means unset, as in Kepler
      if (value.size() > kMaxValueBytes) {
        return Status(Code::kTooLarge, "environment variable " + key + " is over " +
                                           std::to_string(kMaxValueBytes) + " bytes");
      }
      values.insert_or_assign(key, ConfigValue{std::string(value), "environment"});
    }
  }
  return values;
}

Result<FetchConfig> make_fetch_config(const ConfigValues& values) {
  FetchConfig c;
  auto get = [&](std::string_view key) -> const ConfigValue* {
    auto it = values.find(key);
    // An empty value means "not set", as in Kepler's getConfig.
    return it == values.end() || it->second.value.empty() ? nullptr : &it->second;
  };

  for (std::size_t i = 0; i < kModelPrefixes.size(); ++i) {
    PrefixConfig& p = c.prefixes[i];
    p.prefix = kModelPrefixes[i];
    const PrefixInfo info = prefix_info(p.prefix);
    p.output_type = info.output_type;
    p.source = info.source;
    const std::string base(p.prefix);
    if (const ConfigValue* v = get(base + "_INIT_URL")) {
      if (Status s = check_url(*v, base + "_INIT_URL", true); !s.ok()) return s;
      p.init_url = v->value;
    }
    if (const ConfigValue* v = get(base + "_TRAINER")) {
      if (Status s = check_name(*v, base + "_TRAINER"); !s.ok()) return s;
      p.trainer = v->value;
    }
    if (const ConfigValue* v = get(base + "_FILTERS")) {
      if (Status s = check_filters(*v, base + "_FILTERS"); !s.ok()) return s;
      p.filters = v->value;
    }
  }

  if (const ConfigValue* v = get("MODEL_SERVER_ENABLE")) {
    auto b = parse_bool(*v, "MODEL_SERVER_ENABLE");
    if (!b.ok()) return b.status();
    c.model_server_enable = *b;
  }
  if (const ConfigValue* v = get("MODEL_SERVER_URL")) {
    if (Status s = check_url(*v, "MODEL_SERVER_URL", false); !s.ok()) return s;
    c.model_server_url = v->value;
    while (c.model_server_url.ends_with('/')) c.model_server_url.pop_back();
  } else if (const ConfigValue* port = get("MODEL_SERVER_PORT")) {
    // Kepler: a port given without a URL applies to the default service name.
    auto n = parse_int(*port, "MODEL_SERVER_PORT", 1, 65535);
    if (!n.ok()) return n.status();
    c.model_server_url = "http://kepler-model-server:" + std::to_string(*n);
  }
  if (const ConfigValue* v = get("MODEL_SERVER_MODEL_REQ_PATH")) {
    if (v->value.front() != '/' ||
        std::any_of(v->value.begin(), v->value.end(),
                    [](unsigned char ch) { return ch <= ' ' || ch == 0x7f || ch == '#'; })) {
      return bad(*v, "MODEL_SERVER_MODEL_REQ_PATH", "expected a path starting with /");
    }
    c.model_server_req_path = v->value;
  }
  if (const ConfigValue* v = get("MODEL_SERVER_NODE_TYPE")) {
    auto n = parse_int(*v, "MODEL_SERVER_NODE_TYPE", -1, 1000000);
    if (!n.ok()) return n.status();
    c.node_type = static_cast<int>(*n);
  }
  if (const ConfigValue* v = get("MODEL_SERVER_SEND_SPEC")) {
    auto b = parse_bool(*v, "MODEL_SERVER_SEND_SPEC");
    if (!b.ok()) return b.status();
    c.send_spec = *b;
  }
  if (const ConfigValue* v = get("MODEL_SERVER_FEATURES")) {
    std::vector<std::string> features;
    std::string_view rest = v->value;
    while (!rest.empty()) {
      const std::size_t comma = rest.find(',');
      const std::string_view f = trim(rest.substr(0, comma));
      rest = comma == std::string_view::npos ? std::string_view() : rest.substr(comma + 1);
      if (f.empty()) continue;
      if (!valid_key(f)) return bad(*v, "MODEL_SERVER_FEATURES", "expected feature names separated by commas");
      features.emplace_back(f);
    }
    if (features.empty()) return bad(*v, "MODEL_SERVER_FEATURES", "expected at least one feature name");
    c.start_features = std::move(features);
  }

  constexpr long long kHour = 3600LL * 1000;
  struct MsKey {
    const char* key;
    std::chrono::milliseconds* field;
    long long min, max;
  };
  for (const MsKey& k : {MsKey{"FETCH_CONNECT_TIMEOUT_MS", &c.connect_timeout, 1, kHour},
                         MsKey{"FETCH_TIMEOUT_MS", &c.total_timeout, 1, 24 * kHour},
                         MsKey{"FETCH_PROGRESS_MS", &c.progress_interval, 100, kHour},
                         MsKey{"FETCH_BACKOFF_MS", &c.backoff, 1, 24 * kHour},
                         MsKey{"FETCH_BACKOFF_MAX_MS", &c.backoff_max, 1, 24 * kHour},
                         MsKey{"FETCH_NOT_FOUND_BACKOFF_MS", &c.not_found_backoff, 1, 24 * kHour},
                         MsKey{"FETCH_REFRESH_MS", &c.refresh, 1, 7 * 24 * kHour}}) {
    if (const ConfigValue* v = get(k.key)) {
      auto ms = parse_ms(*v, k.key, k.min, k.max);
      if (!ms.ok()) return ms.status();
      *k.field = *ms;
    }
  }
  if (const ConfigValue* v = get("FETCH_MAX_BYTES")) {
    auto n = parse_int(*v, "FETCH_MAX_BYTES", 1024, 64LL << 20);
    if (!n.ok()) return n.status();
    c.max_bytes = static_cast<std::size_t>(*n);
  }
  if (const ConfigValue* v = get("FETCH_RETRIES")) {
    auto n = parse_int(*v, "FETCH_RETRIES", 0, 100);
    if (!n.ok()) return n.status();
    c.retries = static_cast<int>(*n);
  }
  if (c.backoff_max < c.backoff) c.backoff_max = c.backoff;
  return c;
}

Result<FetchConfig> load_fetch_config(const fs::path& file) {
  ConfigValues values;
  if (!file.empty()) {
    auto from_file = read_config_path(file);
    if (!from_file.ok()) return from_file.status();
    values = std::move(*from_file);
  }
  auto env = environment_config();
  if (!env.ok()) return env.status();
  merge(values, std::move(*env));
  return make_fetch_config(values);
}

std::string redact_url(std::string_view url) {
  const std::size_t scheme = url.find("://");
  if (scheme == std::string_view::npos) return std::string(url);
  const std::size_t host = scheme + 3;
  const std::size_t end = url.find_first_of("/?#", host);
  const std::size_t at = url.substr(0, end).rfind('@');
  if (at == std::string_view::npos || at < host) return std::string(url);
  return std::string(url.substr(0, host)) + "***@" + std::string(url.substr(at + 1));
}

}  // namespace estimator::service
