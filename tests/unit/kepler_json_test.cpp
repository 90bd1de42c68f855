// SPDX-License-Identifier: Apache-2.0
// Kepler's JSON messages: both request generations, every error the reader names, hostile
// input, and replies read back with an independent JSON library (nlohmann::json).
#include <gtest/gtest.h>
#include <spdlog/sinks/ringbuffer_sink.h>
#include <spdlog/spdlog.h>
#include <sys/socket.h>
#include <sys/un.h>

#include <charconv>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <limits>
#include <nlohmann/json.hpp>
#include <random>
#include <string>

#include "common/power_total.h"
#include "models/embedded_defaults.h"
#include "models/registry.h"
#include "common/unique_fd.h"
#include "service/kepler_adapter.h"
#include "service/kepler_endpoint.h"
#include "service/metrics.h"
#include "service/kepler_json.h"
#include "tests/support/files.h"

namespace estimator::service::kepler {
namespace {

using nlohmann::json;

struct Parsed {
  Status status;
  KeplerRequest req;
};

class KeplerJsonTest : public ::testing::Test {
 protected:
  Status parse(std::string_view doc) { return sut.parse(doc, req); }
  // The failure message of `doc` (empty when it parses).
  std::string error_of(std::string_view doc) {
    const Status s = parse(doc);
    return s.ok() ? std::string() : s.message();
  }

  KeplerJsonReader sut;
  KeplerRequest req;
};

constexpr std::string_view kV09 = R"({
  "metrics": ["bpf_cpu_time_ms", "bpf_page_cache_hit", "cpu_instructions"],
  "values": [[1200.5, 3, 1e6], [0, -0.25, 12345678]],
  "output_type": "DynPower",
  "source": "intel_rapl",
  "system_features": ["cpu_architecture"],
  "system_values": ["Sky Lake"],
  "trainer_name": "SGDRegressorTrainer",
  "filter": "mae:0.5;mape:10"
})";

constexpr std::string_view k2022 =
    R"({"model_name":"","metrics":["cpu_instructions","cache_miss"],"values":[[10,1],[30,3]],)"
    R"("core_power":[20,22.5],"dram_power":[4],"gpu_power":[],"other_power":null})";

TEST_F(KeplerJsonTest, ReadsTheV09Form) {
  ASSERT_TRUE(parse(kV09).ok()) << parse(kV09).message();
  EXPECT_EQ(req.form, Form::kV09);
  ASSERT_EQ(req.metrics.size(), 3u);
  EXPECT_EQ(req.metrics[0], "bpf_cpu_time_ms");
  EXPECT_EQ(req.metrics[2], "cpu_instructions");
  EXPECT_EQ(req.rows, 2u);
  EXPECT_EQ(req.cols, 3u);
  const std::vector<float> want = {1200.5f, 3.f, 1e6f, 0.f, -0.25f, 12345678.f};
  EXPECT_EQ(std::vector<float>(req.values.begin(), req.values.end()), want);
  EXPECT_EQ(req.output_type, "DynPower");
  EXPECT_EQ(req.source, "intel_rapl");
  ASSERT_EQ(req.system_features.size(), 1u);
  EXPECT_EQ(req.system_features[0], "cpu_architecture");
  EXPECT_EQ(req.system_values[0], "Sky Lake");
  EXPECT_EQ(req.trainer_name, "SGDRegressorTrainer");
  EXPECT_EQ(req.filter, "mae:0.5;mape:10");
  EXPECT_TRUE(req.model_name.empty());
  EXPECT_TRUE(req.core_power.empty());
}

TEST_F(KeplerJsonTest, Reads2022Form) {
  ASSERT_TRUE(parse(k2022).ok()) << parse(k2022).message();
  EXPECT_EQ(req.form, Form::k2022);
  EXPECT_EQ(req.rows, 2u);
  EXPECT_EQ(req.cols, 2u);
  EXPECT_EQ(std::vector<float>(req.core_power.begin(), req.core_power.end()),
            (std::vector<float>{20.f, 22.5f}));
  EXPECT_EQ(std::vector<float>(req.dram_power.begin(), req.dram_power.end()),
            (std::vector<float>{4.f}));
  EXPECT_TRUE(req.gpu_power.empty());
  EXPECT_TRUE(req.other_power.empty());  // null = not measured
}

TEST_F(KeplerJsonTest, TellsTheFormsApartByTheirKeys) {
  auto form = [&](std::string_view doc) {
    EXPECT_TRUE(parse(doc).ok()) << doc << ": " << parse(doc).message();
    return req.form;
  };
  // What Kepler v0.9 sends (always both keys) and what Kepler v0.3 sends: the 2022 keys
  // plus "filter", which both generations send and so decides nothing.
  EXPECT_EQ(form(kV09), Form::kV09);
  EXPECT_EQ(form(R"({"model_name":"","metrics":[],"values":[],"core_power":[],"dram_power":[],)"
                 R"("gpu_power":[],"other_power":[],"filter":""})"),
            Form::k2022);
  EXPECT_EQ(form(R"({"metrics":[],"values":[],"model_name":"m"})"), Form::k2022);
  EXPECT_EQ(form(R"({"metrics":[],"values":[],"trainer_name":""})"), Form::kV09);
  EXPECT_EQ(form(R"({"metrics":[],"values":[],"output_type":"AbsPower"})"), Form::kV09);
  // Both: a v0.6+ client naming a model.
  EXPECT_EQ(form(R"({"metrics":[],"values":[],"model_name":"m","output_type":"AbsPower"})"),
            Form::kV09);
  // Neither: no known client, whatever else it carries.
  EXPECT_EQ(form(R"({"metrics":[],"values":[]})"), Form::kGeneric);
  EXPECT_EQ(form(R"({"metrics":[],"values":[],"core_power":[1],"filter":""})"), Form::kGeneric);
  EXPECT_EQ(form(R"({"metrics":[],"values":[],"source":"acpi","system_features":null,)"
                 R"("system_values":null})"),
            Form::kGeneric);
}

