// SPDX-License-Identifier: Apache-2.0
// Reading model zips: contents come back intact; hostile archives are refused by name.
#include <gtest/gtest.h>

#include "models/zip_archive.h"
#include "tests/support/files.h"

namespace estimator::models {
namespace {

std::string fixture(const std::string& name) {
  return estimator::testing::read_file(std::string(ESTIMATOR_FIXTURES_DIR) + "/zip/" + name);
}

TEST(ZipArchive, ReadsEveryMemberAndSkipsDirectories) {
  auto z = read_zip(fixture("good.zip"), "good.zip");
  ASSERT_TRUE(z.ok()) << z.status().to_string();
  ASSERT_EQ(z->size(), 2u);
  EXPECT_EQ(z->at("metadata.json"), R"({"model_name": "m"})");
  EXPECT_EQ(z->at("sub/a.txt").size(), 600u);
}

TEST(ZipArchive, RefusesClimbingAbsoluteAndSymlinkEntries) {
  for (const char* name : {"traversal.zip", "nested_traversal.zip", "absolute.zip", "symlink.zip"}) {
    auto z = read_zip(fixture(name), name);
    ASSERT_FALSE(z.ok()) << name;
    EXPECT_NE(z.status().message().find(name), std::string::npos) << z.status().message();
  }
  EXPECT_NE(read_zip(fixture("symlink.zip"), "s").status().message().find("symbolic link"),
            std::string::npos);
}

TEST(ZipArchive, RefusesTruncatedGarbageAndBombs) {
  EXPECT_FALSE(read_zip(fixture("truncated.zip"), "t").ok());
  EXPECT_FALSE(read_zip("PK\3\4 not really a zip", "g").ok());
  EXPECT_FALSE(read_zip("", "empty").ok());
  ZipLimits small;
  small.max_entry_bytes = 1 << 20;
  auto bomb = read_zip(fixture("bomb.zip"), "bomb.zip", small);
  ASSERT_FALSE(bomb.ok());
  EXPECT_NE(bomb.status().message().find("size limit"), std::string::npos) << bomb.status().message();
  EXPECT_TRUE(read_zip(fixture("bomb.zip"), "bomb.zip").ok()) << "8 MiB is within the default cap";
}

}  // namespace
}  // namespace estimator::models
