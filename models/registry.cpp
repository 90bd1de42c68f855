// SPDX-License-Identifier: Apache-2.0
#include "models/registry.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include <spdlog/spdlog.h>

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cmath>
#include <optional>
#include <set>
#include <sstream>
#include <system_error>
#include <utility>

#include "common/text.h"
#include "common/unique_fd.h"
#include "models/json_fields.h"
#include "models/metadata.h"
#include "models/pipeline_model.h"
#include "models/ratio_model.h"
#include "models/stage_loader.h"
#include "models/weight_model.h"
#include "models/xgboost_model.h"
#include "models/zip_archive.h"

namespace estimator::models {

namespace fs = std::filesystem;

namespace {

// The feature scaler a 2022-layout folder (metadata.json naming one model_file, no
// component map) holds beside its model.
constexpr const char* kImplicitScaler = "scaler.pkl";

std::string folder_name(std::string_view origin) {
  const std::size_t cut = origin.find_last_of("/:");
  return std::string(cut == std::string_view::npos ? origin : origin.substr(cut + 1));
}

std::string file_list(const ModelFolder& folder) {
  std::string out;
  for (const auto& [name, contents] : folder.files) {
    if (!out.empty()) out += ", ";
    out += name;
  }
  return out;
}

Status unsupported(const ModelFolder& folder, const ModelInfo& info, std::string_view file) {
  return Status(Code::kInvalidArgument,
                folder.origin + ": model class \"" + info.model_class + "\" (file " +
                    std::string(file) + ") is not supported yet");
}

// ---- selection ----------------------------------------------------------------------

// The policy's node type first; then the smallest error figure, unknown last; then name
// and origin, so that equal candidates are always resolved the same way whatever order
// the folders were loaded in.
bool ranks_before(const Model& a, const Model& b, const SelectionPolicy& policy) {
  if (!policy.node_type.empty()) {
    const bool na = a.info().node_type == policy.node_type;
    const bool nb = b.info().node_type == policy.node_type;
    if (na != nb) return na;
  }
  const double ma = a.info().figure(policy.error_key);
  const double mb = b.info().figure(policy.error_key);
  const bool ka = !std::isnan(ma);
  const bool kb = !std::isnan(mb);
  if (ka != kb) return ka;
  if (ka && ma != mb) return ma < mb;
  if (a.info().name != b.info().name) return a.info().name < b.info().name;
  return a.info().origin < b.info().origin;
}

// A model that does not state its source or output type may be of any: only an explicit
// name or trainer can pick it for a request that names them (Kepler's flat weight files
// all answered rapl DynPower requests with acpi AbsPower weights when it could).
bool matches_kind(const ModelInfo& m, std::string_view output_type, std::string_view source,
                  bool by_id) {
  auto fits = [by_id](const std::string& have, std::string_view want) {
    return want.empty() || have == want || (by_id && have.empty());
  };
  return fits(m.output_type, output_type) && fits(m.source, source);
}

// A list for a message: ", "-separated, "none" when empty.
template <typename T>
std::string listed(std::span<const T> v) {
  return v.empty() ? std::string("none") : join(v, ", ");
}

std::string kind_of(const ModelInfo& m) {
  return (m.source.empty() ? std::string("unknown source") : m.source) + "/" +
         (m.output_type.empty() ? std::string("unknown output type") : m.output_type);
}

std::string wanted_kind(std::string_view output_type, std::string_view source) {
  std::string out;
  if (!output_type.empty()) out += "output_type " + std::string(output_type);
  if (!source.empty()) {
    if (!out.empty()) out += " and ";
    out += "source " + std::string(source);
  }
  return out;
}

std::size_t count_missing(const std::string& missing) {
  if (missing.empty()) return 0;
  return 1 + static_cast<std::size_t>(std::count(missing.begin(), missing.end(), ','));
}

// The first filter term `m` fails, or null.
const FilterTerm* failed_term(const ModelInfo& m, std::span<const FilterTerm> filter) {
  for (const FilterTerm& t : filter) {
    const double v = m.figure(t.key);
    if (std::isnan(v) || (t.at_least ? v < t.limit : v > t.limit)) return &t;
  }
  return nullptr;
}

std::string describe(const FilterTerm& t, const ModelInfo& m) {
  const double v = m.figure(t.key);
  std::ostringstream out;
  out << (t.at_least ? "needs " : "allows ") << t.key << (t.at_least ? " >= " : " <= ")
      << t.limit << ", model has ";
  if (std::isnan(v)) {
    out << "none";
  } else {
    out << v;
  }
  return out.str();
}

// Why a candidate of the right kind cannot serve the request; empty when it can.
struct Verdict {
  const Model* model;
  std::string missing;  // features it lacks
  bool lacks_node_power;
  const FilterTerm* filtered_by;  // the filter term it fails, or null
  bool servable() const { return missing.empty() && !lacks_node_power && filtered_by == nullptr; }
};

Verdict judge(const Model& m, std::span<const std::string_view> features,
              bool has_node_power, std::span<const FilterTerm> filter) {
  return Verdict{&m, m.missing_from(features), m.info().needs_node_power && !has_node_power,
                 failed_term(m.info(), filter)};
}

// The rejected candidate whose refusal best explains the failure: fewest missing
// features (a model refused only by the filter has none), then rank.
const Verdict* closest(const std::vector<Verdict>& rejected, const SelectionPolicy& policy) {
  const Verdict* best = nullptr;
  for (const Verdict& v : rejected) {
    if (best == nullptr) {
      best = &v;
      continue;
    }
    const std::size_t nv = count_missing(v.missing);
    const std::size_t nb = count_missing(best->missing);
    if (nv < nb || (nv == nb && ranks_before(*v.model, *best->model, policy))) best = &v;
  }
  return best;
}

std::string refusal_reason(const Verdict& v) {
  std::string out = "model " + v.model->info().name + " ";
  if (!v.missing.empty() || v.lacks_node_power) {
    out += describe_needs(PassedOver{v.model, v.missing, v.lacks_node_power});
  } else {
    out += "fails the filter: " + describe(*v.filtered_by, v.model->info());
  }
  return out;
}

}  // namespace

std::string describe_needs(const PassedOver& p) {
  if (p.missing.empty()) return "needs measured node power, which the request does not carry";
  std::string out = "needs features missing from the request: " + p.missing;
  if (p.lacks_node_power) out += ", and measured node power";
  return out;
}

namespace {

// ---- reading directories ------------------------------------------------------------

Status io_error(const fs::path& p, const std::error_code& ec, std::string_view doing) {
  Code code = Code::kInvalidArgument;
  if (ec == std::errc::permission_denied) code = Code::kPermissionDenied;
  if (ec == std::errc::no_such_file_or_directory) code = Code::kNotFound;
  return Status(code, "cannot " + std::string(doing) + " " + p.string() + ": " + ec.message());
}

bool hidden(const fs::path& p) {
  const std::string name = p.filename().string();
  return !name.empty() && name.front() == '.';
}

bool inside(const fs::path& canonical_path, const fs::path& root) {
  const fs::path rel = canonical_path.lexically_relative(root);
  return !rel.empty() && *rel.begin() != "..";
}

// Reads in chunks up to the limit rather than trusting the size seen earlier: the file
// may be rewritten while the directory is scanned. Opened without blocking and checked to
// be a regular file on the descriptor itself: a FIFO (or device) placed or swapped in after
// the scan looked would otherwise block the open or the read forever, and with it every
// reload and the daemon's shutdown. Symlinks are followed (ConfigMap mounts are made of
// them); the scan has already refused those leading out of the directory.
Result<std::string> read_file(const fs::path& p) {
  const UniqueFd fd(::open(p.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC));
  if (!fd.valid()) {
    return Status(Code::kPermissionDenied, "cannot open " + p.string() + ": " + std::strerror(errno));
  }
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0 || !S_ISREG(st.st_mode)) {
    return Status(Code::kInvalidArgument, p.string() + " is not a regular file; not read");
  }
  std::string contents;
  char chunk[64 * 1024];
  for (;;) {
    const ssize_t n = ::read(fd.get(), chunk, sizeof chunk);
    if (n == 0) break;
    if (n < 0) {
      if (errno == EINTR) continue;
      return Status(Code::kInvalidArgument, "cannot read " + p.string() + ": " + std::strerror(errno));
    }
    contents.append(chunk, static_cast<std::size_t>(n));
    if (contents.size() > Registry::kMaxFileBytes) {
      return Status(Code::kTooLarge, p.string() + " grew over the limit of " +
                                         std::to_string(Registry::kMaxFileBytes) +
                                         " bytes while being read");
    }
  }
  return contents;
}

// Path components of `p` relative to the parent of the scanned root: they supply source,
// output type and feature group where metadata.json lacks them.
std::vector<std::string> hints_for(const fs::path& p, const fs::path& root) {
  std::vector<std::string> hints;
  const fs::path base = root.has_parent_path() ? root.parent_path() : root;
  for (const fs::path& part : p.lexically_relative(base)) {
    if (part != ".") hints.push_back(part.string());
  }
  return hints;
}

ModelFolder read_folder(const fs::path& folder, const fs::path& root,
                        std::vector<Refusal>& refused) {
  ModelFolder mf;
  mf.origin = folder.string();
  mf.path_hints = hints_for(folder, root);

  std::error_code ec;
  fs::directory_iterator it(folder, ec);
  if (ec) {
    refused.push_back(Refusal{folder.string(), io_error(folder, ec, "list")});
    return mf;
  }
  for (; it != fs::directory_iterator(); it.increment(ec)) {
    const fs::path p = it->path();
    if (hidden(p)) continue;
    std::error_code sec;
    // A TensorFlow SavedModel (the folder itself, or a directory in it) is a TensorFlow
    // graph, not a Keras file: refused by name rather than skipped without a word.
    if (p.filename() == "saved_model.pb" || fs::exists(p / "saved_model.pb", sec)) {
      const fs::path saved = p.filename() == "saved_model.pb" ? folder : p;
      refused.push_back(Refusal{
          saved.string(),
          Status(Code::kInvalidArgument,
                 saved.string() + " is a TensorFlow SavedModel directory (saved_model.pb, "
                                  "variables/), which is not supported: save the model as "
                                  ".keras or .h5")});
      continue;
    }
    if (!fs::is_regular_file(p, sec)) continue;  // follows symlinks; skips directories
    if (fs::is_symlink(it->symlink_status(sec))) {
      const fs::path target = fs::canonical(p, sec);
      if (sec || !inside(target, root)) {
        refused.push_back(Refusal{
            p.string(), Status(Code::kPermissionDenied,
                               p.string() + " is a symlink leading out of " + root.string() +
                                   "; not read")});
        continue;
      }
    }
    const std::uintmax_t size = fs::file_size(p, sec);
    if (sec) {
      refused.push_back(Refusal{p.string(), io_error(p, sec, "stat")});
      continue;
    }
    if (size > Registry::kMaxFileBytes) {
      refused.push_back(Refusal{
          p.string(), Status(Code::kTooLarge, p.string() + " is " + std::to_string(size) +
                                                  " bytes, over the limit of " +
                                                  std::to_string(Registry::kMaxFileBytes))});
      continue;
    }
    Result<std::string> contents = read_file(p);
    if (!contents.ok()) {
      refused.push_back(Refusal{p.string(), contents.status()});
      continue;
    }
    mf.files.emplace(p.filename().string(), std::move(*contents));
  }
  if (ec) refused.push_back(Refusal{folder.string(), io_error(folder, ec, "list")});
  return mf;
}

// A kepler-model-db zip (<source>/<OutputType>/<FeatureGroup>/<Trainer>_<n>.zip) as a
// folder: its members, with one top-level directory stripped when the metadata is inside it.
Result<ModelFolder> read_zip_folder(const fs::path& zip_path, const fs::path& root) {
  Result<std::string> bytes = read_file(zip_path);
  if (!bytes.ok()) return bytes.status();
  auto members = read_zip(*bytes, zip_path.string());
  if (!members.ok()) return members.status();
  ModelFolder mf;
  mf.origin = zip_path.string();
  std::vector<std::string> hints = hints_for(zip_path.parent_path(), root);
  hints.push_back(zip_path.stem().string());
  mf.path_hints = std::move(hints);
  std::string prefix;
  if (!members->contains("metadata.json")) {
    for (const auto& [name, contents] : *members) {
      if (name.ends_with("/metadata.json") && name.find('/') == name.size() - 14) {
        prefix = name.substr(0, name.size() - 13);
      }
    }
  }
  for (auto& [name, contents] : *members) {
    if (!name.starts_with(prefix)) continue;
    const std::string inner = name.substr(prefix.size());
    if (inner.find('/') != std::string::npos) continue;  // deeper files are not the model's
    mf.files.emplace(inner, std::move(contents));
  }
  return mf;
}

// A bare weight file (kepler-model-db's <Trainer>_<n>.json beside the zips, Kepler's
// data/model_weight/*.json) as a folder with the metadata it implies; nullopt when the
// JSON is something else (an index, a pipeline's metadata).
std::optional<ModelFolder> weight_file_folder(const fs::path& p, const fs::path& root,
                                              std::vector<Refusal>& refused) {
  Result<std::string> text = read_file(p);
  if (!text.ok()) {
    refused.push_back(Refusal{p.string(), text.status()});
    return std::nullopt;
  }
  Result<json::Json> doc = json::parse(*text, p.string());
  if (!doc.ok() || !is_weight_document(*doc)) return std::nullopt;
  ModelFolder mf;
  mf.origin = p.string();
  mf.path_hints = hints_for(p.parent_path(), root);
  json::Json md = {{"model_name", p.stem().string()}, {"model_class", "weight"},
                   {"model_file", p.filename().string()}};
  // Kepler's own files carry nothing but weights: their name is all that says which
  // energy source and output type they serve, and it outranks the folder they sit in.
  if (const ModelKind kind = kind_from_weight_file_name(p.filename().string());
      !kind.source.empty()) {
    md["source"] = kind.source;
    md["output_type"] = kind.output_type;
  }
  if (const json::Json* n = json::optional_member(*doc, "model_name"); n != nullptr && n->is_string()) {
    md["model_name"] = *n;
  }
  mf.files.emplace("metadata.json", md.dump());
  mf.files.emplace(p.filename().string(), std::move(*text));
  return mf;
}

}  // namespace