TEST_F(KeplerJsonTest, FormIsKnownEvenWhenTheRequestIsBad) {
  EXPECT_FALSE(parse(R"({"model_name":"x","metrics":["a"],"values":[[1,2]]})").ok());
  EXPECT_EQ(req.form, Form::k2022);
  EXPECT_FALSE(parse(R"({"output_type":"AbsPower","values":[[1]]})").ok());
  EXPECT_EQ(req.form, Form::kV09);
}

TEST_F(KeplerJsonTest, NullReadsAsEmptyAndUnknownKeysAreSkipped) {
  const std::string doc = R"({"unknown":{"a":[1,{"b":null}],"c":"\u00e9"},"metrics":["x"],)"
                          R"("n":-1.5e3,"t":true,"f":false,"z":null,"values":[[7]],)"
                          R"("output_type":null,"system_features":null,"system_values":null,)"
                          R"("trainer_name":null,"filter":null,"source":null,"arr":[[],{}]})";
  ASSERT_TRUE(parse(doc).ok()) << parse(doc).message();
  EXPECT_EQ(req.rows, 1u);
  EXPECT_EQ(req.values[0], 7.f);
  EXPECT_TRUE(req.output_type.empty());
  EXPECT_TRUE(req.system_features.empty());
  // values null is an empty matrix
  ASSERT_TRUE(parse(R"({"metrics":["a"],"values":null})").ok());
  EXPECT_EQ(req.rows, 0u);
}

TEST_F(KeplerJsonTest, ValuesBeforeMetricsAreCheckedAtTheEnd) {
  ASSERT_TRUE(parse(R"({"values":[[1,2]],"metrics":["a","b"]})").ok());
  EXPECT_EQ(req.cols, 2u);
  EXPECT_EQ(error_of(R"({"values":[[1,2]],"metrics":["a","b","c"]})"),
            "values[0] has 2 numbers but metrics names 3");
  EXPECT_EQ(error_of(R"({"values":[[1,2],[3]],"metrics":["a","b"]})"),
            "values[1] has 1 numbers but values[0] has 2");
}

TEST_F(KeplerJsonTest, NamesWhatIsWrong) {
  EXPECT_EQ(error_of(R"({"values":[]})"), "missing metrics");
  EXPECT_EQ(error_of(R"({"metrics":[]})"), "missing values");
  EXPECT_EQ(error_of(R"({"metrics":["a","b","c","d","e"],"values":[[1,2,3,4,5],[1,2,3,4,5],)"
                     R"([1,2,3,4,5],[1,2,3,4]]})"),
            "values[3] has 4 numbers but metrics names 5");
  EXPECT_EQ(error_of(R"({"metrics":["a","b"],"values":[[1,2],[1,2,3]]})"),
            "values[1] has 3 numbers but metrics names 2");
  EXPECT_EQ(error_of(R"({"metrics":["a"],"values":[[1],[]]})"),
            "values[1] has 0 numbers but metrics names 1");
  EXPECT_EQ(error_of(R"({"system_features":["a","b"],"system_values":["x"],"metrics":[],"values":[]})"),
            "system_values has 1 strings but system_features names 2");
  EXPECT_EQ(error_of(R"({"metrics":["a"],"metrics":["b"],"values":[]})"), "duplicate key 'metrics'");

  auto starts = [&](std::string_view doc, std::string_view prefix) {
    const std::string e = error_of(doc);
    EXPECT_EQ(e.substr(0, prefix.size()), prefix) << doc << " -> " << e;
  };
  starts(R"({"metrics":["a","b","c"],"values":[[1,2,"x"]]})", "values[0][2] is not a number");
  starts(R"({"metrics":["a","b","c"],"values":[[1,2,null]]})", "values[0][2] is not a number");
  starts(R"({"metrics":["a"],"values":[[true]]})", "values[0][0] is not a number");
  starts(R"({"metrics":["a"],"values":[[NaN]]})", "values[0][0] is not a number: 'NaN' (byte");
  starts(R"({"metrics":["a","b"],"values":[[1, nan ,2]]})", "values[0][1] is not a number: 'nan' (byte");
  starts(R"({"metrics":["a"],"values":[[Infinity]]})", "values[0][0] is not a number");
  starts(R"({"metrics":["a"],"values":[[-Infinity]]})", "values[0][0] is not a number");
  starts(R"({"metrics":["a"],"values":[["1"]]})", "values[0][0] is not a number");
  starts(R"({"metrics":["a"],"values":[[+1]]})", "values[0][0] is not a number");
  starts(R"({"metrics":["a"],"values":[[.5]]})", "values[0][0] is not a number");
  starts(R"({"metrics":["a"],"values":[[1.]]})", "values[0][0] has no digit after the decimal point");
  starts(R"({"metrics":["a"],"values":[[1e]]})", "values[0][0] has no digit in its exponent");
  starts(R"({"metrics":["a"],"values":[[01]]})", "expected ',' or ']' in values[0]");
  starts(R"({"metrics":["a"],"values":[[0x10]]})", "expected ',' or ']' in values[0]");
  starts(R"({"metrics":["a"],"values":[1]})", "values[0] is not a list of numbers");
  starts(R"({"metrics":["a"],"values":{"a":1}})", "values must be a list of rows");
  starts(R"({"metrics":"a","values":[]})", "metrics must be a list of strings");
  starts(R"({"metrics":[1],"values":[]})", "metrics[0] is not a string");
  starts(R"({"metrics":["a",2],"values":[]})", "metrics[1] is not a string");
  starts(R"({"metrics":[],"values":[],"output_type":1})", "output_type is not a string");
  starts(R"({"metrics":[],"values":[],"source":["rapl"]})", "source is not a string");
  starts(R"({"metrics":[],"values":[],"system_values":[1]})", "system_values[0] is not a string");
  starts(R"({"metrics":[],"values":[],"core_power":["1"]})", "core_power[0] is not a number");
  starts(R"({"metrics":[],"values":[],"dram_power":1})", "dram_power must be a list of numbers");
  starts(R"({"metrics":[],"values":[],})", "a key of the request object is not a string");
  starts(R"({"metrics":[],"values":[1,]})", "values[0] is not a list of numbers");
  starts(R"({"metrics":["a",],"values":[]})", "metrics[1] is not a string");
  starts(R"({"metrics" ["a"],"values":[]})", "expected ':' after key 'metrics'");
  starts(R"({"metrics":[] "values":[]})", "expected ',' or '}' after the value of 'metrics'");
  starts(R"({"metrics":[],"values":[]} x)", "unexpected data after the JSON document");
  starts(R"({"metrics":[],"values":[]}{})", "unexpected data after the JSON document");
  starts(R"(// comment
{"metrics":[],"values":[]})", "a request must be a JSON object");
  starts(R"([1,2])", "a request must be a JSON object");
  starts("", "empty request");
  starts("   \n", "empty request");
  starts(R"({"metrics":[],"values":[],"x":nul})", "the value of unknown key 'x' is not JSON");
  starts(R"({"metrics":[],"values":[],"x":[1 2]})", "expected ',' or ']' inside the value of unknown key 'x'");
}

