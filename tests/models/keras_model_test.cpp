// SPDX-License-Identifier: Apache-2.0
// Keras loader: real files of four Keras generations (../shared/model-samples/keras, read
// at run time, skipped when absent), our own fixtures (fixtures/keras, written by
// tools/gen_keras_fixtures.py with h5py), and refusals. Every output is compared with an
// independent forward pass in numpy (tools/keras_reference.py): golden values recorded
// from it below and in fixtures/keras/expected.json, and, when /usr/bin/python3 has h5py
// and numpy, the script itself run on more rows.
#include "models/keras_model.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cctype>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <ostream>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

#include <unistd.h>

#include "models/registry.h"
#include "test_util.h"
#include "tests/support/shell_command.h"

namespace estimator::models {
namespace {

const std::string kSharedDir = std::string(ESTIMATOR_SHARED_DIR) + "/model-samples/keras/";
const std::string kFixtureDir = std::string(KERAS_FIXTURES_DIR) + "/";

std::optional<std::string> read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return std::nullopt;
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

// A file name as a GoogleTest parameter name: letters and digits, '_' for the rest.
std::string test_name(std::string n) {
  std::replace_if(
      n.begin(), n.end(), [](char c) { return std::isalnum(static_cast<unsigned char>(c)) == 0; },
      '_');
  return n;
}

bool is_zip_name(std::string_view name) { return name.ends_with(".keras"); }

Result<std::unique_ptr<Regressor>> load(std::string_view bytes, std::string_view name) {
  return is_zip_name(name) ? load_keras_zip(bytes, name) : load_keras_h5(bytes, name);
}

// Loads a fixture of ours (always present: it is in the repository).
std::unique_ptr<Regressor> must_load_fixture(const std::string& name) {
  const std::optional<std::string> bytes = read_bytes(kFixtureDir + name);
  if (!bytes) {
    ADD_FAILURE() << "fixture missing: " << kFixtureDir + name;
    return nullptr;
  }
  Result<std::unique_ptr<Regressor>> r = load(*bytes, name);
  if (!r.ok()) {
    ADD_FAILURE() << name << ": " << r.status().to_string();
    return nullptr;
  }
  return std::move(*r);
}

Status fixture_refusal(const std::string& name) {
  const std::optional<std::string> bytes = read_bytes(kFixtureDir + name);
  if (!bytes) return Status(Code::kNotFound, "fixture missing: " + kFixtureDir + name);
  Result<std::unique_ptr<Regressor>> r = load(*bytes, name);
  if (r.ok()) return Status::Ok();
  return r.status();
}

RowMatrixD predict(const Regressor& model, const RowMatrixD& x, Scratch& scratch) {
  RowMatrixD out = RowMatrixD::Constant(x.rows(), model.outputs(), -12345.0);
  model.predict(x, out, scratch);
  return out;
}

RowMatrixD predict(const Regressor& model, const RowMatrixD& x) {
  Scratch scratch;
  return predict(model, x, scratch);
}

// Deterministic inputs: x[r][c] = amplitude * sin(1.3 r + 0.7 c + 0.1).
RowMatrixD sine_rows(Eigen::Index rows, Eigen::Index cols, double amplitude = 1.0) {
  RowMatrixD x(rows, cols);
  for (Eigen::Index r = 0; r < rows; ++r) {
    for (Eigen::Index c = 0; c < cols; ++c) {
      x(r, c) =
          amplitude * std::sin(1.3 * static_cast<double>(r) + 0.7 * static_cast<double>(c) + 0.1);
    }
  }
  return x;
}

// Relative error with a floor of 1e-12 on the scale, so exact zeros compare absolutely.
double relative_error(double expected, double actual) {
  return std::abs(expected - actual) / std::max(std::abs(expected), 1e-12);
}

double max_relative_error(const RowMatrixD& expected, const RowMatrixD& actual) {
  double worst = 0;
  for (Eigen::Index i = 0; i < expected.size(); ++i) {
    worst = std::max(worst, relative_error(expected.data()[i], actual.data()[i]));
  }
  return worst;
}

constexpr double kTolerance = 1e-5;  // DESIGN.md section 7

// ------------------------------------------------------------------ numpy reference

bool python_reference_available() {
  static const bool available =
      std::system("/usr/bin/python3 -c 'import h5py, numpy' >/dev/null 2>&1") == 0;
  return available;
}

// Runs tools/keras_reference.py on `path` and `x`; nullopt (with a failure) if it fails.
std::optional<RowMatrixD> python_reference(const std::string& path, const RowMatrixD& x,
                                           Eigen::Index outputs) {
  std::ostringstream rows;
  rows.precision(17);
  for (Eigen::Index r = 0; r < x.rows(); ++r) {
    for (Eigen::Index c = 0; c < x.cols(); ++c) rows << (c ? "," : "") << x(r, c);
    rows << ';';
  }
  const std::string cmd = std::string("/usr/bin/python3 ") + KERAS_REFERENCE_SCRIPT + " '" + path +
                          "' '" + rows.str() + "'";
  const estimator::testing::CommandResult ran = estimator::testing::run_command(cmd);
  if (ran.exit_code != 0) {
    ADD_FAILURE() << "keras_reference.py failed (" << ran.exit_code << ") on " << path;
    return std::nullopt;
  }
  std::istringstream in(ran.out);
  RowMatrixD out(x.rows(), outputs);
  for (Eigen::Index i = 0; i < out.size(); ++i) {
    if (!(in >> out.data()[i])) {
      ADD_FAILURE() << "keras_reference.py printed too few values for " << path << ":\n" << ran.out;
      return std::nullopt;
    }
  }
  return out;
}

// ------------------------------------------------------------------ real files

struct RealFile {
  const char* name;
  Eigen::Index inputs;
  Eigen::Index outputs;
  const char* describe;
  // Outputs on sine_rows(3, inputs), recorded from tools/keras_reference.py (h5py + numpy,
  // float64) with the same rows:  x[r][c] = sin(1.3 r + 0.7 c + 0.1), r = 0..2.
  std::vector<double> golden;
};

// Topologies as model-samples/README.md lists them.
const RealFile kRealFiles[] = {
    {"keras3.5_legacy_seq_mlp_9-50x4-1_regression.h5",
     9,
     1,
     "Keras Sequential 9 -> Dense 50 relu -> Dense 50 relu -> Dense 50 relu -> Dense 50 relu "
     "-> Dense 1 (keras 3.5.0)",
     {-1.2720092362132867, 8.3299526990941075, 8.5955369463164626}},
    {"keras3.5_legacy_seq_mlp_12-64-32-1_sigmoid.h5",
     12,
     1,
     "Keras Sequential 12 -> Dense 64 relu -> Dense 32 relu -> Dense 1 sigmoid (keras 3.5.0)",
     {0.17166195781819715, 0.1907074435296994, 0.19571628831830079}},
    {"tfkeras2.7_seq_mlp_21-128-64-32-1_regression.h5",
     21,
     1,
     "Keras Sequential 21 -> Dense 128 relu -> Dense 64 relu -> Dense 32 relu -> Dense 1 "
     "(keras 2.7.0)",
     {389333.97259646218, 346906.44210986979, 321979.88228559651}},
    {"keras2.2.2_seq_mlp_6-512-16-3_softmax_fixedlen_strings.h5",
     6,
     3,
     "Keras Sequential 6 -> Dense 512 relu -> Dense 16 relu -> Dense 3 softmax (keras 2.2.2)",
     {0.99400969147143237, 1.4280006625524643e-05, 0.0059760285219420473, 0.98524476963728258,
      0.014755158544486268, 7.1818231122379405e-08, 0.99963654975513583, 0.00036315701832863637,
      2.9322653560356637e-07}},
    {"keras3.7_zip_seq_mlp_6-100x3-1_regression.keras",
     6,
     1,
     "Keras Sequential 6 -> Dense 100 relu -> Dense 100 relu -> Dense 100 relu -> Dense 1 "
     "(keras 3.7.0)",
     {0.69111122094281607, 0.72461289003379581, 0.36056185424756171}},
};

void PrintTo(const RealFile& f, std::ostream* os) { *os << f.name; }

class KerasRealFile : public ::testing::TestWithParam<RealFile> {
 protected:
  void SetUp() override {
    bytes_ = read_bytes(kSharedDir + GetParam().name);
    if (!bytes_) {
      GTEST_SKIP() << "real Keras sample absent (" << kSharedDir << GetParam().name
                   << "): ../shared is not beside the repository";
    }
  }
  std::optional<std::string> bytes_;
};

TEST_P(KerasRealFile, LoadsWithTheReadmeTopology) {
  Result<std::unique_ptr<Regressor>> sut = load(*bytes_, GetParam().name);
  ASSERT_TRUE(sut.ok()) << sut.status().to_string();
  EXPECT_EQ((*sut)->inputs(), GetParam().inputs);
  EXPECT_EQ((*sut)->outputs(), GetParam().outputs);
  EXPECT_EQ((*sut)->describe(), GetParam().describe);
}

TEST_P(KerasRealFile, MatchesRecordedNumpyOutputs) {
  Result<std::unique_ptr<Regressor>> sut = load(*bytes_, GetParam().name);
  ASSERT_TRUE(sut.ok()) << sut.status().to_string();
  const RowMatrixD out = predict(**sut, sine_rows(3, GetParam().inputs));
  ASSERT_EQ(static_cast<std::size_t>(out.size()), GetParam().golden.size());
  const RowMatrixD golden =
      Eigen::Map<const RowMatrixD>(GetParam().golden.data(), 3, GetParam().outputs);
  for (Eigen::Index i = 0; i < out.size(); ++i) {
    EXPECT_LE(relative_error(golden.data()[i], out.data()[i]), kTolerance)
        << "output " << i << ": expected " << golden.data()[i] << ", got " << out.data()[i];
  }
  std::printf("[ max rel ] %s recorded: %.3g\n", GetParam().name, max_relative_error(golden, out));
}

TEST_P(KerasRealFile, MatchesNumpyReferenceRunNow) {
  if (!python_reference_available()) {
    GTEST_SKIP() << "/usr/bin/python3 with h5py and numpy not available";
  }
  Result<std::unique_ptr<Regressor>> sut = load(*bytes_, GetParam().name);
  ASSERT_TRUE(sut.ok()) << sut.status().to_string();
  // 40 rows: small and large inputs (saturating sigmoid and softmax), zeros (Kepler's idle row).
  RowMatrixD x(40, GetParam().inputs);
  x.topRows(16) = sine_rows(16, GetParam().inputs);
  x.middleRows(16, 16) = sine_rows(16, GetParam().inputs, 25.0);
  x.bottomRows(8) = sine_rows(8, GetParam().inputs, 0.01);
  x.row(39).setZero();
  const std::optional<RowMatrixD> expected =
      python_reference(kSharedDir + GetParam().name, x, GetParam().outputs);
  ASSERT_TRUE(expected.has_value());
  const RowMatrixD out = predict(**sut, x);
  const double worst = max_relative_error(*expected, out);
  EXPECT_LE(worst, kTolerance);
  std::printf("[ max rel ] %s vs numpy, 40 rows: %.3g\n", GetParam().name, worst);
}

INSTANTIATE_TEST_SUITE_P(Samples, KerasRealFile, ::testing::ValuesIn(kRealFiles),
                         [](const ::testing::TestParamInfo<RealFile>& param_info) {
                           return test_name(param_info.param.name);
                         });

TEST(KerasRealFiles, WeightsOnlyLstmFileIsRefused) {
  const std::string name = "tfkeras2.2.4_weights_only_lstm_NEGATIVE.h5";
  const std::optional<std::string> bytes = read_bytes(kSharedDir + name);
  if (!bytes) GTEST_SKIP() << "real Keras sample absent: " << kSharedDir + name;
  Result<std::unique_ptr<Regressor>> sut = load_keras_h5(*bytes, name);
  ASSERT_FALSE(sut.ok());
  EXPECT_EQ(sut.status().code(), Code::kInvalidArgument);
  EXPECT_NE(sut.status().message().find(name), std::string::npos) << sut.status().message();
  EXPECT_NE(sut.status().message().find("weights-only"), std::string::npos)
      << sut.status().message();
  EXPECT_NE(sut.status().message().find("lstm, dense"), std::string::npos)
      << sut.status().message();
}

TEST(KerasRealFiles, ZipAndH5AreNotConfused) {
  const std::string zip = "keras3.7_zip_seq_mlp_6-100x3-1_regression.keras";
  const std::string h5 = "keras3.5_legacy_seq_mlp_12-64-32-1_sigmoid.h5";
  const std::optional<std::string> zip_bytes = read_bytes(kSharedDir + zip);
  const std::optional<std::string> h5_bytes = read_bytes(kSharedDir + h5);
  if (!zip_bytes || !h5_bytes) GTEST_SKIP() << "real Keras samples absent in " << kSharedDir;
  Result<std::unique_ptr<Regressor>> a = load_keras_h5(*zip_bytes, zip);
  ASSERT_FALSE(a.ok());
  EXPECT_NE(a.status().message().find("not a readable HDF5 file"), std::string::npos)
      << a.status().message();
  Result<std::unique_ptr<Regressor>> b = load_keras_zip(*h5_bytes, h5);
  ASSERT_FALSE(b.ok());
  EXPECT_NE(b.status().message().find("not a valid zip archive"), std::string::npos)
      << b.status().message();
}

// A model folder whose one Keras file has three output units: metadata.json's components
// name them, and the model serves all three (through the registry's loader, as the daemon
// and `estimator predict` load it).
TEST(KerasRealFiles, EveryOutputOfAMultiOutputModelIsAComponent) {
  const std::string name = "keras2.2.2_seq_mlp_6-512-16-3_softmax_fixedlen_strings.h5";
  const std::optional<std::string> bytes = read_bytes(kSharedDir + name);
  if (!bytes) GTEST_SKIP() << "real Keras sample absent: " << kSharedDir + name;
  const std::string features = R"("features": ["f0", "f1", "f2", "f3", "f4", "f5"])";
  auto folder = [&](const std::string& extra) {
    return testing::make_folder(
        "mem/crypto", {{"metadata.json", R"({"model_name": "crypto", "model_class": "keras", )"
                                         R"("model_file": "m.h5", )" + features + extra + "}"},
                       {"m.h5", *bytes}});
  };
  Result<std::unique_ptr<Model>> unnamed = load_model(folder(""));
  ASSERT_FALSE(unnamed.ok()) << "three outputs cannot all be 'power'";
  EXPECT_NE(unnamed.status().message().find("gives 3 outputs for 1 component name(s)"), std::string::npos)
      << unnamed.status().message();

  std::unique_ptr<Model> sut = testing::must_load(folder(R"(, "components": ["y0", "y1", "y2"])"));
  ASSERT_NE(sut, nullptr);
  EXPECT_EQ(sut->info().components, (std::vector<std::string>{"y0", "y1", "y2"}));
  if (!python_reference_available()) {
    GTEST_SKIP() << "/usr/bin/python3 with h5py and numpy not available";
  }
  // Requests carry float32: the reference gets the same values.
  RowMatrixD x(24, 6);
  x.topRows(16) = sine_rows(16, 6, 3.0);
  x.bottomRows(8) = sine_rows(8, 6, 0.05);
  const RowMatrixF xf = x.cast<float>();
  x = xf.cast<double>();
  const std::optional<RowMatrixD> expected = python_reference(kSharedDir + name, x, 3);
  ASSERT_TRUE(expected.has_value());
  // Columns in another order than the features, to show they are matched by name.
  RowMatrixF shuffled(xf.rows(), 6);
  const std::vector<std::string_view> columns = {"f5", "f4", "f3", "f2", "f1", "f0"};
  for (Eigen::Index c = 0; c < 6; ++c) shuffled.col(c) = xf.col(5 - c);
  const testing::Evaluation e = testing::evaluate(*sut, columns, shuffled);
  ASSERT_TRUE(e.status.ok()) << e.status.to_string();
  const RowMatrixD out = e.out.cast<double>();
  const double worst = max_relative_error(*expected, out);
  EXPECT_LE(worst, kTolerance);
  std::printf("[ max rel ] %s, 3 components vs numpy, 24 rows: %.3g\n", name.c_str(), worst);
}

// ------------------------------------------------------------------ our fixtures

struct Expected {
  std::string name;
  Eigen::Index inputs = 0;
  Eigen::Index outputs = 0;
  RowMatrixD rows;
  RowMatrixD expected;
};

std::vector<Expected> load_expected() {
  std::vector<Expected> all;
  const std::optional<std::string> text = read_bytes(kFixtureDir + "expected.json");
  if (!text) return all;
  const nlohmann::json doc = nlohmann::json::parse(*text, nullptr, false);
  if (!doc.is_object()) return all;
  for (const auto& [name, v] : doc.items()) {
    Expected e;
    e.name = name;
    e.inputs = v.at("inputs").get<Eigen::Index>();
    e.outputs = v.at("outputs").get<Eigen::Index>();
    const auto& rows = v.at("rows");
    const auto& out = v.at("expected");
    e.rows.resize(static_cast<Eigen::Index>(rows.size()), e.inputs);
    e.expected.resize(static_cast<Eigen::Index>(out.size()), e.outputs);
    for (std::size_t r = 0; r < rows.size(); ++r) {
      for (Eigen::Index c = 0; c < e.inputs; ++c) {
        e.rows(static_cast<Eigen::Index>(r), c) =
            rows[r].at(static_cast<std::size_t>(c)).get<double>();
      }
      for (Eigen::Index c = 0; c < e.outputs; ++c) {
        e.expected(static_cast<Eigen::Index>(r), c) =
            out[r].at(static_cast<std::size_t>(c)).get<double>();
      }
    }
    all.push_back(std::move(e));
  }
  return all;
}

TEST(KerasFixtures, ExpectedFileListsEveryPositiveFixture) {
  std::vector<std::string> names;
  for (const Expected& e : load_expected()) names.push_back(e.name);
  std::sort(names.begin(), names.end());
  EXPECT_EQ(names, (std::vector<std::string>{
                       "functional_dag_k2.h5", "functional_dag_k3.keras",
                       "functional_dag_k3_legacy.h5", "functional_dag_k3_reversed.keras",
                       "functional_k2.h5", "functional_k3.keras",
                       "keras22_list_config.h5", "keras3_layers.keras", "keras3_legacy.h5",
                       "keras3_names.keras", "tfkeras2_activations.h5", "tfkeras2_layers.h5"}));
}

TEST(KerasFixtures, EachMatchesNumpyOutputs) {
  for (const Expected& e : load_expected()) {
    SCOPED_TRACE(e.name);
    std::unique_ptr<Regressor> sut = must_load_fixture(e.name);
    ASSERT_NE(sut, nullptr);
    EXPECT_EQ(sut->inputs(), e.inputs);
    EXPECT_EQ(sut->outputs(), e.outputs);
    const RowMatrixD out = predict(*sut, e.rows);
    const double worst = max_relative_error(e.expected, out);
    EXPECT_LE(worst, kTolerance) << "expected\n" << e.expected << "\ngot\n" << out;
    std::printf("[ max rel ] fixture %s: %.3g\n", e.name.c_str(), worst);
  }
}

TEST(KerasFixtures, DescribeShowsEveryActivationAndFolding) {
  std::unique_ptr<Regressor> sut = must_load_fixture("tfkeras2_activations.h5");
  ASSERT_NE(sut, nullptr);
  EXPECT_EQ(sut->describe(),
            "Keras Sequential 4 -> Dense 6 relu -> Dense 6 sigmoid -> Dense 6 tanh -> Dense 6 "
            "softplus -> Dense 6 elu -> Dense 6 selu -> Dense 6 softsign -> Dense 6 swish -> "
            "Dense 6 exponential -> Dense 6 -> tanh -> Dense 5 relu -> sigmoid -> Dense 3 -> "
            "softmax (keras 2.7.0)");
}

TEST(KerasFixtures, KerasZipMapsLayersByClassNotByName) {
  // config.json names the layers hidden_a, hidden_b, power; their variables are at
  // layers/dense, layers/dense_1, layers/dense_2.
  std::unique_ptr<Regressor> sut = must_load_fixture("keras3_names.keras");
  ASSERT_NE(sut, nullptr);
  EXPECT_EQ(sut->describe(),
            "Keras Sequential 4 -> Dense 8 relu -> Dense 8 tanh -> Dense 2 (keras 3.7.0)");
}

TEST(KerasFixtures, FunctionalChainsLoad) {
  std::unique_ptr<Regressor> k2 = must_load_fixture("functional_k2.h5");
  ASSERT_NE(k2, nullptr);
  EXPECT_EQ(k2->describe(), "Keras Functional 3 -> Dense 4 relu -> Dense 2 (keras 2.7.0)");
  std::unique_ptr<Regressor> k3 = must_load_fixture("functional_k3.keras");
  ASSERT_NE(k3, nullptr);
  EXPECT_EQ(k3->describe(), "Keras Functional 4 -> Dense 6 softplus -> Dense 1 (keras 3.7.0)");
}

TEST(KerasFixtures, DescribeShowsLayersAndGraphs) {
  std::unique_ptr<Regressor> seq = must_load_fixture("tfkeras2_layers.h5");
  ASSERT_NE(seq, nullptr);
  EXPECT_EQ(seq->describe(),
            "Keras Sequential 5 -> Dense 8 -> BatchNormalization -> relu(max_value 1.5, "
            "negative_slope 0.1, threshold 0.2) -> Dense 8 -> leaky_relu(0.2) -> Dense 6 -> "
            "elu(alpha 0.7) -> BatchNormalization -> relu -> Dense 4 -> softmax (keras 2.7.0)");
  std::unique_ptr<Regressor> dag = must_load_fixture("functional_dag_k2.h5");
  ASSERT_NE(dag, nullptr);
  EXPECT_EQ(dag->describe(),
            "Keras Functional graph, 6 inputs: a = Dense 8 relu(input); b = Dense 8 tanh(input); "
            "add = Add(a, b); bn = BatchNormalization(add); cat = Concatenate(bn, input); "
            "leaky = leaky_relu(0.3)(cat); power = Dense 1(leaky); logits = Dense 3(bn); "
            "share = softmax(logits); outputs power, share (keras 2.7.0)");
  EXPECT_EQ(dag->outputs(), 4);  // power (1) then share (3), side by side
}

// Two output layers (power: 1 unit, share: 3 units) serve four components, in
// output_layers order, through the same path as any multi-output model.
TEST(KerasFixtures, OutputLayersAreComponentsInOrder) {
  const std::string name = "functional_dag_k2.h5";
  const std::optional<std::string> bytes = read_bytes(kFixtureDir + name);
  ASSERT_TRUE(bytes.has_value());
  std::unique_ptr<Model> sut = testing::must_load(testing::make_folder(
      "mem/dag", {{"metadata.json",
                   R"({"model_name": "dag", "model_class": "keras", "model_file": "m.h5", )"
                   R"("features": ["f0", "f1", "f2", "f3", "f4", "f5"], )"
                   R"("components": ["package", "core", "uncore", "dram"]})"},
                  {"m.h5", *bytes}}));
  ASSERT_NE(sut, nullptr);
  EXPECT_EQ(sut->info().components,
            (std::vector<std::string>{"package", "core", "uncore", "dram"}));
  if (!python_reference_available()) {
    GTEST_SKIP() << "/usr/bin/python3 with h5py and numpy not available";
  }
  RowMatrixD x = sine_rows(12, 6, 2.0);
  const RowMatrixF xf = x.cast<float>();
  x = xf.cast<double>();  // requests carry float32: the reference gets the same values
  const std::optional<RowMatrixD> expected = python_reference(kFixtureDir + name, x, 4);
  ASSERT_TRUE(expected.has_value());
  const std::vector<std::string_view> columns = {"f0", "f1", "f2", "f3", "f4", "f5"};
  const testing::Evaluation e = testing::evaluate(*sut, columns, xf);
  ASSERT_TRUE(e.status.ok()) << e.status.to_string();
  // Models clamp negative predictions to 0 (docs/models.md).
  const RowMatrixD clamped = expected->cwiseMax(0.0);
  const double worst = max_relative_error(clamped, e.out.cast<double>());
  EXPECT_LE(worst, 1e-6);  // the model's answer is float32
  std::printf("[ max rel ] %s, 4 components vs numpy, 12 rows: %.3g\n", name.c_str(), worst);
}

TEST(KerasFixtures, RowsAreIndependentOfBatchAndScratchReuse) {
  std::unique_ptr<Regressor> sut = must_load_fixture("tfkeras2_activations.h5");
  ASSERT_NE(sut, nullptr);
  const RowMatrixD x = sine_rows(50, 4, 2.0);
  Scratch scratch;
  const RowMatrixD all = predict(*sut, x, scratch);
  // One row at a time, then a small block, with the same (already grown) scratch.
  // Equal up to rounding: the products' vectorized loops split a row by its address
  // alignment, so the order of the additions may differ with the row's position.
  for (Eigen::Index r = 0; r < x.rows(); r += 7) {
    const RowMatrixD one = predict(*sut, x.row(r), scratch);
    EXPECT_LE(max_relative_error(all.row(r), one), 1e-13) << "row " << r;
  }
  const RowMatrixD block = predict(*sut, x.middleRows(10, 3), scratch);
  EXPECT_LE(max_relative_error(all.middleRows(10, 3), block), 1e-13);
  const RowMatrixD none = predict(*sut, RowMatrixD(0, 4), scratch);
  EXPECT_EQ(none.rows(), 0);
  // Softmax rows sum to one.
  for (Eigen::Index r = 0; r < all.rows(); ++r) EXPECT_NEAR(all.row(r).sum(), 1.0, 1e-12);
}

TEST(KerasFixtures, WritesOnlyItsOutputColumnsOfAStridedView) {
  // predict() into a block of a wider matrix: outer stride != columns.
  std::unique_ptr<Regressor> sut = must_load_fixture("keras3_legacy.h5");
  ASSERT_NE(sut, nullptr);
  const RowMatrixD x = sine_rows(6, 5);
  RowMatrixD wide = RowMatrixD::Constant(6, 5, 7.0);
  Scratch scratch;
  sut->predict(x, wide.middleCols(1, 2), scratch);
  EXPECT_EQ(wide.middleCols(1, 2), predict(*sut, x));
  EXPECT_TRUE((wide.col(0).array() == 7.0).all());
  EXPECT_TRUE((wide.rightCols(2).array() == 7.0).all());
}

// ------------------------------------------------------------------ refusals

struct Refusal {
  const char* fixture;
  Code code;
  std::vector<const char*> message_parts;
};

const Refusal kRefusals[] = {
    {"neg_kernel_mismatch.h5",
     Code::kInvalidArgument,
     {"neg_kernel_mismatch.h5", "layer 'dense_1'", "(5, 2)", "input has width 4"}},
    {"neg_nan_weight.h5",
     Code::kInvalidValue,
     {"neg_nan_weight.h5: layer 'dense' (Dense): bias /model_weights/dense/dense/bias:0",
      "value 2 is NaN"}},
    {"neg_int_weights.h5",
     Code::kInvalidArgument,
     {"kernel:0", "integer of 4 bytes", "only float32 and float64"}},
    {"neg_unknown_layer.h5",
     Code::kInvalidArgument,
     {"layer 'layer_normalization' (LayerNormalization) is not supported", "config.layers[2]"}},
    {"neg_config_not_json.h5",
     Code::kInvalidArgument,
     {"neg_config_not_json.h5: model_config", "not valid JSON"}},
    {"neg_weights_only.h5",
     Code::kInvalidArgument,
     {"weights-only", "no model_config", "layers: lstm, dense"}},
    {"neg_functional_branch.h5",
     Code::kInvalidArgument,
     {"layer 'dense_1' (Dense)", "(4, 2) but its input has width 3"}},
    // Functional graphs that are not a DAG from one input, and layers Keras files hold that
    // are not evaluated: each named.
    {"neg_cycle.h5",
     Code::kInvalidArgument,
     {"neg_cycle.h5: model_config: config.layers", "cycle", "'a', 'b', 'out'"}},
    {"neg_cycle.keras",
     Code::kInvalidArgument,
     {"neg_cycle.keras: config.json", "cycle", "'a', 'b', 'c', 'out'"}},
    {"neg_dangling_ref.keras",
     Code::kInvalidArgument,
     {"layer 'out' (ReLU) reads layer 'ghost', which is not in the model", "inbound_nodes"}},
    {"neg_dangling_input.h5",
     Code::kInvalidArgument,
     {"InputLayer 'input_2' is not the model's input (a dangling input)", "config.layers[1]"}},
    {"neg_unknown_output.keras",
     Code::kInvalidArgument,
     {"config.output_layers", "the model's output reads layer 'nowhere', which is not in the model"}},
    {"neg_two_inputs.keras",
     Code::kInvalidArgument,
     {"config.input_layers", "the model has 2 inputs"}},
    {"neg_shared_layer.h5",
     Code::kInvalidArgument,
     {"layer 'shared' (ReLU) is called 2 times; shared layers are not supported"}},
    {"neg_add_widths.h5",
     Code::kInvalidArgument,
     {"layer 'out' (Add): adds tensors of widths 4 and 3"}},
    {"neg_reshape.keras",
     Code::kInvalidArgument,
     {"layer 'out' (Reshape): reshapes rows of 3 values to (3, 1)", "keeps flat rows"}},
    {"neg_bn_variance.h5",
     Code::kInvalidArgument,
     {"layer 'out' (BatchNormalization): moving_variance + epsilon is", "at 1, not positive"}},
    {"neg_bn_weights.h5",
     Code::kInvalidArgument,
     {"/model_weights/out: weight_names lists 3 weights",
      "BatchNormalization layer 'out' has 4 (gamma, beta, moving_mean, moving_variance)"}},
    {"neg_lstm.h5",
     Code::kInvalidArgument,
     {"layer 'out' (LSTM) is not supported", "config.layers[1]"}},
    {"neg_conv1d.keras",
     Code::kInvalidArgument,
     {"layer 'out' (Conv1D) is not supported", "config.layers[1]"}},
    {"neg_custom_class.keras",
     Code::kInvalidArgument,
     {"layer 'out' (Scaler), a custom class from module 'my_project.layers', is not supported"}},
    {"neg_vars_name_mismatch.keras",
     Code::kInvalidArgument,
     {"/layers/dense_1/vars", "'something_else'", "'hidden_b'"}},
    {"neg_no_weights.keras",
     Code::kInvalidArgument,
     {"neg_no_weights.keras: model.weights.h5", "missing"}},
};

void PrintTo(const Refusal& r, std::ostream* os) { *os << r.fixture; }

class KerasRefusal : public ::testing::TestWithParam<Refusal> {};

TEST_P(KerasRefusal, IsRefusedWithAClearMessage) {
  const Status s = fixture_refusal(GetParam().fixture);
  ASSERT_NE(s.code(), Code::kNotFound) << s.message();
  ASSERT_FALSE(s.ok()) << GetParam().fixture << " was accepted";
  EXPECT_EQ(s.code(), GetParam().code) << s.to_string();
  for (const char* part : GetParam().message_parts) {
    EXPECT_NE(s.message().find(part), std::string::npos)
        << "message lacks \"" << part << "\": " << s.message();
  }
}

INSTANTIATE_TEST_SUITE_P(Fixtures, KerasRefusal, ::testing::ValuesIn(kRefusals),
                         [](const ::testing::TestParamInfo<Refusal>& param_info) {
                           return test_name(param_info.param.fixture);
                         });

// The bytes of fixture `name` with the first occurrence of `from` replaced by `to` (same
// length, so an HDF5 string attribute keeps its layout: the model_config is stored as is).
std::string patched(const std::string& name, std::string_view from, std::string_view to) {
  std::optional<std::string> bytes = read_bytes(kFixtureDir + name);
  EXPECT_TRUE(bytes.has_value()) << name;
  EXPECT_EQ(from.size(), to.size());
  if (!bytes) return {};
  const std::size_t at = bytes->find(from);
  EXPECT_NE(at, std::string::npos) << "\"" << from << "\" not in " << name;
  if (at != std::string::npos) bytes->replace(at, from.size(), to);
  return *bytes;
}

Status refusal_of(std::string_view bytes, std::string_view name) {
  Result<std::unique_ptr<Regressor>> r = load(bytes, name);
  return r.ok() ? Status::Ok() : r.status();
}

TEST(KerasRefusals, PatchedFixtureLoadsWhenThePatchIsHarmless) {
  // Guards the patching helper: a same-meaning edit still loads.
  const std::string bytes = patched("keras3_legacy.h5", "\"rate\": 0.0", "\"rate\": 0.5");
  EXPECT_TRUE(refusal_of(bytes, "keras3_legacy.h5").ok());
}

TEST(KerasRefusals, UnsupportedActivationIsNamed) {
  const Status s = refusal_of(patched("keras3_legacy.h5", "\"elu\"", "\"gel\""), "m.h5");
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("activation \"gel\" is not supported"), std::string::npos)
      << s.message();
  EXPECT_NE(s.message().find("m.h5: model_config: config.layers[2].config.activation"),
            std::string::npos)
      << s.message();
}

TEST(KerasRefusals, UnitsDisagreeingWithKernel) {
  const Status s = refusal_of(patched("keras3_legacy.h5", "\"units\": 7", "\"units\": 8"), "m.h5");
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("has shape (5, 7) but the layer has 8 units"), std::string::npos)
      << s.message();
}

