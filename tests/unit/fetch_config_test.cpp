// SPDX-License-Identifier: Apache-2.0
// The fetch configuration: Kepler's keys and what each prefix stands for, KEY=VALUE files
// and ConfigMap directories, the layering (file < MODEL_CONFIG < environment), and errors
// that name the key and where its bad value came from.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "service/fetch_config.h"

namespace estimator::service {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

ConfigValues values(std::initializer_list<std::pair<std::string, std::string>> kv) {
  ConfigValues out;
  for (const auto& [k, v] : kv) out.insert_or_assign(k, ConfigValue{v, "test"});
  return out;
}

// Sets environment variables for one test and restores them afterwards.
class ScopedEnv {
 public:
  void set(const std::string& key, const std::string& value) {
    remember(key);
    setenv(key.c_str(), value.c_str(), 1);
  }
  ~ScopedEnv() {
    for (const auto& [key, old] : saved_) {
      if (old.has_value()) {
        setenv(key.c_str(), old->c_str(), 1);
      } else {
        unsetenv(key.c_str());
      }
    }
  }

 private:
  void remember(const std::string& key) {
    for (const auto& s : saved_) {
      if (s.first == key) return;
    }
    const char* v = std::getenv(key.c_str());
    saved_.emplace_back(key, v == nullptr ? std::nullopt : std::optional<std::string>(v));
  }
  std::vector<std::pair<std::string, std::optional<std::string>>> saved_;
};

class FetchConfigTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir = fs::temp_directory_path() /
          ("fetch_config_test_" + std::to_string(getpid()) + "_" +
           ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir);
    fs::create_directories(dir);
    // The tests own the environment they read.
    for (const std::string& key : known_config_keys()) env.set(key, "");
    env.set("MODEL_CONFIG", "");
  }
  void TearDown() override { fs::remove_all(dir); }
  fs::path write(const std::string& name, const std::string& text) {
    std::ofstream(dir / name) << text;
    return dir / name;
  }
  fs::path dir;
  ScopedEnv env;
};

TEST_F(FetchConfigTest, DefaultsFetchNothing) {
  auto c = make_fetch_config({});
  ASSERT_TRUE(c.ok()) << c.status().to_string();
  EXPECT_FALSE(c->enabled());
  EXPECT_FALSE(c->model_server_enable);
  EXPECT_EQ(c->model_server_url, "http://kepler-model-server:8100");
  EXPECT_EQ(c->model_server_req_path, "/model");
  EXPECT_EQ(c->connect_timeout, 5s);
  EXPECT_EQ(c->total_timeout, 60s);
  EXPECT_EQ(c->max_bytes, 64U << 20U);
}

TEST_F(FetchConfigTest, EachPrefixHasItsOutputTypeAndSource) {
  auto c = make_fetch_config({}).value();
  struct Want {
    const char* prefix;
    const char* output_type;
    const char* source;
  };
  for (const Want& w : {Want{"NODE_TOTAL", "AbsPower", "acpi"},
                        Want{"NODE_COMPONENTS", "AbsPower", "rapl-sysfs"},
                        Want{"CONTAINER_TOTAL", "DynPower", "acpi"},
                        Want{"CONTAINER_COMPONENTS", "DynPower", "rapl-sysfs"},
                        Want{"PROCESS_TOTAL", "DynPower", "acpi"},
                        Want{"PROCESS_COMPONENTS", "DynPower", "rapl-sysfs"}}) {
    const PrefixConfig* p = c.find(w.prefix);
    ASSERT_NE(p, nullptr) << w.prefix;
    EXPECT_EQ(p->output_type, w.output_type) << w.prefix;
    EXPECT_EQ(p->source, w.source) << w.prefix;
    EXPECT_FALSE(p->configured());
  }
}