TEST_F(KeplerJsonTest, EveryTruncationIsAnError) {
  for (const std::string_view doc : {kV09, k2022}) {
    ASSERT_EQ(doc.back(), '}');
    for (std::size_t n = 0; n < doc.size(); ++n) {
      const Status s = parse(doc.substr(0, n));
      EXPECT_FALSE(s.ok()) << "prefix of " << n << " bytes parsed";
      EXPECT_FALSE(s.message().empty());
    }
  }
  EXPECT_EQ(error_of(R"({"metrics":["a"],"values":[[1)"), "the JSON document ends early, inside values[0]");
  EXPECT_EQ(error_of(R"({"metrics":["ab)"), "the JSON document ends early, inside metrics[0]");
}

TEST_F(KeplerJsonTest, HostileNestingIsBounded) {
  // Deep nesting in an unknown key: refused by depth, not by a stack overflow.
  std::string deep = R"({"metrics":[],"values":[],"x":)";
  deep += std::string(100000, '[');
  deep += std::string(100000, ']');
  deep += "}";
  const Status s = parse(deep);
  EXPECT_EQ(s.code(), Code::kTooLarge);
  EXPECT_NE(s.message().find("nests deeper than 32 levels"), std::string::npos) << s.message();
  // Within the limit it is fine.
  std::string ok = R"({"metrics":[],"values":[],"x":)";
  ok += std::string(30, '[') + std::string(30, ']') + "}";
  EXPECT_TRUE(parse(ok).ok()) << parse(ok).message();
  // Nesting inside values is a type error at once.
  EXPECT_EQ(error_of(R"({"metrics":["a"],"values":[[[1]]]})").substr(0, 28),
            "values[0][0] is not a number");
}

TEST_F(KeplerJsonTest, NumbersOfAnySizeAreSafe) {
  auto one = [&](const std::string& number) {
    return parse(R"({"metrics":["a"],"values":[[)" + number + "]]}");
  };
  EXPECT_EQ(one("1e400").code(), Code::kInvalidValue);
  EXPECT_NE(one("1e400").message().find("outside the float32 range"), std::string::npos);
  EXPECT_EQ(one("-1e39").code(), Code::kInvalidValue);
  EXPECT_EQ(one("3.5e38").code(), Code::kInvalidValue);
  ASSERT_TRUE(one("3.4028234e38").ok());
  EXPECT_EQ(req.values[0], std::numeric_limits<float>::max());
  ASSERT_TRUE(one("1e-400").ok());  // below a double's range: 0
  EXPECT_EQ(req.values[0], 0.f);
  ASSERT_TRUE(one("-0.000000000000000000000000000000000000000000000001e-400").ok());
  EXPECT_EQ(req.values[0], 0.f);
  EXPECT_TRUE(std::signbit(req.values[0]));
  ASSERT_TRUE(one("1e-50").ok());  // representable as double, flushes to float 0
  EXPECT_EQ(req.values[0], 0.f);
  ASSERT_TRUE(one("123456789012345678901234567890").ok());
  EXPECT_FLOAT_EQ(req.values[0], 1.2345679e29f);
  EXPECT_EQ(one("1" + std::string(600, '0')).code(), Code::kTooLarge);
  EXPECT_EQ(one("1" + std::string(300, '0')).code(), Code::kInvalidValue);
  EXPECT_EQ(one("1e99999999999999999999").code(), Code::kInvalidValue);
  ASSERT_TRUE(one("1e-99999999999999999999").ok());
  ASSERT_TRUE(one("-0").ok());
  EXPECT_TRUE(std::signbit(req.values[0]));
}

TEST_F(KeplerJsonTest, FloatsAreAsAccurateAsAFloatCast) {
  // Go's encoding/json writes float64 with strconv 'g'-like shortest forms: the reader
  // must give exactly static_cast<float>(the double), for every spelling.
  std::mt19937_64 rng(42);
  std::uniform_real_distribution<double> mantissa(-1.0, 1.0);
  std::uniform_int_distribution<int> exponent(-30, 30);
  std::string doc = R"({"metrics":["a"],"values":[)";
  std::vector<float> want;
  char buf[64];
  for (int i = 0; i < 20000; ++i) {
    const double d = mantissa(rng) * std::pow(10.0, exponent(rng));
    // Short and long mantissas, with and without exponents: both the one-pass path (up
    // to 19 digits, 53-bit mantissa, |exponent| <= 22) and std::from_chars are covered.
    static constexpr const char* kFormats[] = {"%.17g", "%.6e", "%.3f", "%.15g", "%.16g",
                                               "%.12e", "%.0f", "%.19g", "%.9g"};
    const char* fmt = kFormats[static_cast<std::size_t>(i) % std::size(kFormats)];
    std::snprintf(buf, sizeof buf, fmt, d);
    if (i != 0) doc += ',';
    doc += '[';
    doc += buf;
    doc += ']';
    want.push_back(static_cast<float>(std::strtod(buf, nullptr)));
  }
  doc += "]}";
  ASSERT_TRUE(parse(doc).ok()) << parse(doc).message();
  ASSERT_EQ(req.values.size(), want.size());
  for (std::size_t i = 0; i < want.size(); ++i) EXPECT_EQ(req.values[i], want[i]) << i;
}

TEST_F(KeplerJsonTest, DigitRunsOfEveryLengthReadExactly) {
  // Digits are read eight bytes at a time while eight remain: runs of 1 to 20 digits, on
  // either side of the point, both far from the document's end and right before it.
  const std::string digits = "98765432109876543210";
  for (std::size_t a = 1; a <= digits.size(); ++a) {
    for (std::size_t b = 0; b <= digits.size(); b += 3) {
      std::string number = digits.substr(0, a);
      if (b != 0) number += "." + digits.substr(digits.size() - b);
      const float want = static_cast<float>(std::strtod(number.c_str(), nullptr));
      for (const std::string& doc :
           {R"({"metrics":["a"],"values":[[)" + number + R"(]],"source":"padding padding"})",
            R"({"metrics":["a"],"values":[[)" + number}) {
        const Status s = parse(doc);
        if (doc.back() == '}') {
          ASSERT_TRUE(s.ok()) << number << ": " << s.message();
          EXPECT_EQ(req.values[0], want) << number;
        } else {
          EXPECT_NE(s.message().find("ends early"), std::string::npos) << number;
        }
      }
    }
  }
  // Halfway between two floats: a decimal fraction must still round half to even.
  for (const char* number : {"16777217.0", "33554438.000", "-16777221.0", "711627.78125",
                             "5693022.25000", "-91088356.00000", "0.50000002980232238"}) {
    ASSERT_TRUE(parse(R"({"metrics":["a"],"values":[[)" + std::string(number) + "]]}").ok());
    EXPECT_EQ(req.values[0], static_cast<float>(std::strtod(number, nullptr))) << number;
  }
  EXPECT_FALSE(parse(R"({"metrics":["a"],"values":[[12345678.]],"source":"padding"})").ok());
  EXPECT_FALSE(parse(R"({"metrics":["a"],"values":[[0123]],"source":"padding padding"})").ok());
}

TEST_F(KeplerJsonTest, StringsDecodeEscapesAndRefuseBadOnes) {
  ASSERT_TRUE(parse(R"({"metrics":["a\"b\\c\/d\b\f\n\r\t","\u00e9\u4e2d\ud83d\ude00"],"values":[]})").ok());
  EXPECT_EQ(req.metrics[0], "a\"b\\c/d\b\f\n\r\t");
  EXPECT_EQ(req.metrics[1], "\xc3\xa9\xe4\xb8\xad\xf0\x9f\x98\x80");
  ASSERT_TRUE(parse("{\"metrics\":[\"caf\xc3\xa9\"],\"values\":[]}").ok());
  EXPECT_EQ(req.metrics[0], "caf\xc3\xa9");

  auto starts = [&](std::string_view doc, std::string_view prefix) {
    const std::string e = error_of(doc);
    EXPECT_EQ(e.substr(0, prefix.size()), prefix) << doc << " -> " << e;
  };
  starts(R"({"metrics":["\x"],"values":[]})", "metrics[0] has an invalid escape \\x");
  starts(R"({"metrics":["\u12G4"],"values":[]})", "metrics[0] has a bad \\u escape");
  starts(R"({"metrics":["\u12"],"values":[]})", "metrics[0] has a bad \\u escape");
  starts(R"({"metrics":["\udc00"],"values":[]})", "metrics[0] has a lone low surrogate");
  starts(R"({"metrics":["\ud800"],"values":[]})", "metrics[0] has a high surrogate");
  starts(R"({"metrics":["\ud800\u0041"],"values":[]})", "metrics[0] has a high surrogate");
  starts("{\"metrics\":[\"a\nb\"],\"values\":[]}", "metrics[0] holds an unescaped control character");
  starts("{\"metrics\":[\"\xff\"],\"values\":[]}", "metrics[0] is not valid UTF-8");
  starts("{\"metrics\":[\"\xc0\xaf\"],\"values\":[]}", "metrics[0] is not valid UTF-8");      // overlong
  starts("{\"metrics\":[\"\xed\xa0\x80\"],\"values\":[]}", "metrics[0] is not valid UTF-8");  // surrogate
  starts("{\"metrics\":[\"\xe4\xb8\"],\"values\":[]}", "metrics[0] is not valid UTF-8");      // cut
  const std::string long_name(5000, 'a');
  EXPECT_EQ(parse(R"({"metrics":[")" + long_name + R"("],"values":[]})").code(), Code::kTooLarge);
}

