// SPDX-License-Identifier: Apache-2.0
// Metrics: the exposition text parses back (every sample well-formed and typed, histogram
// buckets cumulative with +Inf = _count, label values escaped), counts are exact under
// concurrent recording, recording and a metered request allocate nothing, and the HTTP
// endpoint answers, refuses and survives hostile peers.
//
// Its own executable: it replaces the global operator new to count allocations.
#include <sys/socket.h>
#include <unistd.h>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <ctime>
#include <map>
#include <new>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "models/embedded_defaults.h"
#include "models/registry.h"
#include "service/metrics.h"
#include "service/metrics_server.h"
#include "service/fetch_stats.h"
#include "service/request_handler.h"

#include "tests/support/allocation_counter.h"  // this binary's operator new
#include "tests/support/http_scrape.h"

namespace estimator::service {
namespace {

using estimator::testing::http_exchange;

// ---- A reader of the text format 0.0.4, strict enough to catch what Prometheus refuses.

struct Sample {
  std::string name;
  std::map<std::string, std::string> labels;
  double value = 0;
};

struct Exposition {
  std::map<std::string, std::string> types;  // family -> counter, gauge, histogram
  std::vector<Sample> samples;
  std::vector<std::string> errors;

  std::vector<const Sample*> find(const std::string& name,
                                  const std::map<std::string, std::string>& with = {}) const {
    std::vector<const Sample*> out;
    for (const Sample& s : samples) {
      if (s.name != name) continue;
      bool match = true;
      for (const auto& [k, v] : with) {
        auto it = s.labels.find(k);
        if (it == s.labels.end() || it->second != v) match = false;
      }
      if (match) out.push_back(&s);
    }
    return out;
  }
};

bool name_char(char c, bool first) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == ':' ||
         (!first && c >= '0' && c <= '9');
}

// The family a sample belongs to: histogram samples carry _bucket, _sum, _count.
std::string family_of(const std::string& name, const std::map<std::string, std::string>& types) {
  if (types.contains(name)) return name;
  for (const char* suffix : {"_bucket", "_sum", "_count"}) {
    const std::string s(suffix);
    if (name.size() > s.size() && name.ends_with(s)) {
      const std::string base = name.substr(0, name.size() - s.size());
      auto it = types.find(base);
      if (it != types.end() && it->second == "histogram") return base;
    }
  }
  return {};
}

Exposition parse(const std::string& text) {
  Exposition e;
  std::size_t pos = 0;
  int line_no = 0;
  if (text.empty() || text.back() != '\n') e.errors.push_back("does not end with a newline");
  while (pos < text.size()) {
    const std::size_t nl = text.find('\n', pos);
    const std::string line = text.substr(pos, nl - pos);
    pos = nl == std::string::npos ? text.size() : nl + 1;
    ++line_no;
    auto fail = [&](const std::string& why) {
      e.errors.push_back("line " + std::to_string(line_no) + ": " + why + ": " + line);
    };
    if (line.starts_with("# TYPE ")) {
      std::istringstream in(line.substr(7));
      std::string name, type;
      in >> name >> type;
      if (type != "counter" && type != "gauge" && type != "histogram") fail("bad type");
      if (e.types.contains(name)) fail("TYPE twice");
      e.types[name] = type;
      continue;
    }
    if (line.starts_with("# HELP ")) continue;
    if (line.empty() || line[0] == '#') {
      fail("unexpected line");
      continue;
    }
    Sample s;
    std::size_t i = 0;
    while (i < line.size() && name_char(line[i], i == 0)) ++i;
    s.name = line.substr(0, i);
    if (s.name.empty()) {
      fail("no metric name");
      continue;
    }
    if (i < line.size() && line[i] == '{') {
      ++i;
      while (i < line.size() && line[i] != '}') {
        std::size_t j = i;
        while (j < line.size() && name_char(line[j], j == i)) ++j;
        const std::string label = line.substr(i, j - i);
        if (label.empty() || j + 1 >= line.size() || line[j] != '=' || line[j + 1] != '"') {
          fail("bad label");
          break;
        }
        i = j + 2;
        std::string value;
        bool closed = false;
        while (i < line.size()) {
          const char c = line[i++];
          if (c == '"') {
            closed = true;
            break;
          }
          if (c == '\\') {
            if (i >= line.size()) break;
            const char esc = line[i++];
            if (esc == 'n') {
              value += '\n';
            } else if (esc == '\\' || esc == '"') {
              value += esc;
            } else {
              fail("bad escape");
            }
          } else {
            value += c;
          }
        }
        if (!closed) fail("unterminated label value");
        if (s.labels.contains(label)) fail("label twice");
        s.labels[label] = value;
        if (i < line.size() && line[i] == ',') ++i;
      }
      if (i >= line.size() || line[i] != '}') {
        fail("unterminated label set");
        continue;
      }
      ++i;
    }
    if (i >= line.size() || line[i] != ' ') {
      fail("no space before the value");
      continue;
    }
    const std::string value = line.substr(i + 1);
    if (value == "+Inf") {
      s.value = INFINITY;
    } else if (value == "-Inf") {
      s.value = -INFINITY;
    } else if (value == "NaN") {
      s.value = NAN;
    } else {
      char* end = nullptr;
      s.value = std::strtod(value.c_str(), &end);
      if (value.empty() || *end != '\0') fail("value is not a number");
    }
    if (family_of(s.name, e.types).empty()) fail("sample without a TYPE line before it");
    e.samples.push_back(std::move(s));
  }
  return e;
}

// Every histogram: per label set, le ascending, counts cumulative, +Inf present and equal
// to _count.
void expect_histograms_consistent(const Exposition& e) {
  for (const auto& [family, type] : e.types) {
    if (type != "histogram") continue;
    std::map<std::map<std::string, std::string>, std::vector<std::pair<double, double>>> series;
    for (const Sample* b : e.find(family + "_bucket")) {
      auto labels = b->labels;
      ASSERT_TRUE(labels.contains("le")) << family;
      const std::string le = labels["le"];
      labels.erase("le");
      series[labels].emplace_back(le == "+Inf" ? INFINITY : std::stod(le), b->value);
    }
    ASSERT_FALSE(series.empty()) << family;
    for (const auto& [labels, buckets] : series) {
      const std::size_t expected = family == "estimator_model_fetch_duration_seconds"
                                       ? kFetchDurationBoundsMs.size() + 1
                                       : kLatencyBuckets;
      ASSERT_EQ(buckets.size(), expected) << family;
      for (std::size_t i = 1; i < buckets.size(); ++i) {
        EXPECT_LT(buckets[i - 1].first, buckets[i].first) << family << ": le not ascending";
        EXPECT_LE(buckets[i - 1].second, buckets[i].second) << family << ": not cumulative";
      }
      EXPECT_TRUE(std::isinf(buckets.back().first)) << family << ": last bucket is not +Inf";
      const auto counts = e.find(family + "_count", labels);
      const auto sums = e.find(family + "_sum", labels);
      ASSERT_EQ(counts.size(), 1u);
      ASSERT_EQ(sums.size(), 1u);
      EXPECT_EQ(counts[0]->value, buckets.back().second) << family << ": +Inf != _count";
    }
  }
}

std::shared_ptr<const models::Registry> default_registry() {
  return models::Registry::build(models::embedded_model_folders());
}

// ---- Rendering

TEST(MetricsTest, RenderingParsesBackWithEveryFamilyTyped) {
  Metrics sut;
  RequestCell* a = sut.cell("SGDRegressorTrainer_0", "rapl-sysfs", "AbsPower");
  a->record(Code::kOk, 800);            // le 1e-06
  a->record(Code::kOk, 1'000);          // exactly on a bound: counted in that bucket
  a->record(Code::kOk, 30'000);         // le 5e-05
  a->record(Code::kInvalidValue, 7'000'000'000);  // beyond 1 s: +Inf only
  sut.unattributed()->record(Code::kNotFound, 12'000);
  sut.count_ping();
  const auto registry = default_registry();
  const Exposition e = parse(sut.render(registry.get()));
  ASSERT_TRUE(e.errors.empty()) << ::testing::PrintToString(e.errors);
  EXPECT_EQ(e.types.at("estimator_requests_total"), "counter");
  EXPECT_EQ(e.types.at("estimator_request_duration_seconds"), "histogram");
  EXPECT_EQ(e.types.at("estimator_model_info"), "gauge");
  expect_histograms_consistent(e);

  const std::map<std::string, std::string> model = {
      {"model", "SGDRegressorTrainer_0"}, {"source", "rapl-sysfs"}, {"output_type", "AbsPower"}};
  auto with = [&](std::map<std::string, std::string> extra) {
    extra.insert(model.begin(), model.end());
    return extra;
  };
  ASSERT_EQ(e.find("estimator_requests_total", with({{"status", "ok"}})).size(), 1u);
  EXPECT_EQ(e.find("estimator_requests_total", with({{"status", "ok"}}))[0]->value, 3);
  EXPECT_EQ(e.find("estimator_requests_total", with({{"status", "invalid_value"}}))[0]->value, 1);
  EXPECT_EQ(e.find("estimator_request_errors_total", model)[0]->value, 1);
  EXPECT_EQ(e.find("estimator_request_duration_seconds_bucket", with({{"le", "1e-06"}}))[0]->value, 2);
  EXPECT_EQ(e.find("estimator_request_duration_seconds_bucket", with({{"le", "5e-05"}}))[0]->value, 3);
  EXPECT_EQ(e.find("estimator_request_duration_seconds_bucket", with({{"le", "1"}}))[0]->value, 3);
  EXPECT_EQ(e.find("estimator_request_duration_seconds_bucket", with({{"le", "+Inf"}}))[0]->value, 4);
  EXPECT_NEAR(e.find("estimator_request_duration_seconds_sum", model)[0]->value, 7.0000318, 1e-9);
  EXPECT_EQ(e.find("estimator_requests_total", {{"model", ""}, {"status", "not_found"}})[0]->value, 1);
  EXPECT_EQ(e.find("estimator_pings_total")[0]->value, 1);
  // Failure codes nobody hit are not rendered (12 codes x models would be noise).
  EXPECT_TRUE(e.find("estimator_requests_total", with({{"status", "too_large"}})).empty());

  // One info series per loaded model; its published error figures are gauges of their own.
  EXPECT_EQ(e.find("estimator_model_info").size(), registry->models().size());
  const auto rapl = e.find("estimator_model_info",
                           {{"source", "rapl-sysfs"}, {"output_type", "AbsPower"},
                            {"name", "SGDRegressorTrainer_0"}});
  ASSERT_EQ(rapl.size(), 1u);
  EXPECT_FALSE(rapl[0]->labels.contains("mae"));
  const std::map<std::string, std::string> rapl_model = {
      {"name", "SGDRegressorTrainer_0"}, {"source", "rapl-sysfs"}, {"output_type", "AbsPower"}};
  auto error_of = [&](std::string component, std::string metric) {
    auto labels = rapl_model;
    labels["component"] = std::move(component);
    labels["metric"] = std::move(metric);
    const auto found = e.find("estimator_model_error", labels);
    return found.size() == 1 ? found[0]->value : -1.0;
  };
  EXPECT_DOUBLE_EQ(error_of("", "mae"), 60.78);
  EXPECT_DOUBLE_EQ(error_of("", "mape"), 17.77);
  EXPECT_EQ(rapl[0]->labels.at("model_class"), "weight");
  EXPECT_EQ(rapl[0]->labels.at("trainer"), "SGDRegressorTrainer");
  EXPECT_EQ(rapl[0]->value, 1);
  EXPECT_EQ(e.find("estimator_models_loaded")[0]->value,
            static_cast<double>(registry->models().size()));
}

TEST(MetricsTest, LabelValuesAreEscaped) {
  std::string s;
  append_label_value(s, "a\"b\\c\nd");
  EXPECT_EQ(s, "a\\\"b\\\\c\\nd");

  // A model whose name carries every character the format escapes, from metadata.json.
  auto folders = models::embedded_model_folders();
  models::ModelFolder* rapl = nullptr;
  for (auto& f : folders) {
    if (f.origin.find("rapl-sysfs/AbsPower") != std::string::npos) rapl = &f;
  }
  ASSERT_NE(rapl, nullptr);
  const std::string odd = "quote\" back\\slash\nnewline {x=\"1\"} end";
  auto meta = nlohmann::json::parse(rapl->files.at("metadata.json"));
  meta["model_name"] = odd;
  rapl->files["metadata.json"] = meta.dump();
  const auto registry = models::Registry::build(std::vector<models::ModelFolder>{*rapl});
  ASSERT_EQ(registry->models().size(), 1u) << (registry->refused().empty() ? "" : registry->refused()[0].reason.to_string());

  Metrics sut;
  sut.cell(odd, "rapl-sysfs", "AbsPower")->record(Code::kOk, 10);
  const Exposition e = parse(sut.render(registry.get()));
  ASSERT_TRUE(e.errors.empty()) << ::testing::PrintToString(e.errors);
  const auto info = e.find("estimator_model_info");
  ASSERT_EQ(info.size(), 1u);
  EXPECT_EQ(info[0]->labels.at("name"), odd);
  EXPECT_EQ(e.find("estimator_requests_total", {{"model", odd}, {"status", "ok"}}).size(), 1u);
  expect_histograms_consistent(e);
}

TEST(MetricsTest, UnpublishedErrorFiguresHaveNoSeries) {
  Metrics sut;
  const auto registry = default_registry();
  const Exposition e = parse(sut.render(registry.get()));
  ASSERT_EQ(e.find("estimator_model_info", {{"name", "Ratio"}}).size(), 1u);
  EXPECT_TRUE(e.find("estimator_model_error", {{"name", "Ratio"}}).empty());
}

// Per-component figures of metadata.json (<component>_mae, _mape) become series with a
// component label; other figures ending in mae (mae_val, avg_mae) do not.
TEST(MetricsTest, ComponentErrorFiguresAreGaugesWithAComponentLabel) {
  auto folders = models::embedded_model_folders();
  models::ModelFolder* rapl = nullptr;
  for (auto& f : folders) {
    if (f.origin.find("rapl-sysfs/AbsPower") != std::string::npos) rapl = &f;
  }
  ASSERT_NE(rapl, nullptr);
  auto meta = nlohmann::json::parse(rapl->files.at("metadata.json"));
  meta["package_mae"] = 3.5;
  meta["dram_mape"] = 12.25;
  meta["core_mae"] = -1;  // undefined, as Kepler's trainers write it
  meta["mae_val"] = 9.0;
  meta["avg_mae"] = 8.0;
  rapl->files["metadata.json"] = meta.dump();
  const auto registry = models::Registry::build(std::vector<models::ModelFolder>{*rapl});
  ASSERT_EQ(registry->models().size(), 1u);
  Metrics sut;
  const Exposition e = parse(sut.render(registry.get()));
  ASSERT_TRUE(e.errors.empty()) << ::testing::PrintToString(e.errors);
  const auto package = e.find("estimator_model_error", {{"component", "package"}, {"metric", "mae"}});
  ASSERT_EQ(package.size(), 1u);
  EXPECT_DOUBLE_EQ(package[0]->value, 3.5);
  const auto dram = e.find("estimator_model_error", {{"component", "dram"}, {"metric", "mape"}});
  ASSERT_EQ(dram.size(), 1u);
  EXPECT_DOUBLE_EQ(dram[0]->value, 12.25);
  EXPECT_TRUE(e.find("estimator_model_error", {{"component", "core"}}).empty());
  EXPECT_TRUE(e.find("estimator_model_error", {{"component", "avg"}}).empty());
  // mae_val ends neither in _mae nor is "mae": not an error series.
  for (const auto* s : e.find("estimator_model_error")) {
    EXPECT_NE(s->labels.at("component"), "mae") << "mae_val taken for a component";
  }
}

TEST(MetricsTest, BuildInfoAndProcessMetricsFollowPrometheusConventions) {
  Metrics sut;
  const Exposition e = parse(sut.render(nullptr));
  ASSERT_TRUE(e.errors.empty()) << ::testing::PrintToString(e.errors);
  const auto build = e.find("estimator_build_info");
  ASSERT_EQ(build.size(), 1u);
  EXPECT_EQ(build[0]->value, 1);
  EXPECT_FALSE(build[0]->labels.at("version").empty());
  EXPECT_TRUE(build[0]->labels.contains("commit"));
  EXPECT_FALSE(build[0]->labels.at("schema").empty());
  // Plausible values for this very process, read from /proc at render time.
  ASSERT_EQ(e.find("process_resident_memory_bytes").size(), 1u);
  EXPECT_GT(e.find("process_resident_memory_bytes")[0]->value, 1 << 20);
  ASSERT_EQ(e.find("process_open_fds").size(), 1u);
  EXPECT_GE(e.find("process_open_fds")[0]->value, 3);  // stdin, stdout, stderr
  // CPU time counts in clock ticks (10 ms): spend a few before reading it again.
  ASSERT_EQ(e.find("process_cpu_seconds_total").size(), 1u);
  // Spin on CPU time, not wall time: on a loaded machine the wall clock runs away.
  const std::clock_t cpu_start = std::clock();
  const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  volatile std::uint64_t spin = 0;
  while (std::clock() - cpu_start < CLOCKS_PER_SEC / 20 && std::chrono::steady_clock::now() < give_up) {
    spin = spin + 1;
  }
  EXPECT_GT(parse(sut.render(nullptr)).find("process_cpu_seconds_total")[0]->value,
            e.find("process_cpu_seconds_total")[0]->value);
  ASSERT_EQ(e.find("process_start_time_seconds").size(), 1u);
  const double now = std::chrono::duration<double>(
                         std::chrono::system_clock::now().time_since_epoch()).count();
  EXPECT_LE(e.find("process_start_time_seconds")[0]->value, now + 1);
  EXPECT_GT(e.find("process_start_time_seconds")[0]->value, now - 24 * 3600);
  ASSERT_EQ(e.find("process_max_fds").size(), 1u);
  EXPECT_GE(e.find("process_max_fds")[0]->value, e.find("process_open_fds")[0]->value);
  // An extra descriptor shows at the next scrape.
  const double before = parse(sut.render(nullptr)).find("process_open_fds")[0]->value;
  const int fd = ::dup(0);
  ASSERT_GE(fd, 0);
  EXPECT_EQ(parse(sut.render(nullptr)).find("process_open_fds")[0]->value, before + 1);
  ::close(fd);
}

TEST(MetricsTest, FetchCountersAndDurationsRenderOnceWatched) {
  Metrics sut;
  EXPECT_TRUE(parse(sut.render(nullptr)).find("estimator_model_fetches_total").empty());
  auto stats = std::make_shared<FetchStats>();
  sut.watch_fetches(stats);
  stats->landed = 2;
  stats->no_model = 1;
  stats->errors = 3;
  stats->failed = 1;
  stats->bytes = 12345;
  stats->record_duration(std::chrono::milliseconds(50));
  stats->record_duration(std::chrono::milliseconds(2000));
  stats->record_duration(std::chrono::minutes(5));
  const Exposition e = parse(sut.render(nullptr));
  ASSERT_TRUE(e.errors.empty()) << ::testing::PrintToString(e.errors);
  EXPECT_EQ(e.find("estimator_model_fetches_total", {{"result", "landed"}})[0]->value, 2);
  EXPECT_EQ(e.find("estimator_model_fetches_total", {{"result", "no_model"}})[0]->value, 1);
  EXPECT_EQ(e.find("estimator_model_fetches_total", {{"result", "refused"}})[0]->value, 0);
  EXPECT_EQ(e.find("estimator_model_fetches_total", {{"result", "error"}})[0]->value, 3);
  EXPECT_EQ(e.find("estimator_model_fetch_failures_total")[0]->value, 1);
  EXPECT_EQ(e.find("estimator_model_fetch_bytes_total")[0]->value, 12345);
  EXPECT_EQ(e.find("estimator_model_fetch_duration_seconds_bucket", {{"le", "0.1"}})[0]->value, 1);
  EXPECT_EQ(e.find("estimator_model_fetch_duration_seconds_bucket", {{"le", "2.5"}})[0]->value, 2);
  EXPECT_EQ(e.find("estimator_model_fetch_duration_seconds_bucket", {{"le", "60"}})[0]->value, 2);
  EXPECT_EQ(e.find("estimator_model_fetch_duration_seconds_bucket", {{"le", "+Inf"}})[0]->value, 3);
  EXPECT_EQ(e.find("estimator_model_fetch_duration_seconds_count")[0]->value, 3);
  EXPECT_NEAR(e.find("estimator_model_fetch_duration_seconds_sum")[0]->value, 302.05, 1e-9);
  expect_histograms_consistent(e);
}

TEST(MetricsTest, ExternalCountersAreReadAtScrapeTimeAndNamesChecked) {
  Metrics sut;
  std::atomic<std::uint64_t> reclaimed{0};
  ASSERT_TRUE(sut.add_counter("estimator_slots_reclaimed_total", "Reclaimed.",
                              [&] { return static_cast<double>(reclaimed.load()); }).ok());
  EXPECT_EQ(sut.add_counter("estimator_slots_reclaimed_total", "again", [] { return 0.0; }).code(),
            Code::kInvalidArgument);
  EXPECT_EQ(sut.add_gauge("1bad name", "x", [] { return 0.0; }).code(), Code::kInvalidArgument);
  EXPECT_EQ(sut.add_gauge("estimator_no_reader", "x", nullptr).code(), Code::kInvalidArgument);
  ASSERT_TRUE(sut.add_gauge("estimator_help_escapes", "a\\b\nc", [] { return 2.5; }).ok());
  reclaimed = 7;
  const std::string text = sut.render(nullptr);
  EXPECT_NE(text.find("# HELP estimator_help_escapes a\\\\b\\nc\n"), std::string::npos) << text;
  const Exposition e = parse(text);
  ASSERT_TRUE(e.errors.empty()) << ::testing::PrintToString(e.errors);
  EXPECT_EQ(e.types.at("estimator_slots_reclaimed_total"), "counter");
  EXPECT_EQ(e.find("estimator_slots_reclaimed_total")[0]->value, 7);
  EXPECT_EQ(e.find("estimator_help_escapes")[0]->value, 2.5);
  EXPECT_TRUE(e.find("estimator_model_info").empty());  // no registry given
}

TEST(MetricsTest, CellsAreResolvedOncePerModel) {
  Metrics sut;
  RequestCell* a = sut.cell("m", "acpi", "AbsPower");
  EXPECT_EQ(a, sut.cell("m", "acpi", "AbsPower"));
  EXPECT_NE(a, sut.cell("m", "acpi", "DynPower"));  // same name, another model
  EXPECT_NE(a, sut.unattributed());
  EXPECT_EQ(sut.unattributed(), sut.cell("", "", ""));
  EXPECT_EQ(reinterpret_cast<std::uintptr_t>(a) % 64, 0u);
}

// ---- Concurrency and allocation

TEST(MetricsTest, CountsFromSeveralThreadsAreExact) {
  Metrics sut;
  constexpr int kThreads = 4;
  constexpr int kPerThread = 50'000;
  RequestCell* shared = sut.cell("shared", "rapl-sysfs", "AbsPower");
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      RequestCell* own = sut.cell("own" + std::to_string(t), "acpi", "AbsPower");
      for (int i = 0; i < kPerThread; ++i) {
        shared->record(i % 10 == 0 ? Code::kMissingFeatures : Code::kOk,
                       static_cast<std::uint64_t>(i) * 20);
        own->record(Code::kOk, 1'000);
      }
    });
  }
  // Scrapes while recording must stay consistent too.
  for (int i = 0; i < 20; ++i) {
    const Exposition e = parse(sut.render(nullptr));
    ASSERT_TRUE(e.errors.empty());
    expect_histograms_consistent(e);
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(shared->count(Code::kOk), std::uint64_t{kThreads} * kPerThread * 9 / 10);
  EXPECT_EQ(shared->count(Code::kMissingFeatures), std::uint64_t{kThreads} * kPerThread / 10);
  const Exposition e = parse(sut.render(nullptr));
  const std::map<std::string, std::string> labels = {{"model", "shared"}};
  EXPECT_EQ(e.find("estimator_request_duration_seconds_count", labels)[0]->value,
            double{kThreads} * kPerThread);
  // sum of i*20 ns over i < kPerThread, times kThreads.
  const double sum_s = kThreads * 20.0 * (kPerThread - 1.0) * kPerThread / 2.0 / 1e9;
  EXPECT_NEAR(e.find("estimator_request_duration_seconds_sum", labels)[0]->value, sum_s, 1e-9);
  for (int t = 0; t < kThreads; ++t) {
    EXPECT_EQ(e.find("estimator_requests_total",
                     {{"model", "own" + std::to_string(t)}, {"status", "ok"}})[0]->value,
              kPerThread);
  }
}

std::atomic<int*> g_escape{nullptr};  // keeps the self-check's allocation from being elided

TEST(MetricsTest, RecordingAllocatesNothing) {
  {
    estimator::testing::AllocationWindow self_check;
    g_escape.store(new int(1));
    EXPECT_EQ(self_check.count(), 1) << "the operator new hook does not count";
    delete g_escape.exchange(nullptr);
  }
  Metrics sut;
  RequestCell* cell = sut.cell("m", "rapl-sysfs", "AbsPower");
  estimator::testing::AllocationWindow window;
  for (std::uint64_t i = 0; i < 10'000; ++i) {
    cell->record(static_cast<Code>(i % kCodeCount), i * 997);
    sut.unattributed()->record(Code::kNotFound, i);
    sut.count_ping();
  }
  EXPECT_EQ(window.count(), 0);
}

// The handler with metrics: after the first request of a shape, counting and timing add
// no allocation, and each request lands in the chosen model's cell (or model "").
TEST(MetricsTest, MeteredRequestHandlerAllocatesNothingAfterWarmUp) {
  RegistryHolder holder(default_registry());
  Metrics metrics;
  RequestHandler sut(holder, 1 << 16, 1 << 15, &metrics);
  alignas(64) static std::uint8_t area[1 << 16];
  const std::string_view names[] = {"bpf_cpu_time_ms", "bpf_page_cache_hit"};
  const float matrix[] = {1000, 5, 20, 1};
  wire::RequestSpec spec;
  spec.request_id = 1;
  spec.output_type = "AbsPower";
  spec.source = "rapl-sysfs";
  spec.feature_names = names;
  spec.matrix = matrix;
  spec.rows = 2;
  spec.cols = 2;
  auto built = wire::build_request(spec, {area, sizeof area});
  ASSERT_TRUE(built.ok()) << built.status().to_string();
  const std::span<const std::uint8_t> request = *built;
  sut.handle(request);  // warm: plan and cell resolved here
  ASSERT_EQ(sut.last_code(), Code::kOk);
  {
    estimator::testing::AllocationWindow window;
    for (int i = 0; i < 1000; ++i) sut.handle(request);
    EXPECT_EQ(window.count(), 0);
  }
  // A request above 8 KiB (1200 rows: 9.6 KB of matrix alone), alternating with the small
  // one: large requests take no other path that allocates.
  std::vector<float> big_matrix(2 * 1200);
  for (std::size_t i = 0; i < big_matrix.size(); ++i) big_matrix[i] = static_cast<float>(i % 97);
  wire::RequestSpec big_spec = spec;
  big_spec.request_id = 2;
  big_spec.matrix = big_matrix.data();
  big_spec.rows = 1200;
  alignas(64) static std::uint8_t big_area[1 << 16];
  auto big_built = wire::build_request(big_spec, {big_area, sizeof big_area});
  ASSERT_TRUE(big_built.ok()) << big_built.status().to_string();
  const std::span<const std::uint8_t> big = *big_built;
  ASSERT_GT(big.size(), 8u * 1024u);
  sut.handle(big);  // warm: a plan for this shape's scratch
  ASSERT_EQ(sut.last_code(), Code::kOk);
  {
    estimator::testing::AllocationWindow window;
    for (int i = 0; i < 100; ++i) {
      sut.handle(big);
      sut.handle(request);
    }
    EXPECT_EQ(window.count(), 0);
  }
  ASSERT_EQ(sut.last_code(), Code::kOk);
  const std::uint8_t garbage[] = {1, 2, 3, 4, 5, 6, 7, 8};
  sut.handle(garbage);
  EXPECT_NE(sut.last_code(), Code::kOk);

  RequestCell* cell = metrics.cell("SGDRegressorTrainer_0", "rapl-sysfs", "AbsPower");
  EXPECT_EQ(cell->count(Code::kOk), 1001u + 1u + 200u);
  EXPECT_EQ(metrics.unattributed()->count(sut.last_code()), 1u);
}

// ---- The HTTP endpoint

int status_of(const std::string& response) {
  if (!response.starts_with("HTTP/1.1 ")) return -1;
  return std::atoi(response.c_str() + 9);
}

std::string body_of(const std::string& response) {
  const std::size_t p = response.find("\r\n\r\n");
  return p == std::string::npos ? std::string() : response.substr(p + 4);
}

class MetricsServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    metrics.cell("SGDRegressorTrainer_0", "rapl-sysfs", "AbsPower")->record(Code::kOk, 5000);
    auto s = MetricsServer::start({.address = "127.0.0.1:0", .max_request_bytes = 1024,
                                   .deadline = std::chrono::milliseconds(800)},
                                  [this] { return metrics.render(registry.get()); });
    ASSERT_TRUE(s.ok()) << s.status().to_string();
    sut = std::move(s).value();
    port = sut->port();
    ASSERT_NE(port, 0);
  }

  Metrics metrics;
  std::shared_ptr<const models::Registry> registry = default_registry();
  std::unique_ptr<MetricsServer> sut;
  std::uint16_t port = 0;
};

TEST_F(MetricsServerTest, GetMetricsAnswersTheExposition) {
  EXPECT_EQ(sut->bound_address(), "127.0.0.1:" + std::to_string(port));
  const std::string r = http_exchange(port, "GET /metrics HTTP/1.1\r\nHost: x\r\nAccept: */*\r\n\r\n");
  ASSERT_EQ(status_of(r), 200) << r;
  EXPECT_NE(r.find("Content-Type: text/plain; version=0.0.4"), std::string::npos) << r;
  const std::string body = body_of(r);
  EXPECT_NE(r.find("Content-Length: " + std::to_string(body.size()) + "\r\n"), std::string::npos);
  const Exposition e = parse(body);
  ASSERT_TRUE(e.errors.empty()) << ::testing::PrintToString(e.errors);
  EXPECT_EQ(e.find("estimator_requests_total", {{"status", "ok"}})[0]->value, 1);
  // A query string is ignored; bare LF line ends are accepted.
  EXPECT_EQ(status_of(http_exchange(port, "GET /metrics?x=1 HTTP/1.0\n\n")), 200);
  // HEAD: the headers only.
  const std::string head = http_exchange(port, "HEAD /metrics HTTP/1.1\r\n\r\n");
  EXPECT_EQ(status_of(head), 200);
  EXPECT_TRUE(body_of(head).empty());
}

TEST(MetricsServerHealthTest, HealthzAndReadyzAnswer503WithTheReasonLivezStays200) {
  std::atomic<bool> ready{false};
  auto s = MetricsServer::start({.address = "127.0.0.1:0"}, [] { return std::string(); },
                                [&ready] { return ready ? std::string() : std::string("no model loaded"); });
  ASSERT_TRUE(s.ok()) << s.status().to_string();
  const std::uint16_t port = s.value()->port();
  for (const char* path : {"/healthz", "/readyz"}) {
    const std::string r = http_exchange(port, std::string("GET ") + path + " HTTP/1.1\r\n\r\n");
    EXPECT_EQ(status_of(r), 503) << path;
    EXPECT_EQ(body_of(r), "not ready: no model loaded\n") << path;
  }
  EXPECT_EQ(status_of(http_exchange(port, "GET /livez HTTP/1.1\r\n\r\n")), 200);
  ready = true;
  for (const char* path : {"/healthz", "/readyz"}) {
    const std::string r = http_exchange(port, std::string("GET ") + path + " HTTP/1.1\r\n\r\n");
    EXPECT_EQ(status_of(r), 200) << path;
    EXPECT_EQ(body_of(r), "ok\n") << path;
  }
}

TEST_F(MetricsServerTest, OtherPathsMethodsAndMalformedRequests) {
  // Without a health check the server is ready as soon as it serves.
  const std::string health = http_exchange(port, "GET /healthz HTTP/1.1\r\n\r\n");
  EXPECT_EQ(status_of(health), 200);
  EXPECT_EQ(body_of(health), "ok\n");
  EXPECT_EQ(status_of(http_exchange(port, "GET / HTTP/1.1\r\n\r\n")), 404);
  const std::string post = http_exchange(port, "POST /metrics HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc");
  EXPECT_EQ(status_of(post), 405);
  EXPECT_NE(post.find("Allow: GET, HEAD\r\n"), std::string::npos);
  EXPECT_EQ(status_of(http_exchange(port, "GARBAGE\r\n\r\n")), 400);
  EXPECT_EQ(status_of(http_exchange(port, "GET /metrics HTTP/2.0\r\n\r\n")), 505);
  // A head beyond the limit is refused without waiting for its end.
  const std::string big = "GET /metrics HTTP/1.1\r\nX-Filler: " + std::string(4000, 'a');
  EXPECT_EQ(status_of(http_exchange(port, big)), 431);
  // A peer that closes before finishing its request gets nothing, and the server lives on.
  EXPECT_EQ(http_exchange(port, "GET /metr", true), "");
  EXPECT_EQ(status_of(http_exchange(port, "GET /metrics HTTP/1.1\r\n\r\n")), 200);
}

TEST_F(MetricsServerTest, SilentConnectionsDoNotDelayScrapesAndAreClosedAtTheDeadline) {
  // Several peers connect and say nothing (or half a request).
  std::vector<int> silent;
  for (int i = 0; i < 5; ++i) {
    const int fd = estimator::testing::loopback_connect(port);
    ASSERT_GE(fd, 0);
    if (i % 2 == 1) ::send(fd, "GET /met", 8, MSG_NOSIGNAL);
    silent.push_back(fd);
  }
  const auto t0 = std::chrono::steady_clock::now();
  EXPECT_EQ(status_of(http_exchange(port, "GET /metrics HTTP/1.1\r\n\r\n")), 200);
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::milliseconds(500));
  // The deadline (800 ms) closes them: a read returns end of stream.
  for (int fd : silent) {
    timeval tv{5, 0};
    ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    char c;
    EXPECT_EQ(::recv(fd, &c, 1, 0), 0);
    ::close(fd);
  }
}

TEST_F(MetricsServerTest, StopsPromptlyWithConnectionsOpen) {
  const int fd = estimator::testing::loopback_connect(port);
  ASSERT_GE(fd, 0);
  const auto t0 = std::chrono::steady_clock::now();
  sut.reset();
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::milliseconds(200));
  ::close(fd);
  EXPECT_EQ(http_exchange(port, "GET /metrics HTTP/1.1\r\n\r\n"), "connect failed");
}