TEST_F(FetchConfigTest, ReadsKeplersKeys) {
  auto c = make_fetch_config(values({
      {"NODE_COMPONENTS_INIT_URL", "https://example.org/models/v0.7/rapl-sysfs/AbsPower/BPFOnly/SGDRegressorTrainer_0.zip?raw=1"},
      {"NODE_COMPONENTS_TRAINER", "SGDRegressorTrainer"},
      {"CONTAINER_TOTAL_FILTERS", "mae:0.5; mape:10"},
      {"MODEL_SERVER_ENABLE", "True"},
      {"MODEL_SERVER_URL", "http://10.0.0.1:9000/"},
      {"MODEL_SERVER_MODEL_REQ_PATH", "/v2/model"},
      {"FETCH_TIMEOUT_MS", "1500"},
      {"FETCH_RETRIES", "0"},
      {"MODEL_SERVER_FEATURES", "cpu_cycles, cache_miss"},
  }));
  ASSERT_TRUE(c.ok()) << c.status().to_string();
  EXPECT_TRUE(c->enabled());
  const PrefixConfig* p = c->find("NODE_COMPONENTS");
  EXPECT_EQ(p->init_url,
            "https://example.org/models/v0.7/rapl-sysfs/AbsPower/BPFOnly/SGDRegressorTrainer_0.zip?raw=1");
  EXPECT_EQ(p->trainer, "SGDRegressorTrainer");
  EXPECT_TRUE(p->configured());
  EXPECT_EQ(c->find("CONTAINER_TOTAL")->filters, "mae:0.5; mape:10");
  EXPECT_TRUE(c->model_server_enable);
  EXPECT_EQ(c->model_server_url, "http://10.0.0.1:9000");  // trailing / dropped before the path
  EXPECT_EQ(c->model_server_req_path, "/v2/model");
  EXPECT_EQ(c->total_timeout, 1500ms);
  EXPECT_EQ(c->retries, 0);
  EXPECT_EQ(c->start_features, (std::vector<std::string>{"cpu_cycles", "cache_miss"}));
}

TEST_F(FetchConfigTest, BooleansTakeKeplersSpellings) {
  for (const char* yes : {"true", "TRUE", "1", "yes"}) {
    EXPECT_TRUE(make_fetch_config(values({{"MODEL_SERVER_ENABLE", yes}}))->model_server_enable) << yes;
  }
  for (const char* no : {"false", "False", "0", "no"}) {
    EXPECT_FALSE(make_fetch_config(values({{"MODEL_SERVER_ENABLE", no}}))->model_server_enable) << no;
  }
}

TEST_F(FetchConfigTest, AnInitUrlAloneEnablesFetching) {
  auto c = make_fetch_config(values({{"PROCESS_TOTAL_INIT_URL", "file:///models/w.json"}}));
  ASSERT_TRUE(c.ok());
  EXPECT_TRUE(c->enabled());
  EXPECT_FALSE(c->model_server_enable);
}

TEST_F(FetchConfigTest, PortWithoutUrlAppliesToTheDefaultService) {
  auto c = make_fetch_config(values({{"MODEL_SERVER_PORT", "8200"}}));
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->model_server_url, "http://kepler-model-server:8200");
}

TEST_F(FetchConfigTest, BadValuesNameTheKeyAndTheirOrigin) {
  struct Bad {
    const char* key;
    const char* value;
  };
  for (const Bad& b : {Bad{"MODEL_SERVER_ENABLE", "maybe"},
                       Bad{"NODE_TOTAL_INIT_URL", "ftp://example.org/m.zip"},
                       Bad{"NODE_TOTAL_INIT_URL", "/models/m.zip"},
                       Bad{"NODE_TOTAL_INIT_URL", "http://exa mple.org/m.zip"},
                       Bad{"MODEL_SERVER_URL", "file:///tmp/server"},
                       Bad{"MODEL_SERVER_MODEL_REQ_PATH", "model"},
                       Bad{"NODE_COMPONENTS_FILTERS", "mae<0.5"},
                       Bad{"NODE_COMPONENTS_FILTERS", "mae:low"},
                       Bad{"NODE_COMPONENTS_TRAINER", "../etc"},
                       Bad{"FETCH_TIMEOUT_MS", "10s"},
                       Bad{"FETCH_TIMEOUT_MS", "0"},
                       Bad{"FETCH_RETRIES", "-1"},
                       Bad{"FETCH_MAX_BYTES", "999999999999"},
                       Bad{"MODEL_SERVER_PORT", "70000"},
                       Bad{"MODEL_SERVER_FEATURES", ", ,"}}) {
    ConfigValues v;
    v.insert_or_assign(b.key, ConfigValue{b.value, "conf:7"});
    auto c = make_fetch_config(v);
    ASSERT_FALSE(c.ok()) << b.key << "=" << b.value;
    EXPECT_EQ(c.status().code(), Code::kInvalidArgument);
    EXPECT_NE(c.status().message().find(b.key), std::string::npos) << c.status().message();
    EXPECT_NE(c.status().message().find("conf:7"), std::string::npos) << c.status().message();
  }
}

