#include "config_schema.hpp"

#include <algorithm>
#include <cmath>
#include <sstream>

#include "gossamer/error.hpp"

namespace gossamer {

using nlohmann::json;
namespace {
constexpr double kInf = std::numeric_limits<double>::infinity();

// clang-format off: one key a line reads as a table.
std::vector<KeySpec> build_schema() {
  using K = KeyType;
  return {
      {"name", K::String, "run", "Name of the run: 1 to 100 characters, one folder name (no /, \\ or control characters, not . or ..); the default run folder is runs/NAME-TIMESTAMP, with -2, -3, ... added when that folder is taken."},
      {"seed", K::Int, 1, "Seed of every random draw (data, partition, init, minibatches, topology).", {}, 0, 9007199254740992.0},
      {"workers", K::Int, 16, "Number of simulated workers m.", {}, 1, 1 << 20},
      {"shards", K::Int, 1, "CPU backend (the CUDA backend shards with devices): split the workers into this many contiguous shards that exchange the rows the mixing matrix reads through the in-process transport (the multi-GPU path's logic, on the CPU); the results are bit-identical to one shard, and a run may be resumed with another number of shards (the key is left out of the config hash).", {}, 1, 1 << 20},
      {"devices", K::IntList, json::array(), "CUDA backend: the GPUs of this process, one shard of the workers' rows per entry (contiguous, balanced blocks; each shard holds its rows and a halo of the foreign rows its rows of the mixing matrix read, exchanged every step). An ordinal may repeat: several shards on one GPU. [] (the default): GPU 0, unsharded. Results agree with one GPU to rounding (the gossip is bit-identical; sums over workers are summed per shard). A layout, left out of the config hash: a run may be resumed on other devices. The command line's --devices 0,1,2,3 sets it.", {}, 0, 1 << 16},
      {"transport", K::Choice, "auto", "Between the CUDA backend's shards: copy (device copies inside one process, on one GPU or several), nccl (ncclSend/ncclRecv and all-reduce; one shard a GPU; needed by several processes), auto (nccl for several processes or several distinct GPUs, else copy). A layout: left out of the config hash.", {"auto", "copy", "nccl"}},
      {"backend", K::Choice, "auto", "Where to run: cpu (the reference), cuda (the GPU backend on device 0), auto (cuda on the first visible GPU for float32 runs, else cpu; the banner and summary.json's backend_choice say which and why).", {"auto", "cpu", "cuda"}},
      {"precision", K::Choice, "float32", "Scalar type of the CPU backend (float64 for reference runs).", {"float32", "float64"}},
      {"math", K::Choice, "fp32", "GEMM math mode of the cuda backend: fp32 (exact float32 products, the default) or tf32 (tensor cores: inputs rounded to a 10-bit mantissa, float32 accumulation; measured on an H200: 3e-4 relative error on a GEMM, 3e-2 on a whole ReLU-MLP gradient, 1.2-1.3x faster steps; cuBLAS may still pick FP32 kernels for tiny GEMMs). backend cpu refuses tf32; backend auto resolved to the cpu runs exact float32 and says so.", {"fp32", "tf32"}},

      {"data.dataset", K::Choice, "synthetic", "Data set: synthetic, fashion-mnist (Debian's dataset-fashion-mnist), mnist or idx (IDX files in data.path), cifar10 (binary batches in data.path).", {"synthetic", "fashion-mnist", "mnist", "idx", "cifar10"}},
      {"data.path", K::String, "", "Folder of the data files; fashion-mnist defaults to /usr/share/datasets/fashion-mnist."},
      {"data.normalize", K::Choice, "feature", "feature: subtract the per-feature mean and divide by the per-feature std of the training set (std 0 -> 1); none: raw values (bytes scaled to [0,1]).", {"feature", "none"}},
      {"data.train_samples", K::Int, 0, "Use only the first N training samples (0: all).", {}, 0, kInf},
      {"data.test_samples", K::Int, 0, "Evaluate on only the first N test samples (0: all).", {}, 0, kInf},
      {"data.augment.crop", K::Int, 0, "Augmentation (image data: idx, mnist, fashion-mnist, cifar10): random crop with this padding on each side (the image shifts by up to this many pixels, zeros of the normalized data, i.e. the mean pixel, fill in; 0: off), drawn per worker, step and sample from Philox, identical on both backends.", {}, 0, 64},
      {"data.augment.flip", K::Bool, false, "Augmentation (image data): random horizontal flip, half of the samples, after the crop."},
      {"data.synthetic.kind", K::Choice, "gaussian_mixture", "gaussian_mixture: x = mu_y + N(0, I), mu_c ~ N(0, separation^2/features I); teacher: x ~ N(0, I), y = argmax of a random one-hidden-layer tanh teacher.", {"gaussian_mixture", "teacher"}},
      {"data.synthetic.train", K::Int, 4096, "Synthetic training samples.", {}, 1, kInf},
      {"data.synthetic.test", K::Int, 1024, "Synthetic test samples.", {}, 1, kInf},
      {"data.synthetic.features", K::Int, 32, "Synthetic input dimension.", {}, 1, 1 << 20},
      {"data.synthetic.classes", K::Int, 4, "Synthetic number of classes.", {}, 2, 1 << 16},
      {"data.synthetic.separation", K::Number, 3.0, "gaussian_mixture: typical norm of a class mean.", {}, 0, kInf},
      {"data.synthetic.teacher_hidden", K::Int, 64, "teacher: hidden width of the teacher network.", {}, 1, 1 << 16},
      {"data.synthetic.label_noise", K::Number, 0.0, "Fraction of labels replaced by a uniformly random class.", {}, 0, 1},

      {"partition.kind", K::Choice, "iid", "How the training set is split over workers: iid (random equal parts), dirichlet (class proportions ~ Dir(alpha) per class), shards (classes_per_worker label shards each), shared (every worker samples the whole training set with its own stream: any number of workers, e.g. more workers than samples).", {"iid", "dirichlet", "shards", "shared"}},
      {"partition.alpha", K::Number, 0.5, "dirichlet: concentration alpha (small: more heterogeneous).", {}, 0, kInf, true},
      {"partition.classes_per_worker", K::Int, 2, "shards: label shards per worker.", {}, 1, 1 << 16},

      {"model.kind", K::Choice, "mlp", "mlp (layers of model.hidden) or cnn (layers of model.layers; image data only; both backends).", {"mlp", "cnn"}},
      {"model.layers", K::Json, json::array(), "cnn: the layers in order, each an object with a type: {\"type\": \"conv\", \"channels\": C, \"kernel\": 3, \"stride\": 1} (k x k, odd k up to 7, same padding, stride 1 or 2), {\"type\": \"act\"} (model.activation), {\"type\": \"maxpool\"} or \"avgpool\" (2 x 2, stride 2), {\"type\": \"residual\", \"channels\": C, \"stride\": 1} (conv 3x3 (stride), act, conv 3x3, plus the input (through a 1x1 conv of that stride where the shape changes), act), {\"type\": \"groupnorm\", \"groups\": G} (GroupNorm over groups of channels of each sample, eps 1e-5, a per-channel scale 1 + g and shift b, both starting at 0; parameters only, no running statistics), {\"type\": \"gap\"} (global average pooling), {\"type\": \"linear\", \"out\": N} (over the flattened input). A linear classifier to the classes follows the last layer."},
      {"model.hidden", K::IntList, json::array({128}), "Hidden layer widths of the MLP; [] is softmax regression.", {}, 1, 1 << 20},
      {"model.activation", K::Choice, "relu", "Hidden activation.", {"relu", "tanh", "gelu"}},
      {"model.init", K::Choice, "kaiming", "Weight init: kaiming (normal, std sqrt(2/fan_in)), xavier (normal, std sqrt(2/(fan_in+fan_out))), zeros. Biases start at 0.", {"kaiming", "xavier", "zeros"}},
      {"model.same_init", K::Bool, true, "true: every worker starts from the same weights; false: independent inits."},

      {"topology.name", K::Choice, "ring", "Communication graph (docs/ARCHITECTURE.md, Definitions).", {"ring", "grid", "torus", "exponential", "one_peer_exponential", "hypercube", "star", "complete", "erdos_renyi", "custom"}},
      {"topology.weights", K::Choice, "uniform", "Edge weights of undirected graphs: uniform (1/(max_degree+1) per edge, the diagonal takes the rest; 1/(deg+1) on regular graphs) or metropolis (1/(1+max(deg_i,deg_j))). exponential, one_peer_exponential, complete and a custom matrix have fixed weights and take only uniform.", {"uniform", "metropolis"}},
      {"topology.shuffle", K::Bool, false, "Relabel the workers by a fresh random permutation each step: P_t = Pi^T P Pi."},
      {"topology.probability", K::Number, 0.0, "erdos_renyi: edge probability (0: 2 ln(m)/m, at most 1); redrawn until connected.", {}, 0, 1},
      {"topology.matrix", K::Json, nullptr, "custom: dense m x m mixing matrix (list of rows), nonnegative, rows summing to 1."},
      {"topology.edges", K::Json, nullptr, "custom: undirected edge list [[i, j], ...]; weights from topology.weights."},

      {"algorithm.name", K::Choice, "dsgd", "dsgd (decentralized SGD), csgd (centralized: every worker applies the mean gradient), local_sgd (local steps, then exact averaging), csgd_sam (C-SGD with SAM: the mean gradient at w + rho g/||g||, g the total-batch gradient; two passes a step), csgd_adsam (average-direction SAM: C-SGD on the gradient at w + eps, eps ~ N(0, sigma^2 I) drawn each step).", {"dsgd", "csgd", "local_sgd", "csgd_sam", "csgd_adsam"}},
      {"algorithm.sam_rho", K::Number, 0.05, "csgd_sam: radius rho.", {}, 0, kInf},
      {"algorithm.adsam_sigma", K::Number, 0.01, "csgd_adsam: std sigma of the perturbation.", {}, 0, kInf},
      {"algorithm.track_adsam", K::Bool, false, "dsgd only: run alongside, on the same minibatches, average-direction SAM with the D-SGD workers' covariance Xi (C-SGD on the gradients at w + eps_k, eps_k = (1/sqrt m) sum_j z_kj delta_j) and plain C-SGD; report ||wbar - w_adsam|| and ||wbar - w_csgd|| at each evaluation (the equivalence experiment). Such a run cannot be resumed."},
      {"algorithm.form", K::Choice, "default", "dsgd: default W' = P W - lr U; atc (adapt-then-combine) W' = P (W - lr U).", {"default", "atc"}},
      {"algorithm.local_steps", K::Int, 4, "local_sgd: local steps H between averagings.", {}, 1, kInf},

      {"optimizer.lr", K::Number, 0.1, "Learning rate at optimizer.base_batch total batch (before scaling, warm-up and decay).", {}, 0, kInf},
      {"optimizer.batch_size", K::Int, 32, "Per-worker minibatch; total batch = workers x batch_size.", {}, 1, 1 << 24},
      {"optimizer.momentum", K::Number, 0.0, "Heavy-ball momentum mu: buf = mu buf + g + wd w; U = buf.", {}, 0, 1, false, true},
      {"optimizer.nesterov", K::Bool, false, "Nesterov: U = g + wd w + mu buf (after the buffer update)."},
      {"optimizer.weight_decay", K::Number, 0.0, "L2 weight decay lambda: adds lambda w to the gradient.", {}, 0, kInf},
      {"optimizer.schedule", K::Choice, "constant", "Learning-rate decay after warm-up: constant, step (times gamma at each milestone), cosine (to min_lr_factor lr at the end).", {"constant", "step", "cosine"}},
      {"optimizer.milestones", K::NumberList, json::array({0.5, 0.75}), "step: where to decay, as fractions of the run's steps, each in (0, 1).", {}, 0, 1, true, true},
      {"optimizer.gamma", K::Number, 0.1, "step: decay factor at each milestone.", {}, 0, 1, true},
      {"optimizer.min_lr_factor", K::Number, 0.0, "cosine: final learning rate as a fraction of lr.", {}, 0, 1},
      {"optimizer.warmup_steps", K::Int, 0, "Linear warm-up steps from warmup_start_factor lr to lr.", {}, 0, kInf},
      {"optimizer.warmup_fraction", K::Number, 0.0, "If > 0: warm-up over this fraction of the run's steps instead of warmup_steps (for budgets in epochs, where the steps vary with the batch).", {}, 0, 1, false, true},
      {"optimizer.warmup_start_factor", K::Number, 0.1, "Warm-up start as a fraction of lr.", {}, 0, 1},
      {"optimizer.scaling", K::Choice, "none", "Batch scaling rule: lr x (total/base_batch) for linear, x sqrt(total/base_batch) for sqrt.", {"none", "linear", "sqrt"}},
      {"optimizer.base_batch", K::Int, 1024, "Total batch at which optimizer.lr is given (for the scaling rule).", {}, 1, kInf},

      {"train.steps", K::Int, 1000, "Training steps (ignored when train.epochs > 0).", {}, 1, kInf},
      {"train.epochs", K::Number, 0.0, "If > 0: train for this many passes over the training set: steps = ceil(epochs n_train / total batch).", {}, 0, kInf},
      {"train.eval_every", K::Int, 100, "Steps between evaluations (one line of metrics.jsonl each, plus step 0 and the last step).", {}, 1, kInf},
      {"train.eval_workers", K::Bool, true, "Also evaluate every worker's own model (mean, min, max over workers)."},
      {"train.check_every", K::Int, 1, "Steps between checks for NaN or Inf in the training loss, the weights and the momentum (every step is recorded by the backend; the check reads the record: the run stops with exit 3 naming the first bad step and the quantity).", {}, 1, kInf},
      {"train.checkpoint_every", K::Int, 0, "Steps between checkpoints (RUN_DIR/checkpoint.bin, replaced atomically); 0: only at the end and on Ctrl-C or SIGTERM; -1: never (no resume; for scaling studies whose W is too large to be worth saving).", {}, -1, kInf},

      {"metrics.ensemble", K::Bool, false, "At each evaluation, the workers as an ensemble (mean of their predictive distributions) beside w-bar: test accuracy, NLL and ECE (15 bins) of each (claim 1)."},
      {"metrics.smoothing", K::Bool, false, "At each evaluation, ||(1/m) sum_k grad L(w_k) - grad L(w-bar)|| and its ratio to ||grad L(w-bar)|| on the curvature subset (claim 2)."},

      {"curvature.every", K::Int, 0, "Steps between curvature measurements of w-bar (0: off); measured at step 0, every N steps and at the end, in that step's metrics line.", {}, 0, kInf},
      {"curvature.what", K::ChoiceList, json::array({"trace", "topk", "reg"}), "What to measure: trace (Hutchinson), topk (top eigenvalues), reg (1/2 tr(H Xi)), avgsharp (average-direction sharpness, isotropic and Xi), samsharp (worst-case SAM sharpness), density (the Hessian's spectral density by stochastic Lanczos quadrature, into spectral_density.jsonl).", {"trace", "topk", "reg", "avgsharp", "samsharp", "density"}},
      {"curvature.samples", K::Int, 1024, "Training samples of the curvature subset (a seeded random subset, fixed for the run; all if larger than the training set).", {}, 1, kInf},
      {"curvature.probes", K::Int, 64, "Hutchinson: Rademacher probes.", {}, 1, 1 << 20},
      {"curvature.topk", K::Int, 5, "Top eigenvalues to report.", {}, 1, 1 << 16},
      {"curvature.method", K::Choice, "lanczos", "topk by lanczos (full reorthogonalization) or power (iteration with deflation, as PyHessian).", {"lanczos", "power"}},
      {"curvature.lanczos_steps", K::Int, 40, "Lanczos steps (vectors kept), at most d.", {}, 1, 1 << 16},
      {"curvature.power_iters", K::Int, 100, "Power iteration: most iterations per eigenvalue (PyHessian's default).", {}, 1, kInf},
      {"curvature.power_tol", K::Number, 1e-3, "Power iteration: relative tolerance (PyHessian's default).", {}, 0, kInf, true},
      {"curvature.sigma", K::Number, 0.01, "avgsharp: std of the isotropic perturbation.", {}, 0, kInf},
      {"curvature.mc_samples", K::Int, 32, "avgsharp: antithetic perturbation pairs.", {}, 1, 1 << 20},
      {"curvature.sam_rho", K::Number, 0.05, "samsharp: radius rho of the perturbation ball.", {}, 0, kInf},
      {"curvature.sam_steps", K::Int, 5, "samsharp: projected gradient-ascent steps.", {}, 0, 1 << 16},
      {"curvature.workers", K::Bool, false, "Also measure every worker's own model, with the estimators of curvature.what that apply to one model: trace (with its standard error) and the top eigenvalue (power iteration) of all workers in one batched pass; isotropic average-direction sharpness and SAM sharpness worker by worker. The metrics line gets their mean, std, min and max; worker_curvature.jsonl the per-worker arrays."},
      {"curvature.density_runs", K::Int, 8, "density: Lanczos runs (random start vectors) averaged.", {}, 1, 1 << 12},
      {"curvature.density_steps", K::Int, 64, "density: Lanczos steps per run (nodes of the quadrature), at most d.", {}, 2, 1 << 16},
      {"curvature.density_bins", K::Int, 256, "density: grid points of the smoothed density.", {}, 2, 1 << 20},
      {"curvature.density_width", K::Number, 0.01, "density: the Gaussian smoothing's standard deviation, as a fraction of the spectrum's range.", {}, 0, 1, true},
  };
}
// clang-format on

// 1048576, not 1.04858e+06.
std::string number_text(double v) {
  std::ostringstream o;
  if (v == std::floor(v) && std::fabs(v) < 1e16)
    o << static_cast<long long>(v);
  else
    o << v;
  return o.str();
}

std::string type_phrase(const KeySpec& s) {
  auto range = [&](const char* what) {
    std::ostringstream o;
    o << what;
    const bool lo = std::isfinite(s.min), hi = std::isfinite(s.max);
    if (lo && hi)
      o << " in " << (s.min_exclusive ? "(" : "[") << number_text(s.min) << ", "
        << number_text(s.max) << (s.max_exclusive ? ")" : "]");
    else if (lo)
      o << (s.min_exclusive ? " > " : " >= ") << number_text(s.min);
    else if (hi)
      o << (s.max_exclusive ? " < " : " <= ") << number_text(s.max);
    return o.str();
  };
  switch (s.type) {
    case KeyType::Int:
      return range("an integer");
    case KeyType::Number:
      return range("a number");
    case KeyType::Bool:
      return "true or false";
    case KeyType::String:
      return "a string";
    case KeyType::Choice: {
      std::string o = "one of";
      for (size_t i = 0; i < s.choices.size(); ++i) o += (i ? ", \"" : " \"") + s.choices[i] + "\"";
      return o;
    }
    case KeyType::ChoiceList: {
      std::string o = "a list of";
      for (size_t i = 0; i < s.choices.size(); ++i) o += (i ? ", \"" : " \"") + s.choices[i] + "\"";
      return o;
    }
    case KeyType::IntList:
      return "a list of integers, each " + range("");
    case KeyType::NumberList:
      return "a list of numbers, each " + range("");
    case KeyType::Json:
      return "JSON";
  }
  return "?";
}

bool in_range(const KeySpec& s, double v) {
  if (!std::isfinite(v)) return false;
  if (s.min_exclusive ? v <= s.min : v < s.min) return false;
  if (s.max_exclusive ? v >= s.max : v > s.max) return false;
  return true;
}

bool is_integer(const json& v) {
  if (v.is_number_integer()) return true;
  if (v.is_number_float()) {
    const double d = v.get<double>();
    return std::isfinite(d) && d == std::floor(d) && std::fabs(d) < 9.2e18;
  }
  return false;
}

bool scalar_ok(const KeySpec& s, KeyType t, const json& v) {
  if (t == KeyType::Int) return is_integer(v) && in_range(s, v.get<double>());
  return v.is_number() && in_range(s, v.get<double>());
}

size_t edit_distance(const std::string& a, const std::string& b) {
  std::vector<size_t> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    size_t diag = row[0];
    row[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      const size_t up = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diag + (a[i - 1] == b[j - 1] ? 0 : 1)});
      diag = up;
    }
  }
  return row[b.size()];
}

