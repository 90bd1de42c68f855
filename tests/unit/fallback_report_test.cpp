// SPDX-License-Identifier: Apache-2.0
// A request answered by a worse model because it lacks the better model's features still
// gets an answer, and the fallback shows: logged once per request shape (whatever the
// number of dispatch threads), counted per answer in estimator_model_fallbacks_total, and
// listed by `estimator models --features ...`.
#include <gtest/gtest.h>
#include <spdlog/sinks/ostream_sink.h>
#include <spdlog/spdlog.h>
#include <stdio.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "tests/support/log_capture.h"
#include "service/metrics.h"
#include "service/cli/models_command.h"
#include "service/request_handler.h"

namespace estimator::service {
namespace {

namespace fs = std::filesystem;

// metadata.json and weights.json of a one-component rapl AbsPower weight model whose
// features all weigh 1.
std::map<std::string, std::string> weight_model_files(const std::string& name, double mae,
                                                      const std::vector<std::string>& features) {
  std::string numerical;
  for (const std::string& f : features) {
    numerical += (numerical.empty() ? "\"" : ", \"") + f + R"(": {"scale": 1, "weight": 1})";
  }
  return {{"metadata.json", R"({"model_name": ")" + name + R"(", "model_class": "weight",
             "model_file": "weights.json", "source": "rapl-sysfs", "output_type": "AbsPower",
             "mae": )" + std::to_string(mae) + "}"},
          {"weights.json", R"({"package": {"All_Weights": {"Bias_Weight": 0,
             "Numerical_Variables": {)" + numerical + "}}}}"}};
}

std::shared_ptr<const models::Registry> two_models() {
  std::vector<models::ModelFolder> folders(2);
  folders[0].origin = "m/best";
  folders[0].files = weight_model_files("B_0", 1, {"bpf_cpu_time_ms", "cpu_cycles"});
  folders[1].origin = "m/worst";
  folders[1].files = weight_model_files("W_0", 60, {"bpf_cpu_time_ms"});
  auto reg = models::Registry::build(folders);
  EXPECT_EQ(reg->models().size(), 2U);
  return reg;
}

using testing::LogCapture;

class FallbackReport : public ::testing::Test {
 protected:
  // The model that answered one request of these columns, "error: ..." otherwise.
  std::string ask(RequestHandler& handler, std::vector<std::string_view> names) {
    std::vector<float> row(names.size(), 100.0F);
    wire::RequestSpec spec;
    spec.request_id = ++next_id_;
    spec.output_type = "AbsPower";
    spec.source = "intel_rapl";
    spec.feature_names = names;
    spec.matrix = row.data();
    spec.rows = 1;
    spec.cols = static_cast<std::uint32_t>(names.size());
    auto built = wire::build_request(spec, {area_, sizeof area_});
    if (!built.ok()) return "error: " + built.status().to_string();
    const auto reply = handler.handle(*built);
    std::vector<std::uint8_t> copy(reply.begin(), reply.end());
    auto r = wire::read_response(copy);
    if (!r.ok()) return "error: " + r.status().to_string();
    if (r->status != Code::kOk) return "error: " + std::string(r->message);
    return std::string(wire::view_of(r->model->name()));
  }

  std::uint64_t fallbacks(const Metrics& metrics, std::string_view series) {
    const std::string text = metrics.render(nullptr);
    const std::string prefix = "estimator_model_fallbacks_total" + std::string(series) + " ";
    const std::size_t at = text.find(prefix);
    if (at == std::string::npos) return 0;
    return std::strtoull(text.c_str() + at + prefix.size(), nullptr, 10);
  }

  static constexpr std::string_view kSeries =
      R"({model="W_0",source="rapl-sysfs",output_type="AbsPower",skipped="B_0"})";
  alignas(64) std::uint8_t area_[1 << 14];
  std::uint64_t next_id_ = 0;
};