// ---- loading ------------------------------------------------------------------------

Result<std::unique_ptr<Model>> load_model(const ModelFolder& folder) {
  Result<Metadata> md = parse_metadata(folder);
  if (!md.ok()) return md.status();
  ModelInfo info = std::move(md->info);
  const std::string model_class = lower(info.model_class);

  std::string model_file = md->model_file;
  if (model_file.empty()) {
    if (model_class == "ratio" && folder.files.contains("ratio.json")) {
      model_file = "ratio.json";
    } else if (!info.name.empty() && folder.files.contains(info.name + ".json")) {
      model_file = info.name + ".json";
    } else {
      return Status(Code::kInvalidArgument,
                    file_label(folder, "metadata.json") + ": model_file: missing");
    }
  }
  const auto file_it = folder.files.find(model_file);
  if (file_it == folder.files.end()) {
    return Status(Code::kInvalidArgument,
                  folder.origin + ": model file " + model_file +
                      " named by metadata.json is not in the folder (files: " +
                      file_list(folder) + ")");
  }
  const std::string label = file_label(folder, model_file);

  // One model file for the whole output (the 2022 layout's model.sav, a Keras .h5, a bare
  // XGBoost JSON): a pipeline over metadata's features and fe_files, giving one component
  // ("power") or, when metadata.json lists "components", one per listed name.
  auto single_stage = [&]() -> Result<std::unique_ptr<Model>> {
    if (info.name.empty()) info.name = folder_name(folder.origin);
    if (info.trainer.empty()) info.trainer = trainer_from_name(info.name);
    json::Json entry = {{"model_file", model_file}, {"features", info.features}};
    // parse_metadata has already accepted this document.
    const json::Json md_doc = *json::parse(folder.files.at("metadata.json"), "metadata.json");
    json::Json fe = json::Json::array();
    if (const json::Json* f = json::optional_member(md_doc, "fe_files")) fe = *f;
    // The 2022 estimator applied the folder's scaler.pkl before anything else although no
    // field names it (KEPLER.md section 5); without it the seed's models are off by 10^14.
    if (folder.files.contains(kImplicitScaler) && fe.is_array() &&
        std::find(fe.begin(), fe.end(), kImplicitScaler) == fe.end()) {
      fe.insert(fe.begin(), kImplicitScaler);
    }
    entry["fe_files"] = std::move(fe);
    if (const json::Json* names = json::optional_member(md_doc, "components")) entry["outputs"] = *names;
    const json::Json map = {{"power", std::move(entry)}};
    return load_pipeline_model(std::move(info), map, label, folder, load_stage);
  };

  if (!model_file.ends_with(".json")) return single_stage();
  Result<json::Json> doc = json::parse(file_it->second, label);
  if (!doc.ok()) return doc.status();
  if (is_xgboost_document(*doc)) {
    *doc = json::Json();  // the stage loader parses the file again: not two DOMs at once
    return single_stage();
  }

  if (info.name.empty()) {
    if (const json::Json* n = json::optional_member(*doc, "model_name");
        n != nullptr && n->is_string()) {
      info.name = n->get<std::string>();
    }
  }
  if (info.name.empty()) info.name = folder_name(folder.origin);
  if (info.trainer.empty()) info.trainer = trainer_from_name(info.name);

  if (model_class == "ratio") return load_ratio_model(std::move(info), *doc, label);
  // Kepler's model server labels weight files "scikit" or "curvefit" after the trainer
  // that produced them: for those the content decides.
  if (model_class == "weight" || is_weight_document(*doc)) {
    return load_weight_model(std::move(info), *doc, label);
  }
  // The model server's zips: a component map naming per-component model files.
  if (is_component_map(*doc)) return load_pipeline_model(std::move(info), *doc, label, folder, load_stage);
  return unsupported(folder, info, model_file);
}

