// SPDX-License-Identifier: Apache-2.0
// The per-component pipeline (component map -> transforms -> regressor), with stand-in
// stages whose arithmetic is obvious, so the assembly itself is what is tested.
#include <gtest/gtest.h>

#include "models/pipeline_model.h"
#include "test_util.h"

namespace estimator::models {
namespace {

using testing::evaluate;
using testing::make_folder;
using testing::rows;

// x * factor, column by column.
class Scale final : public Transform {
 public:
  Scale(Eigen::Index n, double factor) : n_(n), factor_(factor) {}
  Eigen::Index inputs() const override { return n_; }
  Eigen::Index outputs() const override { return n_; }
  void apply(const ConstRowsD& in, RowsD out) const override { out = in * factor_; }
  std::string describe() const override { return "Scale"; }

 private:
  Eigen::Index n_;
  double factor_;
};

// [x, x^2] per column: changes the width, as PolynomialFeatures does.
class Square final : public Transform {
 public:
  explicit Square(Eigen::Index n) : n_(n) {}
  Eigen::Index inputs() const override { return n_; }
  Eigen::Index outputs() const override { return 2 * n_; }
  void apply(const ConstRowsD& in, RowsD out) const override {
    out.leftCols(n_) = in;
    out.rightCols(n_) = in.array().square().matrix();
  }
  std::string describe() const override { return "Square"; }

 private:
  Eigen::Index n_;
};

// bias + sum of inputs.
class Sum final : public Regressor {
 public:
  Sum(Eigen::Index n, double bias) : n_(n), bias_(bias) {}
  Eigen::Index inputs() const override { return n_; }
  void predict(const ConstRowsD& in, RowsD out, Scratch&) const override {
    out.col(0) = (in.rowwise().sum().array() + bias_).matrix();
  }
  std::string describe() const override { return "Sum"; }

 private:
  Eigen::Index n_;
  double bias_;
};

// [sum of inputs, -sum of inputs, bias]: several outputs, as a Keras model with three
// output units.
class Fan final : public Regressor {
 public:
  Fan(Eigen::Index n, double bias) : n_(n), bias_(bias) {}
  Eigen::Index inputs() const override { return n_; }
  Eigen::Index outputs() const override { return 3; }
  void predict(const ConstRowsD& in, RowsD out, Scratch&) const override {
    out.col(0) = in.rowwise().sum();
    out.col(1) = -in.rowwise().sum();
    out.col(2).setConstant(bias_);
  }
  std::string describe() const override { return "Fan"; }

 private:
  Eigen::Index n_;
  double bias_;
};

// Files are named "<kind>_<n>_<param>": scale_2_10 = Scale(2, 10), sum_4_-5 = Sum(4, -5).
Result<Stage> fake_loader(std::string_view file, std::string_view) {
  const std::string f(file);
  const auto a = f.find('_');
  const auto b = f.find('_', a + 1);
  const std::string kind = f.substr(0, a);
  const Eigen::Index n = std::stoi(f.substr(a + 1, b - a - 1));
  const double p = b == std::string::npos ? 0 : std::stod(f.substr(b + 1));
  if (kind == "scale") return Stage(std::make_unique<Scale>(n, p));
  if (kind == "square") return Stage(std::make_unique<Square>(n));
  if (kind == "sum") return Stage(std::make_unique<Sum>(n, p));
  if (kind == "fan") return Stage(std::make_unique<Fan>(n, p));
  return Status(Code::kInvalidArgument, "unknown fake stage " + f);
}

Result<std::unique_ptr<Model>> load(const std::string& map_text) {
  auto map = json::parse(map_text, "Trainer_1.json");
  if (!map.ok()) return map.status();
  ModelFolder folder = make_folder("test", {{"scale_2_10", ""}, {"square_2", ""}, {"sum_4_-5", ""},
                                             {"sum_2_1", ""}, {"sum_1_0", ""}, {"scale_1_2", ""},
                                             {"fan_2_7", ""}});
  ModelInfo info;
  info.name = "Trainer_1";
  return load_pipeline_model(info, *map, "Trainer_1.json", folder, fake_loader);
}

TEST(PipelineModel, ComponentsChainTheirTransformsIntoTheRegressor) {
  auto m = load(R"({
    "package": {"model_file": "sum_4_-5", "features": ["a", "b"], "fe_files": ["scale_2_10", "square_2"]},
    "dram":    {"model_file": "sum_1_0",  "features": ["c"],      "fe_files": ["scale_1_2"]}})");
  ASSERT_TRUE(m.ok()) << m.status().to_string();
  const Model& sut = **m;
  EXPECT_EQ(sut.info().components, (std::vector<std::string>{"package", "dram"}));
  EXPECT_EQ(sut.info().features, (std::vector<std::string>{"a", "b", "c"}));
  // columns in another order, with an extra one
  auto e = evaluate(sut, {"c", "x", "b", "a"}, rows({{3, 99, 0.2f, 0.1f}, {0, 0, 0, 0}}));
  ASSERT_TRUE(e.status.ok()) << e.status.to_string();
  // package: a=0.1,b=0.2 -> x10 -> [1,2] -> [1,2,1,4] -> sum 8 - 5 = 3; dram: 3*2 = 6
  EXPECT_NEAR(e.out(0, 0), 3.0f, 1e-5);
  EXPECT_NEAR(e.out(0, 1), 6.0f, 1e-5);
  // zeros: -5 clamped to 0
  EXPECT_EQ(e.out(1, 0), 0.0f);
  EXPECT_EQ(e.out(1, 1), 0.0f);
}

TEST(PipelineModel, MissingFeaturesAreNamed) {
  auto m = load(R"({"package": {"model_file": "sum_2_1", "features": ["a", "b"]}})");
  ASSERT_TRUE(m.ok());
  auto e = evaluate(**m, {"a"}, rows({{1}}));
  EXPECT_EQ(e.status.code(), Code::kMissingFeatures);
  EXPECT_NE(e.status.message().find("b"), std::string::npos);
}

TEST(PipelineModel, WidthsThatDoNotChainAreRefused) {
  auto m = load(R"({"package": {"model_file": "sum_2_1", "features": ["a", "b"], "fe_files": ["square_2"]}})");
  ASSERT_FALSE(m.ok());
  EXPECT_NE(m.status().message().find("Sum takes 2 inputs (receives 4)"), std::string::npos)
      << m.status().message();
  auto t = load(R"({"package": {"model_file": "sum_1_0", "features": ["a"], "fe_files": ["scale_2_10"]}})");
  ASSERT_FALSE(t.ok());
  EXPECT_NE(t.status().message().find("receives 1"), std::string::npos) << t.status().message();
}

TEST(PipelineModel, MissingFileAndWrongStageKindsAreRefused) {
  auto missing = load(R"({"package": {"model_file": "nope.pkl", "features": ["a"]}})");
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.status().message().find("nope.pkl"), std::string::npos);
  auto swapped = load(R"({"package": {"model_file": "scale_1_2", "features": ["a"]}})");
  ASSERT_FALSE(swapped.ok());
  EXPECT_NE(swapped.status().message().find("not a regressor"), std::string::npos);
  auto bad = load(R"({"package": {"model_file": "sum_1_0", "features": ["a"], "fe_files": ["sum_1_0"]}})");
  EXPECT_FALSE(bad.ok());
}

