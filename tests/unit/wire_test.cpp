// SPDX-License-Identifier: Apache-2.0
// The wire codec: a request survives encoding and decoding unchanged, and every malformed
// or oversized request is refused with a message instead of being misread.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <functional>
#include <vector>

#include "schema/schema_version.h"
#include "schema/wire.h"

namespace estimator::wire {
namespace {

struct AlignedArea {
  explicit AlignedArea(std::size_t n) : bytes(n + 64) {}
  std::span<std::uint8_t> span(std::size_t n) {
    auto p = reinterpret_cast<std::uintptr_t>(bytes.data());
    auto* aligned = reinterpret_cast<std::uint8_t*>((p + 63) & ~std::uintptr_t{63});
    return {aligned, n};
  }
  std::vector<std::uint8_t> bytes;
};

class WireTest : public ::testing::Test {
 protected:
  std::vector<std::string_view> names{"cpu_instructions", "cache_miss", "bpf_cpu_time_ms"};
  std::vector<float> matrix{1, 2, 3, 4, 5, 6};
  std::vector<float> watts{10.5f, 11.5f};
  std::vector<float> idle{3.0f, 4.0f};
  std::vector<NodePower> power{{"package", watts, idle}, {"dram", watts, {}}};
  std::vector<SystemValue> system{{"cpu_architecture", "Sky Lake"}};
  AlignedArea area{1 << 16};