std::string leaf(const std::string& path) {
  const auto dot = path.rfind('.');
  return dot == std::string::npos ? path : path.substr(dot + 1);
}
}  // namespace

const std::vector<KeySpec>& config_schema() {
  static const std::vector<KeySpec> schema = build_schema();
  return schema;
}

const KeySpec* find_key(const std::string& path) {
  for (const auto& k : config_schema())
    if (k.path == path) return &k;
  return nullptr;
}

void check_value(const KeySpec& s, const json& v, const std::string& source) {
  bool ok = true;
  switch (s.type) {
    case KeyType::Int:
    case KeyType::Number:
      ok = scalar_ok(s, s.type, v);
      break;
    case KeyType::Bool:
      ok = v.is_boolean();
      break;
    case KeyType::String:
      ok = v.is_string();
      break;
    case KeyType::Choice:
      ok = v.is_string() &&
           std::find(s.choices.begin(), s.choices.end(), v.get<std::string>()) != s.choices.end();
      break;
    case KeyType::ChoiceList:
      ok = v.is_array() && std::all_of(v.begin(), v.end(), [&](const json& e) {
             return e.is_string() && std::find(s.choices.begin(), s.choices.end(),
                                               e.get<std::string>()) != s.choices.end();
           });
      break;
    case KeyType::IntList:
    case KeyType::NumberList: {
      const KeyType elem = s.type == KeyType::IntList ? KeyType::Int : KeyType::Number;
      ok = v.is_array() &&
           std::all_of(v.begin(), v.end(), [&](const json& e) { return scalar_ok(s, elem, e); });
      break;
    }
    case KeyType::Json:
      ok = true;
      break;
  }
  if (!ok)
    throw config_error(source + ": " + s.path + ": expected " + type_phrase(s) + ", found " +
                       v.dump());
}