TEST_F(KeplerJsonTest, ListsAreBounded) {
  std::string doc = R"({"metrics":[)";
  for (int i = 0; i < 1025; ++i) doc += (i ? ",\"f" : "\"f") + std::to_string(i) + "\"";
  doc += R"(],"values":[]})";
  EXPECT_EQ(parse(doc).code(), Code::kTooLarge);
  KeplerJsonReader small({.max_rows = 2});
  KeplerRequest r;
  const Status s = small.parse(R"({"metrics":["a"],"values":[[1],[2],[3]]})", r);
  EXPECT_EQ(s.code(), Code::kTooLarge);
  EXPECT_EQ(s.message(), "values has more than 2 rows");
  std::string power = R"({"metrics":[],"values":[],"core_power":[)";
  for (int i = 0; i < 65; ++i) power += i ? ",1" : "1";
  power += "]}";
  EXPECT_EQ(parse(power).code(), Code::kTooLarge);
}

TEST_F(KeplerJsonTest, ViewsStayValidUntilTheNextParse) {
  ASSERT_TRUE(parse(kV09).ok());
  const std::string first_metric(req.metrics[0]);
  ASSERT_TRUE(parse(k2022).ok());
  EXPECT_EQ(req.metrics[0], "cpu_instructions");
  EXPECT_EQ(req.metrics[1], "cache_miss");
  ASSERT_TRUE(parse(kV09).ok());
  EXPECT_EQ(req.metrics[0], first_metric);
  EXPECT_EQ(req.system_values[0], "Sky Lake");
}