TEST_F(FetchConfigTest, ParsesKeyValueLines) {
  auto v = parse_config_text(
      "# Kepler model configuration\n"
      "\n"
      "NODE_COMPONENTS_INIT_URL = https://host/x.zip?a=b&c=d\n"
      "  export MODEL_SERVER_ENABLE=\"true\"\n"
      "NODE_TOTAL_TRAINER='SGDRegressorTrainer'\r\n"
      "ENABLE_EBPF_CGROUPID=true\n",
      "kepler.config");
  ASSERT_TRUE(v.ok()) << v.status().to_string();
  EXPECT_EQ(v->at("NODE_COMPONENTS_INIT_URL").value, "https://host/x.zip?a=b&c=d");
  EXPECT_EQ(v->at("NODE_COMPONENTS_INIT_URL").origin, "kepler.config:3");
  EXPECT_EQ(v->at("MODEL_SERVER_ENABLE").value, "true");
  EXPECT_EQ(v->at("NODE_TOTAL_TRAINER").value, "SGDRegressorTrainer");
  // Keys the estimator does not read are kept here and ignored by make_fetch_config.
  EXPECT_TRUE(v->contains("ENABLE_EBPF_CGROUPID"));
  EXPECT_TRUE(make_fetch_config(*v).ok());
}

TEST_F(FetchConfigTest, MalformedLinesNameTheLine) {
  auto no_eq = parse_config_text("A=1\nthis is not a setting\n", "my.conf");
  ASSERT_FALSE(no_eq.ok());
  EXPECT_NE(no_eq.status().message().find("my.conf:2"), std::string::npos) << no_eq.status().message();
  auto bad_key = parse_config_text("NODE-TOTAL=1\n", "my.conf");
  ASSERT_FALSE(bad_key.ok());
  EXPECT_NE(bad_key.status().message().find("my.conf:1"), std::string::npos);
  auto huge = parse_config_text("A=" + std::string(100000, 'x') + "\n", "my.conf");
  EXPECT_FALSE(huge.ok());
}

TEST_F(FetchConfigTest, EnvironmentOverridesModelConfigWhichOverridesTheFile) {
  const fs::path file = write("estimator.conf",
                              "MODEL_SERVER_URL=http://from-file:1\n"
                              "NODE_TOTAL_TRAINER=FromFile\n"
                              "NODE_COMPONENTS_TRAINER=FromFile\n"
                              "FETCH_RETRIES=7\n");
  env.set("MODEL_CONFIG", "NODE_TOTAL_TRAINER=FromModelConfig\nNODE_COMPONENTS_TRAINER=FromModelConfig\n");
  env.set("NODE_COMPONENTS_TRAINER", "FromEnv");
  auto c = load_fetch_config(file);
  ASSERT_TRUE(c.ok()) << c.status().to_string();
  EXPECT_EQ(c->model_server_url, "http://from-file:1");
  EXPECT_EQ(c->find("NODE_TOTAL")->trainer, "FromModelConfig");
  EXPECT_EQ(c->find("NODE_COMPONENTS")->trainer, "FromEnv");
  EXPECT_EQ(c->retries, 7);
}

TEST_F(FetchConfigTest, AnEmptyEnvironmentVariableDoesNotUnsetTheFile) {
  const fs::path file = write("estimator.conf", "MODEL_SERVER_ENABLE=true\n");
  env.set("MODEL_SERVER_ENABLE", "");
  auto c = load_fetch_config(file);
  ASSERT_TRUE(c.ok());
  // Kepler treats an empty value as unset; the file's value stands.
  EXPECT_TRUE(c->model_server_enable);
}

TEST_F(FetchConfigTest, BadEnvironmentValueNamesTheEnvironment) {
  env.set("FETCH_CONNECT_TIMEOUT_MS", "soon");
  auto c = load_fetch_config({});
  ASSERT_FALSE(c.ok());
  EXPECT_NE(c.status().message().find("FETCH_CONNECT_TIMEOUT_MS (environment)"), std::string::npos)
      << c.status().message();
}

TEST_F(FetchConfigTest, ReadsAConfigMapDirectory) {
  fs::create_directories(dir / "cm" / "..2025_01_01");
  std::ofstream(dir / "cm" / "MODEL_SERVER_ENABLE") << "true\n";
  std::ofstream(dir / "cm" / "NODE_TOTAL_INIT_URL") << "  file:///models/total.zip \n";
  std::ofstream(dir / "cm" / "..2025_01_01" / "MODEL_SERVER_URL") << "http://hidden:1";
  std::ofstream(dir / "cm" / "..data") << "ignored";
  auto c = load_fetch_config(dir / "cm");
  ASSERT_TRUE(c.ok()) << c.status().to_string();
  EXPECT_TRUE(c->model_server_enable);
  EXPECT_EQ(c->find("NODE_TOTAL")->init_url, "file:///models/total.zip");
  EXPECT_EQ(c->model_server_url, "http://kepler-model-server:8100");
}

