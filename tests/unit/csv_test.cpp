// The CLI's CSV: numeric columns become features, a constant text column a system value.
#include <gtest/gtest.h>

#include <sstream>

#include "service/csv.h"

namespace estimator::service {
namespace {

TEST(FeatureCsv, ReadsHeaderRowsAndSystemColumn) {
  std::istringstream in("cpu_cycles, cpu_architecture ,cache_miss\n1.5,Sky Lake,2\n\n3,Sky Lake,4e3\n");
  auto t = read_feature_csv(in);
  ASSERT_TRUE(t.ok()) << t.status().to_string();
  EXPECT_EQ(t->features, (std::vector<std::string>{"cpu_cycles", "cache_miss"}));
  EXPECT_EQ(t->rows, 2u);
  EXPECT_EQ(t->values, (std::vector<float>{1.5f, 2.f, 3.f, 4000.f}));
  ASSERT_EQ(t->system_values.size(), 1u);
  EXPECT_EQ(t->system_values[0].first, "cpu_architecture");
  EXPECT_EQ(t->system_values[0].second, "Sky Lake");
}

TEST(FeatureCsv, RefusesRaggedRowsAndVaryingTextColumns) {
  std::istringstream ragged("a,b\n1,2\n3\n");
  auto t = read_feature_csv(ragged);
  ASSERT_FALSE(t.ok());
  EXPECT_NE(t.status().message().find("line 3"), std::string::npos) << t.status().message();
  std::istringstream varying("a,arch\n1,Haswell\n2,Broadwell\n");
  EXPECT_FALSE(read_feature_csv(varying).ok());
  std::istringstream empty("");
  EXPECT_FALSE(read_feature_csv(empty).ok());
}

TEST(FeatureCsv, PowersAreWrittenToRoundTripAFloat) {
  std::ostringstream out;
  const float p[] = {1.0f / 3.0f, 123456.789f};
  write_power_csv(out, {"package", "dram"}, p, 1);
  EXPECT_EQ(out.str(), "package,dram\n0.333333343,123456.789\n");
  float back = std::stof("0.333333343");
  EXPECT_EQ(back, p[0]);
}

}  // namespace
}  // namespace estimator::service
