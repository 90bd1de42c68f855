/* SPDX-License-Identifier: Apache-2.0 */
/* A C program built against the *installed* estimator client (pkg-config or
 * find_package): spawns a private estimatord, estimates, calls GetPower, stops it.
 * usage: consumer <estimatord>; prints "ok <model> <components> <total>" and exits 0. */
#include <estimator_client.h>
#include <stdio.h>
#include <sys/wait.h>

static int fail(const char* what, const estimator_error* err) {
  fprintf(stderr, "%s: %s: %s\n", what, estimator_code_name(err->code), err->message);
  return 1;
}

int main(int argc, char** argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: %s <estimatord>\n", argv[0]);
    return 2;
  }
  estimator_error err;
  estimator_daemon_options dopt = {0};
  dopt.binary = argv[1];
  estimator_daemon* daemon = NULL;
  if (estimator_daemon_spawn(&dopt, &daemon, &err) != ESTIMATOR_OK) return fail("spawn", &err);

  estimator_client_options copt = {0};
  copt.shm_name = estimator_daemon_shm_name(daemon);
  estimator_client* client = NULL;
  if (estimator_client_create(&copt, &client, &err) != ESTIMATOR_OK) return fail("client", &err);

  const char* features[] = {"bpf_cpu_time_ms", "bpf_page_cache_hit"};
  const float rows[] = {1200.f, 3.f, 80.f, 0.f};
  estimator_request req = {0};
  req.output_type = "AbsPower";
  req.source = "rapl-sysfs";
  req.features = features;
  req.cols = 2;
  req.matrix = rows;
  req.rows = 2;
  estimator_reply* reply = NULL;
  if (estimator_estimate(client, &req, &reply, &err) != ESTIMATOR_OK) return fail("estimate", &err);
  const estimator_model_info model = estimator_reply_model(reply);
  printf("ok %s", model.name);
  for (size_t c = 0; c < estimator_reply_cols(reply); ++c) printf(" %s", estimator_reply_component(reply, c));

  double totals[2];
  if (estimator_get_power(client, NULL, features, 2, rows, 2, NULL, totals, &err) != ESTIMATOR_OK) {
    return fail("get_power", &err);
  }
  const float* p = estimator_reply_powers(reply);
  const size_t cols = estimator_reply_cols(reply);
  /* package + dram of row 0 */
  const double want = (double)p[0] + (double)p[cols - 1];
  printf(" %.3f\n", totals[0]);
  estimator_reply_destroy(reply);
  estimator_client_destroy(client);

  int status = -1;
  if (estimator_daemon_stop(daemon, &status, &err) != ESTIMATOR_OK) return fail("stop", &err);
  estimator_daemon_destroy(daemon);
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    fprintf(stderr, "daemon wait status %d\n", status);
    return 1;
  }
  if (totals[0] - want > 1e-3 || want - totals[0] > 1e-3) {
    fprintf(stderr, "get_power %f, estimate package + dram %f\n", totals[0], want);
    return 1;
  }
  return 0;
}