TEST(KerasRefusals, DeclaredInputWidthDisagreeingWithKernel) {
  const Status s = refusal_of(
      patched("keras3_legacy.h5", "\"batch_shape\": [null, 5]", "\"batch_shape\": [null, 6]"),
      "m.h5");
  ASSERT_FALSE(s.ok());
  // build_input_shape still says 5: caught while reading the config.
  EXPECT_NE(s.message().find("disagrees with the width declared earlier"), std::string::npos)
      << s.message();
}

TEST(KerasRefusals, MultiDimensionalInputIsRefused) {
  const Status s = refusal_of(patched("keras22_list_config.h5", "\"batch_input_shape\": [null, 3]",
                                      "\"batch_input_shape\": [3, 1, 1]"),
                              "m.h5");
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("is not a batch of flat rows"), std::string::npos) << s.message();
}

TEST(KerasRefusals, UnsupportedModelClassIsNamed) {
  const Status s = refusal_of(patched("keras3_legacy.h5", "\"class_name\": \"Sequential\"",
                                      "\"class_name\": \"Sequentia2\""),
                              "m.h5");
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("model class Sequentia2 is not supported"), std::string::npos)
      << s.message();
}

// A TensorFlow SavedModel in a model folder, as a directory of it or as the folder itself.
TEST(KerasRefusals, SavedModelDirectoriesAreRefusedByName) {
  namespace fs = std::filesystem;
  const fs::path root =
      fs::temp_directory_path() / ("keras_savedmodel_test_" + std::to_string(::getpid()));
  fs::remove_all(root);
  auto write = [](const fs::path& p, const std::string& text) {
    fs::create_directories(p.parent_path());
    std::ofstream(p, std::ios::binary) << text;
  };
  const std::string metadata = R"({"model_name": "m", "model_class": "keras"})";
  write(root / "inner" / "metadata.json", metadata);
  write(root / "inner" / "saved" / "saved_model.pb", "not read");
  write(root / "inner" / "saved" / "variables" / "variables.index", "not read");
  write(root / "itself" / "metadata.json", metadata);
  write(root / "itself" / "saved_model.pb", "not read");
  fs::create_directories(root / "itself" / "variables");

  std::vector<models::Refusal> refused;
  Result<std::vector<ModelFolder>> folders = Registry::scan_directory(root, refused);
  ASSERT_TRUE(folders.ok()) << folders.status().to_string();
  std::map<std::string, std::string> by_origin;
  for (const models::Refusal& r : refused) by_origin[r.origin] = r.reason.message();
  for (const fs::path& saved : {root / "inner" / "saved", root / "itself"}) {
    ASSERT_EQ(by_origin.count(saved.string()), 1U) << saved;
    EXPECT_NE(by_origin[saved.string()].find(saved.string() +
                                             " is a TensorFlow SavedModel directory"),
              std::string::npos)
        << by_origin[saved.string()];
  }
  fs::remove_all(root);
}