TEST(MetricsServerStartTest, AddressesAreCheckedAndAPortInUseIsAnError) {
  EXPECT_EQ(split_host_port("127.0.0.1:9102").value(), std::pair(std::string("127.0.0.1"), std::uint16_t{9102}));
  EXPECT_EQ(split_host_port("[::1]:0").value(), std::pair(std::string("::1"), std::uint16_t{0}));
  EXPECT_EQ(split_host_port(":9102").value().first, "");
  EXPECT_EQ(split_host_port("*:9102").value().first, "");
  for (const char* bad : {"9102", "host:", "host:99999", "host:12ab", "::1:9102", "[::1:9102"}) {
    const auto r = split_host_port(bad);
    ASSERT_FALSE(r.ok()) << bad;
    EXPECT_EQ(r.status().code(), Code::kInvalidArgument);
    EXPECT_NE(r.status().message().find(bad), std::string::npos) << r.status().message();
  }
  auto render = [] { return std::string("x\n"); };
  auto first = MetricsServer::start({.address = "127.0.0.1:0"}, render);
  ASSERT_TRUE(first.ok()) << first.status().to_string();
  auto second = MetricsServer::start({.address = first.value()->bound_address()}, render);
  ASSERT_FALSE(second.ok());
  EXPECT_NE(second.status().message().find("bind"), std::string::npos) << second.status().message();
  EXPECT_FALSE(MetricsServer::start({.address = "127.0.0.1:0"}, nullptr).ok());
}