// ---- where a document ends ---------------------------------------------------------

// Feeds `doc` in pieces of `piece` bytes; returns the document's length as DocumentEnd
// reports it (counted from the first byte), or 0 when it never ends.
std::size_t end_of(std::string_view doc, std::size_t piece) {
  DocumentEnd end;
  for (std::size_t at = 0; at < doc.size(); at += piece) {
    const std::string_view chunk = doc.substr(at, piece);
    if (const std::size_t n = end.feed(chunk); n != 0) return at + n;
  }
  return 0;
}

TEST(DocumentEndTest, EndsAtTheOutermostCloseInPiecesOfAnySize) {
  // Brackets, quotes and backslashes inside strings change nothing; an escaped quote does
  // not end a string; bytes after the document are not part of it.
  const std::string doc =
      R"(  {"metrics":["a]}\"[{","b\\"],"values":[[1,2.5e3],[-0,7]],"msg":"\\\"}"})";
  for (std::size_t piece = 1; piece <= doc.size(); ++piece) {
    EXPECT_EQ(end_of(doc + R"( {"next":1})", piece), doc.size()) << "pieces of " << piece;
  }
  EXPECT_EQ(end_of(std::string(kV09), 7), kV09.size());
  EXPECT_EQ(end_of(R"({"open": [1, 2)", 3), 0U);
  EXPECT_EQ(end_of(R"({"s": "unterminated ] }")", 2), 0U);
}

TEST(DocumentEndTest, WhatCannotBeARequestEndsAtOnce) {
  EXPECT_EQ(end_of("  x{}", 1), 3U);                // not an object or array
  EXPECT_EQ(end_of(R"({"a": [1}, "b": 2})", 4), 9U);  // a mismatched close
  EXPECT_EQ(end_of("\n\t[[]]]", 2), 6U);
  const std::string deep(65, '[');  // deeper than the 64-bit stack
  EXPECT_EQ(end_of(deep, 5), 65U);
  EXPECT_EQ(end_of(std::string(64, '[') + std::string(64, ']'), 9), 128U);
  EXPECT_EQ(end_of("   \n ", 1), 0U);  // nothing yet: keep reading
}

// ---- replies ---------------------------------------------------------------------------

TEST(KeplerReplyTest, V09ReplyIsAMapOfComponents) {
  const std::string_view comps[] = {"package", "core", "uncore", "dram"};
  const std::vector<float> powers = {143.81206f, 0.f, 0.f, 18.616285f,  // row 0
                                     1e-7f, 1e20f, -0.f, 3.4028235e38f};  // row 1
  std::string out;
  ASSERT_TRUE(write_reply(Form::kV09, comps, powers, 2, 1.0, out).ok());
  const json j = json::parse(out);
  EXPECT_EQ(j["msg"], "");
  EXPECT_EQ(j["core_ratio"].get<double>(), 1.0);
  ASSERT_TRUE(j["powers"].is_object());
  ASSERT_EQ(j["powers"].size(), 4u);
  for (std::size_t c = 0; c < 4; ++c) {
    const auto& list = j["powers"][std::string(comps[c])];
    ASSERT_EQ(list.size(), 2u);
    for (std::size_t r = 0; r < 2; ++r) {
      // Shortest round-trip text: read as a double, it is the same float.
      EXPECT_EQ(static_cast<float>(list[r].get<double>()), powers[r * 4 + c]) << out;
    }
  }
  EXPECT_EQ(out.find(' '), std::string::npos) << "replies are compact: " << out;
  EXPECT_NE(out.find("143.81206"), std::string::npos) << out;

  ASSERT_TRUE(write_reply(Form::kV09, comps, {}, 0, 0.5, out).ok());
  EXPECT_EQ(out, R"({"powers":{"package":[],"core":[],"uncore":[],"dram":[]},"msg":"","core_ratio":0.5})");
}

TEST(KeplerReplyTest, Reply2022IsOneTotalPerRow) {
  const std::string_view comps[] = {"package", "core", "uncore", "dram", "gpu", "other"};
  const std::vector<float> powers = {10, 6, 2, 3, 0.5f, 0.25f, 1, 1, 0, 0, 0, 0};
  std::string out;
  ASSERT_TRUE(write_reply(Form::k2022, comps, powers, 2, 1.0, out).ok());
  const json j = json::parse(out);
  EXPECT_EQ(j["msg"], "");
  ASSERT_TRUE(j["powers"].is_array());
  ASSERT_EQ(j["powers"].size(), 2u);
  for (std::size_t r = 0; r < 2; ++r) {
    const double want = total_power<float>(comps, std::span<const float>(powers).subspan(r * 6, 6));
    EXPECT_EQ(static_cast<float>(j["powers"][r].get<double>()), static_cast<float>(want));
  }
  EXPECT_EQ(j["powers"][0].get<double>(), 13.75);  // package + dram + gpu + other
  EXPECT_FALSE(j.contains("core_ratio"));
}

TEST(KeplerReplyTest, ErrorsHaveOneShapeThatNeitherGenerationDecodes) {
  std::string out;
  write_error("missing metrics", out);
  EXPECT_EQ(out, R"({"powers":false,"msg":"missing metrics"})");
  write_error("", out);
  EXPECT_NE(json::parse(out)["msg"], "");  // an empty msg would read as success
}