std::string closest_key(const std::string& unknown) {
  // Candidates: every key and every section ("optimizer" for "optimiser").
  std::vector<std::string> candidates;
  for (const auto& k : config_schema())
    for (size_t dot = k.path.find('.');; dot = k.path.find('.', dot + 1)) {
      candidates.push_back(k.path.substr(0, dot));
      if (dot == std::string::npos) break;
    }
  std::string best;
  size_t best_d = std::string::npos;
  for (const auto& c : candidates) {
    // Compare whole paths, and leaves too (a right name in the wrong section).
    const size_t d = std::min(edit_distance(unknown, c), edit_distance(leaf(unknown), leaf(c)) + 1);
    if (d < best_d) {
      best_d = d;
      best = c;
    }
  }
  return best_d <= std::max<size_t>(2, leaf(unknown).size() / 3) ? best : std::string();
}

std::string config_reference_markdown() {
  std::ostringstream o;
  o << "# gossamer run config reference\n\n"
       "Generated by `gossamer config-reference` from the schema in host/config_schema.cpp.\n"
       "A config is one JSON object; nested keys are written here as dotted paths and can be\n"
       "overridden with `--set path=value` (value parsed as JSON, else taken as a string).\n"
       "Unknown keys are errors. The resolved config (defaults filled in) is written to\n"
       "RUN_DIR/config.json.\n\n"
       "| key | type | default | meaning |\n| --- | --- | --- | --- |\n";
  for (const auto& k : config_schema())
    o << "| `" << k.path << "` | " << type_phrase(k) << " | `" << k.default_value.dump() << "` | "
      << k.doc << " |\n";
  return o.str();
}

}  // namespace gossamer
