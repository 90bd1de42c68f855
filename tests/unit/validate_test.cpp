// SPDX-License-Identifier: Apache-2.0
// `estimator validate`: models ranked by their error against measured node power, on a
// simulated node (measured_node.h) whose published errors rank the models wrongly; the
// errors expected are computed from the models' formulas here, not by the code under test.
// And the PNG it writes: chunks, CRCs, IHDR and pixels, decoded by Python's zlib.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <array>
#include <climits>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "service/cli/csv.h"
#include "service/cli/models_command.h"
#include "service/cli/png_image.h"
#include "service/cli/validate_command.h"
#include "service/cli/validate_plot.h"
#include "service/command_line.h"
#include "tests/support/shell_command.h"
#include "tests/unit/measured_node.h"
#include "tests/support/files.h"

namespace estimator::service {
namespace {

using testing::read_file;

namespace fs = std::filesystem;
using testing::TempDir;
using testing::kNodeModels;
using testing::NodeModel;
using testing::NodeSample;

void write_csv(const fs::path& p, const std::vector<NodeSample>& samples) {
  std::ofstream f(p);
  f << "cpu_util,mem_mb,package,dram\n";
  char line[128];
  for (const NodeSample& s : samples) {
    std::snprintf(line, sizeof line, "%.9g,%.9g,%.9g,%.9g\n", s.cpu_util, s.mem_mb, s.package, s.dram);
    f << line;
  }
}

struct Expected {
  double package_mae = 0, dram_mae = 0, package_max = 0, package_mape = 0;
};

Expected expected_errors(const NodeModel& m, const std::vector<NodeSample>& samples) {
  Expected e;
  for (const NodeSample& s : samples) {
    const double pe = std::abs(m.package(s.cpu_util, s.mem_mb) - s.package);
    e.package_mae += pe;
    e.package_max = std::max(e.package_max, pe);
    e.package_mape += pe / s.package;
    e.dram_mae += std::abs(m.dram(s.mem_mb) - s.dram);
  }
  const auto n = static_cast<double>(samples.size());
  e.package_mae /= n;
  e.dram_mae /= n;
  e.package_mape = 100 * e.package_mape / n;
  return e;
}

std::vector<std::vector<std::string>> read_table(const fs::path& p) {
  std::vector<std::vector<std::string>> rows;
  std::ifstream f(p);
  for (std::string line; std::getline(f, line);) {
    std::vector<std::string> cells;
    std::stringstream s(line);
    for (std::string c; std::getline(s, c, ',');) cells.push_back(c);
    rows.push_back(cells);
  }
  return rows;
}

// Checks every chunk's CRC, inflates IDAT and prints "w h colourtype crcs_ok raw_ok" and
// then the count of pixels of each colour given as "r,g,b" arguments.
constexpr const char* kPngCheck = R"PY(
import struct, sys, zlib
d = open(sys.argv[1], "rb").read()
assert d[:8] == b"\x89PNG\r\n\x1a\n", "signature"
i, idat, crcs_ok, ihdr, text = 8, b"", True, None, {}
while i < len(d):
    n, = struct.unpack(">I", d[i:i+4]); t = d[i+4:i+8]; body = d[i+8:i+8+n]
    crc, = struct.unpack(">I", d[i+8+n:i+12+n])
    crcs_ok &= (zlib.crc32(t + body) & 0xffffffff) == crc
    if t == b"IHDR": ihdr = struct.unpack(">IIBBBBB", body)
    if t == b"IDAT": idat += body
    if t == b"tEXt": k, v = body.split(b"\0", 1); text[k.decode()] = v.decode("latin-1")
    i += 12 + n
w, h = ihdr[0], ihdr[1]
raw = zlib.decompress(idat)
raw_ok = len(raw) == h * (1 + 3 * w) and all(raw[y * (1 + 3 * w)] == 0 for y in range(h))
px = b"".join(raw[y * (1 + 3 * w) + 1:(y + 1) * (1 + 3 * w)] for y in range(h))
print(w, h, ihdr[2], ihdr[3], int(crcs_ok), int(raw_ok))
for c in sys.argv[2:]:
    rgb = bytes(int(v) for v in c.split(","))
    print(sum(1 for k in range(0, len(px), 3) if px[k:k+3] == rgb))
print(text.get("Description", ""))
)PY";

std::vector<std::string> png_check(const fs::path& png, const std::vector<std::string>& colours) {
  std::string script = kPngCheck;
  std::string args = " " + png.string();
  for (const std::string& c : colours) args += " " + c;
  const std::string cmd = "/usr/bin/python3 - " + args + " 2>&1 <<'EOF'\n" + script + "\nEOF";
  std::vector<std::string> lines;
  std::stringstream s(estimator::testing::run_command(cmd).out);
  for (std::string l; std::getline(s, l);) lines.push_back(l);
  return lines;
}

// run_validate with what it prints captured in `printed`; its exit code.
int run_validate_captured(const ValidateOptions& o, std::string& printed) {
  char* text = nullptr;
  std::size_t size = 0;
  FILE* out = open_memstream(&text, &size);
  const int rc = run_validate(o, out);
  std::fclose(out);
  printed.assign(text, size);
  std::free(text);
  return rc;
}

TEST(Validate, RanksModelsByMeasuredErrorNotPublishedError) {
  const TempDir dir("validate-test");
  testing::write_node_models(dir.path() / "models");
  const std::vector<NodeSample> samples = testing::node_samples(200);
  write_csv(dir.path() / "measured.csv", samples);

  ValidateOptions o;
  o.model_dir = (dir.path() / "models").string();
  o.csv_path = (dir.path() / "measured.csv").string();
  o.table_path = (dir.path() / "ranking.csv").string();
  o.plot_path = (dir.path() / "plot.png").string();
  std::string printed;
  ASSERT_EQ(run_validate_captured(o, printed), 0);

  // Published order: Published_0 (0.5) < Middle_0 (2) < Truth_0 (9); measured: reversed.
  const std::size_t t = printed.find("Truth_0"), m = printed.find("Middle_0"),
                    p = printed.find("Published_0");
  ASSERT_NE(t, std::string::npos) << printed;
  EXPECT_LT(t, m) << printed;
  EXPECT_LT(m, p) << printed;

  const auto table = read_table(o.table_path);
  ASSERT_EQ(table.size(), 1U + 3 * 2) << read_file(o.table_path);
  EXPECT_EQ(table[0][0], "rank");
  const char* order[] = {"Truth_0", "Middle_0", "Published_0"};
  std::map<std::string, const NodeModel*> by_name;
  for (const NodeModel& nm : kNodeModels) by_name[nm.name] = &nm;
  for (std::size_t i = 0; i < 3; ++i) {
    const auto& pkg = table[1 + 2 * i];
    const auto& dram = table[2 + 2 * i];
    ASSERT_GE(pkg.size(), 11U);
    EXPECT_EQ(pkg[0], std::to_string(i + 1));
    EXPECT_EQ(pkg[1], order[i]);
    EXPECT_EQ(pkg[5], "package");
    EXPECT_EQ(dram[5], "dram");
    const Expected e = expected_errors(*by_name[order[i]], samples);
    // Models evaluate in float: relative 1e-4 of watts of a few hundred.
    EXPECT_NEAR(std::stod(pkg[6]), e.package_mae, 1e-4 * (1 + e.package_mae)) << order[i];
    EXPECT_NEAR(std::stod(pkg[7]), e.package_mape, 1e-4 * (1 + e.package_mape)) << order[i];
    EXPECT_NEAR(std::stod(pkg[8]), e.package_max, 1e-3 * (1 + e.package_max)) << order[i];
    EXPECT_NEAR(std::stod(dram[6]), e.dram_mae, 1e-4 * (1 + e.dram_mae)) << order[i];
    EXPECT_DOUBLE_EQ(std::stod(pkg[9]), by_name[order[i]]->published_mae);
  }
  // The truth's error is the noise: uniform in [-0.5, 0.5] has mean |x| = 0.25.
  EXPECT_NEAR(std::stod(table[1][6]), 0.25, 0.05);

  const auto png = png_check(o.plot_path, {"0,0,0", "214,39,40", "31,119,180", "44,160,44"});
  ASSERT_GE(png.size(), 6U) << read_file(o.plot_path).size();
  EXPECT_EQ(png[0], "960 480 8 2 1 1");  // two panels (package, dram); CRCs and scanlines good
  for (std::size_t c = 1; c <= 4; ++c) EXPECT_GT(std::stoi(png[c]), 100) << "colour " << c;
  ASSERT_GE(png.size(), 6U);
  EXPECT_NE(png[5].find("red: Truth_0; blue: Middle_0; green: Published_0"), std::string::npos)
      << png[5];
}

TEST(Validate, ListsModelsItCannotJudgeAndFailsWhenNoneFits) {
  const TempDir dir("validate-test");
  testing::write_node_models(dir.path() / "models");
  std::ofstream(dir.path() / "measured.csv") << "cpu_util,watts\n1,2\n";
  ValidateOptions o;
  o.model_dir = (dir.path() / "models").string();
  o.csv_path = (dir.path() / "measured.csv").string();
  // No measured column by the default names.
  EXPECT_EQ(run_validate(o, stdout), 2);
  // Named, but the models need mem_mb and predict no "watts".
  o.measured = {"watts"};
  std::string printed;
  EXPECT_EQ(run_validate_captured(o, printed), 2);
  EXPECT_NE(printed.find("skipped Truth_0"), std::string::npos) << printed;
  EXPECT_NE(printed.find("needs features the CSV lacks: mem_mb"), std::string::npos) << printed;
  o.measured = {"nope"};
  EXPECT_EQ(run_validate(o, stdout), 2);
}

// A directory that exists but cannot be scanned: reached from the working directory (as
// `--model-dir .` run inside it), its canonical path is longer than PATH_MAX. Made and
// removed one level at a time, since a path that long cannot be named whole.
class DeepDirectory {
 public:
  explicit DeepDirectory(const fs::path& base) : original_(fs::current_path()) {
    fs::current_path(base);
    while (depth_ < kLevels && ::mkdir(kLevel.c_str(), 0700) == 0) {
      if (::chdir(kLevel.c_str()) != 0) {
        ::rmdir(kLevel.c_str());
        break;
      }
      ++depth_;
    }
  }
  ~DeepDirectory() {
    for (; depth_ > 0; --depth_) {
      if (::chdir("..") != 0 || ::rmdir(kLevel.c_str()) != 0) break;
    }
    fs::current_path(original_);
  }
  bool deeper_than_path_max() const { return depth_ == kLevels; }

