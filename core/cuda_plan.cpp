#include "gossamer/cuda_plan.hpp"

#include <algorithm>
#include <cstdio>
#include <string>

#include "gossamer/conv_index.hpp"
#include "gossamer/error.hpp"

namespace gossamer {
namespace {

constexpr int64_t kFloat = 4;
// The (model, row) pairs of one evaluation or curvature pass: at least the training step's
// own, so evaluating costs no more memory than training.
constexpr int64_t kMinEvalCapacity = 16384;
// A CNN's evaluation and curvature passes: their buffers stay under kCnnEvalBytes unless one
// pass of kMinCnnEvalCapacity pairs needs more.
constexpr int64_t kCnnEvalBytes = int64_t(2) << 30;
constexpr int64_t kMinCnnEvalCapacity = 256;

std::string gib(int64_t bytes) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.2f GiB", double(bytes) / double(int64_t(1) << 30));
  return buf;
}

}  // namespace

CnnPaths cnn_paths_without(const std::string& names, const std::string& flag) {
  if (names == "all") return CnnPaths::general();
  if (names.empty()) return CnnPaths::defaults();
  CnnPaths paths;
  if (names == "none") return paths;
  std::string known;
  for (const CnnPathSwitch& s : kCnnPathSwitches)
    known += std::string(known.empty() ? "" : ", ") + s.name;
  size_t at = 0;
  while (at <= names.size()) {
    const size_t end = std::min(names.find(',', at), names.size());
    const std::string name = names.substr(at, end - at);
    const auto s = std::find_if(kCnnPathSwitches.begin(), kCnnPathSwitches.end(),
                                [&](const CnnPathSwitch& k) { return name == k.name; });
    if (s == kCnnPathSwitches.end())
      throw config_error(flag + " " + names + ": unknown CNN path '" + name +
                         "'; expected \"all\" or a comma-separated list of " + known);
    paths.*(s->on) = false;
    at = end + 1;
  }
  return paths;
}

std::string cnn_paths_off(const CnnPaths& paths) {
  std::string off;
  size_t count = 0;
  for (const CnnPathSwitch& s : kCnnPathSwitches)
    if (!(paths.*(s.on))) off += std::string(count++ ? "," : "") + s.name;
  return count == 0 ? "none" : count == kCnnPathSwitches.size() ? "all" : off;
}

int64_t mlp_workspace_bytes(const ModelSpec& model, int64_t capacity, bool with_r) {
  const int layers = int(model.layers.size());
  int64_t floats = 0, widest_hidden = 0;
  for (int l = 0; l < layers; ++l)
    floats += (l + 1 < layers ? 2 : 1) * int64_t(model.layers[l].out);
  for (int h : model.hidden) widest_hidden = std::max<int64_t>(widest_hidden, h);
  floats += 2 * widest_hidden;
  if (with_r) floats *= 2;
  return capacity * (floats * kFloat + kFloat + 1);
}

namespace {

// A 2 x 2 pool (stride 2): its backward covers its input only where both sides are even.
bool window_pool(CnnNode::Op op) {
  return op == CnnNode::Op::MaxPool || op == CnnNode::Op::AvgPool;
}

// How many nodes read each node's output.
std::vector<int> cnn_readers(const ModelSpec& model) {
  std::vector<int> readers(model.nodes.size(), 0);
  for (const CnnNode& node : model.nodes)
    for (const int j : {node.input, node.op == CnnNode::Op::Add ? node.other : -1})
      if (j >= 0) ++readers[size_t(j)];
  return readers;
}

}  // namespace

std::vector<bool> cnn_gradient_stored(const ModelSpec& model) {
  const size_t n = model.nodes.size();
  const std::vector<int> readers = cnn_readers(model);
  std::vector<bool> whole(n, false);  // the one reader's backward writes all of the gradient
  for (const CnnNode& node : model.nodes) {
    for (const int j : {node.input, node.op == CnnNode::Op::Add ? node.other : -1}) {
      if (j < 0) continue;
      const CnnNode& in = model.nodes[size_t(j)];
      whole[size_t(j)] = !window_pool(node.op) || (in.h % 2 == 0 && in.w % 2 == 0);
    }
  }
  std::vector<bool> stored(n);
  for (size_t j = 0; j < n; ++j) stored[j] = readers[j] == 1 && whole[j];
  return stored;
}