TEST(PipelineModel, ARegressorWithSeveralOutputsServesOneComponentPerName) {
  auto m = load(R"({
    "all":  {"model_file": "fan_2_7", "features": ["a", "b"], "fe_files": ["scale_2_10"],
             "outputs": ["package", "dram", "gpu"]},
    "core": {"model_file": "sum_1_0", "features": ["c"]}})");
  ASSERT_TRUE(m.ok()) << m.status().to_string();
  EXPECT_EQ((*m)->info().components, (std::vector<std::string>{"package", "dram", "gpu", "core"}));
  auto e = evaluate(**m, {"a", "b", "c"}, rows({{0.1f, 0.2f, 4}, {0, 0, 0}}));
  ASSERT_TRUE(e.status.ok()) << e.status.to_string();
  // a, b x10 -> [1, 2]: package 3, dram -3 clamped to 0, gpu the constant 7; core = c.
  EXPECT_NEAR(e.out(0, 0), 3.0f, 1e-5);
  EXPECT_EQ(e.out(0, 1), 0.0f);
  EXPECT_EQ(e.out(0, 2), 7.0f);
  EXPECT_EQ(e.out(0, 3), 4.0f);
  EXPECT_EQ(e.out(1, 0), 0.0f);
  EXPECT_EQ(e.out(1, 2), 7.0f);
}

TEST(PipelineModel, OutputNamesMustMatchTheRegressorsOutputs) {
  auto unnamed = load(R"({"power": {"model_file": "fan_2_7", "features": ["a", "b"]}})");
  ASSERT_FALSE(unnamed.ok());
  EXPECT_NE(unnamed.status().message().find("gives 3 outputs for 1 component name(s)"), std::string::npos)
      << unnamed.status().message();
  auto short_list = load(R"({"p": {"model_file": "fan_2_7", "features": ["a", "b"], "outputs": ["x", "y"]}})");
  ASSERT_FALSE(short_list.ok());
  EXPECT_NE(short_list.status().message().find("gives 3 outputs for 2"), std::string::npos)
      << short_list.status().message();
  auto twice = load(R"({"p": {"model_file": "fan_2_7", "features": ["a", "b"], "outputs": ["x", "y", "z"]},
                        "z": {"model_file": "sum_1_0", "features": ["c"]}})");
  ASSERT_FALSE(twice.ok());
  EXPECT_NE(twice.status().message().find("component z is named twice"), std::string::npos)
      << twice.status().message();
  auto not_names = load(R"({"p": {"model_file": "fan_2_7", "features": ["a", "b"], "outputs": "x"}})");
  EXPECT_FALSE(not_names.ok());
}

TEST(PipelineModel, RecognisesComponentMaps) {
  EXPECT_TRUE(is_component_map(*json::parse(R"({"package": {"model_file": "p.pkl"}})", "m")));
  EXPECT_FALSE(is_component_map(*json::parse(R"({"package": {"All_Weights": {}}})", "m")));
  EXPECT_FALSE(is_component_map(*json::parse(R"([])", "m")));
}

}  // namespace
}  // namespace estimator::models