TEST(KerasRefusals, TruncatedH5) {
  const std::optional<std::string> bytes = read_bytes(kFixtureDir + "keras3_legacy.h5");
  ASSERT_TRUE(bytes.has_value());
  for (std::size_t keep :
       {std::size_t{0}, std::size_t{7}, std::size_t{100}, bytes->size() / 2, bytes->size() - 1}) {
    SCOPED_TRACE("kept " + std::to_string(keep) + " of " + std::to_string(bytes->size()));
    Result<std::unique_ptr<Regressor>> r =
        load_keras_h5(std::string_view(*bytes).substr(0, keep), "cut.h5");
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.status().code(), Code::kInvalidArgument);
    EXPECT_EQ(r.status().message().rfind("cut.h5: ", 0), 0U) << r.status().message();
  }
  // The reason HDF5 gives is passed on.
  Result<std::unique_ptr<Regressor>> r =
      load_keras_h5(std::string_view(*bytes).substr(0, bytes->size() / 2), "cut.h5");
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("truncated file"), std::string::npos) << r.status().message();
}

TEST(KerasRefusals, TruncatedKerasZip) {
  const std::optional<std::string> bytes = read_bytes(kFixtureDir + "keras3_names.keras");
  ASSERT_TRUE(bytes.has_value());
  for (std::size_t keep :
       {std::size_t{0}, std::size_t{30}, bytes->size() / 2, bytes->size() - 10}) {
    SCOPED_TRACE("kept " + std::to_string(keep) + " of " + std::to_string(bytes->size()));
    Result<std::unique_ptr<Regressor>> r =
        load_keras_zip(std::string_view(*bytes).substr(0, keep), "cut.keras");
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.status().message().rfind("cut.keras", 0), 0U) << r.status().message();
  }
}