CnnFusions cnn_fusions(const ModelSpec& model, const CnnPaths& paths) {
  const size_t n = model.nodes.size();
  const std::vector<bool> stored = cnn_gradient_stored(model);
  CnnFusions f;
  f.act_in_conv.assign(n, false);
  f.act_in_pool.assign(n, false);
  f.act_from_output.assign(n, false);
  f.weight_grad_through_pool.assign(n, -1);
  if (!paths.fused_acts) return f;
  for (size_t i = 0; i < n; ++i) {
    const CnnNode& node = model.nodes[i];
    const int j = node.input;
    if (j < 0) continue;
    const CnnNode& in = model.nodes[size_t(j)];
    if (node.op == CnnNode::Op::Act && size_t(j) + 1 == i && in.op == CnnNode::Op::Conv &&
        paths.small_convs && few_columns(in.conv))
      f.act_in_conv[i] = true;  // the node right after the convolution: one per convolution
    // The pool writes the activation's input gradient whole: stored[j] as a property of the
    // network (one reader, covered whole), whether or not stored_grads is on.
    if (window_pool(node.op) && in.op == CnnNode::Op::Act && in.input >= 0 && stored[size_t(j)])
      f.act_in_pool[size_t(j)] = true;
  }
  const std::vector<int> readers = cnn_readers(model);
  for (size_t i = 0; i < n; ++i)
    f.act_from_output[i] = f.act_in_conv[i] && f.act_in_pool[i] &&
                           derivatives_from_output(model.activation) &&
                           readers[size_t(model.nodes[i].input)] == 1;
  if (!paths.grad_through_pool) return f;
  // A pool reading such an activation, of a convolution on the image.
  for (size_t p = 0; p < n; ++p) {
    const int j = model.nodes[p].input;
    if (!window_pool(model.nodes[p].op) || j < 0 || !f.act_from_output[size_t(j)]) continue;
    const int z = model.nodes[size_t(j)].input;
    if (model.nodes[size_t(z)].input < 0) f.weight_grad_through_pool[size_t(z)] = int(p);
  }
  return f;
}

CnnPairSizes cnn_pair_sizes(const ModelSpec& model, const CnnPaths& paths) {
  const size_t n = model.nodes.size();
  const CnnFusions f = cnn_fusions(model, paths);
  const std::vector<bool>& from_output = f.act_from_output;
  CnnPairSizes z;
  z.image = int64_t(model.image_c) * model.image_h * model.image_w;
  z.logits = model.classes;
  const auto col_of = [](const ConvShape& s) {
    return s.w_offset < 0 ? 0 : int64_t(s.cin) * s.kh * s.kw * s.out_h * s.out_w;
  };
  // act_from_output[i]: the activation i's convolution (its input) writes only the activation,
  // and the max pool reading it finds its choices again in the activation's output.
  const auto unwritten = [&](size_t i) { return i + 1 < n && from_output[i + 1]; };
  z.col_at.assign(n, -1);
  std::vector<size_t> small;  // small_convs' convolutions of few columns with an input node
  for (size_t i = 0; i < n; ++i) {
    const CnnNode& node = model.nodes[i];
    const int64_t chw = int64_t(node.c) * node.h * node.w;
    const bool gn = node.op == CnnNode::Op::GroupNorm;
    const bool choices_found = node.input >= 0 && from_output[size_t(node.input)];
    z.node.push_back(chw);
    z.value.push_back(unwritten(i) ? 0 : chw);
    z.grad_r.push_back(f.act_in_pool[i] ? 0 : chw);
    z.grad.push_back(f.weight_grad_through_pool[i] >= 0 ? 0 : z.grad_r.back());
    z.normed.push_back(gn ? chw : 0);
    z.stats.push_back(gn ? 2 * int64_t(node.groups) : 0);
    z.arg.push_back(node.op == CnnNode::Op::MaxPool && !choices_found ? chw : 0);
    if ((node.op != CnnNode::Op::Conv && node.op != CnnNode::Op::Add) || col_of(node.conv) == 0)
      continue;
    const int input = node.op == CnnNode::Op::Add ? node.other : node.input;
    if (paths.small_convs && few_columns(node.conv)) {       // gathered: no columns but W^T dY's
      z.partials = 2 * kSmallGradBlocks * (kSmallConv + 1);  // the weight gradient's partial sums
      if (input >= 0) small.push_back(i);  // its input gradient's W^T dY: one shared buffer
    } else if (paths.kept_columns) {       // each convolution's own, kept for the backward
      z.col_at[i] = z.col;
      z.col += col_of(node.conv);
    } else {  // one buffer of the largest columns, recomputed in the backward pass
      z.col_at[i] = 0;
      z.col = std::max(z.col, col_of(node.conv));
    }
  }
  // The small ones' W^T dY: one buffer of the largest, after the kept columns, or (recomputed
  // columns) the one buffer they share.
  int64_t shared = 0;
  for (const size_t i : small) shared = std::max(shared, col_of(model.nodes[i].conv));
  for (const size_t i : small) z.col_at[i] = paths.kept_columns ? z.col : 0;
  z.col = paths.kept_columns ? z.col + shared : std::max(z.col, shared);
  return z;
}