TEST(KeplerReplyTest, NonFinitePowersBecomeAnError) {
  const std::string_view comps[] = {"package", "dram"};
  for (float bad : {std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity()}) {
    const std::vector<float> powers = {1, 2, 3, bad};
    std::string out;
    for (Form form : {Form::kV09, Form::k2022, Form::kGeneric}) {
      const Status s = write_reply(form, comps, powers, 2, 1.0, out);
      EXPECT_EQ(s.code(), Code::kInvalidValue);
      const json j = json::parse(out);
      EXPECT_EQ(j["powers"], false) << out;
      EXPECT_EQ(j["msg"], "the model gave a non-finite power for row 1, component dram");
    }
  }
  // Finite components whose total overflows a float.
  const std::vector<float> big = {3e38f, 3e38f};
  std::string out;
  EXPECT_FALSE(write_reply(Form::k2022, comps, big, 1, 1.0, out).ok());
  EXPECT_EQ(json::parse(out)["powers"], false);
  // A core ratio that cannot be JSON is written as 1.
  EXPECT_TRUE(write_reply(Form::kV09, comps, big, 1, std::nan(""), out).ok());
  EXPECT_EQ(json::parse(out)["core_ratio"], 1);
}

TEST(KeplerReplyTest, ErrorRepliesAreValidJsonAndFitEveryClientsRead) {
  std::string hostile = "quote \" backslash \\ newline \n nul ";
  hostile += '\0';
  hostile += " bell \x07 bad utf8 \xff\xfe cut \xe4\xb8 ok \xc3\xa9";
  std::string out;
  write_error(hostile, out);
  const json j = json::parse(out);
  const std::string msg = j["msg"];
  EXPECT_NE(msg.find("quote \" backslash \\ newline \n nul "), std::string::npos);
  EXPECT_NE(msg.find("\xef\xbf\xbd"), std::string::npos);  // U+FFFD for the bad bytes
  EXPECT_NE(msg.find("\xc3\xa9"), std::string::npos);

  // Long messages of one-byte, two-byte and six-bytes-escaped characters: cut at a
  // character, marked, and the whole reply within the 2022 client's 1024-byte read.
  for (const std::string& unit : {std::string("a"), std::string("\xc3\xa9"), std::string(1, '\x01')}) {
    std::string huge;
    while (huge.size() < 5000) huge += unit;
    write_error(huge, out);
    EXPECT_LE(out.size(), kMaxErrorReplyBytes);
    EXPECT_GT(out.size(), kMaxErrorReplyBytes - 8) << "cut more than needed";
    const std::string cut = json::parse(out)["msg"];
    ASSERT_GT(cut.size(), 3u);
    EXPECT_EQ(cut.substr(cut.size() - 3), "...");
    EXPECT_EQ(huge.compare(0, cut.size() - 3, cut, 0, cut.size() - 3), 0);
    EXPECT_EQ((cut.size() - 3) % unit.size(), 0u) << "cut inside a character";
  }
}

// The measurement behind docs/protocol.md's table "How many rows fit": the most rows
// whose reply fits each client's read, for each reply kind and value length. Run
//   build/tests/kepler_json_test --gtest_filter='*RowsThatFit*'
// to print it.
std::uint32_t rows_that_fit(Form form, std::span<const std::string_view> comps, float value,
                            double core_ratio, std::size_t limit) {
  std::string out;
  std::vector<float> powers;
  for (std::uint32_t rows = 1;; ++rows) {
    powers.assign(std::size_t{rows} * comps.size(), value);
    EXPECT_TRUE(write_reply(form, comps, powers, rows, core_ratio, out).ok());
    if (out.size() > limit) return rows - 1;
  }
}

std::size_t text_length(float v) {
  char buf[32];
  return static_cast<std::size_t>(std::to_chars(buf, buf + sizeof buf, v).ptr - buf);
}

TEST(KeplerReplyTest, RowsThatFitEachClientsRead) {
  // The longest shortest-round-trip text of a float: a sign, nine digits and a two-digit
  // negative exponent ("-1.23456789e-10": 15 bytes).
  float worst = -1.0000001e-10f;
  while (text_length(worst) < 15) worst = std::nextafter(worst, -1.f);
  ASSERT_EQ(text_length(worst), 15u);
  ASSERT_EQ(text_length(12.345678f), 9u);

  const std::string_view rapl[] = {"package", "core", "uncore", "dram"};
  const std::string_view acpi[] = {"platform"};
  const ClientReadLimits reads;
  struct Kind {
    const char* name;
    Form form;
    std::span<const std::string_view> comps;
  };
  const Kind kinds[] = {{"v0.6-v0.9, rapl (package, core, uncore, dram)", Form::kV09, rapl},
                        {"v0.6-v0.9, acpi (platform)", Form::kV09, acpi},
                        {"2022 / v0.3 (one total a row)", Form::k2022, acpi}};
  std::printf("| reply | client reads | `0` | `12.345678` | worst (`%s`, core_ratio 1/3) |\n",
              [&] {
                static char b[32];
                *std::to_chars(b, b + sizeof b - 1, worst).ptr = '\0';
                return b;
              }());
  std::printf("|---|---|---|---|---|\n");
  for (const Kind& k : kinds) {
    const std::size_t limit = reads.of(k.form);
    const std::uint32_t zero = rows_that_fit(k.form, k.comps, 0.f, 1.0, limit);
    const std::uint32_t typical = rows_that_fit(k.form, k.comps, 12.345678f, 1.0, limit);
    const std::uint32_t least = rows_that_fit(k.form, k.comps, worst, 1.0 / 3, limit);
    std::printf("| %s | %zu | %u | %u | %u |\n", k.name, limit, zero, typical, least);
    // Longer numbers, fewer rows; and every kind fits a useful number of rows.
    EXPECT_GT(zero, typical);
    EXPECT_GT(typical, least);
    EXPECT_GT(least, 10u);
  }
}