 private:
  static inline const std::string kLevel = std::string(200, 'd');
  static constexpr int kLevels = PATH_MAX / 200 + 1;
  fs::path original_;
  int depth_ = 0;
};

// `validate` and `models` both read a model directory as input: one they cannot scan is
// bad input (exit 2, docs/configuration.md), for both.
TEST(Validate, AModelDirectoryThatCannotBeScannedIsBadInputAsForModels) {
  TempDir dir;
  testing::write_node_models(dir.path() / "models");
  write_csv(dir.path() / "measured.csv", testing::node_samples(20));
  ValidateOptions v;
  v.csv_path = (dir.path() / "measured.csv").string();
  v.model_dir = (dir.path() / "models").string();
  ModelsOptions m;
  m.model_dir = v.model_dir;
  FILE* sink = std::fopen("/dev/null", "w");
  ASSERT_NE(sink, nullptr);
  // The same inputs but the directory are accepted.
  EXPECT_EQ(run_validate(v, sink), kExitOk);
  EXPECT_EQ(run_models(m, sink), kExitOk);
  {
    DeepDirectory deep(dir.path());
    ASSERT_TRUE(deep.deeper_than_path_max());
    ASSERT_TRUE(fs::is_directory("."));
    v.model_dir = m.model_dir = ".";
    EXPECT_EQ(run_validate(v, sink), kExitUsage);
    EXPECT_EQ(run_models(m, sink), kExitUsage);
  }
  std::fclose(sink);
}

TEST(Validate, SplitMeasuredMovesOnlyTheMeasuredColumns) {
  std::istringstream in("a,package,b,dram\n1,10,2,20\n3,30,4,40\n");
  auto t = read_feature_csv(in);
  ASSERT_TRUE(t.ok());
  auto m = split_measured(std::move(*t), {});
  ASSERT_TRUE(m.ok()) << m.status().to_string();
  EXPECT_EQ(m->features.features, (std::vector<std::string>{"a", "b"}));
  EXPECT_EQ(m->features.values, (std::vector<float>{1, 2, 3, 4}));
  EXPECT_EQ(m->components, (std::vector<std::string>{"package", "dram"}));
  EXPECT_EQ(m->watts, (std::vector<std::vector<double>>{{10, 30}, {20, 40}}));
}

TEST(PngImage, DecodesToTheSamePixels) {
  RgbImage img(5, 3, {255, 255, 255});
  img.line(0, 0, 4, 2, {1, 2, 3});
  img.set(4, 0, {9, 8, 7});
  EXPECT_EQ(img.at(2, 1).g, 2);  // the line's midpoint
  const TempDir dir("validate-test");
  auto png = encode_png(img, {{"Title", "t"}});
  ASSERT_TRUE(png.ok());
  std::ofstream(dir.path() / "x.png", std::ios::binary) << *png;
  const auto lines = png_check(dir.path() / "x.png", {"1,2,3", "9,8,7", "255,255,255"});
  ASSERT_GE(lines.size(), 4U);
  EXPECT_EQ(lines[0], "5 3 8 2 1 1");
  EXPECT_EQ(lines[1], "5");  // Bresenham from (0,0) to (4,2): five pixels
  EXPECT_EQ(lines[2], "1");
  EXPECT_EQ(lines[3], "9");
  EXPECT_FALSE(encode_png(img, {{"", "no keyword"}}).ok());
}

TEST(ValidatePlot, RefusesSeriesOfAnotherLength) {
  EXPECT_FALSE(plot_png({}).ok());
  EXPECT_FALSE(plot_png({{"package", {1, 2}, {{"m", {1}}}}}).ok());
  EXPECT_TRUE(plot_png({{"package", {1, 2}, {{"m", {1, 2}}, {"lacks it", {}}}}}).ok());
}

}  // namespace
}  // namespace estimator::service
