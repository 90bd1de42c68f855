// SPDX-License-Identifier: Apache-2.0
// The daemon's request handling with the embedded default models: values against the
// Kepler formula computed by hand, and every kind of bad request answered with an error
// that says what was wrong.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "models/embedded_defaults.h"
#include "models/registry.h"
#include "service/request_handler.h"

namespace estimator::service {
namespace {

// Kepler v0.9.0 default rapl AbsPower weights (data/model/README.md): package bias
// 143.81206324506658, bpf_cpu_time_ms weight 305.148172889668 / scale 95877.00000000001;
// dram bias 18.616285480502686, weight 8.434209551249596 / same scale.
double package_abs(double cpu_ms) { return 143.81206324506658 + 305.148172889668 * cpu_ms / 95877.00000000001; }
double dram_abs(double cpu_ms) { return 18.616285480502686 + 8.434209551249596 * cpu_ms / 95877.00000000001; }

class RequestHandlerTest : public ::testing::Test {
 protected:
  RequestHandlerTest()
      : holder(models::Registry::build(models::embedded_model_folders())), sut(holder, 1 << 16, 1 << 15) {}

  struct Answer {
    Code status;
    std::string message;
    std::vector<std::string> components;
    std::vector<float> powers;
    std::uint32_t rows = 0, cols = 0;
    std::string model;
  };

  Answer call(wire::RequestSpec spec) {
    auto built = wire::build_request(spec, {area, sizeof area});
    EXPECT_TRUE(built.ok()) << built.status().to_string();
    if (!built.ok()) return {built.status().code(), built.status().message(), {}, {}, 0, 0, {}};
    return decode(sut.handle(*built), spec.request_id);
  }

  Answer decode(std::span<const std::uint8_t> bytes, std::uint64_t id) {
    std::vector<std::uint8_t> copy(bytes.begin(), bytes.end());
    auto r = wire::read_response(copy);
    EXPECT_TRUE(r.ok());
    Answer a{r->status, std::string(r->message), {}, {}, r->rows, r->cols, {}};
    EXPECT_EQ(r->request_id, id);
    if (r->components) for (const auto* c : *r->components) a.components.emplace_back(wire::view_of(c));
    if (r->powers) a.powers.assign(r->powers, r->powers + std::size_t{r->rows} * r->cols);
    if (r->model) a.model = wire::view_of(r->model->name());
    return a;
  }

  wire::RequestSpec spec(std::span<const std::string_view> names, const std::vector<float>& m,
                         std::uint32_t rows) {
    wire::RequestSpec s;
    s.request_id = ++next_id;
    s.output_type = "AbsPower";
    s.source = "intel_rapl";  // alias of rapl-sysfs
    s.feature_names = names;
    s.matrix = m.data();
    s.rows = rows;
    s.cols = static_cast<std::uint32_t>(names.size());
    return s;
  }