namespace {

// The bytes of one (model, row) pair's buffers.
int64_t cnn_bytes_a_pair(const CnnPairSizes& z, bool with_r) {
  const int64_t twins = with_r ? 2 : 1;
  int64_t floats = z.image + twins * (z.col + z.logits), ints = 0;
  for (size_t i = 0; i < z.node.size(); ++i) {
    // y, dy and (with R) R{y}, R{dy}; x^ and R{x^}; the GroupNorm's sigmas.
    floats += z.value[i] + (with_r ? 2 * z.grad_r[i] + z.node[i] : z.grad[i]) +
              twins * z.normed[i] + z.stats[i];
    ints += z.arg[i];
  }
  return (floats + ints) * kFloat + kFloat + 1;
}

}  // namespace

int64_t cnn_workspace_bytes(const ModelSpec& model, int64_t capacity, bool with_r,
                            const CnnPaths& paths) {
  const CnnPairSizes z = cnn_pair_sizes(model, paths);
  return capacity * cnn_bytes_a_pair(z, with_r) + z.partials * 8;
}

int64_t net_workspace_bytes(const ModelSpec& model, int64_t capacity, bool with_r,
                            const CnnPaths& cnn_paths) {
  return model.kind == ModelKind::Cnn ? cnn_workspace_bytes(model, capacity, with_r, cnn_paths)
                                      : mlp_workspace_bytes(model, capacity, with_r);
}

PassShape pass_shape(int64_t models, int64_t rows, int64_t capacity) {
  if (models <= 0 || rows <= 0 || capacity <= 0) return {0, 0};
  PassShape s;
  s.rows = int(std::min(rows, std::max<int64_t>(1, capacity / models)));
  s.models = int(std::min(models, std::max<int64_t>(1, capacity / s.rows)));
  return s;
}

GossipGrid gossip_grid(int64_t m, int64_t ld, int block) {
  if (ld % 4 != 0)
    throw runtime_error("gossip_update: rows of " + std::to_string(ld) +
                        " floats are not whole float4 groups (pad to row_stride)");
  GossipGrid g;
  g.rows = m;
  g.groups_per_row = ld / 4;
  g.tiles = (g.groups_per_row + block - 1) / block;
  if (g.tiles > 65535)
    throw runtime_error("gossip_update: rows of " + std::to_string(ld) +
                        " floats exceed 65535 tiles of " + std::to_string(4 * block) + " floats");
  return g;
}

CudaPlanInput cuda_plan_input(const BackendSetup& s) {
  CudaPlanInput in;
  in.model = s.model;
  in.workers = s.workers;
  in.batch = s.batch;
  in.train_rows = s.data->train.n;
  in.test_rows = s.data->test.n;
  in.momentum = s.optimizer.momentum > 0;
  in.perturb = s.perturbs;
  return in;
}

