// SPDX-License-Identifier: Apache-2.0
// estimator-stages: what each step of one request costs, in one process, with no second
// process or kernel in the way (Google Benchmark). estimator-bench measures whole round
// trips between processes; this says where inside them the time goes, so that an
// optimisation aims at the step that dominates and a regression names its step.
//
// Requests are estimator-bench's (bench/workload.h: the linear model, and for the model
// step also the 100-tree XGBoost model; 10 features) at 1 and 100 rows. Ring steps: the client builds a request (its first of a shape) or encodes
// one (the same shape again, as every later request), the reply seal (nonce, digests,
// check values), the daemon's handler reads and answers (verify, plan lookup, model,
// reply), the client reads the reply. JSON steps: Kepler's client encodes, the endpoint finds the document's end,
// parses, answers and writes the reply, Kepler's client decodes it.
#include <benchmark/benchmark.h>

#include <charconv>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <vector>

#include "bench/kepler_codec.h"
#include "bench/workload.h"
#include "bench/xgboost_workload.h"
#include "models/embedded_defaults.h"
#include "models/registry.h"
#include "service/kepler_adapter.h"
#include "service/kepler_json.h"
#include "service/request_handler.h"
#include "shm/reply_seal.h"

namespace estimator::bench {
namespace {

// The cases and the registry behind them, built once for every benchmark.
struct Fixture {
  std::shared_ptr<const models::Registry> registry;
  std::unique_ptr<service::RegistryHolder> holder;
  std::vector<Case> cases;  // linear at 1 and 100 rows, then XGBoost at 1 and 100 rows

  static const Fixture& get() {
    static const Fixture f = [] {
      Fixture x;
      std::vector<models::ModelFolder> folders = models::embedded_model_folders();
      folders.push_back(xgboost_folder(kPrimaryFeatures));
      x.registry = models::Registry::build(folders);
      x.holder = std::make_unique<service::RegistryHolder>(x.registry);
      const CaseSpec specs[] = {{1, kPrimaryFeatures, ModelKind::kLinear},
                                {100, kPrimaryFeatures, ModelKind::kLinear},
                                {1, kPrimaryFeatures, ModelKind::kXGBoost},
                                {100, kPrimaryFeatures, ModelKind::kXGBoost}};
      auto cases = make_cases(x.registry, specs);
      if (!cases.ok()) {
        std::fprintf(stderr, "estimator-stages: %s\n", cases.status().to_string().c_str());
        std::exit(1);
      }
      x.cases = std::move(cases).value();
      return x;
    }();
    return f;
  }
  const Case& of(const benchmark::State& state, ModelKind model = ModelKind::kLinear) const {
    return cases[(model == ModelKind::kXGBoost ? 2 : 0) + (state.range(0) == 1 ? 0 : 1)];
  }
};

void rows_arg(benchmark::internal::Benchmark* b) { b->ArgName("rows")->Arg(1)->Arg(100); }

// Fails the benchmark (instead of timing an error path) when `s` is not ok.
bool ok(benchmark::State& state, const Status& s) {
  if (s.ok()) return true;
  state.SkipWithError(s.to_string().c_str());
  return false;
}

// ---- ring ------------------------------------------------------------------------------

// A request built from scratch (a client's first of a shape).
void RingClientBuild(benchmark::State& state) {
  const Case& c = Fixture::get().of(state);
  std::vector<std::uint64_t> area(request_capacity() / 8);
  const std::span<std::uint8_t> bytes(reinterpret_cast<std::uint8_t*>(area.data()),
                                      area.size() * 8);
  std::uint64_t id = 0;
  for (auto _ : state) {
    auto built = wire::build_request(request_spec(c, ++id), bytes);
    if (!ok(state, built.status())) break;
    benchmark::DoNotOptimize(built.value().data());
  }
}

// What the client does for every request: the same shape again (wire::RequestEncoder).
void RingClientEncode(benchmark::State& state) {
  const Case& c = Fixture::get().of(state);
  wire::RequestEncoder encoder;
  std::uint64_t id = 0;
  for (auto _ : state) {
    auto built = encoder.encode(request_spec(c, ++id), request_capacity());
    if (!ok(state, built.status())) break;
    benchmark::DoNotOptimize(built.value().data());
  }
}

// What the reply seal costs in CPU per round trip (shm/reply_seal.h): a nonce, the
// request digested by the client and again by the daemon (of its copy), the reply's check
// value computed by the daemon and again by the client. Not all of it is latency: the
// client digests its request after publishing it, while the daemon works.
void RingSeal(benchmark::State& state) {
  const Case& c = Fixture::get().of(state);
  for (auto _ : state) {
    const std::uint64_t nonce = shm::next_nonce();
    const std::uint64_t sent = shm::digest(c.request, nonce);
    const std::uint64_t evaluated = shm::digest(c.request, nonce);
    const std::uint64_t sealed = shm::reply_check(nonce, 1, evaluated, c.response);
    const bool accepted = sent == evaluated && shm::reply_check(nonce, 1, sent, c.response) == sealed;
    benchmark::DoNotOptimize(accepted);
  }
}

void RingDaemonRead(benchmark::State& state) {
  const Case& c = Fixture::get().of(state);
  wire::RequestReader reader(request_capacity());
  wire::ParsedRequest req;
  for (auto _ : state) {
    if (!ok(state, reader.read(c.request, req))) break;
    benchmark::DoNotOptimize(req.matrix);
  }
}

// The daemon's whole answer to `c`: read, plan lookup, model, reply.
void handle(benchmark::State& state, const Case& c) {
  service::RequestHandler handler(*Fixture::get().holder, request_capacity(),
                                  response_capacity());
  for (auto _ : state) {
    const auto reply = handler.handle(c.request);
    if (handler.last_code() != Code::kOk) {
      state.SkipWithError("the handler refused the request");
      break;
    }
    benchmark::DoNotOptimize(reply.data());
  }
}

void RingDaemonHandle(benchmark::State& state) { handle(state, Fixture::get().of(state)); }

// The same with the 100-tree XGBoost model: its cost is the trees.
void RingDaemonHandleXGBoost(benchmark::State& state) {
  handle(state, Fixture::get().of(state, ModelKind::kXGBoost));
}

void RingClientDecode(benchmark::State& state) {
  const Case& c = Fixture::get().of(state);
  for (auto _ : state) {
    auto parsed = wire::read_response(c.response);
    if (!ok(state, parsed.status())) break;
    benchmark::DoNotOptimize(parsed.value().powers);
  }
}

// ---- Kepler JSON -----------------------------------------------------------------------

std::string json_request(const Case& c) {
  std::string s;
  encode_request(c, s);
  return s;
}

void JsonClientEncode(benchmark::State& state) {
  const Case& c = Fixture::get().of(state);
  std::string out;
  for (auto _ : state) {
    encode_request(c, out);
    benchmark::DoNotOptimize(out.data());
  }
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * out.size()));
}

