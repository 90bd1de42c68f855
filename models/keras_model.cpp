#include "models/keras_model.h"

#include <cctype>
#include <cmath>
#include <exception>
#include <functional>
#include <map>
#include <mutex>
#include <new>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "models/hdf5_file.h"
#include "models/isolated_call.h"
#include "models/json_fields.h"
#include "models/keras_config.h"
#include "models/keras_eval.h"
#include "models/shape_text.h"
#include "models/zip_archive.h"

namespace estimator::models {

namespace {

using json::Json;
using json::Where;
using keras::Activation;
using keras::KerasRegressor;
using keras::LayerKind;
using keras::LayerSpec;
using keras::ModelSpec;
using keras::Step;

// Bounds that keep a hostile file from making the loader allocate without limit. Kepler's
// Keras models have a few thousand weights; these are far above any real MLP.
constexpr std::size_t kMaxTensorValues = std::size_t{1} << 24;  // per weight, 128 MiB
constexpr std::size_t kMaxMemberBytes = std::size_t{1} << 28;   // per zip member, 256 MiB

Status invalid(std::string message) { return Status(Code::kInvalidArgument, std::move(message)); }

// The weights of one Dense layer as found in the file, with where they were found.
struct DenseWeights {
  hdf5::Tensor kernel;
  std::optional<hdf5::Tensor> bias;
  std::string kernel_at;  // "<file>: <HDF5 path>", for messages
  std::string bias_at;
};

// Reads the weights of the Dense layer at `position` in ModelSpec::layers, which is the
// `dense_index`-th Dense layer of the model (both 0-based).
using WeightReader =
    std::function<Result<DenseWeights>(std::size_t position, std::size_t dense_index)>;

// `what`: "<file>: layer 'x' (Dense): kernel <HDF5 path>".
Status check_finite(const hdf5::Tensor& t, const std::string& what) {
  for (std::size_t i = 0; i < t.values.size(); ++i) {
    if (!std::isfinite(t.values[i])) {
      return Status(Code::kInvalidValue, what + ": value " + std::to_string(i) + " is " +
                                             (std::isnan(t.values[i]) ? "NaN" : "infinite"));
    }
  }
  return Status::Ok();
}


Result<std::unique_ptr<Regressor>> build(const ModelSpec& spec, const WeightReader& read,
                                         std::string_view file, std::string_view version) {
  std::vector<Step> steps;
  Eigen::Index width = spec.input_width;
  Eigen::Index inputs = spec.input_width;
  std::size_t dense_index = 0;
  std::string topology;

  for (std::size_t pos = 0; pos < spec.layers.size(); ++pos) {
    const LayerSpec& layer = spec.layers[pos];
    const std::string label =
        std::string(file) + ": layer '" + layer.name + "' (" + layer.class_name + ")";
    if (layer.kind == LayerKind::kIdentity) continue;
    if (layer.kind == LayerKind::kActivation) {
      if (layer.activation == Activation::kLinear) continue;
      topology += " -> " + std::string(keras::activation_name(layer.activation));
      // Folded into the Dense before it when that one is linear: same function, one pass.
      if (!steps.empty() && steps.back().dense && steps.back().activation == Activation::kLinear) {
        steps.back().activation = layer.activation;
      } else {
        Step s;
        s.activation = layer.activation;
        steps.push_back(std::move(s));
      }
      continue;
    }

    Result<DenseWeights> w = read(pos, dense_index++);
    if (!w.ok()) return w.status();
    const hdf5::Tensor& k = w->kernel;
    if (k.shape.size() != 2) {
      return invalid(label + ": kernel " + w->kernel_at + " has shape " + shape_text(k.shape) +
                     ", expected (inputs, units)");
    }
    const auto k_in = static_cast<Eigen::Index>(k.shape[0]);
    const auto k_out = static_cast<Eigen::Index>(k.shape[1]);
    if (k_out != layer.units) {
      return invalid(label + ": kernel " + w->kernel_at + " has shape " + shape_text(k.shape) +
                     " but the layer has " + std::to_string(layer.units) + " units");
    }
    if (k_in == 0) return invalid(label + ": kernel " + w->kernel_at + " has no input rows");
    if (width >= 0 && k_in != width) {
      return invalid(label + ": kernel " + w->kernel_at + " has shape " + shape_text(k.shape) +
                     " but its input has width " + std::to_string(width));
    }
    if (Status s = check_finite(k, label + ": kernel " + w->kernel_at); !s.ok()) return s;
    if (inputs < 0) inputs = k_in;
    if (topology.empty()) topology = std::to_string(k_in);

    Step step;
    step.dense = true;
    step.activation = layer.activation;
    step.kernel = Eigen::Map<const RowMatrixD>(k.values.data(), k_in, k_out);
    if (w->bias.has_value()) {
      const hdf5::Tensor& b = *w->bias;
      if (b.shape.size() != 1 || static_cast<Eigen::Index>(b.shape[0]) != k_out) {
        return invalid(label + ": bias " + w->bias_at + " has shape " + shape_text(b.shape) +
                       ", expected (" + std::to_string(k_out) + ",)");
      }
      if (Status s = check_finite(b, label + ": bias " + w->bias_at); !s.ok()) return s;
      step.bias = Eigen::Map<const Eigen::RowVectorXd>(b.values.data(), k_out);
    }
    steps.push_back(std::move(step));
    width = k_out;
    topology += " -> Dense " + std::to_string(k_out);
    if (layer.activation != Activation::kLinear) {
      topology += " " + std::string(keras::activation_name(layer.activation));
    }
  }
  if (dense_index == 0) {
    return invalid(std::string(file) + ": the model has no Dense layer");
  }
  std::string description = "Keras " + spec.class_name + " " + topology;
  if (!version.empty()) description += " (keras " + std::string(version) + ")";
  return std::unique_ptr<Regressor>(
      std::make_unique<KerasRegressor>(std::move(steps), inputs, std::move(description)));
}

// Converts what escapes a loader (allocation failure, a library throwing) into a Status.
template <typename F>
Result<std::unique_ptr<Regressor>> guarded(std::string_view file, F&& body) {
  try {
    return body();
  } catch (const std::bad_alloc&) {
    return Status(Code::kResourceExhausted, std::string(file) + ": out of memory while loading");
  } catch (const std::exception& e) {
    return Status(Code::kInternal, std::string(file) + ": " + e.what());
  }
}

// ---------------------------------------------------------------- legacy .h5

std::string joined(const std::vector<std::string>& names) {
  std::string s;
  for (const std::string& n : names) s += (s.empty() ? "" : ", ") + n;
  return s;
}

Result<std::unique_ptr<Regressor>> load_h5(std::string_view bytes, std::string_view file) {
  Result<std::unique_ptr<hdf5::File>> h5 = hdf5::File::open_image(bytes, file);
  if (!h5.ok()) return h5.status();
  Result<hdf5::Group> root = (*h5)->root();
  if (!root.ok()) return root.status();

  if (!root->has_attribute("model_config")) {
    if (root->has_attribute("layer_names")) {
      Result<std::vector<std::string>> names = root->string_list_attribute("layer_names");
      return invalid(std::string(file) +
                     ": a weights-only file (written by save_weights(): no model_config "
                     "attribute), so the architecture is unknown; layers: " +
                     (names.ok() ? joined(*names) : std::string("unreadable")));
    }
    return invalid(std::string(file) +
                   ": no model_config attribute at the root: not a Keras model file");
  }
  const std::string config_file = std::string(file) + ": model_config";
  Result<std::string> text = root->string_attribute("model_config");
  if (!text.ok()) return text.status();
  Result<Json> doc = json::parse(*text, config_file);
  if (!doc.ok()) return doc.status();
  Result<ModelSpec> spec = keras::parse_model_config(*doc, Where{config_file, ""});
  if (!spec.ok()) return spec.status();

  std::string version;
  if (root->has_attribute("keras_version")) {
    Result<std::string> v = root->string_attribute("keras_version");
    if (v.ok()) version = *v;
  }

  Result<hdf5::Group> weights = root->group("model_weights");
  if (!weights.ok()) return weights.status();
  Result<std::vector<std::string>> layer_names = weights->string_list_attribute("layer_names");
  if (!layer_names.ok()) return layer_names.status();

  // The file's layers that have weights, in file order (what Keras's loader pairs, in
  // order, with the model's layers that have weights).
  struct FileLayer {
    std::string name;
    std::vector<std::string> weight_names;
  };
  std::vector<FileLayer> with_weights;
  for (const std::string& name : *layer_names) {
    Result<hdf5::Group> g = weights->group(name);
    if (!g.ok()) return g.status();
    Result<std::vector<std::string>> wn = g->string_list_attribute("weight_names");
    if (!wn.ok()) return wn.status();
    if (!wn->empty()) with_weights.push_back({name, std::move(*wn)});
  }
  std::vector<std::string> dense_names;
  for (const LayerSpec& l : spec->layers) {
    if (l.kind == LayerKind::kDense) dense_names.push_back(l.name);
  }
  if (with_weights.size() != dense_names.size()) {
    std::vector<std::string> file_names;
    for (const FileLayer& f : with_weights) file_names.push_back(f.name);
    return invalid(std::string(file) + ": model_weights has weights for " +
                   std::to_string(with_weights.size()) + " layers (" + joined(file_names) +
                   ") but model_config has " + std::to_string(dense_names.size()) +
                   " Dense layers (" + joined(dense_names) + ")");
  }

  const hdf5::Group& wg = *weights;
  const WeightReader read = [&](std::size_t pos, std::size_t index) -> Result<DenseWeights> {
    const LayerSpec& layer = spec->layers[pos];
    const FileLayer& fl = with_weights[index];
    Result<hdf5::Group> g = wg.group(fl.name);
    if (!g.ok()) return g.status();
    const std::size_t expected = layer.use_bias ? 2 : 1;
    if (fl.weight_names.size() != expected) {
      return invalid(g->where() + ": weight_names lists " + std::to_string(fl.weight_names.size()) +
                     " weights [" + joined(fl.weight_names) + "] but Dense layer '" + layer.name +
                     "' has " + std::to_string(expected) +
                     (layer.use_bias ? " (kernel, bias)" : " (kernel; use_bias is false)"));
    }
    DenseWeights w;
    Result<hdf5::Tensor> k = g->read_float_dataset(fl.weight_names[0], kMaxTensorValues);
    if (!k.ok()) return k.status();
    w.kernel = std::move(*k);
    w.kernel_at = g->path() + "/" + fl.weight_names[0];
    if (layer.use_bias) {
      Result<hdf5::Tensor> b = g->read_float_dataset(fl.weight_names[1], kMaxTensorValues);
      if (!b.ok()) return b.status();
      w.bias = std::move(*b);
      w.bias_at = g->path() + "/" + fl.weight_names[1];
    }
    return w;
  };
  return build(*spec, read, file, version);
}

// ---------------------------------------------------------------- Keras 3 .keras

// keras.src.utils.naming.to_snake_case: drop non-word characters; put "_" before each
// capitalized word ("(.)([A-Z][a-z]+)"), then between a lower-case letter and a capital
// ("([a-z])([A-Z])"); lower-case. InputLayer -> input_layer, Conv2D -> conv2d.
std::string to_snake_case(std::string_view name) {
  auto upper = [](char c) { return std::isupper(static_cast<unsigned char>(c)) != 0; };
  auto lower = [](char c) { return std::islower(static_cast<unsigned char>(c)) != 0; };
  std::string s;
  for (char c : name) {
    if (std::isalnum(static_cast<unsigned char>(c)) != 0 || c == '_') s += c;
  }
  // Scans as the regular expression does: a match consumes the character before the
  // capital and the whole lower-case run after it.
  std::string a;
  for (std::size_t i = 0; i < s.size();) {
    a += s[i];
    if (i + 2 < s.size() && upper(s[i + 1]) && lower(s[i + 2])) {
      a += '_';
      std::size_t j = i + 2;
      while (j < s.size() && lower(s[j])) ++j;
      a.append(s, i + 1, j - (i + 1));
      i = j;
    } else {
      ++i;
    }
  }
  std::string b;
  for (std::size_t i = 0; i < a.size(); ++i) {
    if (i > 0 && lower(a[i - 1]) && upper(a[i])) b += '_';
    b += static_cast<char>(std::tolower(static_cast<unsigned char>(a[i])));
  }
  return b;
}

Result<std::unique_ptr<Regressor>> load_zip(std::string_view bytes, std::string_view file) {
  // read_zip checks every member's CRC as it reads it, before HDF5 parses anything.
  auto zip = read_zip(bytes, file);
  if (!zip.ok()) return zip.status();
  auto member = [&](const char* name) -> const std::string* {
    auto it = zip->find(name);
    return it == zip->end() ? nullptr : &it->second;
  };
  const std::string* config_text = member("config.json");
  if (config_text == nullptr) {
    return invalid(std::string(file) + ": no config.json in the archive: not a .keras file");
  }
  const std::string* weights_bytes = member("model.weights.h5");
  if (weights_bytes == nullptr) {
    return invalid(std::string(file) + ": model.weights.h5 is missing from the archive");
  }
  std::string version;
  if (const std::string* meta_text = member("metadata.json")) {
    {
      Result<Json> meta = json::parse(*meta_text, std::string(file) + ": metadata.json");
      if (meta.ok()) {
        const Json* v = json::optional_member(*meta, "keras_version");
        if (v != nullptr && v->is_string()) version = v->get<std::string>();
      }
    }
  }

  const std::string config_file = std::string(file) + ": config.json";
  Result<Json> doc = json::parse(*config_text, config_file);
  if (!doc.ok()) return doc.status();
  Result<ModelSpec> spec = keras::parse_model_config(*doc, Where{config_file, ""});
  if (!spec.ok()) return spec.status();

  // Keras addresses a layer's variables by its class and rank among layers of that class.
  std::vector<std::string> keys;
  std::map<std::string, int> used;
  for (const LayerSpec& l : spec->layers) {
    std::string key = to_snake_case(l.class_name);
    auto [it, fresh] = used.try_emplace(key, 0);
    if (!fresh) key += "_" + std::to_string(++it->second);
    keys.push_back(std::move(key));
  }

  const std::string weights_file = std::string(file) + ": model.weights.h5";
  Result<std::unique_ptr<hdf5::File>> h5 = hdf5::File::open_image(*weights_bytes, weights_file);
  if (!h5.ok()) return h5.status();
  Result<hdf5::Group> root = (*h5)->root();
  if (!root.ok()) return root.status();
  // Keras 2.13's format (read by Keras 3) named the container _layer_checkpoint_dependencies.
  const char* container = root->exists("layers") || !root->exists("_layer_checkpoint_dependencies")
                              ? "layers"
                              : "_layer_checkpoint_dependencies";

  const hdf5::Group& rg = *root;
  const WeightReader read = [&](std::size_t pos,
                                std::size_t /*dense_index*/) -> Result<DenseWeights> {
    const LayerSpec& layer = spec->layers[pos];
    const std::string path = std::string(container) + "/" + keys[pos] + "/vars";
    Result<hdf5::Group> vars = rg.group(path);
    if (!vars.ok()) {
      return invalid(vars.status().message() + ": Keras stores the variables of layer '" +
                     layer.name + "' there");
    }
    if (vars->has_attribute("name")) {
      Result<std::string> stored = vars->string_attribute("name");
      if (!stored.ok()) return stored.status();
      if (*stored != layer.name) {
        return invalid(vars->where() + ": holds the variables of layer '" + *stored +
                       "', but config.json places layer '" + layer.name + "' there");
      }
    }
    Result<std::vector<std::string>> present = vars->children();
    if (!present.ok()) return present.status();
    const std::size_t expected = layer.use_bias ? 2 : 1;
    if (present->size() != expected) {
      return invalid(vars->where() + ": has " + std::to_string(present->size()) + " variables [" +
                     joined(*present) + "] but Dense layer '" + layer.name + "' has " +
                     std::to_string(expected) +
                     (layer.use_bias ? " (kernel, bias)" : " (kernel; use_bias is false)"));
    }
    DenseWeights w;
    Result<hdf5::Tensor> k = vars->read_float_dataset("0", kMaxTensorValues);
    if (!k.ok()) return k.status();
    w.kernel = std::move(*k);
    w.kernel_at = vars->path() + "/0";
    if (layer.use_bias) {
      Result<hdf5::Tensor> b = vars->read_float_dataset("1", kMaxTensorValues);
      if (!b.ok()) return b.status();
      w.bias = std::move(*b);
      w.bias_at = vars->path() + "/1";
    }
    return w;
  };
  return build(*spec, read, file, version);
}

// Runs `loader` (which reads HDF5) in a child process (models/isolated_call.h): HDF5 does
// not survive every corrupted file, and a crash or a hang there must cost one refused
// model, not the daemon. The library lock is held across the fork so that no other thread
// of this process is inside HDF5 at that moment; the child, running on this thread, drops
// it before loading.
template <typename Loader>
Result<std::unique_ptr<Regressor>> load_isolated(std::string_view file,
                                                 const IsolationLimits& limits, Loader&& loader) {
  std::unique_lock<std::mutex> lock = hdf5::lock_library();
  Result<std::string> bytes = call_isolated(file, [&]() -> Result<std::string> {
    lock.unlock();
    Result<std::unique_ptr<Regressor>> r = guarded(file, loader);
    if (!r.ok()) return r.status();
    return static_cast<const KerasRegressor&>(**r).serialize();
  }, limits);
  lock.unlock();
  if (!bytes.ok()) return bytes.status();
  return KerasRegressor::deserialize(*bytes, file);
}

}  // namespace

Result<std::unique_ptr<Regressor>> load_keras_h5(std::string_view bytes, std::string_view file,
                                                 const IsolationLimits& limits) {
  return load_isolated(file, limits, [&] { return load_h5(bytes, file); });
}

Result<std::unique_ptr<Regressor>> load_keras_zip(std::string_view bytes, std::string_view file,
                                                  const IsolationLimits& limits) {
  return load_isolated(file, limits, [&] { return load_zip(bytes, file); });
}

}  // namespace estimator::models
