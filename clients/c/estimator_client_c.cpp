// SPDX-License-Identifier: Apache-2.0
// The C ABI (estimator_client.h) over the C++ client. No exception crosses it: every entry
// point converts failures, std::bad_alloc included, into a code and a message.
#define ESTIMATOR_CLIENT_BUILDING 1
#include "clients/c/estimator_client.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <memory>
#include <new>
#include <string>
#include <vector>

#include "clients/cpp/estimator_client.h"
#include "clients/cpp/spawned_daemon.h"

using estimator::Code;
using estimator::Status;

// The C enum mirrors common/status.h; a new Code must be added to both.
static_assert(ESTIMATOR_OK == static_cast<int>(Code::kOk));
static_assert(ESTIMATOR_INVALID_ARGUMENT == static_cast<int>(Code::kInvalidArgument));
static_assert(ESTIMATOR_NOT_FOUND == static_cast<int>(Code::kNotFound));
static_assert(ESTIMATOR_MISSING_FEATURES == static_cast<int>(Code::kMissingFeatures));
static_assert(ESTIMATOR_INVALID_VALUE == static_cast<int>(Code::kInvalidValue));
static_assert(ESTIMATOR_TOO_LARGE == static_cast<int>(Code::kTooLarge));
static_assert(ESTIMATOR_INCOMPATIBLE == static_cast<int>(Code::kIncompatible));
static_assert(ESTIMATOR_UNAVAILABLE == static_cast<int>(Code::kUnavailable));
static_assert(ESTIMATOR_DEADLINE_EXCEEDED == static_cast<int>(Code::kDeadlineExceeded));
static_assert(ESTIMATOR_RESOURCE_EXHAUSTED == static_cast<int>(Code::kResourceExhausted));
static_assert(ESTIMATOR_INTERNAL == static_cast<int>(Code::kInternal));
static_assert(ESTIMATOR_PERMISSION_DENIED == static_cast<int>(Code::kPermissionDenied));
static_assert(ESTIMATOR_INTEGRITY == static_cast<int>(Code::kIntegrity));

struct estimator_client {
  explicit estimator_client(estimator::client::ClientOptions o) : timeout(o.timeout), client(std::move(o)) {}
  std::chrono::milliseconds timeout;
  estimator::client::Client client;
};

struct estimator_reply {
  std::size_t rows = 0;
  std::size_t cols = 0;
  std::vector<float> powers;
  std::vector<std::string> components;
  std::string name, trainer, model_class, output_type, source;
  double mae = 0, mape = 0, core_ratio = 1;
};

struct estimator_daemon {
  std::unique_ptr<estimator::client::SpawnedDaemon> daemon;
  std::string shm_name;
};

namespace {

int report(estimator_error* error, Code code, std::string_view message) {
  if (error != nullptr) {
    error->code = static_cast<int>(code);
    const std::size_t n = std::min(message.size(), sizeof error->message - 1);
    std::memcpy(error->message, message.data(), n);
    error->message[n] = '\0';
  }
  return static_cast<int>(code);
}

int report(estimator_error* error, const Status& s) { return report(error, s.code(), s.message()); }

int ok(estimator_error* error) { return report(error, Code::kOk, ""); }

// Runs `body` (returning an int code) with every exception turned into a code.
template <typename Body>
int guarded(estimator_error* error, Body&& body) {
  try {
    return body();
  } catch (const std::bad_alloc&) {
    return report(error, Code::kResourceExhausted, "out of memory");
  } catch (const std::exception& e) {
    return report(error, Code::kInternal, std::string("unexpected exception: ") + e.what());
  } catch (...) {
    return report(error, Code::kInternal, "unexpected exception");
  }
}

std::string_view view(const char* s) { return s == nullptr ? std::string_view() : std::string_view(s); }

std::chrono::milliseconds ms_or(std::uint32_t ms, std::chrono::milliseconds fallback) {
  return ms == 0 ? fallback : std::chrono::milliseconds(ms);
}

// Names from a C array, refusing NULL entries (a C caller's likeliest mistake).
Status names(const char* const* in, std::size_t n, std::string_view what,
             std::vector<std::string_view>& out) {
  if (n > 0 && in == nullptr) return Status(Code::kInvalidArgument, std::string(what) + " is NULL");
  out.resize(n);
  for (std::size_t i = 0; i < n; ++i) {
    if (in[i] == nullptr) {
      return Status(Code::kInvalidArgument, std::string(what) + "[" + std::to_string(i) + "] is NULL");
    }
    out[i] = in[i];
  }
  return Status::Ok();
}

Status measured_span(const float* p, std::size_t n, std::string_view what,
                     std::span<const float>& out) {
  if (n > 0 && p == nullptr) {
    return Status(Code::kInvalidArgument, std::string(what) + " is NULL with count " + std::to_string(n));
  }
  out = n == 0 ? std::span<const float>() : std::span<const float>(p, n);
  return Status::Ok();
}

}  // namespace

