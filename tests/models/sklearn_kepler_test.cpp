// SPDX-License-Identifier: Apache-2.0
// Kepler's published scikit-learn models (../shared/model-samples/kepler-model-db/*.zip,
// written by scikit-learn 1.5.1 with numpy 2, read in place and never copied): the golden
// values of the README, every .pkl loads, and, when Debian's scikit-learn is installed,
// the predictions of full pipelines (scaler [-> poly_scaler] -> model) match scikit-learn's
// own code (tools/gen_sklearn_fixtures.py --predict) to 1e-5 relative.
// Members are read with the project's own zip reader (tests/models/test_files.h).
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>
#include <string>
#include <variant>
#include <vector>

#include "models/pickle.h"
#include "models/sklearn_model.h"
#include "test_files.h"
#include "tests/support/shell_command.h"

namespace estimator::models {
namespace {

namespace fs = std::filesystem;
using ::estimator::testing::command_output;
using ::estimator::testing::shell_quote;

fs::path db_dir() { return fs::path(ESTIMATOR_SHARED_DIR) / "model-samples" / "kepler-model-db"; }

#define REQUIRE_KEPLER_ZIPS()                                                               \
  if (!fs::is_directory(db_dir())) {                                                        \
    GTEST_SKIP() << "Kepler model-db samples not found at " << db_dir().string()            \
                 << " (the shared/ folder beside the repository); nothing to compare with"; \
  }



std::string member(const std::string& zip, const std::string& name) {
  std::optional<std::string> bytes = testing::zip_member(db_dir() / zip, name);
  if (!bytes || bytes->empty()) {
    ADD_FAILURE() << "cannot extract " << name << " from " << zip;
    return {};
  }
  return *bytes;
}

std::vector<std::string> members(const std::string& zip) {
  std::vector<std::string> out;
  if (auto all = testing::zip_members(db_dir() / zip)) {
    for (const auto& [name, bytes] : *all) out.push_back(name);
  }
  return out;
}

std::unique_ptr<pickle::Document> parse(const std::string& bytes, const std::string& what) {
  pickle::Options opts;
  opts.allowed = sklearn_classes();
  auto doc = pickle::read_pickle(bytes, what, opts);
  if (!doc.ok()) {
    ADD_FAILURE() << doc.status().to_string();
    return nullptr;
  }
  return std::move(*doc);
}

std::vector<double> doubles(const pickle::Object& o, std::string_view attr) {
  const pickle::Value* v = o.attr(attr);
  if (v == nullptr || v->as<pickle::Array>() == nullptr) {
    ADD_FAILURE() << o.name << " has no array " << attr;
    return {};
  }
  return *pickle::array_doubles(*v->as<pickle::Array>(), attr);
}

// A pipeline of stages, loaded from one zip: transforms then the regressor.
struct Pipeline {
  std::vector<std::unique_ptr<Transform>> transforms;
  std::unique_ptr<Regressor> regressor;

