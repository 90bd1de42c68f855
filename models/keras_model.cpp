// SPDX-License-Identifier: Apache-2.0
#include "models/keras_model.h"

#include <cctype>
#include <cstdint>
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
using keras::LayerKind;
using keras::LayerSpec;
using keras::ModelSpec;

// Bounds that keep a hostile file from making the loader allocate without limit. Kepler's
// Keras models have a few thousand weights; these are far above any real MLP.
constexpr std::size_t kMaxTensorValues = std::size_t{1} << 24;  // per weight, 128 MiB
constexpr std::size_t kMaxMemberBytes = std::size_t{1} << 28;   // per zip member, 256 MiB

Status invalid(std::string message) { return Status(Code::kInvalidArgument, std::move(message)); }

// The weights of one layer as found in the file, in Keras's order (Dense: kernel, bias;
// BatchNormalization: gamma, beta, moving_mean, moving_variance, the first two only when
// scale and center), with where each was found ("<file>: <HDF5 path>", for messages).
struct LayerWeights {
  std::vector<hdf5::Tensor> tensors;
  std::vector<std::string> at;
};

// Reads the `expected` weights of the layer at `position` in ModelSpec::layers, which is
// the `index`-th layer with weights of the model (both 0-based).
using WeightReader = std::function<Result<LayerWeights>(std::size_t position, std::size_t index,
                                                        std::size_t expected)>;

bool has_weights(const LayerSpec& l) {
  return l.kind == LayerKind::kDense || l.kind == LayerKind::kBatchNorm;
}

std::vector<std::string> weight_roles(const LayerSpec& l) {
  if (l.kind == LayerKind::kDense) {
    return l.use_bias ? std::vector<std::string>{"kernel", "bias"}
                      : std::vector<std::string>{"kernel"};
  }
  if (l.kind == LayerKind::kBatchNorm) {
    std::vector<std::string> r;
    if (l.scale) r.emplace_back("gamma");
    if (l.center) r.emplace_back("beta");
    r.emplace_back("moving_mean");
    r.emplace_back("moving_variance");
    return r;
  }
  return {};
}

std::string joined(const std::vector<std::string>& names) {
  std::string s;
  for (const std::string& n : names) s += (s.empty() ? "" : ", ") + n;
  return s;
}

// "Dense layer 'd' has 1 (kernel; use_bias is false)" and the like, for count mismatches.
std::string expected_weights(const LayerSpec& l) {
  std::string s = l.class_name + " layer '" + l.name + "' has " +
                  std::to_string(weight_roles(l).size()) + " (" + joined(weight_roles(l));
  if (l.kind == LayerKind::kDense && !l.use_bias) s += "; use_bias is false";
  if (l.kind == LayerKind::kBatchNorm && !(l.center && l.scale)) {
    s += std::string("; center ") + (l.center ? "true" : "false") + ", scale " +
         (l.scale ? "true" : "false");
  }
  return s + ")";
}

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

std::string node_text(const keras::Node& n, const LayerSpec& l) {
  switch (n.op) {
    case keras::Op::kDense: {
      std::string s = "Dense " + std::to_string(n.width);
      if (n.activation.kind != Activation::kLinear) s += " " + keras::describe(n.activation);
      return s;
    }
    case keras::Op::kActivation:
      return keras::describe(n.activation);
    default:
      return l.class_name;
  }
}