CudaPlan plan_cuda_memory(const CudaPlanInput& in) {
  const ModelSpec& model = *in.model;
  CudaPlan p;
  p.row_stride = row_stride(model.dim, int(kFloat));
  const int64_t m = in.workers, rows = int64_t(in.workers) * in.batch, ld = p.row_stride;
  const int64_t matrix = m * ld * kFloat;
  p.parts.push_back({"W, its ping-pong twin and the gradients (3 x m x ld floats)", 3 * matrix,
                     "workers or the model width"});
  if (in.momentum)
    p.parts.push_back({"momentum and its ping-pong twin (2 x m x ld floats)", 2 * matrix,
                       "workers or the model width"});
  if (in.perturb)
    p.parts.push_back(
        {"saved copy of W and the perturbation for perturbed passes (2 x m x ld floats)",
         2 * matrix, "workers or the model width"});
  p.parts.push_back({"training and test sets on the device",
                     (in.train_rows + in.test_rows) * (int64_t(model.input) * kFloat + 4) +
                         in.train_rows * 8 + (m + 1) * 8,
                     "data.train_samples / data.test_samples"});
  p.parts.push_back({"minibatches (indices, rows, labels)",
                     rows * (8 + int64_t(model.input) * kFloat + 4), "the per-worker batch"});
  p.parts.push_back({"training activations (m x batch rows)",
                     net_workspace_bytes(model, rows, false, in.cnn_paths),
                     "the per-worker batch or workers"});
  // A CNN's (model, row) pair holds every layer's image (and its im2col columns): its passes
  // take as many pairs as fit in kCnnEvalBytes, at least kMinCnnEvalCapacity.
  p.eval_capacity =
      model.kind == ModelKind::Cnn
          ? std::clamp(kCnnEvalBytes / cnn_bytes_a_pair(cnn_pair_sizes(model, in.cnn_paths), true),
                       kMinCnnEvalCapacity, kMinEvalCapacity)
          : std::max(rows, kMinEvalCapacity);
  p.parts.push_back({"evaluation and curvature activations, with R-operator twins",
                     net_workspace_bytes(model, p.eval_capacity, true, in.cnn_paths),
                     model.kind == ModelKind::Cnn
                         ? "nothing (a CNN's passes take what fits in " + gib(kCnnEvalBytes) +
                               ", at least " + std::to_string(kMinCnnEvalCapacity) +
                               " (model, row) pairs)"
                         : "the per-worker batch or workers"});
  p.parts.push_back({"reductions (means in float and double)", ld * (kFloat + 8) * 2 + (1 << 16),
                     "the model width"});
  p.parts.push_back({"cuBLAS workspaces (" + std::to_string(kCublasHandles) + " x 32 MiB)",
                     kCublasHandles * kCublasWorkspaceBytes, "nothing (a fixed size)"});
  return p;
}

int64_t CudaPlan::total() const {
  int64_t sum = 0;
  for (const auto& part : parts) sum += part.bytes;
  return sum;
}

std::string CudaPlan::table() const {
  std::vector<MemoryPart> sorted = parts;
  std::stable_sort(sorted.begin(), sorted.end(),
                   [](const MemoryPart& a, const MemoryPart& b) { return a.bytes > b.bytes; });
  std::string out;
  for (const auto& part : sorted) out += "  " + gib(part.bytes) + "  " + part.name + "\n";
  return out;
}

int largest_fitting_workers(CudaPlanInput in, int64_t bytes) {
  return largest_fitting_workers(std::vector<CudaPlanInput>{in}, bytes);
}

int largest_fitting_workers(std::vector<CudaPlanInput> in, int64_t bytes) {
  const auto fits = [&](int m) {
    int64_t total = kCudaHeadroom;
    for (auto& backend : in) {
      backend.workers = m;
      total += plan_cuda_memory(backend).total();
    }
    return total <= bytes;
  };
  if (!fits(1)) return 0;
  int lo = 1, hi = 2;  // fits(lo), and hi is the first power of two that does not (or the cap)
  while (hi < (1 << 30) && fits(hi)) lo = hi, hi *= 2;
  if (hi >= (1 << 30) && fits(hi)) return hi;
  while (hi - lo > 1) {
    const int mid = lo + (hi - lo) / 2;
    (fits(mid) ? lo : hi) = mid;
  }
  return lo;
}

int64_t parse_memory_size(const std::string& text) {
  size_t used = 0;
  double value = 0;
  try {
    value = std::stod(text, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  std::string unit = text.substr(used);
  unit.erase(0, unit.find_first_not_of(' '));
  // clang-format off
  const std::pair<const char*, double> units[] = {
      {"", 1}, {"B", 1}, {"KiB", 1024.0}, {"MiB", 1048576.0}, {"GiB", 1073741824.0},
      {"G", 1073741824.0}, {"TiB", 1099511627776.0}, {"GB", 1e9}, {"MB", 1e6}};
  // clang-format on
  for (const auto& [name, scale] : units)
    if (used > 0 && unit == name && value > 0 && value * scale < 9e18)
      return int64_t(value * scale);
  throw config_error(
      "--fit " + text +
      ": expected a memory size such as 80GiB, 141GiB or 81920MiB (GiB = 2^30 bytes)");
}

void check_plan_fits(const CudaPlan& plan, int64_t free_bytes, const std::string& device) {
  const int64_t need = plan.total() + kCudaHeadroom;
  if (need <= free_bytes) return;
  const MemoryPart* largest = &plan.parts.front();
  for (const auto& part : plan.parts)
    if (part.bytes > largest->bytes) largest = &part;
  throw runtime_error("the CUDA backend needs " + gib(need) + " of device memory (" +
                      gib(plan.total()) + " of buffers + " + gib(kCudaHeadroom) +
                      " headroom) but " + device + " has " + gib(free_bytes) +
                      " free; the largest part is " + largest->name + ": lower " + largest->knob +
                      ". The plan:\n" + plan.table());
}

}  // namespace gossamer