extern "C" {

const char* estimator_code_name(int code) {
  if (code < 0 || code > static_cast<int>(Code::kIntegrity)) return "unknown";
  // code_name returns views of string literals, which are NUL-terminated.
  return estimator::code_name(static_cast<Code>(code)).data();
}

const char* estimator_version(void) { return ESTIMATOR_CLIENT_VERSION; }

int estimator_client_create(const estimator_client_options* options, estimator_client** out,
                            estimator_error* error) {
  return guarded(error, [&] {
    if (out == nullptr) return report(error, Code::kInvalidArgument, "out is NULL");
    *out = nullptr;
    estimator::client::ClientOptions o;
    if (options != nullptr) {
      o.shm_name = view(options->shm_name);
      o.timeout = ms_or(options->timeout_ms, o.timeout);
      if (options->spin_us != 0) o.spin = std::chrono::microseconds(options->spin_us);
    }
    *out = new estimator_client(std::move(o));
    return ok(error);
  });
}

void estimator_client_destroy(estimator_client* client) { delete client; }

const char* estimator_client_shm_name(const estimator_client* client) {
  return client == nullptr ? "" : client->client.shm_name().c_str();
}

int estimator_ping(estimator_client* client, uint32_t timeout_ms, estimator_error* error) {
  return guarded(error, [&] {
    if (client == nullptr) return report(error, Code::kInvalidArgument, "client is NULL");
    const auto timeout = ms_or(timeout_ms, client->timeout);
    Status s = client->client.ping(timeout);
    return s.ok() ? ok(error) : report(error, s);
  });
}

int estimator_estimate(estimator_client* client, const estimator_request* request,
                       estimator_reply** out, estimator_error* error) {
  return guarded(error, [&] {
    if (out == nullptr) return report(error, Code::kInvalidArgument, "out is NULL");
    *out = nullptr;
    if (client == nullptr) return report(error, Code::kInvalidArgument, "client is NULL");
    if (request == nullptr) return report(error, Code::kInvalidArgument, "request is NULL");
    const estimator_request& r = *request;
    if (r.rows > std::numeric_limits<std::uint32_t>::max() ||
        r.cols > std::numeric_limits<std::uint32_t>::max()) {
      return report(error, Code::kTooLarge, std::to_string(r.rows) + " x " + std::to_string(r.cols) + " matrix");
    }
    if (r.rows * r.cols > 0 && r.matrix == nullptr) {
      return report(error, Code::kInvalidArgument, "matrix is NULL for " + std::to_string(r.rows) + " rows");
    }
    std::vector<std::string_view> features;
    if (Status s = names(r.features, r.cols, "features", features); !s.ok()) return report(error, s);

    std::vector<estimator::NodePower> node_power(r.node_power_count);
    if (r.node_power_count > 0 && r.node_power == nullptr) {
      return report(error, Code::kInvalidArgument, "node_power is NULL");
    }
    for (std::size_t i = 0; i < r.node_power_count; ++i) {
      const estimator_node_power& np = r.node_power[i];
      const std::string where = "node_power[" + std::to_string(i) + "]";
      if (np.component == nullptr) return report(error, Code::kInvalidArgument, where + ".component is NULL");
      node_power[i].component = np.component;
      if (Status s = measured_span(np.watts, np.watts_count, where + ".watts", node_power[i].watts); !s.ok()) {
        return report(error, s);
      }
      if (Status s = measured_span(np.idle_watts, np.idle_count, where + ".idle_watts", node_power[i].idle_watts);
          !s.ok()) {
        return report(error, s);
      }
    }
    std::vector<estimator::SystemValue> system_values(r.system_value_count);
    if (r.system_value_count > 0 && r.system_values == nullptr) {
      return report(error, Code::kInvalidArgument, "system_values is NULL");
    }
    for (std::size_t i = 0; i < r.system_value_count; ++i) {
      if (r.system_values[i].name == nullptr || r.system_values[i].value == nullptr) {
        return report(error, Code::kInvalidArgument,
                      "system_values[" + std::to_string(i) + "] has a NULL name or value");
      }
      system_values[i] = {r.system_values[i].name, r.system_values[i].value};
    }

    estimator::client::Request req;
    req.selector = {view(r.model_name), view(r.trainer), view(r.output_type), view(r.source),
                    view(r.filter)};
    req.features = features;
    req.matrix = r.matrix;
    req.rows = static_cast<std::uint32_t>(r.rows);
    req.cols = static_cast<std::uint32_t>(r.cols);
    req.node_power = node_power;
    req.system_values = system_values;
    auto reply = r.timeout_ms == 0 ? client->client.estimate(req)
                                   : client->client.estimate(req, std::chrono::milliseconds(r.timeout_ms));
    if (!reply.ok()) return report(error, reply.status());

    // Copied out so that the slot is free again before we return: a C caller (or a Python
    // object waiting for the garbage collector) may keep a reply for a long time.
    auto res = std::make_unique<estimator_reply>();
    res->rows = reply->rows();
    res->cols = reply->cols();
    res->powers.assign(reply->powers().begin(), reply->powers().end());
    res->components.reserve(res->cols);
    for (std::uint32_t c = 0; c < reply->cols(); ++c) res->components.emplace_back(reply->component(c));
    const auto& m = reply->model();
    res->name = m.name;
    res->trainer = m.trainer;
    res->model_class = m.model_class;
    res->output_type = m.output_type;
    res->source = m.source;
    res->mae = m.mae;
    res->mape = m.mape;
    res->core_ratio = m.core_ratio;
    *out = res.release();
    return ok(error);
  });
}

void estimator_reply_destroy(estimator_reply* reply) { delete reply; }

size_t estimator_reply_rows(const estimator_reply* reply) { return reply == nullptr ? 0 : reply->rows; }
size_t estimator_reply_cols(const estimator_reply* reply) { return reply == nullptr ? 0 : reply->cols; }

const float* estimator_reply_powers(const estimator_reply* reply) {
  return reply == nullptr ? nullptr : reply->powers.data();
}

const char* estimator_reply_component(const estimator_reply* reply, size_t col) {
  if (reply == nullptr || col >= reply->components.size()) return "";
  return reply->components[col].c_str();
}

estimator_model_info estimator_reply_model(const estimator_reply* reply) {
  if (reply == nullptr) {
    const double nan = std::numeric_limits<double>::quiet_NaN();
    return {"", "", "", "", "", nan, nan, 1.0};
  }
  return {reply->name.c_str(),        reply->trainer.c_str(), reply->model_class.c_str(),
          reply->output_type.c_str(), reply->source.c_str(),  reply->mae,
          reply->mape,                reply->core_ratio};
}

int estimator_get_power(estimator_client* client, const char* model_name,
                        const char* const* features, size_t cols, const float* values,
                        size_t rows, const estimator_measured_power* measured,
                        double* powers_out, estimator_error* error) {
  return guarded(error, [&] {
    if (client == nullptr) return report(error, Code::kInvalidArgument, "client is NULL");
    if (rows > 0 && (values == nullptr || powers_out == nullptr)) {
      return report(error, Code::kInvalidArgument, "values or powers_out is NULL");
    }
    if (cols > 0 && rows > std::numeric_limits<std::size_t>::max() / cols) {
      return report(error, Code::kTooLarge, std::to_string(rows) + " rows");
    }
    std::vector<std::string_view> names_v;
    if (Status s = names(features, cols, "features", names_v); !s.ok()) return report(error, s);
    std::span<const float> core, dram, gpu, other;
    if (measured != nullptr) {
      Status s = measured_span(measured->core, measured->core_count, "core", core);
      if (s.ok()) s = measured_span(measured->dram, measured->dram_count, "dram", dram);
      if (s.ok()) s = measured_span(measured->gpu, measured->gpu_count, "gpu", gpu);
      if (s.ok()) s = measured_span(measured->other, measured->other_count, "other", other);
      if (!s.ok()) return report(error, s);
    }
    const std::span<const float> matrix =
        rows * cols == 0 ? std::span<const float>() : std::span<const float>(values, rows * cols);
    auto totals = client->client.get_power(view(model_name), names_v, matrix, core, dram, gpu, other);
    if (!totals.ok()) return report(error, totals.status());
    // get_power derives rows from the matrix size; with no values at all it sees none.
    if (totals->size() != rows) {
      return report(error, Code::kInvalidArgument,
                    "get_power: " + std::to_string(rows) + " rows of " + std::to_string(cols) + " features");
    }
    std::copy(totals->begin(), totals->end(), powers_out);
    return ok(error);
  });
}

int estimator_daemon_spawn(const estimator_daemon_options* options, estimator_daemon** out,
                           estimator_error* error) {
  return guarded(error, [&] {
    if (out == nullptr) return report(error, Code::kInvalidArgument, "out is NULL");
    *out = nullptr;
    estimator::client::SpawnOptions o;
    if (options != nullptr) {
      o.binary = view(options->binary);
      o.shm_name = view(options->shm_name);
      if (options->extra_arg_count > 0 && options->extra_args == nullptr) {
        return report(error, Code::kInvalidArgument, "extra_args is NULL");
      }
      for (std::size_t i = 0; i < options->extra_arg_count; ++i) {
        if (options->extra_args[i] == nullptr) {
          return report(error, Code::kInvalidArgument, "extra_args[" + std::to_string(i) + "] is NULL");
        }
        o.extra_args.emplace_back(options->extra_args[i]);
      }
      if (options->log_level != nullptr && *options->log_level != '\0') o.log_level = options->log_level;
      o.start_timeout = ms_or(options->start_timeout_ms, o.start_timeout);
      o.stop_timeout = ms_or(options->stop_timeout_ms, o.stop_timeout);
    }
    auto started = estimator::client::SpawnedDaemon::start(std::move(o));
    if (!started.ok()) return report(error, started.status());
    auto d = std::make_unique<estimator_daemon>();
    d->daemon = std::move(started).value();
    d->shm_name = d->daemon->shm_name();
    *out = d.release();
    return ok(error);
  });
}

const char* estimator_daemon_shm_name(const estimator_daemon* daemon) {
  return daemon == nullptr ? "" : daemon->shm_name.c_str();
}

int64_t estimator_daemon_pid(const estimator_daemon* daemon) {
  return daemon == nullptr ? -1 : static_cast<int64_t>(daemon->daemon->pid());
}

int estimator_daemon_stop(estimator_daemon* daemon, int* wait_status, estimator_error* error) {
  return guarded(error, [&] {
    if (daemon == nullptr) return report(error, Code::kInvalidArgument, "daemon is NULL");
    auto status = daemon->daemon->stop();
    if (!status.ok()) return report(error, status.status());
    if (wait_status != nullptr) *wait_status = *status;
    return ok(error);
  });
}

void estimator_daemon_destroy(estimator_daemon* daemon) {
  try {
    delete daemon;
  } catch (...) {
    // Nothing can be reported from a destroy; the child is reaped by stop() regardless.
  }
}

}  // extern "C"
