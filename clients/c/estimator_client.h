/* SPDX-License-Identifier: Apache-2.0 */
/* The C interface of the estimator client (libestimator_client.so), for C programs and
 * for the Python (ctypes) and Go (cgo) clients. Plain C99, no C++ types.
 *
 *   estimator_client* client = NULL;
 *   estimator_error err;
 *   if (estimator_client_create(NULL, &client, &err) != ESTIMATOR_OK) { ... }
 *   const char* features[] = {"bpf_cpu_time_ms", "bpf_page_cache_hit"};
 *   float rows[] = {1200.f, 3.f,   80.f, 0.f};            // 2 workloads x 2 features
 *   estimator_request req = {0};
 *   req.features = features; req.cols = 2; req.matrix = rows; req.rows = 2;
 *   estimator_reply* reply = NULL;
 *   if (estimator_estimate(client, &req, &reply, &err) != ESTIMATOR_OK) {
 *     fprintf(stderr, "%s: %s\n", estimator_code_name(err.code), err.message);
 *   } else {
 *     const float* p = estimator_reply_powers(reply);     // rows x cols, row-major
 *     ...
 *     estimator_reply_destroy(reply);
 *   }
 *   estimator_client_destroy(client);
 *
 * Errors: every fallible call returns an estimator_code (ESTIMATOR_OK = 0) and, when
 * `error` is not NULL, fills it with the same code and a message for a human. The error
 * lives in the caller's memory, not in thread-local state, because a cgo call may run on
 * a different OS thread than the next one.
 *
 * Threads: a client may be used from many threads at once; replies and daemons are
 * single-owner objects. Every string the library returns is NUL-terminated UTF-8 owned
 * by the object it came from. The struct layouts below are part of the ABI: changing one
 * bumps the library's SOVERSION.
 */
#ifndef ESTIMATOR_CLIENT_H
#define ESTIMATOR_CLIENT_H

#include <stddef.h>
#include <stdint.h>

#if defined(ESTIMATOR_CLIENT_BUILDING)
#define ESTIMATOR_CLIENT_API __attribute__((visibility("default")))
#else
#define ESTIMATOR_CLIENT_API
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* Status codes; the values are the daemon's wire codes and never change. */
typedef enum estimator_code {
  ESTIMATOR_OK = 0,
  ESTIMATOR_INVALID_ARGUMENT = 1,   /* malformed request: shapes, NULL pointers, syntax */
  ESTIMATOR_NOT_FOUND = 2,          /* no model with that name / no model fits */
  ESTIMATOR_MISSING_FEATURES = 3,   /* the chosen model needs features the request lacks */
  ESTIMATOR_INVALID_VALUE = 4,      /* NaN or infinite values where numbers are required */
  ESTIMATOR_TOO_LARGE = 5,          /* request or reply exceeds the slot size */
  ESTIMATOR_INCOMPATIBLE = 6,       /* layout or schema version mismatch */
  ESTIMATOR_UNAVAILABLE = 7,        /* no daemon answers (not running, died, restarting) */
  ESTIMATOR_DEADLINE_EXCEEDED = 8,  /* the daemon is alive but did not answer in time */
  ESTIMATOR_RESOURCE_EXHAUSTED = 9, /* no free slot, /dev/shm full, out of memory */
  ESTIMATOR_INTERNAL = 10,          /* a bug: an invariant did not hold */
  ESTIMATOR_PERMISSION_DENIED = 11, /* the OS refused access */
  ESTIMATOR_INTEGRITY = 12          /* replies failed their seal: another process wrote the slot */
} estimator_code;

#define ESTIMATOR_ERROR_MESSAGE_SIZE 1024

/* Filled by failing calls; a longer message is cut at ESTIMATOR_ERROR_MESSAGE_SIZE - 1
 * bytes. On success, code is ESTIMATOR_OK and message is "". */
typedef struct estimator_error {
  int code; /* an estimator_code */
  char message[ESTIMATOR_ERROR_MESSAGE_SIZE];
} estimator_error;

/* "ok", "invalid_argument", ... (the names the daemon's logs and metrics use). */
ESTIMATOR_CLIENT_API const char* estimator_code_name(int code);
/* The library's version, "MAJOR.MINOR.PATCH". */
ESTIMATOR_CLIENT_API const char* estimator_version(void);

/* ---- client ------------------------------------------------------------------------ */

typedef struct estimator_client estimator_client;

typedef struct estimator_client_options {
  const char* shm_name; /* NULL or "": the daemon's default, "estimator-<user>" */
  uint32_t timeout_ms;  /* deadline of each call; 0: 1000 ms */
  uint32_t spin_us;     /* spin this long for the answer before sleeping; 0: 50 us */
} estimator_client_options;

/* `options` may be NULL (all defaults). Does not contact the daemon: the client attaches
 * on first use and re-attaches by itself after a daemon restart. */
ESTIMATOR_CLIENT_API int estimator_client_create(const estimator_client_options* options,
                                                 estimator_client** out,
                                                 estimator_error* error);
ESTIMATOR_CLIENT_API void estimator_client_destroy(estimator_client* client);
/* The segment name in use (the default resolved). */
ESTIMATOR_CLIENT_API const char* estimator_client_shm_name(const estimator_client* client);

/* ESTIMATOR_OK when a daemon answers within timeout_ms (0: the client's timeout). */
ESTIMATOR_CLIENT_API int estimator_ping(estimator_client* client, uint32_t timeout_ms,
                                        estimator_error* error);

/* ---- estimate ---------------------------------------------------------------------- */

