// SPDX-License-Identifier: Apache-2.0
// A C++ program built against the *installed* C++ client (pkg-config estimator-client-cpp or
// find_package(EstimatorClient)): estimates two rows on a running estimatord and checks
// that GetPower's totals agree with the estimate.
// usage: consumer_cpp <segment name>; prints "ok <model> <components>" and exits 0.
#include <cmath>
#include <cstdio>
#include <string>
#include <string_view>
#include <vector>

#include "clients/cpp/estimator_client.h"

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s <segment name>\n", argv[0]);
    return 2;
  }
  estimator::client::Client client({.shm_name = argv[1]});
  const std::string_view features[] = {"bpf_cpu_time_ms", "bpf_page_cache_hit"};
  const float rows[] = {1200.f, 3.f, 80.f, 0.f};
  auto reply = client.estimate({.selector = {.output_type = "AbsPower", .source = "rapl-sysfs"},
                                .features = features, .matrix = rows, .rows = 2, .cols = 2});
  if (!reply.ok()) {
    std::fprintf(stderr, "estimate: %s\n", reply.status().to_string().c_str());
    return 1;
  }
  std::printf("ok %s", std::string(reply->model().name).c_str());
  for (std::uint32_t c = 0; c < reply->cols(); ++c) {
    std::printf(" %s", std::string(reply->component(c)).c_str());
  }
  std::printf("\n");
  auto totals = client.get_power("", features, rows);
  if (!totals.ok() || totals->size() != 2) {
    std::fprintf(stderr, "get_power: %s\n", totals.status().to_string().c_str());
    return 1;
  }
  // GetPower's total of a rapl model is package + dram (common/power_total.h).
  const double want = double{reply->power(0, 0)} + double{reply->power(0, reply->cols() - 1)};
  if (std::fabs((*totals)[0] - want) > 1e-3) {
    std::fprintf(stderr, "get_power %f, estimate package + dram %f\n", (*totals)[0], want);
    return 1;
  }
  return 0;
}
