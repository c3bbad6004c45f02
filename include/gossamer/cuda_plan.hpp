// The CUDA backend's memory plan and launch shapes: plain arithmetic, so it compiles and is
// tested without a GPU. The backend computes the plan before it allocates anything and stops
// at once, naming the knob to lower, when the plan does not fit in free device memory.
#pragma once
#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "gossamer/backend.hpp"
#include "gossamer/model.hpp"

namespace gossamer {

// The batched CNN's fused paths (cuda/cnn.cu), each of which can be turned off alone: to measure
// on a GPU what each one gains, and to find which one a disagreement with the general path comes
// from (the agreement tests run all on, then each one off). CnnPaths{} is every path on; the
// backend's default is defaults(); all off (general()) is the general path, the on-GPU reference:
// every convolution through im2col and cuBLAS, its columns recomputed in the backward pass, every
// gradient zeroed and then added to, no fusion.
struct CnnPaths {
  bool small_convs = true;        // convolutions of few columns (few_columns) gather their inputs
  bool stored_grads = true;       // a gradient its one reader writes whole is stored, not added to
  bool fused_acts = true;         // activations inside a neighbour's kernel (cnn_fusions)
  bool grad_through_pool = true;  // weight_grad_through_pool (needs small_convs and fused_acts)
  bool kept_columns = true;       // each convolution's columns kept from forward to backward
  static CnnPaths general() { return {false, false, false, false, false}; }
  // The CUDA backend's default (CudaOptions::cnn_paths, CudaPlanInput::cnn_paths): every path but
  // small_convs, and so without grad_through_pool, which needs it. Measured on an H200
  // (bench/results/2026-11-27-h200-baf2c59): the small convolutions' forward kernel beats im2col +
  // GEMM (2.4 against 4.8 ms at 1,024 workers), but their weight-gradient kernel, one block a
  // (model, output channel), does not (15.4 ms against 5.0 for the first layer's through its
  // pool); with small_convs off the CNN bench's step is 27.9 ms instead of 40.3 at 1,024 workers
  // and 0.98 ms instead of 0.94 at 16. With small_convs off the gradients are the general path's,
  // float for float.
  static CnnPaths defaults() {
    CnnPaths p;
    p.small_convs = false;
    return p;
  }
};
// The switches by name, for the command line, the results and the tests.
struct CnnPathSwitch {
  const char* name;
  bool CnnPaths::*on;
  const char* what;
};
inline constexpr std::array<CnnPathSwitch, 5> kCnnPathSwitches = {{
    {"small_convs", &CnnPaths::small_convs,
     "convolutions of few columns gather their inputs (no im2col, no GEMM)"},
    {"stored_grads", &CnnPaths::stored_grads,
     "a gradient its one reader writes whole is stored (not zeroed, then added to)"},
    {"fused_acts", &CnnPaths::fused_acts,
     "activations inside their convolution's forward and their pool's backward"},
    {"grad_through_pool", &CnnPaths::grad_through_pool,
     "the first convolution's weight gradient read through its pool (no pool backward)"},
    {"kept_columns", &CnnPaths::kept_columns,
     "each convolution's im2col columns kept from the forward pass for the backward"},
}};
// Every path on but the comma-separated switches of `names` ("all": the general path; "none":
// all on; empty: CnnPaths::defaults()); throws a config_error naming `flag`, the unknown name and
// the known ones.
CnnPaths cnn_paths_without(const std::string& names, const std::string& flag);
// The switches that are off, comma-separated: "none" when all are on, "all" for general().
std::string cnn_paths_off(const CnnPaths& paths);

struct CudaPlanInput {
  const ModelSpec* model = nullptr;
  int workers = 0;
  int batch = 0;  // per worker
  int64_t train_rows = 0, test_rows = 0;
  bool momentum = false;
  bool perturb = false;  // SAM / average-direction SAM / the equivalence tracker: a saved copy of W
  // CudaOptions::cnn_paths: a CNN's fused paths (cnn_pair_sizes), the backend's default too.
  CnnPaths cnn_paths = CnnPaths::defaults();
};

struct MemoryPart {
  std::string name;
  int64_t bytes = 0;
  std::string knob;  // what a user lowers to shrink it
};

struct CudaPlan {
  std::vector<MemoryPart> parts;
  int64_t row_stride = 0;     // ld: floats per padded row of W
  int64_t eval_capacity = 0;  // (model, row) pairs of one evaluation / curvature pass
  int64_t total() const;
  std::string table() const;  // one line a part, largest first
};

// Kept free beyond the plan: the CUDA context's and cuBLAS's own allocations.
inline constexpr int64_t kCudaHeadroom = int64_t(512) << 20;
// The workspace we give each cuBLAS handle (cuda/gemm.cu; 32 MiB, NVIDIA's recommendation for
// Hopper in the cuBLAS docs, cublasSetWorkspace), and the handles a backend holds (its training
// GEMMs and the curvature bases' exact FP32 ones): part of the plan.
inline constexpr int64_t kCublasWorkspaceBytes = int64_t(32) << 20;
inline constexpr int kCublasHandles = 2;

CudaPlan plan_cuda_memory(const CudaPlanInput& in);
// The plan's input for a backend setup (what the CUDA backend and `gossamer plan` both use).
CudaPlanInput cuda_plan_input(const BackendSetup& setup);
// Throws a gossamer::Error saying the need, the free memory and the knob, when the plan
// plus the headroom exceeds `free_bytes`.
void check_plan_fits(const CudaPlan& plan, int64_t free_bytes, const std::string& device);
// The most workers whose plan plus the headroom fits in `bytes` (the rest of `in` as given), 0 if
// not even one; the plan grows with the workers, so a bisection finds it.
int largest_fitting_workers(CudaPlanInput in, int64_t bytes);
// The same for a run of several backends of one shape (algorithm.track_adsam: the D-SGD run and
// its two companions), all with the same number of workers.
int largest_fitting_workers(std::vector<CudaPlanInput> in, int64_t bytes);
// "80GiB", "141 GiB", "80G", "81920MiB", "85899345920" (bytes): a memory size in bytes, or a
// config_error naming the text.
int64_t parse_memory_size(const std::string& text);

// Buffers of the batched MLP for `capacity` (model, row) pairs: per pair each layer's
// pre-activation (and activation for hidden layers), dL/dz and dL/da of the widest hidden
// layer, the row's loss (float) and correctness (byte); with_r doubles the float buffers
// (the R-operator twins).
int64_t mlp_workspace_bytes(const ModelSpec& model, int64_t capacity, bool with_r);

// The batched CNN's buffers (cuda/cnn.cu allocates exactly these) per (model, row) pair, in
// floats unless said; with the R-operator the node outputs, their gradients, x^ , the columns and
// the logits have R twins. `paths` (CudaOptions::cnn_paths): where the fused paths never write a
// node's value (a convolution whose activation takes its derivatives from its output), its
// gradient or a max pool's choices (cnn_fusions), those buffers are not allocated.
struct CnnPairSizes {
  std::vector<int64_t> node;   // each node's output c h w (the value's R twin R{y})
  std::vector<int64_t> value;  // each node's value y: c h w, or 0 where nothing writes it
  // Each node's gradient dy (c h w, or 0 where nothing writes it: an activation whose pool's
  // backward runs through it, act_in_pool; without the R-operator, a convolution whose weight
  // gradient reads its pool's, weight_grad_through_pool): without the R-operator, and with it
  // (dy and R{dy} alike).
  std::vector<int64_t> grad, grad_r;
  std::vector<int64_t> normed;  // per node: a GroupNorm's x^ (c h w), else 0
  std::vector<int64_t> stats;   // per node: a GroupNorm's sigma and R{sigma} (2 x groups), else 0
  std::vector<int64_t> arg;  // per node: a max pool's chosen inputs (int32, c h w) if kept, else 0
  int64_t image = 0;         // the input rows as [c][row][h w]
  // The im2col columns (cin kh kw oh ow a convolution): with kept_columns each convolution's
  // own, kept from the forward pass for the backward, side by side, then one buffer shared by the
  // convolutions of few columns (small_convs: they gather their entries from their input) for
  // their input gradient's W^T dY; col is the sum, col_at[i] where node i's start in units of the
  // capacity (node i's columns begin at capacity x col_at[i]). Without kept_columns, one buffer of
  // the largest, recomputed in the backward pass (col_at 0). -1: none (not a convolution, or one
  // of few columns on the image with small_convs).
  int64_t col = 0;
  std::vector<int64_t> col_at;
  int64_t logits = 0;    // classes
  int64_t partials = 0;  // doubles, once (not a pair): the small weight gradients' partial sums
};
CnnPairSizes cnn_pair_sizes(const ModelSpec& model, const CnnPaths& paths = {});
// Per node of the batched CNN's backward pass: true where one node alone reads its output and
// that node's backward writes every element of its gradient (an activation, GroupNorm, a
// convolution's col2im, a residual addition, the global average, a 2 x 2 pool of an input of even
// height and width), so the gradient is stored once instead of zeroed and then added to.
std::vector<bool> cnn_gradient_stored(const ModelSpec& model);
// Per node, the activations the batched CNN runs inside a neighbour's kernel (the same arithmetic,
// one pass over the activation's tensor less): act_in_conv, an activation whose forward the
// convolution of few columns (kc <= kSmallConv) just before it, its input, computes;
// act_in_pool, an activation whose backward the 2 x 2 pool reading it runs, where that pool is
// its one reader and writes its gradient whole (cnn_gradient_stored) and its own input is a node
// (not the image); act_from_output, an activation both in its convolution and in its pool whose
// derivatives are functions of its output (ReLU, tanh: derivatives_from_output) and whose
// convolution has no other reader: the pool's backward reads the activation's output instead of
// its input, and finds the max pool's choice again there, so that neither the convolution's output
// nor the max pool's choices are written. weight_grad_through_pool, per convolution on the image
// whose activation is act_from_output: the pool reading that activation (else -1); in passes
// without the R-operator the convolution's weight gradient finds its output gradient from the
// pool's on the fly, as the pool's backward would have stored it, and that backward does not run
// (the convolution on the image needs no input gradient). Each only where `paths` has it on:
// act_in_conv needs small_convs, the others fused_acts, weight_grad_through_pool both and its own.
struct CnnFusions {
  std::vector<bool> act_in_conv, act_in_pool, act_from_output;
  std::vector<int> weight_grad_through_pool;
};
CnnFusions cnn_fusions(const ModelSpec& model, const CnnPaths& paths = {});
int64_t cnn_workspace_bytes(const ModelSpec& model, int64_t capacity, bool with_r,
                            const CnnPaths& paths = {});
// The model's kind's: mlp_workspace_bytes or cnn_workspace_bytes.
int64_t net_workspace_bytes(const ModelSpec& model, int64_t capacity, bool with_r,
                            const CnnPaths& cnn_paths = {});

// How a job of `models` x `rows` (model, row) pairs is cut into passes of at most
// `capacity`: all rows of as many models as fit, else as many rows as fit for all models.
struct PassShape {
  int models = 0;
  int rows = 0;
};
PassShape pass_shape(int64_t models, int64_t rows, int64_t capacity);

// The fused gossip + update kernel's grid (cuda/gossip.cu): one block of `block` threads per
// (row, tile of block float4 groups); rows on x, the fastest-varying block index, so the blocks
// in flight share a column tile and neighbour rows hit L2. Throws when rows are not whole
// float4 groups or a row has more than 65535 tiles.
struct GossipGrid {
  int64_t rows = 0, tiles = 0, groups_per_row = 0;
};
GossipGrid gossip_grid(int64_t m, int64_t ld, int block);

}  // namespace gossamer