std::shared_ptr<const Registry> Registry::build(std::span<const ModelFolder> folders) {
  return build(folders, {});
}

std::shared_ptr<const Registry> Registry::build(std::span<const ModelFolder> folders,
                                                std::vector<Refusal> earlier) {
  auto reg = std::make_shared<Registry>();
  for (const Refusal& r : earlier) {
    spdlog::warn("file {} skipped: {}", r.origin, r.reason.to_string());
  }
  reg->refused_ = std::move(earlier);
  for (const ModelFolder& folder : folders) {
    Result<std::unique_ptr<Model>> m = load_model(folder);
    if (!m.ok()) {
      spdlog::warn("model {} refused: {}", folder.origin, m.status().to_string());
      reg->refused_.push_back(Refusal{folder.origin, m.status()});
      continue;
    }
    const ModelInfo& info = (*m)->info();
    spdlog::debug("model {} loaded from {}: {} {}, mae {}", info.name, folder.origin,
                  info.source, info.output_type, info.mae);
    if (info.source.empty() || info.output_type.empty()) {
      spdlog::info("model {} from {} states no {}: it serves requests that name one only "
                   "when asked for by name or trainer",
                   info.name, folder.origin,
                   info.source.empty() ? (info.output_type.empty() ? "energy source or output type"
                                                                   : "energy source")
                                       : "output type");
    }
    reg->models_.push_back(std::move(*m));
  }
  return reg;
}