// Kepler's kepler-cfm mounted as a directory, as Kepler's own estimator sidecar reads it:
// the model keys live in the MODEL_CONFIG file's lines (with the <PREFIX>_ESTIMATOR switches
// Kepler reads), the model-server keys may be files of their own, and the rest is Kepler's.
TEST_F(FetchConfigTest, ReadsKeplersConfigMapWithModelConfigLines) {
  const fs::path cm = dir / "kepler.config";
  fs::create_directories(cm);
  std::ofstream(cm / "MODEL_CONFIG") << "NODE_COMPONENTS_ESTIMATOR=true\n"
                                        "NODE_COMPONENTS_INIT_URL=file:///models/nc.zip\n"
                                        "NODE_TOTAL_ESTIMATOR=true\n"
                                        "MODEL_SERVER_ENABLE: \"true\"\n"
                                        "NODE_TOTAL_TRAINER=FromModelConfig\n";
  std::ofstream(cm / "NODE_TOTAL_TRAINER") << "FromItsOwnFile\n";
  std::ofstream(cm / "MODEL_SERVER_URL") << "http://kepler-model-server.kepler:8100\n";
  std::ofstream(cm / "KEPLER_LOG_LEVEL") << "1";
  // A key the estimator does not read is never opened, however large.
  std::ofstream(cm / "REDFISH_CSV") << std::string(64 * 1024, 'x');
  auto c = load_fetch_config(cm);
  ASSERT_TRUE(c.ok()) << c.status().to_string();
  EXPECT_EQ(c->find("NODE_COMPONENTS")->init_url, "file:///models/nc.zip");
  EXPECT_TRUE(c->model_server_enable);
  EXPECT_EQ(c->model_server_url, "http://kepler-model-server.kepler:8100");
  EXPECT_EQ(c->find("NODE_TOTAL")->trainer, "FromModelConfig");
  // A bad line names the MODEL_CONFIG file and its line.
  std::ofstream(cm / "MODEL_CONFIG") << "NODE_TOTAL_ESTIMATOR=true\nFETCH_RETRIES=many\n";
  auto bad = load_fetch_config(cm);
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("MODEL_CONFIG:2"), std::string::npos) << bad.status().message();
}

// Kepler's documentation shows `MODEL_SERVER_ENABLE: "true"` inside MODEL_CONFIG; Kepler
// itself skips such a line, and a daemon that refused it would crash-loop beside Kepler.
TEST_F(FetchConfigTest, AcceptsTheYamlStyleLineOfKeplersDocs) {
  env.set("MODEL_CONFIG",
          "NODE_TOTAL_ESTIMATOR=true\n"
          "MODEL_SERVER_ENABLE: \"true\"\n"
          "MODEL_SERVER_URL: http://kepler-model-server.kepler.svc:8100\n"
          "NODE_COMPONENTS_INIT_URL: https://host/models/a.zip?x=1\n");
  auto c = load_fetch_config({});
  ASSERT_TRUE(c.ok()) << c.status().to_string();
  EXPECT_TRUE(c->model_server_enable);
  EXPECT_EQ(c->model_server_url, "http://kepler-model-server.kepler.svc:8100");
  EXPECT_EQ(c->find("NODE_COMPONENTS")->init_url, "https://host/models/a.zip?x=1");
  // The first separator wins: a URL after '=' keeps its ':'.
  auto v = parse_config_text("NODE_TOTAL_INIT_URL=http://h:1/a?b=c\n", "t");
  ASSERT_TRUE(v.ok());
  EXPECT_EQ(v->at("NODE_TOTAL_INIT_URL").value, "http://h:1/a?b=c");
}

TEST_F(FetchConfigTest, MissingFileIsAnError) {
  auto c = load_fetch_config(dir / "absent.conf");
  ASSERT_FALSE(c.ok());
  EXPECT_NE(c.status().message().find("absent.conf"), std::string::npos);
}

TEST(RedactUrlTest, HidesCredentials) {
  EXPECT_EQ(redact_url("https://user:secret@host:8100/model"), "https://***@host:8100/model");
  EXPECT_EQ(redact_url("http://host/a@b"), "http://host/a@b");
  EXPECT_EQ(redact_url("file:///models/x.zip"), "file:///models/x.zip");
}

}  // namespace
}  // namespace estimator::service