// What loading corrupted bytes did. The loaders read HDF5 in a child process, so a file
// that crashes or hangs the library must come back as a refusal saying so; this test
// process crashing or hanging (the ctest timeout) is the failure.
enum class Outcome { kLoaded, kRefused, kParserCrashed, kParserHung };

Outcome load_corrupted(const std::string& bytes, const std::string& name) {
  const IsolationLimits limits{.timeout = std::chrono::milliseconds(1500)};
  Result<std::unique_ptr<Regressor>> r =
      is_zip_name(name) ? load_keras_zip(bytes, name, limits) : load_keras_h5(bytes, name, limits);
  if (r.ok()) return Outcome::kLoaded;
  EXPECT_EQ(r.status().message().rfind(name, 0), 0U) << "the message names the file: "
                                                     << r.status().message();
  if (r.status().code() == Code::kDeadlineExceeded) return Outcome::kParserHung;
  if (r.status().message().find("the parser crashed") != std::string::npos) {
    return Outcome::kParserCrashed;
  }
  return Outcome::kRefused;
}

// Flips one byte every `step` bytes of fixture `name`; counts outcomes.
std::map<Outcome, int> corrupt_each(const std::string& name, std::size_t step) {
  std::map<Outcome, int> seen;
  const std::optional<std::string> bytes = read_bytes(kFixtureDir + name);
  EXPECT_TRUE(bytes.has_value()) << name;
  if (!bytes) return seen;
  for (std::size_t at = 0; at < bytes->size(); at += step) {
    std::string b = *bytes;
    b[at] = static_cast<char>(b[at] ^ 0x5A);
    ++seen[load_corrupted(b, name)];
  }
  std::printf("%s: loaded %d, refused %d, parser crashed %d, parser hung %d\n", name.c_str(),
              seen[Outcome::kLoaded], seen[Outcome::kRefused], seen[Outcome::kParserCrashed],
              seen[Outcome::kParserHung]);
  return seen;
}