TEST_F(FallbackReport, LoggedOncePerShapeAndCountedPerAnswer) {
  LogCapture log;
  Metrics metrics;
  RegistryHolder holder(two_models());
  // Two dispatch threads' handlers: each plans the shape itself.
  RequestHandler first(holder, 1 << 14, 1 << 14, &metrics);
  RequestHandler second(holder, 1 << 14, 1 << 14, &metrics);

  EXPECT_EQ(ask(first, {"bpf_cpu_time_ms"}), "W_0");
  EXPECT_EQ(ask(first, {"bpf_cpu_time_ms"}), "W_0");
  EXPECT_EQ(ask(second, {"bpf_cpu_time_ms"}), "W_0");
  // The best model answers what carries its features: no fallback.
  EXPECT_EQ(ask(first, {"bpf_cpu_time_ms", "cpu_cycles"}), "B_0");

  const std::vector<std::string> lines = log.lines_with("fallback:");
  ASSERT_EQ(lines.size(), 1U) << "once per request shape, not per handler or request";
  EXPECT_EQ(lines[0],
            "info fallback: model W_0 (mae 60, from m/worst) answers requests for output_type "
            "'AbsPower', source 'intel_rapl' with features [bpf_cpu_time_ms]; better-ranked "
            "models passed over: B_0 (mae 1, from m/best) needs features missing from the "
            "request: cpu_cycles");
  EXPECT_EQ(fallbacks(metrics, kSeries), 3U);
  EXPECT_EQ(metrics.render(nullptr).find("estimator_model_fallbacks_total{model=\"B_0\""),
            std::string::npos);

  // A reload may change the choice: the shape is reported again, the count goes on.
  holder.set(two_models());
  EXPECT_EQ(ask(second, {"bpf_cpu_time_ms"}), "W_0");
  EXPECT_EQ(log.lines_with("fallback:").size(), 2U);
  EXPECT_EQ(fallbacks(metrics, kSeries), 4U);
}

TEST_F(FallbackReport, LoggedWithoutMetrics) {
  LogCapture log;
  RegistryHolder holder(two_models());
  RequestHandler handler(holder, 1 << 14, 1 << 14);
  EXPECT_EQ(ask(handler, {"bpf_cpu_time_ms"}), "W_0");
  EXPECT_EQ(log.lines_with("fallback: model W_0").size(), 1U);
}

// ---- estimator models --features ---------------------------------------------------

class ModelsCommand : public ::testing::Test {
 protected:
  void SetUp() override {
    dir = fs::temp_directory_path() / ("models_command_test_" + std::to_string(getpid()));
    fs::remove_all(dir);
    write_model(dir / "rapl-sysfs" / "AbsPower" / "best",
                weight_model_files("B_0", 1, {"bpf_cpu_time_ms", "cpu_cycles"}));
    write_model(dir / "rapl-sysfs" / "AbsPower" / "worst",
                weight_model_files("W_0", 60, {"bpf_cpu_time_ms"}));
    // A bare weight file whose name and folder say nothing of its kind.
    std::ofstream(dir / "Plain_0.json")
        << R"({"package": {"All_Weights": {"Bias_Weight": 1, "Numerical_Variables": {}}}})";
  }
  void TearDown() override { fs::remove_all(dir); }

  static void write_model(const fs::path& folder, const std::map<std::string, std::string>& files) {
    fs::create_directories(folder);
    for (const auto& [name, contents] : files) std::ofstream(folder / name) << contents;
  }

  std::string run(ModelsOptions o) {
    o.model_dir = dir.string();
    char* text = nullptr;
    std::size_t size = 0;
    FILE* out = open_memstream(&text, &size);
    EXPECT_EQ(run_models(o, out), 0);
    std::fclose(out);
    std::string s(text, size);
    std::free(text);
    return s;
  }

  fs::path dir;
};

TEST_F(ModelsCommand, MarksTheChoiceAndTheBetterModelsSkipped) {
  const std::string out = run({.features = {"bpf_cpu_time_ms"}, .output_type = "AbsPower",
                               .source = "intel_rapl"});
  const std::string best = (dir / "rapl-sysfs" / "AbsPower" / "best").string();
  const std::string worst = (dir / "rapl-sysfs" / "AbsPower" / "worst").string();
  EXPECT_NE(out.find("selection for [bpf_cpu_time_ms]: W_0 (mae 60; from " + worst + ")\n"
                     "  skipped, ranked better: B_0 (mae 1; from " + best +
                     "): needs features missing from the request: cpu_cycles\n"),
            std::string::npos)
      << out;
  // Plain_0 (mae unknown, kind unknown) is neither chosen nor listed as skipped.
  EXPECT_EQ(out.find("skipped, ranked better: Plain_0"), std::string::npos) << out;
  EXPECT_NE(out.find("Plain_0                              weight    unknown     unknown"),
            std::string::npos)
      << out;

  const std::string full = run({.features = {"bpf_cpu_time_ms", "cpu_cycles"},
                                .output_type = "AbsPower", .source = "intel_rapl"});
  EXPECT_NE(full.find("selection for [bpf_cpu_time_ms,cpu_cycles]: B_0 (mae 1; from " + best + ")\n"),
            std::string::npos)
      << full;
  EXPECT_EQ(full.find("skipped"), std::string::npos) << full;
}

}  // namespace
}  // namespace estimator::service
