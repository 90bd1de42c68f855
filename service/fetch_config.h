// SPDX-License-Identifier: Apache-2.0
// What the daemon fetches in the background and from where: the keys Kepler's Python
// estimator reads (<PREFIX>_INIT_URL, <PREFIX>_TRAINER, <PREFIX>_FILTERS, MODEL_SERVER_*)
// plus our own transfer limits (FETCH_*).
//
// Keys come from three layers, later ones winning: a `--config FILE` of KEY=VALUE lines
// (or a directory holding one file per key, as a mounted ConfigMap), then the lines of the
// MODEL_CONFIG environment variable (Kepler's manifests pass the ConfigMap that way), then
// individual environment variables. Keys the estimator does not know are ignored: the
// file is often Kepler's whole configuration. A known key with a bad value is an error
// that names the key and where it came from.
#pragma once

#include <array>
#include <chrono>
#include <cstddef>
#include <filesystem>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace estimator::service {

// One of Kepler's model prefixes: which level (node: AbsPower, idle included; container and
// process: DynPower) and which meter (TOTAL: the platform, acpi; COMPONENTS: RAPL).
struct PrefixConfig {
  std::string_view prefix;       // "NODE_COMPONENTS"
  std::string_view output_type;  // "AbsPower" or "DynPower"
  std::string_view source;       // "rapl-sysfs" or "acpi"
  std::string init_url;          // http://, https:// or file:// (empty: none)
  std::string trainer;           // model-server trainer_name (empty: any)
  std::string filters;           // "mae:0.5;mape:10" (empty: none)

  // True when any of the three keys was given.
  bool configured() const { return !init_url.empty() || !trainer.empty() || !filters.empty(); }
};

// The six prefixes, in Kepler's order.
inline constexpr std::array<std::string_view, 6> kModelPrefixes = {
    "NODE_TOTAL",      "NODE_COMPONENTS",    "CONTAINER_TOTAL",
    "CONTAINER_COMPONENTS", "PROCESS_TOTAL", "PROCESS_COMPONENTS"};

struct FetchConfig {
  std::array<PrefixConfig, 6> prefixes{};  // in kModelPrefixes order

  bool model_server_enable = false;                                  // MODEL_SERVER_ENABLE
  std::string model_server_url = "http://kepler-model-server:8100";  // MODEL_SERVER_URL
  std::string model_server_req_path = "/model";                      // MODEL_SERVER_MODEL_REQ_PATH
  int node_type = -1;                 // MODEL_SERVER_NODE_TYPE (-1: any)
  bool send_spec = true;              // MODEL_SERVER_SEND_SPEC: {"spec": {"cores": N}}
  // Features named in the start-up model-server requests (MODEL_SERVER_FEATURES, comma
  // separated); the request path asks again with a request's own features when needed.
  std::vector<std::string> start_features = {"bpf_cpu_time_ms", "bpf_page_cache_hit",
                                             "bpf_net_tx_irq", "bpf_net_rx_irq",
                                             "bpf_block_irq"};

  std::chrono::milliseconds connect_timeout{5000};  // FETCH_CONNECT_TIMEOUT_MS
  std::chrono::milliseconds total_timeout{60000};   // FETCH_TIMEOUT_MS
  std::size_t max_bytes = 64U << 20U;                // FETCH_MAX_BYTES (the scanner's limit)
  int retries = 4;                                   // FETCH_RETRIES: attempts after the first
  // A download still running logs its progress (bytes, total, rate) this often.
  std::chrono::milliseconds progress_interval{5000};  // FETCH_PROGRESS_MS
  std::chrono::milliseconds backoff{1000};           // FETCH_BACKOFF_MS: first retry delay
  std::chrono::milliseconds backoff_max{60000};      // FETCH_BACKOFF_MAX_MS: retry delay cap
  // After the model server answers "no model" (400/404) for a query, the same query is
  // not asked again before this (doubling on each further refusal, up to 16 times it).
  std::chrono::milliseconds not_found_backoff{600000};  // FETCH_NOT_FOUND_BACKOFF_MS
  // A query that landed a model is not asked again before this.
  std::chrono::milliseconds refresh{3600000};  // FETCH_REFRESH_MS

  // Anything to fetch at all: an INIT_URL, or the model server.
  bool enabled() const;
  const PrefixConfig* find(std::string_view prefix) const;
};

// KEY -> (value, where it came from: "config.env:3", "environment").
struct ConfigValue {
  std::string value;
  std::string origin;
};
using ConfigValues = std::map<std::string, ConfigValue, std::less<>>;

// Parses KEY=VALUE lines (or KEY: VALUE, as Kepler's docs show MODEL_SERVER_ENABLE: "true"
// inside MODEL_CONFIG; the first '=' or ':' separates): blank lines and lines starting with
// # are skipped, key and value are trimmed, the value may contain '=' and ':' (URLs) and
// may be wrapped in matching quotes.
// `origin` names the text in messages ("/etc/estimator.conf", "MODEL_CONFIG").
Result<ConfigValues> parse_config_text(std::string_view text, std::string_view origin);

// A file of KEY=VALUE lines, or a directory with one file per key, as Kepler mounts its
// kepler-cfm ConfigMap at /etc/kepler/kepler.config: the trimmed contents of each known
// key's file are its value, the lines of its MODEL_CONFIG file are parsed and win over the
// files, other keys are never opened, hidden entries such as ConfigMap's ..data are skipped.
Result<ConfigValues> read_config_path(const std::filesystem::path& path);

// The known keys present in the environment, and MODEL_CONFIG's lines.
Result<ConfigValues> environment_config();

// Builds the configuration from merged values; a bad value is an error naming its key.
Result<FetchConfig> make_fetch_config(const ConfigValues& values);

// read_config_path(file) (when file is not empty) < MODEL_CONFIG < environment, then
// make_fetch_config.
Result<FetchConfig> load_fetch_config(const std::filesystem::path& file);

// Every key make_fetch_config reads (documentation, and the environment scan).
std::vector<std::string> known_config_keys();

// The URL with any user:password@ removed, for logs.
std::string redact_url(std::string_view url);

}  // namespace estimator::service