Result<std::vector<ModelFolder>> Registry::scan_directory(const fs::path& dir) {
  std::vector<Refusal> refused;
  Result<std::vector<ModelFolder>> folders = scan_directory(dir, refused);
  for (const Refusal& r : refused) {
    spdlog::warn("file {} skipped: {}", r.origin, r.reason.to_string());
  }
  return folders;
}

Result<std::vector<ModelFolder>> Registry::scan_directory(const fs::path& dir,
                                                          std::vector<Refusal>& refused) {
  std::error_code ec;
  const fs::path root = fs::canonical(dir, ec);
  if (ec) return io_error(dir, ec, "open model directory");
  if (!fs::is_directory(root, ec)) {
    return Status(Code::kInvalidArgument, dir.string() + " is not a directory");
  }

  std::set<fs::path> model_dirs;  // ordered: folders come out in path order
  std::set<fs::path> zips;
  std::set<fs::path> loose_json;   // .json files outside model folders
  std::set<fs::path> loose_keras;  // .h5 / .keras files, served only from model folders
  if (fs::exists(root / "metadata.json", ec)) model_dirs.insert(root);
  fs::recursive_directory_iterator it(root, fs::directory_options::skip_permission_denied, ec);
  if (ec) return io_error(root, ec, "list");
  for (; it != fs::recursive_directory_iterator(); it.increment(ec)) {
    const fs::directory_entry& entry = *it;
    std::error_code sec;
    if (entry.is_directory(sec) && !entry.is_symlink(sec)) {
      if (hidden(entry.path())) {
        it.disable_recursion_pending();
        continue;
      }
      if (fs::exists(entry.path() / "metadata.json", sec)) model_dirs.insert(entry.path());
    } else if (entry.is_regular_file(sec) && !entry.is_symlink(sec) && !hidden(entry.path())) {
      const fs::path ext = entry.path().extension();
      if (ext == ".zip") zips.insert(entry.path());
      if (ext == ".json") loose_json.insert(entry.path());
      if (ext == ".h5" || ext == ".keras") loose_keras.insert(entry.path());
    }
  }
  if (ec) return io_error(root, ec, "list");

  std::vector<ModelFolder> folders;
  folders.reserve(model_dirs.size());
  for (const fs::path& d : model_dirs) folders.push_back(read_folder(d, root, refused));
  for (const fs::path& z : zips) {
    if (model_dirs.contains(z.parent_path())) continue;  // a file of a model folder
    Result<ModelFolder> f = read_zip_folder(z, root);
    if (f.ok()) {
      folders.push_back(std::move(f).value());
    } else {
      refused.push_back(Refusal{z.string(), f.status()});
    }
  }
  for (const fs::path& j : loose_json) {
    if (model_dirs.contains(j.parent_path())) continue;
    if (auto f = weight_file_folder(j, root, refused)) folders.push_back(std::move(*f));
  }
  // A Keras file names neither its features nor its output type or source: listed, so
  // that a user who dropped one in sees why it does not serve instead of nothing.
  for (const fs::path& k : loose_keras) {
    if (model_dirs.contains(k.parent_path())) continue;
    refused.push_back(Refusal{
        k.string(), Status(Code::kInvalidArgument,
                           "a Keras model without metadata.json: put it in a folder with a "
                           "metadata.json naming it as model_file, with its features, "
                           "output_type and source (docs/models.md)")});
  }
  return folders;
}