  RegistryHolder holder;
  RequestHandler sut;
  alignas(64) std::uint8_t area[1 << 16];
  std::uint64_t next_id = 100;
};

TEST_F(RequestHandlerTest, DefaultRaplModelFollowsTheKeplerFormula) {
  const std::string_view names[] = {"bpf_cpu_time_ms", "bpf_page_cache_hit", "cpu_cycles"};
  const std::vector<float> m{1000, 5, 123456, 0, 0, 0, 95877, 1, 9};
  const Answer a = call(spec(names, m, 3));
  ASSERT_EQ(a.status, Code::kOk) << a.message;
  ASSERT_EQ(a.rows, 3u);
  ASSERT_EQ(a.components, (std::vector<std::string>{"package", "core", "uncore", "dram"}));
  for (int r = 0; r < 3; ++r) {
    const double cpu = m[3 * r];
    EXPECT_NEAR(a.powers[4 * r + 0], package_abs(cpu), 1e-5 * package_abs(cpu));
    EXPECT_EQ(a.powers[4 * r + 1], 0.0f);
    EXPECT_EQ(a.powers[4 * r + 2], 0.0f);
    EXPECT_NEAR(a.powers[4 * r + 3], dram_abs(cpu), 1e-5 * dram_abs(cpu));
  }
  EXPECT_EQ(a.model, "SGDRegressorTrainer_0");
}

TEST_F(RequestHandlerTest, ColumnsAreMatchedByNameInAnyOrder) {
  const std::string_view a_names[] = {"bpf_cpu_time_ms", "bpf_page_cache_hit"};
  const std::string_view b_names[] = {"bpf_page_cache_hit", "extra", "bpf_cpu_time_ms"};
  const Answer a = call(spec(a_names, {2000, 7}, 1));
  const Answer b = call(spec(b_names, {7, 99, 2000}, 1));  // second shape: new plan
  const Answer c = call(spec(a_names, {2000, 7}, 1));      // first shape again: cached plan
  ASSERT_EQ(a.status, Code::kOk);
  ASSERT_EQ(b.status, Code::kOk);
  EXPECT_EQ(a.powers, b.powers);
  EXPECT_EQ(a.powers, c.powers);
  EXPECT_NEAR(a.powers[0], package_abs(2000), 1e-4);
}

TEST_F(RequestHandlerTest, UnknownModelIsNotFound) {
  const std::string_view names[] = {"bpf_cpu_time_ms", "bpf_page_cache_hit"};
  const std::vector<float> m{1, 2};  // outlives s, which points at it
  auto s = spec(names, m, 1);
  s.model_name = "NoSuchTrainer_7";
  const Answer a = call(s);
  EXPECT_EQ(a.status, Code::kNotFound);
  EXPECT_NE(a.message.find("NoSuchTrainer_7"), std::string::npos) << a.message;
}

TEST_F(RequestHandlerTest, NamedModelWithMissingFeaturesNamesThem) {
  const std::string_view names[] = {"cpu_cycles"};
  const std::vector<float> m{1};  // outlives s, which points at it
  auto s = spec(names, m, 1);
  s.model_name = "SGDRegressorTrainer_0";
  const Answer a = call(s);
  EXPECT_EQ(a.status, Code::kMissingFeatures);
  EXPECT_NE(a.message.find("bpf_cpu_time_ms"), std::string::npos) << a.message;
}

TEST_F(RequestHandlerTest, NoModelFitsTheFeatures) {
  const std::string_view names[] = {"cpu_cycles"};
  const Answer a = call(spec(names, {1}, 1));
  EXPECT_EQ(a.status, Code::kNotFound);
  EXPECT_FALSE(a.message.empty());
}

TEST_F(RequestHandlerTest, FilterReachesSelectionAndKeysThePlanCache) {
  const std::string_view names[] = {"bpf_cpu_time_ms", "bpf_page_cache_hit"};
  const std::vector<float> m{1000, 2};
  for (int round = 0; round < 2; ++round) {  // the second round is served from the cache
    wire::RequestSpec filtered = spec(names, m, 1);
    filtered.filter = "mae:0.001";
    const Answer refused = call(filtered);
    EXPECT_EQ(refused.status, Code::kNotFound);
    EXPECT_NE(refused.message.find("fails the filter"), std::string::npos) << refused.message;
    const Answer served = call(spec(names, m, 1));
    EXPECT_EQ(served.status, Code::kOk) << served.message;
  }
  wire::RequestSpec bad = spec(names, m, 1);
  bad.filter = "mae=3";
  EXPECT_EQ(call(bad).status, Code::kInvalidArgument);
}

TEST_F(RequestHandlerTest, ShapeObserverHearsOfEachNewShapeWithTheChosenModel) {
  struct Seen {
    std::vector<std::string> features;
    std::string model;  // "" = none fits
  };
  auto seen = std::make_shared<std::vector<Seen>>();
  holder.set_shape_observer(std::make_shared<const ShapeObserver>(
      [seen](const wire::ParsedRequest& r, const models::Model* m) {
        seen->push_back({{r.feature_names.begin(), r.feature_names.end()},
                         m != nullptr ? m->info().name : std::string()});
      }));
  const std::string_view names[] = {"bpf_cpu_time_ms", "bpf_page_cache_hit"};
  const std::string_view unknown[] = {"cpu_cycles"};
  const std::vector<float> m{1000, 2};
  for (int i = 0; i < 3; ++i) EXPECT_EQ(call(spec(names, m, 1)).status, Code::kOk);
  ASSERT_EQ(seen->size(), 1U) << "a cached shape is not reported again";
  EXPECT_EQ((*seen)[0].model, "SGDRegressorTrainer_0");
  EXPECT_EQ((*seen)[0].features, (std::vector<std::string>{"bpf_cpu_time_ms", "bpf_page_cache_hit"}));
  EXPECT_EQ(call(spec(unknown, m, 1)).status, Code::kNotFound);
  ASSERT_EQ(seen->size(), 2U);
  EXPECT_EQ((*seen)[1].model, "");
  holder.set_shape_observer(nullptr);
  EXPECT_EQ(call(spec(unknown, m, 1)).status, Code::kNotFound);
  EXPECT_EQ(seen->size(), 2U);
}

TEST_F(RequestHandlerTest, NaNAndInfinityAreRefusedWithRowAndFeature) {
  const std::string_view names[] = {"bpf_cpu_time_ms", "bpf_page_cache_hit"};
  const float nan = std::numeric_limits<float>::quiet_NaN();
  Answer a = call(spec(names, {1, 2, 3, nan}, 2));
  EXPECT_EQ(a.status, Code::kInvalidValue);
  EXPECT_NE(a.message.find("row 1"), std::string::npos) << a.message;
  EXPECT_NE(a.message.find("bpf_page_cache_hit"), std::string::npos) << a.message;
  a = call(spec(names, {std::numeric_limits<float>::infinity(), 0}, 1));
  EXPECT_EQ(a.status, Code::kInvalidValue);
}

TEST_F(RequestHandlerTest, ShapeDisagreementIsRefused) {
  const std::string_view names[] = {"bpf_cpu_time_ms", "bpf_page_cache_hit"};
  const std::vector<float> m{1, 2, 3, 4};
  auto built = wire::build_request(spec(names, m, 2), {area, sizeof area});
  ASSERT_TRUE(built.ok());
  flatbuffers::GetMutableRoot<fb::Request>(built->data())->mutate_cols(3);
  const Answer a = decode(sut.handle(*built), next_id);
  EXPECT_EQ(a.status, Code::kInvalidArgument);
  EXPECT_NE(a.message.find("2 x 3"), std::string::npos) << a.message;
}

TEST_F(RequestHandlerTest, ReplyTooLargeForTheResponseAreaIsRefused) {
  RequestHandler small(holder, 1 << 16, 4096);
  const std::string_view names[] = {"bpf_cpu_time_ms", "bpf_page_cache_hit"};
  const std::vector<float> m(2 * 2000, 1.0f);  // 2000 rows x 4 components = 32 KB of powers
  auto built = wire::build_request(spec(names, m, 2000), {area, sizeof area});
  ASSERT_TRUE(built.ok());
  const Answer a = decode(small.handle(*built), next_id);
  EXPECT_EQ(a.status, Code::kTooLarge);
}

TEST_F(RequestHandlerTest, PingIsAnsweredWithoutAModel) {
  wire::RequestSpec s;
  s.request_id = 9;
  s.kind = fb::RequestKind::Ping;
  const Answer a = call(s);
  EXPECT_EQ(a.status, Code::kOk);
  EXPECT_EQ(a.rows, 0u);
}

TEST_F(RequestHandlerTest, GarbageIsAnsweredNotCrashedOn) {
  std::uint32_t x = 7;
  for (int round = 0; round < 500; ++round) {
    for (std::size_t i = 0; i < 512; ++i) area[i] = static_cast<std::uint8_t>((x = x * 1664525u + 1013904223u) >> 24);
    const auto reply = sut.handle({area, 512});
    std::vector<std::uint8_t> copy(reply.begin(), reply.end());
    auto r = wire::read_response(copy);
    ASSERT_TRUE(r.ok());
    EXPECT_EQ(r->status, Code::kInvalidArgument);
  }
}

}  // namespace
}  // namespace estimator::service