// ---- the adapter, on the embedded default models ----------------------------------------

class KeplerAdapterTest : public ::testing::Test {
 protected:
  KeplerAdapterTest()
      : holder(models::Registry::build(models::embedded_model_folders())), sut(holder) {}
  RegistryHolder holder;
  KeplerAdapter sut;
};

TEST_F(KeplerAdapterTest, AnswersV09WithTheDefaultModel) {
  const std::string reply(sut.answer(
      R"({"metrics":["bpf_cpu_time_ms","bpf_page_cache_hit"],"values":[[0,0],[95877,5]],)"
      R"("output_type":"AbsPower","source":"intel_rapl","system_features":[],"system_values":[],)"
      R"("trainer_name":"","filter":""})"));
  EXPECT_EQ(sut.last_code(), Code::kOk) << reply;
  const json j = json::parse(reply);
  EXPECT_EQ(j["msg"], "");
  const auto& pkg = j["powers"]["package"];
  ASSERT_EQ(pkg.size(), 2u);
  // Kepler v0.9's default: bias 143.812 + 305.148 * cpu_ms / 95877.
  EXPECT_NEAR(pkg[0].get<double>(), 143.81206324506658, 1e-4);
  EXPECT_NEAR(pkg[1].get<double>(), 143.81206324506658 + 305.148172889668, 1e-3);
  EXPECT_NEAR(j["powers"]["dram"][1].get<double>(), 18.616285480502686 + 8.434209551249596, 1e-4);
  EXPECT_EQ(j["core_ratio"], 1);
}

TEST_F(KeplerAdapterTest, ErrorsNameTheProblem) {
  json j = json::parse(sut.answer(
      R"({"metrics":["cpu_cycles"],"values":[[1]],"output_type":"AbsPower","source":"acpi"})"));
  EXPECT_EQ(j["powers"], false);
  EXPECT_NE(j["msg"].get<std::string>().find("bpf_cpu_time_ms"), std::string::npos) << j;
  EXPECT_EQ(sut.last_code(), Code::kNotFound);  // no acpi model fits: it says what they need

  j = json::parse(sut.answer(R"({"model_name":"nope","metrics":["a"],"values":[[1]]})"));
  EXPECT_EQ(j["powers"], false);
  EXPECT_NE(j["msg"].get<std::string>().find("nope"), std::string::npos) << j;
  EXPECT_EQ(sut.last_code(), Code::kNotFound);

  j = json::parse(sut.answer("{\"metrics\":"));
  EXPECT_EQ(j["powers"], false);
  EXPECT_EQ(sut.last_code(), Code::kInvalidArgument);
}

// `rows` rows of [cpu_ms, 0] under the given keys.
std::string bpf_request(std::string_view keys, std::uint32_t rows) {
  std::string doc = R"({"metrics":["bpf_cpu_time_ms","bpf_page_cache_hit"],)" + std::string(keys) +
                    R"("values":[)";
  for (std::uint32_t r = 0; r < rows; ++r) doc += r ? ",[1000,0]" : "[1000,0]";
  return doc + "]}";
}

TEST_F(KeplerAdapterTest, AReplyLongerThanTheClientReadsIsATooLargeError) {
  struct Client {
    std::string_view keys;  // what the generation's client always sends
    std::size_t limit;
  };
  for (const Client& c :
       {Client{R"("output_type":"AbsPower","source":"intel_rapl","system_features":[],)"
               R"("system_values":[],"trainer_name":"","filter":"",)",
               4096},
        Client{R"("model_name":"","core_power":[],"dram_power":[],"gpu_power":[],)"
               R"("other_power":[],"filter":"",)",
               1024}}) {
    SCOPED_TRACE(std::string(c.keys));
    // The first row count the client could not read whole.
    std::size_t last_fitting = 0;
    std::uint32_t rows = 1;
    for (;; ++rows) {
      const std::string_view reply = sut.answer(bpf_request(c.keys, rows));
      if (sut.last_code() != Code::kOk) break;
      ASSERT_LE(reply.size(), c.limit);
      last_fitting = reply.size();
    }
    ASSERT_GT(rows, 10u) << "not even ten rows fit";
    EXPECT_EQ(sut.last_code(), Code::kTooLarge) << sut.last_error();
    const std::string error(sut.answer(bpf_request(c.keys, rows)));
    EXPECT_LE(error.size(), kMaxErrorReplyBytes);
    const json j = json::parse(error);
    EXPECT_EQ(j["powers"], false);
    EXPECT_NE(j["msg"].get<std::string>().find(std::to_string(c.limit) + " bytes"),
              std::string::npos)
        << j;

    // The whole reply is one row longer than the last that fitted: the limit is exact.
    KeplerAdapter whole(holder, {}, nullptr, {.v09 = 0, .form2022 = 0});
    const std::string_view full = whole.answer(bpf_request(c.keys, rows));
    ASSERT_EQ(whole.last_code(), Code::kOk) << whole.last_error();
    EXPECT_GT(full.size(), c.limit);
    EXPECT_GT(full.size(), last_fitting);
  }
  // A client that is neither generation has no known read size.
  sut.answer(bpf_request(R"("source":"intel_rapl",)", 1000));
  EXPECT_EQ(sut.last_code(), Code::kOk) << sut.last_error();
}