// ---- selection ----------------------------------------------------------------------

Result<std::vector<FilterTerm>> parse_filter(std::string_view filter) {
  std::vector<FilterTerm> terms;
  auto trim = [](std::string_view s) {
    while (!s.empty() && s.front() == ' ') s.remove_prefix(1);
    while (!s.empty() && s.back() == ' ') s.remove_suffix(1);
    return s;
  };
  while (!filter.empty()) {
    const std::size_t end = filter.find(';');
    const std::string_view term = trim(filter.substr(0, end));
    filter = end == std::string_view::npos ? std::string_view{} : filter.substr(end + 1);
    if (term.empty()) continue;
    const std::size_t colon = term.find(':');
    const std::string_view key = colon == std::string_view::npos ? term : trim(term.substr(0, colon));
    const std::string_view value =
        colon == std::string_view::npos ? std::string_view{} : trim(term.substr(colon + 1));
    double limit = 0;
    const auto [ptr, ec] = std::from_chars(value.data(), value.data() + value.size(), limit);
    if (key.empty() || value.empty() || ec != std::errc() || ptr != value.data() + value.size() ||
        !std::isfinite(limit)) {
      return Status(Code::kInvalidArgument,
                    "filter term \"" + std::string(term) +
                        "\" is not key:number (as in \"mae:0.5;mape:10\")");
    }
    terms.push_back(FilterTerm{std::string(key), limit, key == "abs_max_corr"});
  }
  return terms;
}

