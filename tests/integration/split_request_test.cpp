// SPDX-License-Identifier: Apache-2.0
// Client::estimate with more rows than one slot holds, against the real estimatord: the
// client splits the rows into several requests and answers as if the rows had been sent
// in small batches, one by one; a row that alone cannot fit a request is too_large.
#include <gtest/gtest.h>

#include <cstdio>
#include <limits>
#include <string>
#include <vector>

#include "daemon_process.h"
#include "reference_model.h"

namespace estimator::testing {
namespace {

using namespace std::chrono_literals;

// The daemon of these tests has slots of 65536 request bytes (32768 response bytes).
constexpr std::size_t kRequestBytes = 65536;

class SplitRequest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(daemon_.start()) << "estimatord did not start";
    ASSERT_TRUE(reference_.ok());
  }

  // `cols` feature names: the reference model's three at columns 5, 17 and 42 (or the
  // first three when fewer columns), the others unused extras.
  static std::vector<std::string> names(std::uint32_t cols, std::size_t extra_length = 0) {
    std::vector<std::string> n;
    for (std::uint32_t c = 0; c < cols; ++c) n.push_back("extra_" + std::string(extra_length, 'x') + std::to_string(c));
    const std::uint32_t at[3] = {5, 17, 42};
    for (int k = 0; k < 3; ++k) n[cols > 42 ? at[k] : k] = kReferenceFeatures[k];
    return n;
  }
  static std::vector<float> matrix(std::uint32_t rows, std::uint32_t cols) {
    std::vector<float> x(std::size_t{rows} * cols);
    for (std::size_t i = 0; i < x.size(); ++i) x[i] = static_cast<float>((i * 7919) % 5000);
    return x;
  }
  // The reference model's answer for the three feature columns of `x`.
  std::vector<float> expected(const std::vector<float>& x, std::uint32_t rows, std::uint32_t cols) const {
    const std::uint32_t at[3] = {5, 17, 42};
    std::vector<float> three;
    for (std::uint32_t r = 0; r < rows; ++r) {
      for (int k = 0; k < 3; ++k) three.push_back(x[std::size_t{r} * cols + (cols > 42 ? at[k] : k)]);
    }
    return reference_.predict(three, rows);
  }

  // Sends the rows `batch` at a time and checks `whole` against each batch's answer.
  void expect_equal_to_batches(const client::Reply& whole, const std::vector<std::string_view>& features,
                               const std::vector<float>& x, std::uint32_t rows, std::uint32_t batch) {
    const auto cols = static_cast<std::uint32_t>(features.size());
    for (std::uint32_t row = 0; row < rows; row += batch) {
      const std::uint32_t n = std::min(batch, rows - row);
      auto part = client_.estimate({.selector = kSelector, .features = features,
                                    .matrix = x.data() + std::size_t{row} * cols, .rows = n, .cols = cols});
      ASSERT_TRUE(part.ok()) << part.status().to_string();
      ASSERT_EQ(part->cols(), whole.cols());
      EXPECT_EQ(part->model().name, whole.model().name);
      for (std::uint32_t r = 0; r < n; ++r) {
        for (std::uint32_t c = 0; c < whole.cols(); ++c) {
          ASSERT_EQ(whole.power(row + r, c), part->power(r, c)) << "row " << row + r << " column " << c;
        }
      }
    }
  }

  static constexpr client::Selector kSelector = {.output_type = "AbsPower", .source = "rapl-sysfs"};
  std::string shm_ = unique_shm_name("split");
  DaemonProcess daemon_{shm_};
  client::Client client_{{.shm_name = shm_, .timeout = 5000ms}};
  ReferenceModel reference_;
  Watchdog dog_{120};
};