TEST_F(KeplerAdapterTest, LargeRequestsGrowTheBuffers) {
  // 20000 rows need more than the initial 64 KiB buffers; the answer must still be exact.
  std::string doc = R"({"metrics":["bpf_cpu_time_ms","bpf_page_cache_hit"],"output_type":"AbsPower",)"
                    R"("source":"rapl-sysfs","values":[)";
  for (int r = 0; r < 20000; ++r) doc += (r ? ",[" : "[") + std::to_string(r) + ",0]";
  doc += "]}";
  KeplerAdapter whole(holder, {}, nullptr, {.v09 = 0, .form2022 = 0});  // reads it all
  const json j = json::parse(whole.answer(doc));
  ASSERT_EQ(j["msg"], "") << j["msg"];
  ASSERT_EQ(j["powers"]["package"].size(), 20000u);
  EXPECT_NEAR(j["powers"]["package"][19999].get<double>(),
              143.81206324506658 + 305.148172889668 * 19999 / 95877.00000000001, 1e-3);
  // And a small one after it still works (the plan cache was rebuilt).
  const json k = json::parse(whole.answer(
      R"({"metrics":["bpf_cpu_time_ms","bpf_page_cache_hit"],"values":[[0,0]],"source":"acpi"})"));
  EXPECT_EQ(k["msg"], "");
  EXPECT_TRUE(k["powers"].contains("platform"));
}

// ---- the endpoint: error replies logged and counted -------------------------------------

// One request on a fresh connection; the reply up to the server's close.
std::string call(const std::string& path, std::string_view request) {
  UniqueFd fd(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::snprintf(addr.sun_path, sizeof addr.sun_path, "%s", path.c_str());
  if (connect(fd.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof addr) != 0) return {};
  if (send(fd.get(), request.data(), request.size(), MSG_NOSIGNAL) !=
      static_cast<ssize_t>(request.size())) {
    return {};
  }
  std::string out;
  char buf[4096];
  for (ssize_t n; (n = recv(fd.get(), buf, sizeof buf, 0)) > 0;) out.append(buf, static_cast<std::size_t>(n));
  return out;
}

TEST(KeplerEndpointTest, ErrorRepliesAreCountedByReasonAndLoggedAtMostOnceASecond) {
  char dir[] = "/tmp/kepler-endpoint-XXXXXX";
  ASSERT_NE(mkdtemp(dir), nullptr);
  Metrics metrics;
  auto sink = std::make_shared<spdlog::sinks::ringbuffer_sink_mt>(1000);
  auto logger = std::make_shared<spdlog::logger>("test", sink);
  const auto previous = spdlog::default_logger();
  spdlog::set_default_logger(logger);
  {
    KeplerEndpointConfig config;
    config.path = std::string(dir) + "/estimator.sock";
    config.metrics = &metrics;
    auto sut = KeplerEndpoint::start(
        config, std::make_shared<RegistryHolder>(models::Registry::build(models::embedded_model_folders())));
    ASSERT_TRUE(sut.ok()) << sut.status().to_string();

    const auto t0 = std::chrono::steady_clock::now();
    constexpr int kBad = 20;
    for (int i = 0; i < kBad; ++i) {
      EXPECT_EQ(json::parse(call(config.path, R"({"metrics":["a"],"values":[[1,2]]})"))["powers"],
                false);
    }
    EXPECT_EQ(json::parse(call(config.path, R"({"model_name":"nope","metrics":[],"values":[]})"))["powers"],
              false);
    const std::string ok = call(config.path, bpf_request("", 1));
    EXPECT_EQ(json::parse(ok)["msg"], "") << ok;
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    sut.value()->stop();

    EXPECT_EQ(metrics.kepler_errors(Code::kInvalidArgument), std::uint64_t{kBad});
    EXPECT_EQ(metrics.kepler_errors(Code::kNotFound), 1u);
    EXPECT_EQ(metrics.kepler_errors(Code::kOk), 0u);
    const std::string page = metrics.render(nullptr);
    EXPECT_NE(page.find("estimator_kepler_socket_error_replies_total{reason=\"invalid_argument\"} " +
                        std::to_string(kBad) + "\n"),
              std::string::npos)
        << page;
    EXPECT_NE(page.find("estimator_kepler_socket_error_replies_total{reason=\"not_found\"} 1\n"),
              std::string::npos);

    std::vector<std::string> warnings;
    for (const std::string& line : sink->last_formatted()) {
      if (line.find("[warning]") != std::string::npos && line.find("error reply") != std::string::npos) {
        warnings.push_back(line);
      }
    }
    ASSERT_FALSE(warnings.empty());
    EXPECT_NE(warnings[0].find("(invalid_argument): values[0] has 2 numbers"), std::string::npos)
        << warnings[0];
    EXPECT_LE(warnings.size(), static_cast<std::size_t>(seconds) + 1) << "not rate-limited";
  }
  spdlog::set_default_logger(previous);
  std::filesystem::remove_all(dir);
}

// The cap on buffered bytes counts unfinished requests only: every answered request gives
// its bytes back. Before, a buffer released by move-assigning an empty string kept its
// heap block (libstdc++ keeps it when the source is a short string), so the count only
// grew, and once a daemon's lifetime of requests passed the cap every request was refused.
TEST(KeplerEndpointTest, AnsweredRequestsGiveTheirBytesBackToTheCap) {
  const estimator::testing::TempDir dir("kepler-endpoint");
  KeplerEndpointConfig config;
  config.path = (dir.path() / "estimator.sock").string();
  config.max_request_bytes = 64u << 10;
  config.max_buffered_bytes = 64u << 10;  // one request's worth
  auto sut = KeplerEndpoint::start(
      config, std::make_shared<RegistryHolder>(models::Registry::build(models::embedded_model_folders())));
  ASSERT_TRUE(sut.ok()) << sut.status().to_string();
  const std::string request = bpf_request("", 1000);
  ASSERT_GT(request.size(), 6000u);
  // 100 requests one after another: 10 times the cap in all, never more than one at once.
  for (int i = 0; i < 100; ++i) {
    const std::string reply = call(config.path, request);
    ASSERT_EQ(json::parse(reply)["msg"], "") << "request " << i << ": " << reply;
  }
  EXPECT_EQ(sut.value()->stats().evicted.load(), 0u);
}

}  // namespace
}  // namespace estimator::service::kepler