Result<const Model*> Registry::select(const Selector& selector,
                                      std::span<const std::string_view> features,
                                      bool has_node_power, const SelectionPolicy& policy,
                                      std::vector<PassedOver>* passed_over) const {
  if (passed_over != nullptr) passed_over->clear();
  Result<std::vector<FilterTerm>> filter = parse_filter(selector.filter);
  if (!filter.ok()) return filter.status();
  const std::string output_type =
      selector.output_type.empty() ? std::string() : canonical_output_type(selector.output_type);
  const std::string source =
      selector.source.empty() ? std::string() : canonical_source(selector.source);
  const bool by_id = !selector.name.empty() || !selector.trainer.empty();

  std::vector<const Model*> of_id;  // name/trainer match, any kind
  std::vector<Verdict> rejected;
  const Model* best = nullptr;
  for (const std::unique_ptr<Model>& m : models_) {
    const ModelInfo& info = m->info();
    if (!selector.name.empty() && info.name != selector.name) continue;
    if (!selector.trainer.empty() && info.trainer != selector.trainer) continue;
    of_id.push_back(m.get());
    if (!matches_kind(info, output_type, source, by_id)) continue;
    Verdict v = judge(*m, features, has_node_power, *filter);
    if (!v.servable()) {
      rejected.push_back(std::move(v));
      continue;
    }
    if (best == nullptr || ranks_before(*m, *best, policy)) best = m.get();
  }
  if (best != nullptr) {
    if (passed_over != nullptr) {
      // The filter's drops are what the client asked for; the rest are lost accuracy.
      for (Verdict& v : rejected) {
        if (v.filtered_by == nullptr && ranks_before(*v.model, *best, policy)) {
          passed_over->push_back(PassedOver{v.model, std::move(v.missing), v.lacks_node_power});
        }
      }
      std::sort(passed_over->begin(), passed_over->end(),
                [&](const PassedOver& a, const PassedOver& b) {
                  return ranks_before(*a.model, *b.model, policy);
                });
    }
    return best;
  }

  if (by_id && of_id.empty()) {
    std::set<std::string> loaded;
    for (const std::unique_ptr<Model>& m : models_) {
      loaded.insert(selector.name.empty() ? m->info().trainer : m->info().name);
    }
    const std::string what = selector.name.empty()
                                 ? "no model with trainer " + std::string(selector.trainer)
                                 : "no model named " + std::string(selector.name);
    return Status(Code::kNotFound,
                  what + " (loaded: " +
                      listed<std::string>(std::vector<std::string>(loaded.begin(), loaded.end())) + ")");
  }
  if (rejected.empty()) {
    // Nothing of the requested kind at all.
    std::set<std::string> kinds;
    for (const Model* m : of_id) kinds.insert(m->info().name + " (" + kind_of(m->info()) + ")");
    if (!by_id) {
      for (const std::unique_ptr<Model>& m : models_) {
        kinds.insert(m->info().name + " (" + kind_of(m->info()) + ")");
      }
    }
    const std::string subject =
        by_id ? (selector.name.empty() ? "trainer " + std::string(selector.trainer)
                                       : "model " + std::string(selector.name))
              : std::string("no model");
    return Status(Code::kNotFound,
                  (by_id ? subject + " exists, but not for " : subject + " for ") +
                      wanted_kind(output_type, source) + " (loaded: " +
                      listed<std::string>(std::vector<std::string>(kinds.begin(), kinds.end())) + ")");
  }

  const Verdict* near = closest(rejected, policy);
  if (by_id) {
    const bool only_filtered = near->missing.empty() && !near->lacks_node_power;
    return Status(only_filtered ? Code::kNotFound : Code::kMissingFeatures, refusal_reason(*near));
  }
  std::string msg = "no model fits the request (features offered: " + listed<std::string_view>(features);
  if (!output_type.empty() || !source.empty()) msg += "; " + wanted_kind(output_type, source);
  if (!has_node_power) msg += "; no node power";
  if (!selector.filter.empty()) msg += "; filter " + std::string(selector.filter);
  msg += "): " + std::to_string(rejected.size()) + " candidate";
  if (rejected.size() != 1) msg += "s";
  msg += " rejected, closest: " + refusal_reason(*near);
  return Status(Code::kNotFound, std::move(msg));
}

std::vector<const Model*> Registry::ranked(const Selector& selector,
                                           std::span<const std::string_view> features,
                                           bool has_node_power, const SelectionPolicy& policy) const {
  std::vector<const Model*> out;
  Result<std::vector<FilterTerm>> filter = parse_filter(selector.filter);
  if (!filter.ok()) return out;
  const std::string output_type =
      selector.output_type.empty() ? std::string() : canonical_output_type(selector.output_type);
  const std::string source =
      selector.source.empty() ? std::string() : canonical_source(selector.source);
  for (const std::unique_ptr<Model>& m : models_) {
    if (!matches_kind(m->info(), output_type, source, false)) continue;
    if (judge(*m, features, has_node_power, *filter).servable()) out.push_back(m.get());
  }
  std::sort(out.begin(), out.end(),
            [&](const Model* a, const Model* b) { return ranks_before(*a, *b, policy); });
  return out;
}

}  // namespace estimator::models
