// SPDX-License-Identifier: Apache-2.0
// The CLI's CSV: numeric feature columns, Kepler's system feature columns as text, and every
// bad cell an error that names its line, column and value.
#include <gtest/gtest.h>

#include <sstream>

#include "service/cli/csv.h"

namespace estimator::service {
namespace {

Result<FeatureTable> read(const std::string& text) {
  std::istringstream in(text);
  return read_feature_csv(in);
}

TEST(FeatureCsv, ReadsHeaderRowsAndSystemColumn) {
  auto t = read("cpu_cycles, cpu_architecture ,cache_miss\n1.5,Sky Lake,2\n\n3,Sky Lake,+4e3\n");
  ASSERT_TRUE(t.ok()) << t.status().to_string();
  EXPECT_EQ(t->features, (std::vector<std::string>{"cpu_cycles", "cache_miss"}));
  EXPECT_EQ(t->rows, 2u);
  EXPECT_EQ(t->values, (std::vector<float>{1.5f, 2.f, 3.f, 4000.f}));
  ASSERT_EQ(t->system_values.size(), 1u);
  EXPECT_EQ(t->system_values[0].first, "cpu_architecture");
  EXPECT_EQ(t->system_values[0].second, "Sky Lake");
}

TEST(FeatureCsv, RefusesRaggedRowsAndVaryingSystemColumns) {
  auto ragged = read("a,b\n1,2\n3\n");
  ASSERT_FALSE(ragged.ok());
  EXPECT_NE(ragged.status().message().find("line 3"), std::string::npos) << ragged.status().message();
  auto varying = read("a,cpu_architecture\n1,Haswell\n2,Broadwell\n");
  ASSERT_FALSE(varying.ok());
  EXPECT_EQ(varying.status().message(),
            "line 3, column 2 'cpu_architecture': 'Broadwell' differs from 'Haswell' above; a "
            "system feature has one value per request");
  auto empty_system = read("a,cpu_architecture\n1,\n");
  ASSERT_FALSE(empty_system.ok());
  EXPECT_EQ(empty_system.status().message(), "line 2, column 2 'cpu_architecture': empty cell");
  EXPECT_FALSE(read("").ok());
}

// Each of these used to turn the column into a "system feature" silently.
TEST(FeatureCsv, EveryBadFeatureCellNamesLineColumnAndValue) {
  const std::pair<const char*, const char*> cases[] = {
      {"n/a", "'n/a' is not a number"},
      {"abc", "'abc' is not a number"},
      {"0x10", "'0x10' is not a number"},
      {"", "empty cell"},
      {"1e40", "'1e40' is out of the float range"},
      {"nan", "'nan' is not a finite number"},
      {"-inf", "'-inf' is not a finite number"},
      {"+-1", "'+-1' is not a number"},
  };
  for (const auto& [cell, what] : cases) {
    auto t = read("bpf_cpu_time_ms,bpf_page_cache_hit\n1,2\n\n3," + std::string(cell) + "\n");
    ASSERT_FALSE(t.ok()) << cell;
    EXPECT_EQ(t.status().code(), Code::kInvalidArgument);
    EXPECT_EQ(t.status().message(),
              "line 4, column 2 'bpf_page_cache_hit': " + std::string(what));
  }
}

TEST(FeatureCsv, DuplicateAndEmptyColumnNamesAreErrors) {
  auto dup = read("a,b,a\n1,2,3\n");
  ASSERT_FALSE(dup.ok());
  EXPECT_EQ(dup.status().message(), "CSV header: column name 'a' appears twice (columns 1 and 3)");
  auto unnamed = read("a,,b\n1,2,3\n");
  ASSERT_FALSE(unnamed.ok());
  EXPECT_EQ(unnamed.status().message(), "CSV header: column 2 has no name");
}

TEST(FeatureCsv, Utf8ByteOrderMarkIsStripped) {
  auto t = read("\xEF\xBB\xBF" "bpf_cpu_time_ms\r\n7\r\n");
  ASSERT_TRUE(t.ok()) << t.status().to_string();
  EXPECT_EQ(t->features, (std::vector<std::string>{"bpf_cpu_time_ms"}));
  EXPECT_EQ(t->values, (std::vector<float>{7.f}));
}

TEST(FeatureCsv, FilesDirectoriesAndMissingPaths) {
  const std::string dir = ::testing::TempDir();
  auto d = read_feature_csv_file(dir);
  ASSERT_FALSE(d.ok());
  EXPECT_EQ(d.status().message(), "is a directory, not a CSV file");
  auto missing = read_feature_csv_file(dir + "/no-such.csv");
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.status().message(), "cannot open: No such file or directory");
}

TEST(FeatureCsv, SystemValuesAreGivenExplicitly) {
  auto t = read("bpf_cpu_time_ms\n1\n");
  ASSERT_TRUE(t.ok());
  ASSERT_TRUE(add_system_values(*t, {"cpu_architecture=Sky Lake", "vendor=a=b"}).ok());
  EXPECT_EQ(t->system_values, (std::vector<std::pair<std::string, std::string>>{
                                  {"cpu_architecture", "Sky Lake"}, {"vendor", "a=b"}}));
  EXPECT_EQ(add_system_values(*t, {"vendor=c"}).message(), "system value 'vendor' is given twice");
  EXPECT_EQ(add_system_values(*t, {"bpf_cpu_time_ms=1"}).message(),
            "system value 'bpf_cpu_time_ms' is given twice");
  for (const char* bad : {"novalue", "=x", "x="}) {
    EXPECT_EQ(add_system_values(*t, {bad}).message(),
              "system value '" + std::string(bad) + "' is not NAME=VALUE");
  }
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
