#include "gossamer/config.hpp"

#include <algorithm>
#include <map>
#include <cctype>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include "config_schema.hpp"
#include "gossamer/error.hpp"

namespace gossamer {

using nlohmann::json;
namespace {

bool is_section(const std::string& prefix) {
  for (const auto& k : config_schema())
    if (k.path.rfind(prefix + ".", 0) == 0) return true;
  return false;
}

std::string unknown_key_message(const std::string& source, const std::string& path) {
  std::string msg = source + ": unknown key '" + path + "'";
  const std::string near = closest_key(path);
  if (!near.empty())
    msg += "; did you mean '" + near + "'?";
  else
    msg += " (gossamer config-reference lists every key)";
  return msg;
}

// Walks the user's JSON: every leaf must be a schema key of the right type.
void validate_object(const json& obj, const std::string& prefix, const std::string& source) {
  for (const auto& [key, value] : obj.items()) {
    const std::string path = prefix.empty() ? key : prefix + "." + key;
    if (const KeySpec* spec = find_key(path)) {
      check_value(*spec, value, source);
    } else if (is_section(path)) {
      if (!value.is_object())
        throw config_error(source + ": " + path +
                           ": expected an object (a section of keys), found " + value.dump());
      validate_object(value, path, source);
    } else {
      throw config_error(unknown_key_message(source, path));
    }
  }
}

json::json_pointer pointer_of(const std::string& path) {
  std::string p;
  std::stringstream ss(path);
  std::string part;
  while (std::getline(ss, part, '.')) p += "/" + part;
  return json::json_pointer(p);
}

// One override "key.path=value"; `from` names where it came from in messages (--set, a sweep).
void apply_override(json& user, const std::string& text, const std::string& from) {
  const auto eq = text.find('=');
  if (eq == std::string::npos || eq == 0)
    throw config_error(from + " " + text +
                       ": expected key.path=value, e.g. --set optimizer.lr=0.05");
  const std::string path = text.substr(0, eq), raw = text.substr(eq + 1);
  if (!find_key(path)) throw config_error(unknown_key_message(from, path));
  // A value is JSON where it parses as JSON (numbers, true, lists), else a plain string.
  json value = json::parse(raw, nullptr, false);
  if (value.is_discarded()) value = raw;
  // A section given as a non-object in the file cannot take a sub-key.
  const auto ptr = pointer_of(path);
  for (auto parent = ptr.parent_pointer(); !parent.empty(); parent = parent.parent_pointer())
    if (user.contains(parent) && !user.at(parent).is_object())
      throw config_error(from + " " + path + ": " + parent.to_string().substr(1) +
                         " is not an object in the config");
  user[ptr] = value;
}

// Every string of the config must be valid UTF-8: it is written back (config.json, checkpoints,
// messages) as JSON, which cannot hold other bytes. (--set values and in-memory configs can.)
void check_utf8(const json& j, const std::string& path, const std::string& source) {
  if (j.is_string()) {
    try {
      (void)j.dump();
    } catch (const json::type_error&) {
      throw config_error(source + ": " + (path.empty() ? "a value" : path) +
                         ": not valid UTF-8 text");
    }
  } else if (j.is_object()) {
    for (const auto& [key, value] : j.items()) {
      check_utf8(json(key), path.empty() ? "a key" : path + ": a key", source);
      check_utf8(value, path.empty() ? key : path + "." + key, source);
    }
  } else if (j.is_array()) {
    for (size_t i = 0; i < j.size(); ++i)
      check_utf8(j[i], path + "[" + std::to_string(i) + "]", source);
  }
}

template <class T>
T get(const json& resolved, const std::string& path) {
  return resolved.at(pointer_of(path)).get<T>();
}

// load_config's parts: each reads one section of the resolved config into c and checks what
// the schema's per-key ranges cannot (relations between keys). `resolved` may gain defaults
// that depend on other keys.
void read_name(const json& resolved, const std::string& source, RunConfig& c) {
  c.name = get<std::string>(resolved, "name");
  // The name becomes one folder under runs/: one path component of plain characters.
  const bool plain_name =
      !c.name.empty() && c.name.size() <= 100 && c.name != "." && c.name != ".." &&
      std::none_of(c.name.begin(), c.name.end(), [](char ch) {
        const auto u = static_cast<unsigned char>(ch);
        return ch == '/' || ch == '\\' || u < 0x20 || u == 0x7f;
      });
  if (!plain_name)
    throw config_error(source + ": name: expected 1 to 100 characters without '/', '\\' or "
                       "control characters, not \".\" or \"..\" (it names the run folder "
                       "runs/NAME-TIME), found " + json(c.name).dump());
}

void read_data(json& resolved, const std::string& source, RunConfig& c) {
  auto& d = c.data;
  d.dataset = get<std::string>(resolved, "data.dataset");
  d.path = get<std::string>(resolved, "data.path");
  if (d.dataset == "fashion-mnist" && d.path.empty()) {
    d.path = "/usr/share/datasets/fashion-mnist";
    resolved[pointer_of("data.path")] = d.path;
  }
  if ((d.dataset == "mnist" || d.dataset == "idx" || d.dataset == "cifar10") && d.path.empty())
    throw config_error(source + ": data.path: expected the folder of the " + d.dataset +
                       " files for data.dataset \"" + d.dataset + "\", found nothing");
  d.normalize = get<std::string>(resolved, "data.normalize");
  d.augment_crop = get<int>(resolved, "data.augment.crop");
  d.augment_flip = get<bool>(resolved, "data.augment.flip");
  if ((d.augment_crop > 0 || d.augment_flip) && d.dataset == "synthetic")
    throw config_error(source + ": data.augment: crops and flips need image data (data.dataset "
                       "idx, mnist, fashion-mnist or cifar10), found \"synthetic\"");
  d.train_samples = get<int64_t>(resolved, "data.train_samples");
  d.test_samples = get<int64_t>(resolved, "data.test_samples");
  d.synthetic_kind = get<std::string>(resolved, "data.synthetic.kind");
  d.synthetic_train = get<int64_t>(resolved, "data.synthetic.train");
  d.synthetic_test = get<int64_t>(resolved, "data.synthetic.test");
  d.synthetic_features = get<int>(resolved, "data.synthetic.features");
  d.synthetic_classes = get<int>(resolved, "data.synthetic.classes");
  d.synthetic_separation = get<double>(resolved, "data.synthetic.separation");
  d.synthetic_teacher_hidden = get<int>(resolved, "data.synthetic.teacher_hidden");
  d.synthetic_label_noise = get<double>(resolved, "data.synthetic.label_noise");

}

// model.layers, each layer checked: a config_error names the layer, its type and the field.
std::vector<CnnLayerConfig> read_cnn_layers(const json& layers, const std::string& source) {
  const std::string key = source + ": model.layers";
  if (!layers.is_array()) throw config_error(key + ": expected a list of layer objects, found " + layers.dump());
  const std::map<std::string, std::vector<std::string>> fields = {
      {"conv", {"channels", "kernel", "stride"}}, {"act", {}}, {"maxpool", {}}, {"avgpool", {}},
      {"residual", {"channels", "stride"}},       {"gap", {}}, {"linear", {"out"}},
      {"groupnorm", {"groups"}}};
  std::vector<CnnLayerConfig> out;
  for (size_t i = 0; i < layers.size(); ++i) {
    const json& l = layers[i];
    const std::string at = key + "[" + std::to_string(i) + "]";
    if (!l.is_object() || !l.contains("type") || !l["type"].is_string())
      throw config_error(at + ": expected an object with a \"type\" (conv, act, maxpool, avgpool, "
                         "residual, groupnorm, gap, linear), found " + l.dump());
    CnnLayerConfig c;
    c.type = l["type"].get<std::string>();
    const auto allowed = fields.find(c.type);
    if (allowed == fields.end())
      throw config_error(at + ": type: expected one of conv, act, maxpool, avgpool, residual, "
                         "groupnorm, gap, linear, found \"" + c.type + "\"");
    const std::string here = at + " (" + c.type + ")";
    for (const auto& [name, value] : l.items()) {
      if (name == "type") continue;
      if (std::find(allowed->second.begin(), allowed->second.end(), name) == allowed->second.end()) {
        std::string list;
        for (const auto& f : allowed->second) list += (list.empty() ? "" : ", ") + f;
        throw config_error(here + ": " + name + ": not a field of this layer (" +
                           (list.empty() ? std::string("it has none") : "fields: " + list) + ")");
      }
    }
    const auto integer = [&](const char* name, int lo, int hi, bool required, int fallback,
                             const char* what) {
      if (!l.contains(name)) {
        if (required) throw config_error(here + ": " + name + ": missing; expected " + what);
        return fallback;
      }
      const json& v = l[name];
      if (!v.is_number_integer() || v.get<int64_t>() < lo || v.get<int64_t>() > hi)
        throw config_error(here + ": " + name + ": expected " + what + ", found " + v.dump());
      return int(v.get<int64_t>());
    };
    if (c.type == "conv" || c.type == "residual") {
      c.channels = integer("channels", 1, 4096, true, 0, "an integer from 1 to 4096");
      c.stride = integer("stride", 1, 2, false, 1, "1 or 2");
    }
    if (c.type == "conv") {
      c.kernel = integer("kernel", 1, 7, false, 3, "an odd integer from 1 to 7");
      if (c.kernel % 2 == 0)
        throw config_error(here + ": kernel: expected an odd integer from 1 to 7 (same padding), found " +
                           std::to_string(c.kernel));
    }
    if (c.type == "linear") c.channels = integer("out", 1, 1 << 20, true, 0, "an integer from 1 to 1048576");
    if (c.type == "groupnorm") c.groups = integer("groups", 1, 4096, true, 0, "an integer from 1 to 4096");
    out.push_back(c);
  }
  return out;
}

void read_model_and_topology(const json& resolved, const std::string& source, RunConfig& c) {
  c.partition.kind = get<std::string>(resolved, "partition.kind");
  c.partition.alpha = get<double>(resolved, "partition.alpha");
  c.partition.classes_per_worker = get<int>(resolved, "partition.classes_per_worker");

  c.model.kind = get<std::string>(resolved, "model.kind");
  c.model.layers = read_cnn_layers(resolved.at(pointer_of("model.layers")), source);
  if (c.model.kind == "mlp" && !c.model.layers.empty())
    throw config_error(source + ": model.layers: layers of a cnn, but model.kind is \"mlp\" "
                       "(whose layers are model.hidden); set model.kind to \"cnn\"");
  c.model.hidden = get<std::vector<int>>(resolved, "model.hidden");
  c.model.activation_name = get<std::string>(resolved, "model.activation");
  c.model.activation = c.model.activation_name == "relu"   ? Activation::Relu
                       : c.model.activation_name == "tanh" ? Activation::Tanh
                                                           : Activation::Gelu;
  c.model.init = get<std::string>(resolved, "model.init");
  c.model.same_init = get<bool>(resolved, "model.same_init");

  auto& t = c.topology;
  t.name = get<std::string>(resolved, "topology.name");
  t.weights = get<std::string>(resolved, "topology.weights");
  t.shuffle = get<bool>(resolved, "topology.shuffle");
  t.probability = get<double>(resolved, "topology.probability");
  t.matrix = resolved.at(pointer_of("topology.matrix"));
  t.edges = resolved.at(pointer_of("topology.edges"));
  if (t.name == "custom" && t.matrix.is_null() == t.edges.is_null())
    throw config_error(source +
                       ": topology: custom needs exactly one of topology.matrix or topology.edges");
  if (t.name != "custom" && !(t.matrix.is_null() && t.edges.is_null()))
    throw config_error(source + ": topology.matrix/edges: given, but topology.name is \"" + t.name +
                       "\"; set topology.name to \"custom\" to use them");

}

void read_algorithm(const json& resolved, const std::string& source, RunConfig& c) {
  const std::string algorithm = get<std::string>(resolved, "algorithm.name");
  for (Algorithm a : {Algorithm::Dsgd, Algorithm::Csgd, Algorithm::LocalSgd, Algorithm::CsgdSam,
                      Algorithm::CsgdAdsam})
    if (algorithm == algorithm_name(a)) c.algorithm.kind = a;  // the schema allows only these
  c.algorithm.form = get<std::string>(resolved, "algorithm.form");
  c.algorithm.local_steps = get<int>(resolved, "algorithm.local_steps");
  c.algorithm.sam_rho = get<double>(resolved, "algorithm.sam_rho");
  c.algorithm.adsam_sigma = get<double>(resolved, "algorithm.adsam_sigma");
  c.algorithm.track_adsam = get<bool>(resolved, "algorithm.track_adsam");
  if (c.algorithm.track_adsam && c.algorithm.kind != Algorithm::Dsgd)
    throw config_error(source +
                       ": algorithm.track_adsam: true needs algorithm.name \"dsgd\", found \"" +
                       algorithm + "\"");

}

void read_optimizer(const json& resolved, const std::string& source, RunConfig& c) {
  auto& o = c.optimizer;
  o.lr = get<double>(resolved, "optimizer.lr");
  o.batch_size = get<int>(resolved, "optimizer.batch_size");
  o.momentum = get<double>(resolved, "optimizer.momentum");
  o.nesterov = get<bool>(resolved, "optimizer.nesterov");
  o.weight_decay = get<double>(resolved, "optimizer.weight_decay");
  o.schedule = get<std::string>(resolved, "optimizer.schedule");
  o.milestones = get<std::vector<double>>(resolved, "optimizer.milestones");
  for (size_t i = 1; i < o.milestones.size(); ++i)
    if (o.milestones[i] <= o.milestones[i - 1])
      throw config_error(source + ": optimizer.milestones: expected increasing fractions, found " +
                         resolved.at(pointer_of("optimizer.milestones")).dump());
  o.gamma = get<double>(resolved, "optimizer.gamma");
  o.min_lr_factor = get<double>(resolved, "optimizer.min_lr_factor");
  o.warmup_steps = get<int64_t>(resolved, "optimizer.warmup_steps");
  o.warmup_start_factor = get<double>(resolved, "optimizer.warmup_start_factor");
  o.warmup_fraction = get<double>(resolved, "optimizer.warmup_fraction");
  if (o.warmup_fraction > 0 && o.warmup_steps > 0)
    throw config_error(
        source +
        ": optimizer.warmup_fraction and optimizer.warmup_steps: give one of them, not both");
  o.scaling = get<std::string>(resolved, "optimizer.scaling");
  o.base_batch = get<int64_t>(resolved, "optimizer.base_batch");
  if (o.nesterov && o.momentum == 0)
    throw config_error(source + ": optimizer.nesterov: true needs optimizer.momentum > 0, found 0");

}

// The budget is in steps or in epochs: both in the file is an error; a --set of one replaces
// the other, so a file in steps can be run in epochs and back.
void read_train(json& resolved, const json& user_in, const std::vector<std::string>& overrides,
                const std::string& source, RunConfig& c) {
  c.train.steps = get<int64_t>(resolved, "train.steps");
  c.train.epochs = get<double>(resolved, "train.epochs");
  const auto steps_ptr = pointer_of("train.steps"), epochs_ptr = pointer_of("train.epochs");
  if (user_in.contains(steps_ptr) && user_in.contains(epochs_ptr) && user_in.at(epochs_ptr) != 0)
    throw config_error(source + ": train.steps and train.epochs: give one of them, not both");
  const auto overridden = [&](const char* prefix) {
    return std::any_of(overrides.begin(), overrides.end(),
                       [&](const std::string& o) { return o.rfind(prefix, 0) == 0; });
  };
  if (overridden("train.steps=") && overridden("train.epochs=") && c.train.epochs != 0)
    throw config_error(source +
                       ": --set train.steps and --set train.epochs: give one of them, not both");
  if (overridden("train.steps=")) c.train.epochs = 0;
  resolved[epochs_ptr] = c.train.epochs;
  c.train.eval_every = get<int64_t>(resolved, "train.eval_every");
  c.train.eval_workers = get<bool>(resolved, "train.eval_workers");
  c.train.check_every = get<int64_t>(resolved, "train.check_every");

  c.train.checkpoint_every = get<int64_t>(resolved, "train.checkpoint_every");

  c.metrics.ensemble = get<bool>(resolved, "metrics.ensemble");
  c.metrics.smoothing = get<bool>(resolved, "metrics.smoothing");

}

void read_curvature(const json& resolved, const std::string& source, RunConfig& c) {
  auto& k = c.curvature;
  k.every = get<int64_t>(resolved, "curvature.every");
  k.what = get<std::vector<std::string>>(resolved, "curvature.what");
  k.samples = get<int64_t>(resolved, "curvature.samples");
  k.probes = get<int>(resolved, "curvature.probes");
  k.topk = get<int>(resolved, "curvature.topk");
  k.method = get<std::string>(resolved, "curvature.method");
  k.lanczos_steps = get<int>(resolved, "curvature.lanczos_steps");
  k.power_iters = get<int64_t>(resolved, "curvature.power_iters");
  k.power_tol = get<double>(resolved, "curvature.power_tol");
  k.sigma = get<double>(resolved, "curvature.sigma");
  k.mc_samples = get<int>(resolved, "curvature.mc_samples");
  k.sam_rho = get<double>(resolved, "curvature.sam_rho");
  k.sam_steps = get<int>(resolved, "curvature.sam_steps");
  k.workers = get<bool>(resolved, "curvature.workers");
  k.density_runs = get<int>(resolved, "curvature.density_runs");
  k.density_steps = get<int>(resolved, "curvature.density_steps");
  k.density_bins = get<int>(resolved, "curvature.density_bins");
  k.density_width = get<double>(resolved, "curvature.density_width");
  if (k.method == "lanczos" && k.topk > k.lanczos_steps)
    throw config_error(source + ": curvature.topk: " + std::to_string(k.topk) +
                       " eigenvalues need curvature.lanczos_steps >= " + std::to_string(k.topk) +
                       ", found " + std::to_string(k.lanczos_steps));

}

}  // namespace

RunConfig load_config(const json& user_in, const std::vector<std::string>& overrides,
                      const std::string& source, const std::string& overrides_from) {
  if (!user_in.is_object())
    throw config_error(source + ": expected a JSON object at the top level, found " +
                       user_in.type_name());
  json user = user_in;
  for (const auto& o : overrides) {
    check_utf8(json(o), "--set", source);
    apply_override(user, o, overrides_from);
  }
  check_utf8(user, "", source);
  validate_object(user, "", source);

  json resolved = json::object();
  for (const auto& k : config_schema()) resolved[pointer_of(k.path)] = k.default_value;
  for (const auto& k : config_schema()) {
    const auto ptr = pointer_of(k.path);
    if (user.contains(ptr)) resolved[ptr] = user.at(ptr);
  }

  RunConfig c;
  read_name(resolved, source, c);
  c.seed = get<uint64_t>(resolved, "seed");
  c.workers = get<int>(resolved, "workers");
  c.backend = get<std::string>(resolved, "backend");
  c.shards = get<int>(resolved, "shards");
  if (c.shards > c.workers)
    throw config_error(source + ": shards: " + std::to_string(c.shards) + " shards for " +
                       std::to_string(c.workers) + " workers; expected at most one shard a worker");
  if (c.shards > 1 && c.backend == "cuda")
    throw config_error(source + ": shards: the CPU backend's shards; the CUDA backend shards over "
                       "\"devices\" (e.g. [0, 0] for two shards on GPU 0)");
  c.devices = get<std::vector<int>>(resolved, "devices");
  c.transport = get<std::string>(resolved, "transport");
  if (!c.devices.empty() && c.backend == "cpu")
    throw config_error(source + ": devices: GPUs for the cuda backend, but backend is \"cpu\" "
                       "(the CPU backend shards with \"shards\")");
  if (!c.devices.empty() && c.shards > 1)
    throw config_error(source + ": devices and shards: give one (devices shards the CUDA backend, "
                       "shards the CPU backend)");
  if (int(c.devices.size()) > c.workers)
    throw config_error(source + ": devices: " + std::to_string(c.devices.size()) + " shards for " +
                       std::to_string(c.workers) + " workers; expected at most one shard a worker");
  c.precision = get<std::string>(resolved, "precision");
  c.math = get<std::string>(resolved, "math");

  read_data(resolved, source, c);
  read_model_and_topology(resolved, source, c);
  read_algorithm(resolved, source, c);
  read_optimizer(resolved, source, c);
  read_train(resolved, user_in, overrides, source, c);
  read_curvature(resolved, source, c);
  if (c.precision == "float64" && c.backend == "cuda")
    throw config_error(
        source + ": precision: \"float64\" is a CPU-backend reference mode; use backend \"cpu\"");
  if (c.math == "tf32" && c.backend == "cpu")
    throw config_error(
        source +
        ": math: \"tf32\" is a mode of the cuda backend's GEMMs; backend "
        "\"cpu\" computes exactly in its precision (use backend \"cuda\" or \"auto\")");
  c.resolved = std::move(resolved);
  c.source = source;
  return c;
}

const char* algorithm_name(Algorithm a) {
  switch (a) {
    case Algorithm::Dsgd: return "dsgd";
    case Algorithm::Csgd: return "csgd";
    case Algorithm::LocalSgd: return "local_sgd";
    case Algorithm::CsgdSam: return "csgd_sam";
    case Algorithm::CsgdAdsam: return "csgd_adsam";
  }
  return "?";
}

bool CurvatureConfig::wants(const std::string& name) const {
  return std::find(what.begin(), what.end(), name) != what.end();
}

namespace {

template <class Json>
Json read_strict(const std::string& path, const std::string& what) {
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec))
    throw config_error(path + ": is a directory; expected the " + what + " (a JSON file)");
  std::ifstream in(path);
  if (!in) throw config_error(path + ": cannot open the " + what);
  // nlohmann keeps the last of repeated keys silently: one set of keys per open object.
  std::vector<std::set<std::string>> keys;
  std::string duplicate;
  const typename Json::parser_callback_t strict = [&](int, typename Json::parse_event_t event,
                                                      Json& parsed) {
    using E = typename Json::parse_event_t;
    if (event == E::object_start) keys.emplace_back();
    if (event == E::object_end && !keys.empty()) keys.pop_back();
    if (event == E::key && !keys.empty() && !keys.back().insert(parsed.template get<std::string>()).second &&
        duplicate.empty())
      duplicate = parsed.template get<std::string>();
    return true;
  };
  Json j;
  try {
    j = Json::parse(in, strict);
  } catch (const nlohmann::json::exception& e) {
    throw config_error(path + ": the " + what + " is not valid JSON: " + e.what());
  }
  if (!duplicate.empty())
    throw config_error(path + ": key '" + duplicate +
                       "' appears twice in one object; keep one (JSON readers differ on which wins)");
  return j;
}

}  // namespace

json read_json_file(const std::string& path, const std::string& what) {
  return read_strict<json>(path, what);
}

nlohmann::ordered_json read_ordered_json_file(const std::string& path, const std::string& what) {
  return read_strict<nlohmann::ordered_json>(path, what);
}

RunConfig load_config_file(const std::string& path, const std::vector<std::string>& overrides) {
  return load_config(read_json_file(path, "config file"), overrides, path);
}

std::string config_hash(const json& resolved) {
  // The layout keys change where the rows live, not the results: a run resumed with another
  // number of shards, on other GPUs or over another transport is the same run.
  json identity = resolved;
  if (identity.is_object())
    for (const char* layout : {"shards", "devices", "transport"}) identity.erase(layout);
  uint64_t h = 1469598103934665603ull;  // FNV-1a 64
  for (unsigned char ch : identity.dump()) {
    h ^= ch;
    h *= 1099511628211ull;
  }
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(h));
  return buf;
}

}  // namespace gossamer