  RowMatrixD run(const RowMatrixD& x) const {
    RowMatrixD cur = x;
    for (const auto& t : transforms) {
      RowMatrixD next(cur.rows(), t->outputs());
      t->apply(cur, next);
      cur = std::move(next);
    }
    Scratch scratch;
    RowMatrixD out(cur.rows(), regressor->outputs());
    regressor->predict(cur, out, scratch);
    return out;
  }
};

Pipeline load_pipeline(const std::string& zip, const std::vector<std::string>& names) {
  Pipeline p;
  for (std::size_t i = 0; i < names.size(); ++i) {
    Result<SklearnStage> s = load_sklearn_pickle(member(zip, names[i]), zip + ":" + names[i]);
    if (!s.ok()) {
      ADD_FAILURE() << s.status().to_string();
      return p;
    }
    if (i + 1 < names.size()) {
      p.transforms.push_back(std::move(std::get<std::unique_ptr<Transform>>(*s)));
    } else {
      p.regressor = std::move(std::get<std::unique_ptr<Regressor>>(*s));
    }
  }
  return p;
}

TEST(SklearnKepler, ScalerGoldenScale) {
  REQUIRE_KEPLER_ZIPS();
  for (const char* zip : {"LinearRegressionTrainer_1.zip", "GradientBoostingRegressorTrainer_1.zip",
                          "KNeighborsRegressorTrainer_1.zip"}) {
    auto doc = parse(member(zip, "scaler.pkl"), "scaler.pkl");
    ASSERT_TRUE(doc);
    const auto* o = doc->root().as<pickle::Object>();
    ASSERT_NE(o, nullptr);
    EXPECT_EQ(o->qualified(), "sklearn.preprocessing._data.MaxAbsScaler");
    EXPECT_EQ(doubles(*o, "scale_"), (std::vector<double>{1.0, 71901.33333333333, 3337.333333333333,
                                                          3.3333333333333335, 1.0}))
        << zip;
  }
}

TEST(SklearnKepler, LinearRegressionGoldenValuesAndPrediction) {
  REQUIRE_KEPLER_ZIPS();
  const std::string zip = "LinearRegressionTrainer_1.zip";
  struct Golden {
    const char* file;
    std::vector<double> coef;
    double intercept;
  };
  const std::vector<double> scale{1.0, 71901.33333333333, 3337.333333333333, 3.3333333333333335,
                                  1.0};
  for (const Golden& g :
       {Golden{"package.pkl", {0, 183.65315084498238, 0, 0, 0}, 72.19634564668303},
        Golden{"dram.pkl", {0, 8.091657781787989, 0, 3.002287840886645, 0}, 20.90483931332082}}) {
    auto doc = parse(member(zip, g.file), g.file);
    ASSERT_TRUE(doc);
    const auto* o = doc->root().as<pickle::Object>();
    ASSERT_NE(o, nullptr);
    EXPECT_EQ(o->qualified(), "sklearn.linear_model._base.LinearRegression");
    EXPECT_EQ(doubles(*o, "coef_"), g.coef) << g.file;
    EXPECT_EQ(pickle::as_number(*o->attr("intercept_")), g.intercept)
        << g.file;  // a numpy float64 scalar

    Pipeline p = load_pipeline(zip, {"scaler.pkl", g.file});
    ASSERT_TRUE(p.regressor);
    RowMatrixD x(2, 5);
    x << 3, 40000, 1500, 1, 7, 0, 0, 0, 0, 0;
    const RowMatrixD out = p.run(x);
    for (Eigen::Index r = 0; r < x.rows(); ++r) {
      double expected = g.intercept;
      for (std::size_t j = 0; j < 5; ++j)
        expected += g.coef[j] * (x(r, static_cast<Eigen::Index>(j)) / scale[j]);
      EXPECT_NEAR(out(r, 0), expected, 1e-12 * std::abs(expected)) << g.file << " row " << r;
    }
  }
}

TEST(SklearnKepler, GradientBoostingGoldenStructure) {
  REQUIRE_KEPLER_ZIPS();
  const std::string zip = "GradientBoostingRegressorTrainer_1.zip";
  auto doc = parse(member(zip, "package.pkl"), "package.pkl");
  ASSERT_TRUE(doc);
  const auto* gb = doc->root().as<pickle::Object>();
  ASSERT_NE(gb, nullptr);
  EXPECT_EQ(gb->qualified(), "sklearn.ensemble._gb.GradientBoostingRegressor");
  EXPECT_EQ(pickle::as_number(*gb->attr("learning_rate")), 0.1);
  const auto* init = gb->attr("init_")->as<pickle::Object>();
  ASSERT_NE(init, nullptr);
  EXPECT_EQ(init->qualified(), "sklearn.dummy.DummyRegressor");
  EXPECT_EQ(doubles(*init, "constant_"), std::vector<double>{131.91425833333335});
  const auto* est = gb->attr("estimators_")->as<pickle::Array>();
  ASSERT_NE(est, nullptr);
  ASSERT_TRUE(est->type().is_object());
  EXPECT_EQ(est->shape, (std::vector<std::int64_t>{100, 1}));
  // The README's "100 trees of 15 nodes" holds for the first trees: scikit-learn itself
  // counts 72 trees of 15 nodes and 28 of 13 in package.pkl (1444 nodes), all of depth 3.
  int nodes_total = 0;
  int full_trees = 0;
  for (const pickle::Value* v : est->objects) {
    const auto* dt = v->as<pickle::Object>();
    ASSERT_NE(dt, nullptr);
    EXPECT_EQ(dt->qualified(), "sklearn.tree._classes.DecisionTreeRegressor");
    const auto* tree = dt->attr("tree_")->as<pickle::Object>();
    ASSERT_NE(tree, nullptr);
    EXPECT_EQ(tree->qualified(), "sklearn.tree._tree.Tree");
    EXPECT_EQ(pickle::as_int(*tree->attr("max_depth")), 3);
    const std::int64_t count = *pickle::as_int(*tree->attr("node_count"));
    nodes_total += static_cast<int>(count);
    full_trees += count == 15 ? 1 : 0;
    if (v == est->objects[0]) {
      EXPECT_EQ(count, 15);
    }
    const auto* nodes = tree->attr("nodes")->as<pickle::Array>();
    ASSERT_NE(nodes, nullptr);
    EXPECT_EQ(nodes->shape, std::vector<std::int64_t>{count});
    const pickle::Dtype& dt_nodes = nodes->type();
    EXPECT_EQ(dt_nodes.itemsize, 64);
    const std::vector<std::tuple<std::string, char, int, int>> fields{
        {"left_child", 'i', 8, 0},
        {"right_child", 'i', 8, 8},
        {"feature", 'i', 8, 16},
        {"threshold", 'f', 8, 24},
        {"impurity", 'f', 8, 32},
        {"n_node_samples", 'i', 8, 40},
        {"weighted_n_node_samples", 'f', 8, 48},
        {"missing_go_to_left", 'u', 1, 56}};
    ASSERT_EQ(dt_nodes.fields.size(), fields.size());
    for (std::size_t i = 0; i < fields.size(); ++i) {
      const auto& [name, kind, size, offset] = fields[i];
      EXPECT_EQ(dt_nodes.fields[i].name, name);
      EXPECT_EQ(dt_nodes.fields[i].offset, offset);
      EXPECT_EQ(dt_nodes.fields[i].dtype->as<pickle::Dtype>()->kind, kind);
      EXPECT_EQ(dt_nodes.fields[i].dtype->as<pickle::Dtype>()->itemsize, size);
    }
    const auto* values = tree->attr("values")->as<pickle::Array>();
    ASSERT_NE(values, nullptr);
    EXPECT_EQ(values->shape, (std::vector<std::int64_t>{count, 1, 1}));
    EXPECT_EQ(values->type().kind, 'f');
    EXPECT_EQ(values->type().itemsize, 8);
  }
  EXPECT_EQ(nodes_total, 1444);
  EXPECT_EQ(full_trees, 72);
  auto stage = load_sklearn_pickle(member(zip, "package.pkl"), "package.pkl");
  ASSERT_TRUE(stage.ok()) << stage.status().to_string();
  EXPECT_EQ(std::get<std::unique_ptr<Regressor>>(*stage)->describe(),
            "GradientBoostingRegressor(100 trees, 1444 nodes)");
}

TEST(SklearnKepler, EveryPickleLoads) {
  REQUIRE_KEPLER_ZIPS();
  int pickles = 0;
  for (const auto& entry : fs::directory_iterator(db_dir())) {
    if (entry.path().extension() != ".zip") continue;
    const std::string zip = entry.path().filename().string();
    const bool poly = zip.rfind("Polynomial", 0) == 0;
    for (const std::string& name : members(zip)) {
      if (name.size() < 4 || name.substr(name.size() - 4) != ".pkl") continue;
      SCOPED_TRACE(zip + ":" + name);
      ++pickles;
      Result<SklearnStage> s = load_sklearn_pickle(member(zip, name), zip + ":" + name);
      ASSERT_TRUE(s.ok()) << s.status().to_string();
      const std::string text = std::visit([](const auto& p) { return p->describe(); }, *s);
      if (name == "scaler.pkl") {
        ASSERT_TRUE(std::holds_alternative<std::unique_ptr<Transform>>(*s));
        EXPECT_EQ(text, "MaxAbsScaler(5)");
      } else if (name == "poly_scaler.pkl") {
        ASSERT_TRUE(std::holds_alternative<std::unique_ptr<Transform>>(*s));
        EXPECT_EQ(text, "PolynomialFeatures(5->21, degree 2)");
      } else {
        ASSERT_TRUE(std::holds_alternative<std::unique_ptr<Regressor>>(*s)) << text;
        EXPECT_EQ(std::get<std::unique_ptr<Regressor>>(*s)->inputs(), poly ? 21 : 5) << text;
      }
      if (zip.rfind("KNeighbors", 0) == 0 && name != "scaler.pkl") {
        EXPECT_EQ(text, "KNeighborsRegressor(k=6, 120 points, euclidean, uniform, kd_tree)");
      }
      std::cout << "  " << zip << ":" << name << " -> " << text << "\n";
    }
  }
  EXPECT_EQ(pickles, 32) << "the six scikit-learn zips hold 32 pickles";
}

// ---- scikit-learn's own predictions -----------------------------------------------------

bool have_reference() {
  return std::system("/usr/bin/python3 -c 'import sklearn, joblib, numpy' >/dev/null 2>&1") == 0;
}

struct Request {
  std::string zip;
  std::string chain;  // members applied in turn, e.g. "scaler.pkl,package.pkl"
};

// scikit-learn's outputs for each request on rows x, from one run of the reference script.
std::vector<std::vector<std::vector<double>>> reference(const std::vector<Request>& requests,
                                                        const RowMatrixD& x) {
  char path[] = "/tmp/sklearn_requests_XXXXXX";
  const int fd = mkstemp(path);
  if (fd < 0) {
    ADD_FAILURE() << "mkstemp failed";
    return {};
  }
  close(fd);
  nlohmann::json rows = nlohmann::json::array();
  for (Eigen::Index r = 0; r < x.rows(); ++r) {
    nlohmann::json row = nlohmann::json::array();
    for (Eigen::Index c = 0; c < x.cols(); ++c) row.push_back(x(r, c));
    rows.push_back(row);
  }
  nlohmann::json batch = nlohmann::json::array();
  for (const Request& q : requests) {
    batch.push_back({{"zip", (db_dir() / q.zip).string()}, {"chain", q.chain}, {"rows", rows}});
  }
  {
    std::ofstream out(path);
    out << batch.dump();
  }
  const std::optional<std::string> out = command_output(
      "/usr/bin/python3 " + shell_quote(SKLEARN_REFERENCE_SCRIPT) + " --predict-batch " +
      shell_quote(path));
  fs::remove(path);
  if (!out) {
    ADD_FAILURE() << "the reference script failed";
    return {};
  }
  std::vector<std::vector<std::vector<double>>> results;
  const nlohmann::json doc = nlohmann::json::parse(*out);
  for (const auto& result : doc["results"]) {
    std::vector<std::vector<double>> m;
    for (const auto& row : result["outputs"]) {
      std::vector<double> v;
      for (const auto& s : row) v.push_back(std::stod(s.get<std::string>()));
      m.push_back(v);
    }
    results.push_back(m);
  }
  return results;
}

TEST(SklearnKepler, PipelinesMatchScikitLearn) {
  REQUIRE_KEPLER_ZIPS();
  if (!have_reference())
    GTEST_SKIP() << "/usr/bin/python3 has no scikit-learn/joblib/numpy: no reference";
  // Rows over the features' range (scale_ is each feature's max |x|), zeros (Kepler's idle
  // request), some beyond the training range, and the golden scales themselves.
  const std::vector<double> scale{1.0, 71901.33333333333, 3337.333333333333, 3.3333333333333335,
                                  1.0};
  std::mt19937 rng(42);
  std::uniform_real_distribution<double> u(0.0, 1.3);
  RowMatrixD x(24, 5);
  for (Eigen::Index r = 0; r < x.rows(); ++r) {
    for (Eigen::Index c = 0; c < 5; ++c) x(r, c) = u(rng) * scale[static_cast<std::size_t>(c)];
  }
  x.row(0).setZero();
  for (Eigen::Index c = 0; c < 5; ++c) x(1, c) = scale[static_cast<std::size_t>(c)];
  x(2, 1) = 0.0;  // only IRQ activity
  x(3, 0) = 0.0;
  x(3, 1) = 1e7;  // far outside

  struct Case {
    std::string zip;
    std::vector<std::string> transforms;
  };
  const std::vector<Case> cases{
      {"LinearRegressionTrainer_1.zip", {"scaler.pkl"}},
      {"SGDRegressorTrainer_1.zip", {"scaler.pkl"}},
      {"PolynomialRegressionTrainer_1.zip", {"scaler.pkl", "poly_scaler.pkl"}},
      {"GradientBoostingRegressorTrainer_1.zip", {"scaler.pkl"}},
      {"KNeighborsRegressorTrainer_1.zip", {"scaler.pkl"}},
      {"SVRRegressorTrainer_2.zip", {"scaler.pkl"}},
  };
  std::vector<Request> requests;
  for (const Case& c : cases) {
    for (const char* component : {"package.pkl", "core.pkl", "uncore.pkl", "dram.pkl"}) {
      std::string chain;
      for (const std::string& n : c.transforms) chain += n + ",";
      requests.push_back(Request{c.zip, chain + component});
    }
  }
  const auto ref = reference(requests, x);
  ASSERT_EQ(ref.size(), requests.size());
  std::map<std::string, double> worst;
  for (std::size_t q = 0; q < requests.size(); ++q) {
    const Request& req = requests[q];
    SCOPED_TRACE(req.zip + ":" + req.chain);
    std::vector<std::string> names;
    std::istringstream chain(req.chain);
    for (std::string n; std::getline(chain, n, ',');) names.push_back(n);
    Pipeline p = load_pipeline(req.zip, names);
    ASSERT_TRUE(p.regressor);
    const RowMatrixD ours = p.run(x);
    ASSERT_EQ(ref[q].size(), static_cast<std::size_t>(x.rows()));
    const std::string cls = req.zip.substr(0, req.zip.find("Trainer"));
    for (Eigen::Index r = 0; r < x.rows(); ++r) {
      const double e = ref[q][static_cast<std::size_t>(r)][0];
      const double err = std::abs(ours(r, 0) - e) / std::max(1.0, std::abs(e));
      worst[cls] = std::max(worst[cls], err);
      EXPECT_LE(err, 1e-5) << "row " << r << ": scikit-learn " << e << ", ours " << ours(r, 0);
    }
  }
  std::cout << "max relative error vs scikit-learn (Kepler pipelines):\n";
  for (const auto& [cls, err] : worst) std::cout << "  " << cls << ": " << err << "\n";
}

}  // namespace
}  // namespace estimator::models