/* Measured node power of one component ("package", "core", "dram", "platform", ...) in
 * watts, one value per CPU package; idle may be NULL. */
typedef struct estimator_node_power {
  const char* component;
  const float* watts;
  size_t watts_count;
  const float* idle_watts;
  size_t idle_count;
} estimator_node_power;

/* A categorical feature of the node, e.g. {"cpu_architecture", "Sky Lake"}. */
typedef struct estimator_system_value {
  const char* name;
  const char* value;
} estimator_system_value;

/* Zero-initialise, then set what you need. NULL or "" selector strings mean "any": the
 * smallest-error model that fits wins. */
typedef struct estimator_request {
  const char* model_name;
  const char* trainer;
  const char* output_type; /* "AbsPower" or "DynPower" */
  const char* source;      /* "rapl-sysfs" (alias intel_rapl), "acpi", ... */
  const char* filter;      /* Kepler's "mae:0.5;mape:10" */
  const char* const* features; /* cols names */
  size_t cols;
  const float* matrix; /* rows x cols, row-major; read, never kept */
  size_t rows;
  const estimator_node_power* node_power;
  size_t node_power_count;
  const estimator_system_value* system_values;
  size_t system_value_count;
  uint32_t timeout_ms; /* 0: the client's timeout */
} estimator_request;

/* The answer, copied out of shared memory (holding it holds no daemon resource). */
typedef struct estimator_reply estimator_reply;

ESTIMATOR_CLIENT_API int estimator_estimate(estimator_client* client,
                                            const estimator_request* request,
                                            estimator_reply** out, estimator_error* error);
ESTIMATOR_CLIENT_API void estimator_reply_destroy(estimator_reply* reply);

ESTIMATOR_CLIENT_API size_t estimator_reply_rows(const estimator_reply* reply);
/* Number of components (columns of the powers). */
ESTIMATOR_CLIENT_API size_t estimator_reply_cols(const estimator_reply* reply);
/* rows x cols watts, row-major. */
ESTIMATOR_CLIENT_API const float* estimator_reply_powers(const estimator_reply* reply);
/* Component name of column `col` ("package", "core", ..., "platform"); "" out of range. */
ESTIMATOR_CLIENT_API const char* estimator_reply_component(const estimator_reply* reply,
                                                           size_t col);

/* The model that answered. */
typedef struct estimator_model_info {
  const char* name;
  const char* trainer;
  const char* model_class;
  const char* output_type;
  const char* source;
  double mae;  /* NaN when not published */
  double mape; /* NaN when not published */
  double core_ratio;
} estimator_model_info;
/* Strings point into the reply. */
ESTIMATOR_CLIENT_API estimator_model_info estimator_reply_model(const estimator_reply* reply);

/* ---- GetPower (Kepler's 2022 call) ------------------------------------------------- */

/* Measured power per CPU package of each component; a NULL pointer or count 0 means
 * "not measured". They become the request's node power (components core, dram, gpu,
 * other), which the ratio model splits among the rows. */
typedef struct estimator_measured_power {
  const float* core;
  size_t core_count;
  const float* dram;
  size_t dram_count;
  const float* gpu;
  size_t gpu_count;
  const float* other;
  size_t other_count;
} estimator_measured_power;

/* One total power in watts per row into powers_out[0..rows). The total of a row is
 * platform when the model gives it, else package (or core + uncore) + dram + gpu +
 * other; a model with a single component gives it directly. model_name NULL or "":
 * the smallest-error model that fits. measured may be NULL. */
ESTIMATOR_CLIENT_API int estimator_get_power(estimator_client* client, const char* model_name,
                                             const char* const* features, size_t cols,
                                             const float* values, size_t rows,
                                             const estimator_measured_power* measured,
                                             double* powers_out, estimator_error* error);

/* ---- a private daemon ---------------------------------------------------------------- */

/* An estimatord run as a child of this process, stopped with it (it also gets SIGTERM
 * when this process dies). */
typedef struct estimator_daemon estimator_daemon;

typedef struct estimator_daemon_options {
  const char* binary;   /* NULL: $ESTIMATORD, next to the executable, then $PATH */
  const char* shm_name; /* NULL: a private name */
  const char* const* extra_args; /* more estimatord arguments, e.g. "--model-dir", "/m" */
  size_t extra_arg_count;
  const char* log_level;     /* NULL: "warn"; the daemon logs to this process's stderr */
  uint32_t start_timeout_ms; /* 0: 10000 */
  uint32_t stop_timeout_ms;  /* 0: 5000, then SIGKILL */
} estimator_daemon_options;

/* Returns once the daemon answers a ping. `options` may be NULL. */
ESTIMATOR_CLIENT_API int estimator_daemon_spawn(const estimator_daemon_options* options,
                                                estimator_daemon** out,
                                                estimator_error* error);
ESTIMATOR_CLIENT_API const char* estimator_daemon_shm_name(const estimator_daemon* daemon);
/* The daemon's pid; -1 once stopped. */
ESTIMATOR_CLIENT_API int64_t estimator_daemon_pid(const estimator_daemon* daemon);
/* SIGTERM, wait up to the stop timeout, SIGKILL, reap. wait_status (may be NULL) gets the
 * status waitpid reported. Calling it again reports the same. */
ESTIMATOR_CLIENT_API int estimator_daemon_stop(estimator_daemon* daemon, int* wait_status,
                                               estimator_error* error);
/* Stops the daemon if still running, and frees. */
ESTIMATOR_CLIENT_API void estimator_daemon_destroy(estimator_daemon* daemon);

#ifdef __cplusplus
}
#endif

#endif /* ESTIMATOR_CLIENT_H */