TEST(MetricsServerStartTest, AThrowingRendererCostsOneScrapeNotTheServer) {
  std::atomic<int> calls{0};
  auto s = MetricsServer::start({.address = "127.0.0.1:0"}, [&]() -> std::string {
    if (calls.fetch_add(1) == 0) throw std::runtime_error("reader failed");
    return "x 1\n";
  });
  ASSERT_TRUE(s.ok()) << s.status().to_string();
  EXPECT_EQ(status_of(http_exchange(s.value()->port(), "GET /metrics HTTP/1.1\r\n\r\n")), 500);
  const std::string r = http_exchange(s.value()->port(), "GET /metrics HTTP/1.1\r\n\r\n");
  EXPECT_EQ(status_of(r), 200);
  EXPECT_EQ(body_of(r), "x 1\n");
}

TEST(MetricsServerStartTest, ServesIPv6WhenTheHostHasIt) {
  auto s = MetricsServer::start({.address = "[::1]:0"}, [] { return std::string("x 1\n"); });
  if (!s.ok()) GTEST_SKIP() << "no IPv6 loopback here: " << s.status().to_string();
  EXPECT_TRUE(s.value()->bound_address().starts_with("[::1]:")) << s.value()->bound_address();
}

}  // namespace
}  // namespace estimator::service