// Turns the spec and the file's weights into a planned graph: widths are checked layer by
// layer, BatchNormalization becomes a per-column affine map, and layers that pass their
// input on become no node at all.
Result<std::unique_ptr<Regressor>> build(const ModelSpec& spec, const WeightReader& read,
                                         std::string_view file, std::string_view version) {
  const std::size_t n_layers = spec.layers.size();
  auto label = [&](const LayerSpec& l) {
    return std::string(file) + ": layer '" + l.name + "' (" + l.class_name + ")";
  };

  // Every layer with weights is read, in config order: the order Keras pairs them in.
  std::vector<LayerWeights> weights(n_layers);
  std::size_t weighted = 0;
  for (std::size_t pos = 0; pos < n_layers; ++pos) {
    const LayerSpec& l = spec.layers[pos];
    if (!has_weights(l)) continue;
    const std::vector<std::string> roles = weight_roles(l);
    Result<LayerWeights> w = read(pos, weighted++, roles.size());
    if (!w.ok()) return w.status();
    if (w->tensors.size() != roles.size() || w->at.size() != roles.size()) {
      return invalid(label(l) + ": expected " + std::to_string(roles.size()) + " weights");
    }
    for (std::size_t k = 0; k < roles.size(); ++k) {
      if (Status s = check_finite(w->tensors[k], label(l) + ": " + roles[k] + " " + w->at[k]);
          !s.ok()) {
        return s;
      }
    }
    weights[pos] = std::move(*w);
  }

  // The input width: declared by the config, else the rows of the first Dense kernel.
  Eigen::Index input_width = spec.input_width;
  for (std::size_t pos : spec.order) {
    if (input_width >= 0) break;
    if (spec.layers[pos].kind == LayerKind::kDense && !weights[pos].tensors.empty() &&
        weights[pos].tensors[0].shape.size() == 2) {
      input_width = static_cast<Eigen::Index>(weights[pos].tensors[0].shape[0]);
    }
  }
  if (input_width < 1) {
    return invalid(std::string(file) +
                   ": the model declares no input shape and has no Dense layer to take it from");
  }

  std::vector<keras::Node> nodes(1);
  nodes[0].width = input_width;
  std::vector<std::size_t> node_of(n_layers, 0);
  std::vector<std::size_t> layer_of(1, spec.input);
  for (std::size_t pos : spec.order) {
    const LayerSpec& l = spec.layers[pos];
    if (l.kind == LayerKind::kInput) {
      node_of[pos] = 0;
      continue;
    }
    const std::size_t src = node_of[l.inputs.front()];
    const Eigen::Index in = nodes[src].width;
    if (l.kind == LayerKind::kIdentity) {
      if (l.class_name == "Reshape" &&
          !(l.target_shape.size() == 1 && (l.target_shape[0] == in || l.target_shape[0] == -1))) {
        std::string shape;
        for (std::int64_t d : l.target_shape) shape += (shape.empty() ? "" : ", ") + std::to_string(d);
        return invalid(label(l) + ": reshapes rows of " + std::to_string(in) + " values to (" +
                       shape + "); only a reshape that keeps flat rows is supported");
      }
      node_of[pos] = src;
      continue;
    }
    keras::Node n;
    for (std::size_t s : l.inputs) n.inputs.push_back(node_of[s]);
    n.activation = l.activation;
    n.width = in;
    const LayerWeights& w = weights[pos];
    switch (l.kind) {
      case LayerKind::kDense: {
        n.op = keras::Op::kDense;
        const hdf5::Tensor& k = w.tensors[0];
        const std::string k_text = ": kernel " + w.at[0] + " has shape " + shape_text(k.shape);
        if (k.shape.size() != 2) return invalid(label(l) + k_text + ", expected (inputs, units)");
        const auto k_in = static_cast<Eigen::Index>(k.shape[0]);
        const auto k_out = static_cast<Eigen::Index>(k.shape[1]);
        if (k_out != l.units) {
          return invalid(label(l) + k_text + " but the layer has " + std::to_string(l.units) +
                         " units");
        }
        if (k_in != in) {
          return invalid(label(l) + k_text + " but its input has width " + std::to_string(in));
        }
        n.width = k_out;
        n.kernel = Eigen::Map<const RowMatrixD>(k.values.data(), k_in, k_out);
        if (l.use_bias) {
          const hdf5::Tensor& b = w.tensors[1];
          if (b.shape.size() != 1 || static_cast<Eigen::Index>(b.shape[0]) != k_out) {
            return invalid(label(l) + ": bias " + w.at[1] + " has shape " + shape_text(b.shape) +
                           ", expected (" + std::to_string(k_out) + ",)");
          }
          n.bias = Eigen::Map<const Eigen::RowVectorXd>(b.values.data(), k_out);
        }
        break;
      }
      case LayerKind::kActivation:
        n.op = keras::Op::kActivation;
        break;
      case LayerKind::kBatchNorm: {
        n.op = keras::Op::kAffine;
        const std::vector<std::string> roles = weight_roles(l);
        for (std::size_t k = 0; k < roles.size(); ++k) {
          const hdf5::Tensor& t = w.tensors[k];
          if (t.shape.size() != 1 || static_cast<Eigen::Index>(t.shape[0]) != in) {
            return invalid(label(l) + ": " + roles[k] + " " + w.at[k] + " has shape " +
                           shape_text(t.shape) + ", expected (" + std::to_string(in) + ",)");
          }
        }
        auto vec = [&](std::size_t k) {
          return Eigen::Map<const Eigen::ArrayXd>(w.tensors[k].values.data(), in);
        };
        std::size_t k = 0;
        const Eigen::ArrayXd gamma = l.scale ? Eigen::ArrayXd(vec(k++)) : Eigen::ArrayXd::Ones(in);
        const Eigen::ArrayXd beta = l.center ? Eigen::ArrayXd(vec(k++)) : Eigen::ArrayXd::Zero(in);
        const Eigen::ArrayXd mean = vec(k++);
        const Eigen::ArrayXd var = vec(k++) + l.epsilon;
        for (Eigen::Index c = 0; c < in; ++c) {
          if (!(var[c] > 0)) {
            return invalid(label(l) + ": moving_variance + epsilon is " + std::to_string(var[c]) +
                           " at " + std::to_string(c) + ", not positive");
          }
        }
        // Keras's inference form: x * (gamma / sqrt(var + eps)) + (beta - mean * that).
        const Eigen::ArrayXd scale = gamma / var.sqrt();
        const Eigen::ArrayXd offset = beta - mean * scale;
        if (!scale.allFinite() || !offset.allFinite()) {
          // A tiny variance with a large gamma: the layer's outputs would not be numbers.
          return Status(Code::kInvalidValue,
                        label(l) + ": gamma / sqrt(moving_variance + epsilon) overflows");
        }
        n.scale = scale.matrix().transpose();
        n.bias = offset.matrix().transpose();
        break;
      }
      case LayerKind::kConcatenate:
        n.op = keras::Op::kConcatenate;
        n.width = 0;
        for (std::size_t s : n.inputs) n.width += nodes[s].width;
        break;
      case LayerKind::kAdd:
        n.op = keras::Op::kAdd;
        for (std::size_t s : n.inputs) {
          if (nodes[s].width != in) {
            return invalid(label(l) + ": adds tensors of widths " + std::to_string(in) + " and " +
                           std::to_string(nodes[s].width));
          }
        }
        break;
      case LayerKind::kInput:
      case LayerKind::kIdentity:
        break;
    }
    node_of[pos] = nodes.size();
    nodes.push_back(std::move(n));
    layer_of.push_back(pos);
  }

  std::vector<std::size_t> outputs;
  for (std::size_t o : spec.outputs) outputs.push_back(node_of[o]);

  // A chain reads as "4 -> Dense 8 relu -> Dense 1"; any other graph lists its nodes with
  // what each reads.
  bool chain = outputs.size() == 1 && outputs[0] == nodes.size() - 1;
  for (std::size_t i = 1; i < nodes.size() && chain; ++i) {
    chain = nodes[i].inputs.size() == 1 && nodes[i].inputs[0] == i - 1;
  }
  std::string description = "Keras " + spec.class_name + " ";
  auto node_name = [&](std::size_t i) { return i == 0 ? std::string("input") : spec.layers[layer_of[i]].name; };
  if (chain) {
    description += std::to_string(input_width);
    for (std::size_t i = 1; i < nodes.size(); ++i) {
      description += " -> " + node_text(nodes[i], spec.layers[layer_of[i]]);
    }
  } else {
    description += "graph, " + std::to_string(input_width) + " inputs:";
    for (std::size_t i = 1; i < nodes.size(); ++i) {
      std::string reads;
      for (std::size_t s : nodes[i].inputs) reads += (reads.empty() ? "" : ", ") + node_name(s);
      description += (i == 1 ? " " : "; ") + node_name(i) + " = " +
                     node_text(nodes[i], spec.layers[layer_of[i]]) + "(" + reads + ")";
    }
    std::string outs;
    for (std::size_t o : outputs) outs += (outs.empty() ? "" : ", ") + node_name(o);
    description += "; outputs " + outs;
  }
  if (!version.empty()) description += " (keras " + std::string(version) + ")";

  Result<std::unique_ptr<keras::KerasGraph>> graph =
      keras::KerasGraph::plan(std::move(nodes), std::move(outputs), std::move(description));
  if (!graph.ok()) {
    return invalid(std::string(file) + ": " + graph.status().message());
  }
  return std::unique_ptr<Regressor>(std::move(*graph));
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
  std::vector<std::string> weighted_names;
  for (const LayerSpec& l : spec->layers) {
    if (has_weights(l)) weighted_names.push_back(l.name);
  }
  if (with_weights.size() != weighted_names.size()) {
    std::vector<std::string> file_names;
    for (const FileLayer& f : with_weights) file_names.push_back(f.name);
    return invalid(std::string(file) + ": model_weights has weights for " +
                   std::to_string(with_weights.size()) + " layers (" + joined(file_names) +
                   ") but model_config has " + std::to_string(weighted_names.size()) +
                   " layers with weights (" + joined(weighted_names) + ")");
  }

  const hdf5::Group& wg = *weights;
  const WeightReader read = [&](std::size_t pos, std::size_t index,
                                std::size_t expected) -> Result<LayerWeights> {
    const LayerSpec& layer = spec->layers[pos];
    const FileLayer& fl = with_weights[index];
    Result<hdf5::Group> g = wg.group(fl.name);
    if (!g.ok()) return g.status();
    if (fl.weight_names.size() != expected) {
      return invalid(g->where() + ": weight_names lists " + std::to_string(fl.weight_names.size()) +
                     " weights [" + joined(fl.weight_names) + "] but " + expected_weights(layer));
    }
    LayerWeights w;
    for (const std::string& name : fl.weight_names) {
      Result<hdf5::Tensor> t = g->read_float_dataset(name, kMaxTensorValues);
      if (!t.ok()) return t.status();
      w.tensors.push_back(std::move(*t));
      w.at.push_back(g->path() + "/" + name);
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
  const WeightReader read = [&](std::size_t pos, std::size_t /*index*/,
                                std::size_t expected) -> Result<LayerWeights> {
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
    if (present->size() != expected) {
      return invalid(vars->where() + ": has " + std::to_string(present->size()) + " variables [" +
                     joined(*present) + "] but " + expected_weights(layer));
    }
    LayerWeights w;
    for (std::size_t k = 0; k < expected; ++k) {
      const std::string name = std::to_string(k);
      Result<hdf5::Tensor> t = vars->read_float_dataset(name, kMaxTensorValues);
      if (!t.ok()) return t.status();
      w.tensors.push_back(std::move(*t));
      w.at.push_back(vars->path() + "/" + name);
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
    return static_cast<const keras::KerasGraph&>(**r).serialize();
  }, limits);
  lock.unlock();
  if (!bytes.ok()) return bytes.status();
  return keras::KerasGraph::deserialize(*bytes, file);
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