TEST(KerasRefusals, CorruptedKerasZipIsRefusedNeverCrashes) {
  // Each member carries a CRC that libzip checks at the end of the read, so a flipped byte
  // anywhere, the HDF5 image included, is refused before HDF5 parses it.
  std::map<Outcome, int> seen = corrupt_each("keras3_names.keras", 13);
  EXPECT_GT(seen[Outcome::kRefused], 100);
  EXPECT_EQ(seen[Outcome::kParserCrashed], 0);
  EXPECT_EQ(seen[Outcome::kParserHung], 0);
}

// HDF5 itself (1.10.8 here) does not survive every corrupted file: a flipped byte in a
// global heap makes H5Aread's variable-length conversion copy out of bounds (SIGSEGV in
// H5HG_read), and others send it into an endless loop. The isolated loader turns both into
// refusals; reaching the end of this test is the proof that this process survived them.
TEST(KerasRefusals, CorruptedH5IsRefusedNeverCrashesTheLoader) {
  std::map<Outcome, int> seen = corrupt_each("keras3_legacy.h5", 97);
  EXPECT_GT(seen[Outcome::kRefused] + seen[Outcome::kParserCrashed] + seen[Outcome::kParserHung],
            0);
}

TEST(KerasRefusals, NotKerasFiles) {
  Result<std::unique_ptr<Regressor>> r = load_keras_h5("just some text", "text.h5");
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("text.h5: not a readable HDF5 file"), std::string::npos)
      << r.status().message();
  r = load_keras_zip("just some text", "text.keras");
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("text.keras: not a valid zip archive"), std::string::npos)
      << r.status().message();
}

}  // namespace
}  // namespace estimator::models