void JsonDocumentEnd(benchmark::State& state) {
  const std::string doc = json_request(Fixture::get().of(state));
  for (auto _ : state) {
    service::kepler::DocumentEnd end;
    const std::size_t n = end.feed(doc);
    if (n != doc.size()) {
      state.SkipWithError("the document end was not found");
      break;
    }
    benchmark::DoNotOptimize(n);
  }
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * doc.size()));
}

void JsonServerParse(benchmark::State& state) {
  const std::string doc = json_request(Fixture::get().of(state));
  service::kepler::KeplerJsonReader reader;
  service::kepler::KeplerRequest req;
  for (auto _ : state) {
    if (!ok(state, reader.parse(doc, req))) break;
    benchmark::DoNotOptimize(req.values.data());
  }
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * doc.size()));
}

void JsonServerWrite(benchmark::State& state) {
  const Case& c = Fixture::get().of(state);
  std::vector<std::string_view> components(c.component_names.begin(), c.component_names.end());
  std::string out;
  for (auto _ : state) {
    if (!ok(state, service::kepler::write_reply(service::kepler::Form::kV09, components,
                                                c.powers, c.rows, 1.0, out))) {
      break;
    }
    benchmark::DoNotOptimize(out.data());
  }
}

// The endpoint's whole answer: parse, the same handler as the ring, write.
void JsonServerAnswer(benchmark::State& state) {
  const Fixture& f = Fixture::get();
  const std::string doc = json_request(f.of(state));
  service::KeplerAdapter adapter(*f.holder, {}, nullptr, {.v09 = 0, .form2022 = 0});
  for (auto _ : state) {
    const std::string_view reply = adapter.answer(doc);
    if (adapter.last_code() != Code::kOk) {
      state.SkipWithError(std::string(adapter.last_error()).c_str());
      break;
    }
    benchmark::DoNotOptimize(reply.data());
  }
}

void JsonClientDecode(benchmark::State& state) {
  const Fixture& f = Fixture::get();
  const Case& c = f.of(state);
  service::KeplerAdapter adapter(*f.holder, {}, nullptr, {.v09 = 0, .form2022 = 0});
  const std::string reply(adapter.answer(json_request(c)));
  JsonReply decoded;
  for (auto _ : state) {
    if (!ok(state, read_reply(reply, decoded))) break;
    benchmark::DoNotOptimize(decoded.values.data());
  }
  if (state.error_occurred()) return;
  if (Status s = check_json_reply(c, decoded); !s.ok()) state.SkipWithError(s.to_string().c_str());
}

// One float of the request matrix to text, as both JSON sides do for every number.
void FloatToChars(benchmark::State& state) {
  const Case& c = Fixture::get().of(state);
  char buf[32];
  std::size_t i = 0;
  for (auto _ : state) {
    const auto r = std::to_chars(buf, buf + sizeof buf, c.matrix[i]);
    benchmark::DoNotOptimize(r.ptr);
    if (++i == c.matrix.size()) i = 0;
  }
}

BENCHMARK(RingClientBuild)->Apply(rows_arg);
BENCHMARK(RingClientEncode)->Apply(rows_arg);
BENCHMARK(RingSeal)->Apply(rows_arg);
BENCHMARK(RingDaemonRead)->Apply(rows_arg);
BENCHMARK(RingDaemonHandle)->Apply(rows_arg);
BENCHMARK(RingDaemonHandleXGBoost)->Apply(rows_arg);
BENCHMARK(RingClientDecode)->Apply(rows_arg);
BENCHMARK(JsonClientEncode)->Apply(rows_arg);
BENCHMARK(JsonDocumentEnd)->Apply(rows_arg);
BENCHMARK(JsonServerParse)->Apply(rows_arg);
BENCHMARK(JsonServerWrite)->Apply(rows_arg);
BENCHMARK(JsonServerAnswer)->Apply(rows_arg);
BENCHMARK(JsonClientDecode)->Apply(rows_arg);
BENCHMARK(FloatToChars)->Arg(100)->ArgName("rows");

}  // namespace
}  // namespace estimator::bench

BENCHMARK_MAIN();