TEST_F(SplitRequest, RowsBeyondOneRequestAreAnsweredAsInSmallBatches) {
  constexpr std::uint32_t kRows = 540, kCols = 60;
  static_assert(std::size_t{kRows} * kCols * sizeof(float) > kRequestBytes, "must not fit one slot");
  const std::vector<std::string> owned = names(kCols);
  const std::vector<std::string_view> features(owned.begin(), owned.end());
  const std::vector<float> x = matrix(kRows, kCols);

  auto whole = client_.estimate({.selector = kSelector, .features = features, .matrix = x.data(), .rows = kRows, .cols = kCols});
  ASSERT_TRUE(whole.ok()) << whole.status().to_string();
  ASSERT_EQ(whole->rows(), kRows);
  ASSERT_EQ(whole->cols(), 4u);
  EXPECT_EQ(whole->component(0), "package");
  EXPECT_EQ(whole->model().source, "rapl-sysfs");
  EXPECT_EQ(whole->model().output_type, "AbsPower");
  const std::vector<float> want = expected(x, kRows, kCols);
  ASSERT_EQ(want.size(), whole->powers().size());
  for (std::size_t i = 0; i < want.size(); ++i) ASSERT_FLOAT_EQ(whole->powers()[i], want[i]) << i;
  expect_equal_to_batches(*whole, features, x, kRows, 20);
}

// 3000 rows of 3 features fit one request (36 kB) but not its reply (3000 x 4 powers,
// 48 kB, in 32 kB): the daemon refuses the reply and the client splits.
TEST_F(SplitRequest, RepliesBeyondOneSlotAreSplitToo) {
  constexpr std::uint32_t kRows = 3000, kCols = 3;
  const std::vector<std::string_view> features(std::begin(kReferenceFeatures), std::end(kReferenceFeatures));
  const std::vector<float> x = matrix(kRows, kCols);
  auto whole = client_.estimate({.selector = kSelector, .features = features, .matrix = x.data(), .rows = kRows, .cols = kCols});
  ASSERT_TRUE(whole.ok()) << whole.status().to_string();
  ASSERT_EQ(whole->rows(), kRows);
  const std::vector<float> want = expected(x, kRows, kCols);
  ASSERT_EQ(want.size(), whole->powers().size());
  for (std::size_t i = 0; i < want.size(); ++i) ASSERT_FLOAT_EQ(whole->powers()[i], want[i]) << i;
  expect_equal_to_batches(*whole, features, x, kRows, 500);
}

TEST_F(SplitRequest, ARowWiderThanARequestIsTooLarge) {
  // 1000 names of about 80 bytes: more than 65536 bytes of names alone.
  constexpr std::uint32_t kCols = 1000;
  const std::vector<std::string> owned = names(kCols, 70);
  const std::vector<std::string_view> features(owned.begin(), owned.end());
  for (const std::uint32_t rows : {1u, 5u}) {
    const std::vector<float> x = matrix(rows, kCols);
    auto got = client_.estimate({.selector = kSelector, .features = features, .matrix = x.data(), .rows = rows, .cols = kCols});
    ASSERT_FALSE(got.ok()) << rows;
    EXPECT_EQ(got.status().code(), Code::kTooLarge) << got.status().to_string();
    EXPECT_NE(got.status().message().find("one row of 1000 features alone does not fit"), std::string::npos)
        << got.status().to_string();
  }
}

TEST_F(SplitRequest, AnErrorNamesTheRowsOfTheRequestThatFailed) {
  constexpr std::uint32_t kRows = 540, kCols = 60;
  const std::vector<std::string> owned = names(kCols);
  const std::vector<std::string_view> features(owned.begin(), owned.end());
  std::vector<float> x = matrix(kRows, kCols);
  x[std::size_t{500} * kCols + 17] = std::numeric_limits<float>::quiet_NaN();  // a used feature
  auto got = client_.estimate({.selector = kSelector, .features = features, .matrix = x.data(), .rows = kRows, .cols = kCols});
  ASSERT_FALSE(got.ok());
  EXPECT_EQ(got.status().code(), Code::kInvalidValue) << got.status().to_string();
  // "rows <first>-<last> of 540: ...": the request holding row 500, not the first one.
  unsigned first = 0, last = 0, total = 0;
  ASSERT_EQ(std::sscanf(std::string(got.status().message()).c_str(), "rows %u-%u of %u: ", &first, &last, &total), 3)
      << got.status().to_string();
  EXPECT_EQ(total, kRows);
  EXPECT_GT(first, 0u);
  EXPECT_LE(first, 500u);
  EXPECT_GE(last, 500u);
}

}  // namespace
}  // namespace estimator::testing