  RequestSpec spec() {
    RequestSpec s;
    s.request_id = 0xABCDEF0123ULL;
    s.model_name = "SGDRegressorTrainer_0";
    s.trainer = "SGDRegressorTrainer";
    s.output_type = "DynPower";
    s.source = "rapl-sysfs";
    s.filter = "mae:0.5;mape:10";
    s.feature_names = names;
    s.matrix = matrix.data();
    s.rows = 2;
    s.cols = 3;
    s.node_power = power;
    s.system_values = system;
    return s;
  }
};

TEST_F(WireTest, RequestRoundTripKeepsEveryField) {
  auto built = build_request(spec(), area.span(4096));
  ASSERT_TRUE(built.ok()) << built.status().to_string();
  RequestReader sut(4096);
  ParsedRequest r;
  ASSERT_TRUE(sut.read(*built, r).ok());
  EXPECT_EQ(r.request_id, 0xABCDEF0123ULL);
  EXPECT_EQ(r.schema_version, schema::kSchemaVersion);
  EXPECT_EQ(r.kind, fb::RequestKind::Estimate);
  EXPECT_EQ(r.model_name, "SGDRegressorTrainer_0");
  EXPECT_EQ(r.trainer, "SGDRegressorTrainer");
  EXPECT_EQ(r.output_type, "DynPower");
  EXPECT_EQ(r.source, "rapl-sysfs");
  EXPECT_EQ(r.filter, "mae:0.5;mape:10");
  ASSERT_EQ(r.feature_names.size(), 3u);
  EXPECT_EQ(r.feature_names[2], "bpf_cpu_time_ms");
  ASSERT_EQ(r.rows, 2u);
  ASSERT_EQ(r.cols, 3u);
  for (int i = 0; i < 6; ++i) EXPECT_EQ(r.matrix[i], matrix[i]);
  ASSERT_EQ(r.node_power.size(), 2u);
  EXPECT_EQ(r.node_power[0].component, "package");
  ASSERT_EQ(r.node_power[0].watts.size(), 2u);
  EXPECT_EQ(r.node_power[0].watts[1], 11.5f);
  EXPECT_EQ(r.node_power[0].idle_watts[0], 3.0f);
  EXPECT_TRUE(r.node_power[1].idle_watts.empty());
  ASSERT_EQ(r.system_values.size(), 1u);
  EXPECT_EQ(r.system_values[0].value, "Sky Lake");
}

// ---- RequestEncoder ------------------------------------------------------------------

// What the encoder must produce for `s`: build_request's bytes, built afresh.
std::vector<std::uint8_t> fresh(const RequestSpec& s, std::size_t area_size) {
  AlignedArea other(area_size);
  auto built = build_request(s, other.span(area_size));
  EXPECT_TRUE(built.ok());
  return built.ok() ? std::vector<std::uint8_t>(built->begin(), built->end())
                    : std::vector<std::uint8_t>{};
}

TEST_F(WireTest, EncoderGivesTheBytesOfAFreshBuildWhateverChanges) {
  RequestEncoder sut;
  RequestSpec s = spec();
  s.node_power = {};
  s.system_values = {};
  std::vector<float> other_matrix{9, 8, 7, 6, 5, 4};
  std::vector<std::string_view> other_names{"cpu_instructions", "cache_miss", "cpu_cycles"};
  // Each step changes one thing (or nothing) from the step before; every encoding must
  // equal a fresh build, whether it was copied or rebuilt.
  const std::function<void(RequestSpec&)> steps[] = {
      [](RequestSpec&) {},                                       // first: built
      [](RequestSpec& x) { x.request_id = 7; },                  // copied, new id
      [&](RequestSpec& x) { x.matrix = other_matrix.data(); },   // copied, new values
      [&](RequestSpec& x) { x.feature_names = other_names; },    // a name differs
      [](RequestSpec& x) { x.filter = "mae:0.4"; },              // the selector differs
      [](RequestSpec& x) { x.rows = 1; },                        // the size differs
      [](RequestSpec& x) { x.kind = fb::RequestKind::Ping; },    // the kind differs
      [](RequestSpec& x) { x.request_id = 0; },                  // id left out: no copy
      [](RequestSpec& x) { x.request_id = 1ULL << 60; },         // built again
      [](RequestSpec& x) { x.request_id = 3; },                  // copied again
  };
  for (std::size_t i = 0; i < std::size(steps); ++i) {
    steps[i](s);
    auto got = sut.encode(s, 4096);
    ASSERT_TRUE(got.ok()) << i;
    EXPECT_EQ(std::vector<std::uint8_t>(got->begin(), got->end()), fresh(s, 4096)) << "step " << i;
    RequestReader reader(4096);
    ParsedRequest r;
    ASSERT_TRUE(reader.read(*got, r).ok()) << i;
    EXPECT_EQ(r.request_id, s.request_id) << i;
  }
}

TEST_F(WireTest, EncoderRebuildsForNodePowerAndRefusesWhatExceedsTheCapacity) {
  RequestEncoder sut;
  RequestSpec s = spec();
  s.system_values = {};
  // With node power: built every time (not remembered), and still right.
  for (int i = 0; i < 2; ++i) {
    s.request_id = 100 + i;
    auto got = sut.encode(s, 4096);
    ASSERT_TRUE(got.ok());
    EXPECT_EQ(std::vector<std::uint8_t>(got->begin(), got->end()), fresh(s, 4096));
  }
  s.node_power = {};
  ASSERT_TRUE(sut.encode(s, 4096).ok());
  // The remembered shape does not fit a smaller capacity: refused, not copied.
  s.request_id = 5;
  auto small = sut.encode(s, 64);
  ASSERT_FALSE(small.ok());
  EXPECT_EQ(small.status().code(), Code::kTooLarge);
  auto got = sut.encode(s, 4096);
  ASSERT_TRUE(got.ok());
  RequestReader reader(4096);
  ParsedRequest r;
  ASSERT_TRUE(reader.read(*got, r).ok());
  EXPECT_EQ(r.request_id, 5U);
  EXPECT_EQ(r.matrix[4], 5.0f);
}

TEST_F(WireTest, ReaderRefusesMisalignedOrOverlongBytes) {
  auto built = build_request(spec(), area.span(4096));
  ASSERT_TRUE(built.ok());
  RequestReader sut(built->size());
  ParsedRequest r;
  ASSERT_TRUE(sut.read(*built, r).ok());
  std::vector<std::uint8_t> shifted(built->size() + 16);
  auto* odd = reinterpret_cast<std::uint8_t*>((reinterpret_cast<std::uintptr_t>(shifted.data()) + 8) | 4);
  std::memcpy(odd, built->data(), built->size());
  EXPECT_EQ(sut.read({odd, built->size()}, r).code(), Code::kInvalidArgument) << "misaligned";
  RequestReader shorter(built->size() - 8);
  EXPECT_EQ(shorter.read(*built, r).code(), Code::kInvalidArgument) << "longer than its maximum";
}

TEST_F(WireTest, RequestTooLargeForTheAreaIsRefused) {
  std::vector<float> big(1000 * 3, 1.0f);
  RequestSpec s = spec();
  s.matrix = big.data();
  s.rows = 1000;
  auto built = build_request(s, area.span(4096));
  ASSERT_FALSE(built.ok());
  EXPECT_EQ(built.status().code(), Code::kTooLarge);
  EXPECT_NE(built.status().message().find("slot"), std::string::npos);
}

TEST_F(WireTest, RowsTimesColsMustMatchTheMatrix) {
  RequestSpec s = spec();
  s.rows = 2;
  s.cols = 3;
  auto built = build_request(s, area.span(4096));
  ASSERT_TRUE(built.ok());
  // Patch rows in the encoded table through the generated accessor: 2 -> 5.
  auto* req = flatbuffers::GetMutableRoot<fb::Request>(built->data());
  ASSERT_TRUE(req->mutate_rows(5));
  RequestReader sut(4096);
  ParsedRequest r;
  const Status st = sut.read(*built, r);
  EXPECT_EQ(st.code(), Code::kInvalidArgument);
  EXPECT_NE(st.message().find("5 x 3"), std::string::npos) << st.message();
  EXPECT_EQ(r.request_id, 0xABCDEF0123ULL);  // known, so the error can be routed
}

TEST_F(WireTest, FeatureNamesMustMatchColumns) {
  RequestSpec s = spec();
  s.feature_names = std::span(names).first(2);
  auto built = build_request(s, area.span(4096));
  ASSERT_TRUE(built.ok());
  RequestReader sut(4096);
  ParsedRequest r;
  EXPECT_EQ(sut.read(*built, r).code(), Code::kInvalidArgument);
}

TEST_F(WireTest, GarbageAndTruncatedBuffersAreRefused) {
  auto built = build_request(spec(), area.span(4096));
  ASSERT_TRUE(built.ok());
  RequestReader sut(4096);
  ParsedRequest r;
  for (std::size_t cut : {std::size_t{0}, std::size_t{4}, built->size() / 2, built->size() - 8}) {
    EXPECT_FALSE(sut.read(built->first(cut), r).ok()) << "cut at " << cut;
  }
  std::vector<std::uint8_t> noise(256);
  std::uint32_t x = 12345;
  for (int round = 0; round < 200; ++round) {
    for (auto& b : noise) b = static_cast<std::uint8_t>((x = x * 1664525u + 1013904223u) >> 24);
    alignas(8) std::uint8_t copy[256];
    std::memcpy(copy, noise.data(), sizeof copy);
    EXPECT_FALSE(sut.read({copy, sizeof copy}, r).ok());
  }
  EXPECT_FALSE(sut.read({built->data(), 8192}, r).ok()) << "longer than the reader capacity";
}

TEST_F(WireTest, OtherSchemaVersionIsIncompatible) {
  auto built = build_request(spec(), area.span(4096));
  ASSERT_TRUE(built.ok());
  auto* req = flatbuffers::GetMutableRoot<fb::Request>(built->data());
  ASSERT_TRUE(req->mutate_schema_version(schema::kSchemaVersion + 1));
  RequestReader sut(4096);
  ParsedRequest r;
  const Status st = sut.read(*built, r);
  EXPECT_EQ(st.code(), Code::kIncompatible);
  EXPECT_NE(st.message().find(std::to_string(schema::kSchemaVersion + 1)), std::string::npos);
}

TEST(ResponseWire, PowersAndModelRoundTrip) {
  ResponseBuilder sut(8192);
  const std::vector<std::string> comps{"package", "dram"};
  ModelDescription m{"m", "t", "weight", "AbsPower", "acpi", 1.25, std::nan(""), 0.5};
  const ResponseTail tail = make_response_tail(m, comps);
  (void)sut.error(1, Status(Code::kInternal, "a previous reply, to show reuse is clean"));
  auto p = sut.begin(2, 2, tail);
  ASSERT_TRUE(p.ok());
  const float values[] = {1.5f, 0.0f, 2.5f, 3.25f};
  std::memcpy(p.value(), values, sizeof values);
  auto bytes = sut.finish(77);
  std::vector<std::uint8_t> copy(bytes.begin(), bytes.end());
  auto r = read_response(copy);
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  EXPECT_EQ(r->request_id, 77u);
  EXPECT_EQ(r->status, Code::kOk);
  EXPECT_EQ(r->rows, 2u);
  EXPECT_EQ(r->cols, 2u);
  for (int i = 0; i < 4; ++i) EXPECT_EQ(r->powers[i], values[i]);
  EXPECT_EQ(view_of(r->components->Get(1)), "dram");
  EXPECT_EQ(view_of(r->model->source()), "acpi");
  EXPECT_DOUBLE_EQ(r->model->mae(), 1.25);
  EXPECT_TRUE(std::isnan(r->model->mape()));
  EXPECT_DOUBLE_EQ(r->model->core_ratio(), 0.5);
}

TEST(ResponseWire, ErrorCarriesCodeAndMessage) {
  ResponseBuilder sut(8192);
  auto bytes = sut.error(5, Status(Code::kMissingFeatures, "needs cache_miss"));
  std::vector<std::uint8_t> copy(bytes.begin(), bytes.end());
  auto r = read_response(copy);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->status, Code::kMissingFeatures);
  EXPECT_EQ(r->message, "needs cache_miss");
  EXPECT_EQ(r->rows, 0u);
}

TEST(ResponseWire, TooManyPowersForTheAreaIsRefused) {
  ResponseBuilder sut(8192);
  auto p = sut.begin(10000, 4, make_response_tail({}, {}));
  ASSERT_FALSE(p.ok());
  EXPECT_EQ(p.status().code(), Code::kTooLarge);
}

}  // namespace
}  // namespace estimator::wire
