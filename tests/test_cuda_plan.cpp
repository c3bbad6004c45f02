// The CUDA backend's memory plan and pass shapes: arithmetic checked by hand, no GPU needed.
#include <gtest/gtest.h>

#include <algorithm>
#include <fstream>
#include <string>

#include "gossamer/backend.hpp"
#include "gossamer/cuda.hpp"
#include "gossamer/cuda_plan.hpp"
#include "gossamer/devices.hpp"
#include "gossamer/error.hpp"
#include "helpers.hpp"

using namespace gossamer;

namespace {

const MemoryPart& part_named(const CudaPlan& p, const std::string& prefix) {
  for (const auto& part : p.parts)
    if (part.name.rfind(prefix, 0) == 0) return part;
  throw std::runtime_error("no part " + prefix);
}

CudaPlanInput input(const ModelSpec& model, int workers, int batch) {
  CudaPlanInput in;
  in.model = &model;
  in.workers = workers;
  in.batch = batch;
  in.train_rows = 60000;
  in.test_rows = 10000;
  return in;
}

}  // namespace

TEST(CudaPlanTest, MlpWorkspaceIsCountedByHand) {
  // 784-128-10: per (model, row) z,a of the hidden layer (2 x 128), z of the output (10),
  // dz and da of the widest hidden layer (2 x 128): 522 floats + the row's loss and flag.
  const ModelSpec model = ModelSpec::mlp(784, {128}, 10, Activation::Relu);
  EXPECT_EQ(mlp_workspace_bytes(model, 1, false), 522 * 4 + 4 + 1);
  EXPECT_EQ(mlp_workspace_bytes(model, 1000, true), 1000 * (2 * 522 * 4 + 4 + 1));
  // Softmax regression has no hidden layer: only the logits.
  EXPECT_EQ(mlp_workspace_bytes(ModelSpec::mlp(7, {}, 3, Activation::Relu), 2, false),
            2 * (3 * 4 + 5));
}

TEST(CudaPlanTest, CnnWorkspaceIsCountedByHand) {
  // 1 x 4 x 4 images, conv 2 (3 x 3), max pool, the classifier to 3 classes. Per (model, row):
  // the image (16), the largest im2col columns (the conv's 1 x 9 x 16 = 144; the classifier's
  // are 2 x 2 x 2 = 8), the logits (3); each node's output and gradient (conv 32, pool 8,
  // classifier 3); the pool's 8 chosen inputs (int32); the row's loss and flag.
  CnnLayerConfig conv, pool;
  conv.type = "conv", conv.channels = 2, conv.kernel = 3;
  pool.type = "maxpool";
  // On the general path (every convolution through im2col, one buffer of the largest columns):
  const ModelSpec model = ModelSpec::cnn(1, 4, 4, {conv, pool}, 3, Activation::Relu);
  const CnnPairSizes z = cnn_pair_sizes(model, CnnPaths::general());
  EXPECT_EQ(z.node, (std::vector<int64_t>{32, 8, 3}));
  EXPECT_EQ(z.value, z.node);
  EXPECT_EQ(z.arg, (std::vector<int64_t>{0, 8, 0}));
  EXPECT_EQ(z.col, 144);
  EXPECT_EQ(z.col_at, (std::vector<int64_t>{0, -1, 0}));
  EXPECT_EQ(z.partials, 0);
  const int64_t plain = 16 + 144 + 3 + 2 * (32 + 8 + 3) + 8;         // 257 four-byte values
  const int64_t with_r = 16 + 2 * (144 + 3) + 4 * (32 + 8 + 3) + 8;  // R twins of all but the image
  EXPECT_EQ(cnn_workspace_bytes(model, 1, false, CnnPaths::general()), plain * 4 + 5);
  EXPECT_EQ(net_workspace_bytes(model, 10, true, CnnPaths::general()), 10 * (with_r * 4 + 5));
  // On the fused paths both convolutions (9 and 8 columns) gather their entries from their
  // inputs: 2 x 1,024 x 33 doubles, once, for the weight gradients' partial sums, and only the
  // classifier's 8 columns for its input gradient.
  const CnnPairSizes f = cnn_pair_sizes(model);
  EXPECT_EQ(f.col, 8);
  EXPECT_EQ(f.col_at, (std::vector<int64_t>{-1, -1, 0}));
  EXPECT_EQ(f.partials, 2 * 1024 * 33);
  EXPECT_EQ(cnn_workspace_bytes(model, 10, true),
            10 * ((with_r - 2 * (144 - 8)) * 4 + 5) + f.partials * 8);
  // GroupNorm keeps x^ (and R{x^}) and sigma, R{sigma} per group.
  CnnLayerConfig gn;
  gn.type = "groupnorm", gn.groups = 2;
  const CnnPairSizes g = cnn_pair_sizes(ModelSpec::cnn(1, 4, 4, {conv, gn}, 3, Activation::Relu));
  EXPECT_EQ(g.normed, (std::vector<int64_t>{0, 32, 0}));
  EXPECT_EQ(g.stats, (std::vector<int64_t>{0, 4, 0}));
  // A CNN's evaluation passes take what fits in 2 GiB (at least 256, at most 16,384 pairs).
  const ModelSpec big = ModelSpec::cnn(1, 28, 28, {conv, pool}, 10, Activation::Relu);
  CudaPlanInput in = input(big, 16, 32);
  const CudaPlan p = plan_cuda_memory(in);
  const CnnPaths& paths = in.cnn_paths;  // the backend's default
  const int64_t a_pair =
      cnn_workspace_bytes(big, 1, true, paths) - cnn_workspace_bytes(big, 0, true, paths);
  EXPECT_EQ(p.eval_capacity, std::clamp<int64_t>((int64_t(2) << 30) / a_pair, 256, 16384));
  EXPECT_EQ(part_named(p, "evaluation").bytes,
            cnn_workspace_bytes(big, p.eval_capacity, true, paths));
  EXPECT_EQ(part_named(p, "training activations").bytes,
            cnn_workspace_bytes(big, 16 * 32, false, paths));
}

// A small convolution on the image, its ReLU and a max pool (act_from_output): the fused paths
// write neither the convolution's value nor the pool's choices nor the activation's gradient (the
// pool's backward runs through it), and without the R-operator not the convolution's gradient
// either (its weight gradient reads the pool's: weight_grad_through_pool), so none of these is
// allocated; the general path (CnnPaths::general()) keeps them all, GELU (whose derivatives need
// its input) the value and the choices. The plan follows.
TEST(CudaPlanTest, CnnBuffersNobodyWritesAreNotPlanned) {
  CnnLayerConfig conv, act, pool;
  conv.type = "conv", conv.channels = 2, conv.kernel = 3;
  act.type = "act";
  pool.type = "maxpool";
  const ModelSpec relu = ModelSpec::cnn(1, 4, 4, {conv, act, pool}, 3, Activation::Relu);
  const CnnPairSizes fused = cnn_pair_sizes(relu),
                     general = cnn_pair_sizes(relu, CnnPaths::general());
  EXPECT_EQ(fused.node, (std::vector<int64_t>{32, 32, 8, 3}));
  EXPECT_EQ(fused.value, (std::vector<int64_t>{0, 32, 8, 3}));
  EXPECT_EQ(fused.grad, (std::vector<int64_t>{0, 0, 8, 3}));
  EXPECT_EQ(fused.grad_r, (std::vector<int64_t>{32, 0, 8, 3}));
  EXPECT_EQ(fused.arg, (std::vector<int64_t>{0, 0, 0, 0}));
  for (const auto* v : {&general.value, &general.grad, &general.grad_r})
    EXPECT_EQ(*v, general.node);
  EXPECT_EQ(general.arg, (std::vector<int64_t>{0, 0, 8, 0}));
  const ModelSpec gelu = ModelSpec::cnn(1, 4, 4, {conv, act, pool}, 3, Activation::Gelu);
  EXPECT_EQ(cnn_pair_sizes(gelu).value, general.value);
  EXPECT_EQ(cnn_pair_sizes(gelu).arg, general.arg);
  EXPECT_EQ(cnn_pair_sizes(gelu).grad, fused.grad_r);  // the activation's gradient only
  // A pair: the convolution's value (32 floats), the choices (8 int32), the activation's gradient
  // (32; with R its R twin too), without R the convolution's gradient (32), and the general
  // path's columns (144, with R their twin) for the fused paths' classifier's 8; then the fused
  // paths' partial sums, once.
  for (bool with_r : {false, true})
    EXPECT_EQ(cnn_workspace_bytes(relu, 10, with_r, CnnPaths::general()) -
                  cnn_workspace_bytes(relu, 10, with_r),
              10 * (32 + 8 + 2 * 32 + (with_r ? 2 : 1) * (144 - 8)) * 4 - fused.partials * 8);
  CudaPlanInput in = input(relu, 16, 32);
  in.cnn_paths = CnnPaths{};  // every path on
  const int64_t fused_train = part_named(plan_cuda_memory(in), "training activations").bytes;
  in.cnn_paths = CnnPaths::general();
  EXPECT_EQ(part_named(plan_cuda_memory(in), "training activations").bytes - fused_train,
            16 * 32 * (32 + 8 + 2 * 32 + 144 - 8) * 4 - fused.partials * 8);
}

// Convolutions of many columns keep theirs from the forward pass on the fused paths, side by side
// (col_at, in units of the capacity); the general path recomputes them in one buffer of the
// largest. 1 x 4 x 4 images: conv 4 (9 columns: gathered), conv 8 (36 x 16 = 576 a pair), conv 8
// (72 x 16 = 1,152), the classifier (8 x 16 = 128).
TEST(CudaPlanTest, CnnColumnsAreKeptOnTheFusedPaths) {
  const ModelSpec model = ModelSpec::cnn(
      1, 4, 4,
      {test_util::layer("conv", 4), test_util::layer("conv", 8), test_util::layer("conv", 8)}, 3,
      Activation::Relu);
  const CnnPaths general = CnnPaths::general();
  const CnnPairSizes fused = cnn_pair_sizes(model), recomputed = cnn_pair_sizes(model, general);
  EXPECT_EQ(fused.col_at, (std::vector<int64_t>{-1, 0, 576, 1728}));
  EXPECT_EQ(fused.col, 576 + 1152 + 128);
  EXPECT_EQ(recomputed.col_at, (std::vector<int64_t>{0, 0, 0, 0}));
  EXPECT_EQ(recomputed.col, 1152);
  // The difference in bytes: the columns (and their R twins) and the partial sums.
  for (bool with_r : {false, true})
    EXPECT_EQ(
        cnn_workspace_bytes(model, 10, with_r) - cnn_workspace_bytes(model, 10, with_r, general),
        10 * (with_r ? 2 : 1) * (1856 - 1152) * 4 + fused.partials * 8);
  // Each switch alone: without kept_columns the GEMM convolutions share one buffer of the
  // largest; without small_convs the first convolution has columns too
  // (9 x 16 = 144 a pair), kept beside the others, and no partial sums.
  CnnPaths no_kept, no_small;
  no_kept.kept_columns = false, no_small.small_convs = false;
  EXPECT_EQ(cnn_pair_sizes(model, no_kept).col_at, (std::vector<int64_t>{-1, 0, 0, 0}));
  EXPECT_EQ(cnn_pair_sizes(model, no_kept).col, 1152);
  EXPECT_EQ(cnn_pair_sizes(model, no_kept).partials, fused.partials);
  EXPECT_EQ(cnn_pair_sizes(model, no_small).col_at, (std::vector<int64_t>{0, 144, 720, 1872}));
  EXPECT_EQ(cnn_pair_sizes(model, no_small).col, 144 + 576 + 1152 + 128);
  EXPECT_EQ(cnn_pair_sizes(model, no_small).partials, 0);
}

// --cnn-off's names: each switch alone, several, "all" (the general path), "none" (all on) and
// nothing (the backend's default, small_convs off); an unknown name is a config error that names
// the flag, the name and the known ones; cnn_paths_off says which are off in the same words.
TEST(CudaPlanTest, CnnPathsByName) {
  for (const CnnPathSwitch& s : kCnnPathSwitches) {
    const CnnPaths p = cnn_paths_without(s.name, "--cnn-off");
    for (const CnnPathSwitch& t : kCnnPathSwitches) EXPECT_EQ(p.*(t.on), &s == &t ? false : true);
    EXPECT_EQ(cnn_paths_off(p), s.name);
  }
  const CnnPaths two = cnn_paths_without("kept_columns,small_convs", "--cnn-off");
  EXPECT_FALSE(two.kept_columns);
  EXPECT_FALSE(two.small_convs);
  EXPECT_TRUE(two.stored_grads && two.fused_acts && two.grad_through_pool);
  EXPECT_EQ(cnn_paths_off(two), "small_convs,kept_columns");
  const CnnPaths all = cnn_paths_without("all", "--cnn-off");
  EXPECT_EQ(cnn_paths_off(all), "all");
  EXPECT_FALSE(all.small_convs || all.stored_grads || all.fused_acts || all.grad_through_pool ||
               all.kept_columns);
  EXPECT_EQ(cnn_paths_off(cnn_paths_without("none", "--cnn-off")), "none");
  EXPECT_EQ(cnn_paths_off(CnnPaths{}), "none");
  // The default: every path but small_convs (CnnPaths::defaults(): its measurement), for the
  // backend and its plan alike.
  EXPECT_EQ(cnn_paths_off(cnn_paths_without("", "--cnn-off")), "small_convs");
  EXPECT_EQ(cnn_paths_off(CnnPaths::defaults()), "small_convs");
  EXPECT_EQ(cnn_paths_off(CudaPlanInput{}.cnn_paths), "small_convs");
  EXPECT_EQ(cnn_paths_off(CudaOptions{}.cnn_paths), "small_convs");
  try {
    cnn_paths_without("kept_columns,im2col", "--cnn-off");
    ADD_FAILURE() << "an unknown path was accepted";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::Config);
    const std::string what = e.what();
    for (const char* part : {"--cnn-off", "'im2col'", "all", "small_convs", "kept_columns"})
      EXPECT_NE(what.find(part), std::string::npos) << what;
  }
  EXPECT_THROW(cnn_paths_without("kept_columns,", "--cnn-off"), Error);  // an empty name
}

// bench/gpu-check.sh's paths step times every path on ("none"), then each switch alone off, by
// name: the same names, in the same order (a renamed switch would otherwise cost a GPU visit's
// step an exit 2).
TEST(CudaPlanTest, TheGpuCheckTimesEveryCnnPath) {
  std::ifstream in(std::string(GOSSAMER_SOURCE_DIR) + "/bench/gpu-check.sh");
  ASSERT_TRUE(in) << "bench/gpu-check.sh not found";
  std::string line, names;
  bool in_step = false;
  while (std::getline(in, line)) {
    if (line.rfind("if want paths", 0) == 0) in_step = true;
    const size_t at = line.find("for p in ");
    if (in_step && at != std::string::npos) {
      names = line.substr(at + 9, line.find(';', at) - at - 9);
      break;
    }
  }
  std::string expected = "none";
  for (const CnnPathSwitch& s : kCnnPathSwitches) expected += std::string(" ") + s.name;
  EXPECT_EQ(names, expected);
}

TEST(CudaPlanTest, PerWorkerStateScalesWithWorkersAndPaddedRows) {
  const ModelSpec model = ModelSpec::mlp(784, {128}, 10, Activation::Relu);  // d = 101770
  CudaPlanInput in = input(model, 1024, 32);
  const CudaPlan plain = plan_cuda_memory(in);
  EXPECT_EQ(plain.row_stride, 101824);  // d rounded up to 64 floats (256 bytes)
  EXPECT_EQ(part_named(plain, "W,").bytes, 3LL * 1024 * 101824 * 4);
  EXPECT_THROW(part_named(plain, "momentum"), std::runtime_error);
  in.momentum = true;
  in.perturb = true;
  const CudaPlan full = plan_cuda_memory(in);
  EXPECT_EQ(part_named(full, "momentum").bytes, 2LL * 1024 * 101824 * 4);
  EXPECT_EQ(part_named(full, "saved").bytes, 2LL * 1024 * 101824 * 4);
  EXPECT_EQ(full.total() - plain.total(), 4LL * 1024 * 101824 * 4);
  EXPECT_EQ(part_named(full, "training activations").bytes,
            mlp_workspace_bytes(model, 1024 * 32, false));
  EXPECT_EQ(full.eval_capacity, 1024 * 32);  // at least the training step's own pairs
}

TEST(CudaPlanTest, TooBigAPlanNamesTheNeedTheFreeMemoryAndTheKnob) {
  const ModelSpec model = ModelSpec::mlp(784, {128}, 10, Activation::Relu);
  const CudaPlan plan = plan_cuda_memory(input(model, 4096, 32));
  EXPECT_NO_THROW(check_plan_fits(plan, plan.total() + kCudaHeadroom, "GPU"));
  try {
    check_plan_fits(plan, plan.total(), "NVIDIA H100 80GB HBM3");
    FAIL() << "expected an error";
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("needs"), std::string::npos) << msg;
    EXPECT_NE(msg.find("free"), std::string::npos) << msg;
    EXPECT_NE(msg.find("NVIDIA H100"), std::string::npos) << msg;
    EXPECT_NE(msg.find("lower workers"), std::string::npos) << msg;  // W dominates here
  }
  // A huge batch on a small model: the activations dominate, and the batch is the knob.
  const ModelSpec wide = ModelSpec::mlp(784, {4096}, 10, Activation::Relu);
  const CudaPlan act = plan_cuda_memory(input(wide, 2, 100000));
  try {
    check_plan_fits(act, 0, "GPU");
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("per-worker batch"), std::string::npos) << e.what();
  }
}

TEST(CudaPlanTest, PassesCoverEveryPairOnceWithinCapacity) {
  struct Case {
    int64_t models, rows, capacity;
  };
  for (const Case& c : {Case{16, 10000, 16384}, Case{1, 10000, 16384}, Case{4096, 10000, 131072},
                        Case{20000, 7, 16384}, Case{3, 5, 1}, Case{7, 1, 100}}) {
    const PassShape s = pass_shape(c.models, c.rows, c.capacity);
    ASSERT_GE(s.models, 1);
    ASSERT_GE(s.rows, 1);
    EXPECT_LE(int64_t(s.models) * s.rows, std::max<int64_t>(c.capacity, 1))
        << c.models << " x " << c.rows;
    EXPECT_LE(s.models, c.models);
    EXPECT_LE(s.rows, c.rows);
    // Covering loops as the backend runs them visit each (model, row) once.
    int64_t covered = 0;
    for (int64_t k0 = 0; k0 < c.models; k0 += s.models)
      for (int64_t r0 = 0; r0 < c.rows; r0 += s.rows)
        covered +=
            std::min<int64_t>(s.models, c.models - k0) * std::min<int64_t>(s.rows, c.rows - r0);
    EXPECT_EQ(covered, c.models * c.rows);
  }
  // All models at once when they fit: the ensemble needs every worker's logits per row.
  EXPECT_EQ(pass_shape(16, 10000, 16384).models, 16);
  EXPECT_EQ(pass_shape(16, 10000, 16384).rows, 1024);
}

TEST(CudaPlanTest, TensorFloatMathIsRefusedOnTheCpuBackend) {
  nlohmann::json c = test_util::tiny_config();
  c["backend"] = "cpu";
  c["math"] = "tf32";
  try {
    load_config(c, {}, "run.json");
    FAIL() << "expected a config error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("run.json: math"), std::string::npos) << e.what();
  }
  c["backend"] = "auto";
  EXPECT_EQ(load_config(c, {}, "run.json").math, "tf32");
}

// auto: the first visible GPU for float32, else the CPU, saying which and why.
TEST(CudaPlanTest, AutoPicksTheGpuWhereOneIsVisibleAndSaysWhy) {
  test_util::Sim s = test_util::make_sim({}, false);
  const BackendSetup setup = backend_setup(*s);
  std::string chosen;
  const auto b = make_backend("auto", "float32", setup, &chosen);
  const bool gpu = !list_devices().devices.empty();
  EXPECT_EQ(b->name().rfind(gpu ? "cuda" : "cpu (float32)", 0), 0u) << b->name();
  EXPECT_NE(chosen.find(gpu ? "auto: GPU 0" : "auto: "), std::string::npos) << chosen;
  EXPECT_EQ(make_backend("auto", "float64", setup, &chosen)->name(), "cpu (float64)");
  if (!gpu) {
    try {
      make_backend("cuda", "float32", setup, &chosen);
      FAIL() << "expected an error without a GPU";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("--backend cuda"), std::string::npos) << e.what();
    }
  }
}

TEST(CudaPlanTest, GossipGridCoversEveryRowAndFloat4Group) {
  // Workload (a): 64 workers, d = 269322 -> ld = 269376 floats = 67344 float4 groups.
  const ModelSpec a = ModelSpec::mlp(784, {256, 256}, 10, Activation::Relu);
  const int64_t ld = row_stride(a.dim, 4);
  const GossipGrid g = gossip_grid(64, ld, 256);
  EXPECT_EQ(g.rows, 64);
  EXPECT_EQ(g.groups_per_row, ld / 4);
  EXPECT_GE(g.tiles * 256, g.groups_per_row);        // every group has a thread
  EXPECT_LT((g.tiles - 1) * 256, g.groups_per_row);  // and no tile is wholly idle
  EXPECT_EQ(gossip_grid(1, 64, 256).tiles, 1);
  EXPECT_THROW(gossip_grid(4, 66, 256), Error);                   // not whole float4 groups
  EXPECT_THROW(gossip_grid(4, 4LL * 256 * 65536, 256), Error);    // too many tiles
  EXPECT_NO_THROW(gossip_grid(1 << 20, 4LL * 256 * 65535, 256));  // many rows are fine on x
}

// plan --fit: the answer N fits with the headroom and N + 1 does not, for several memory sizes.
TEST(CudaPlanTest, TheLargestFittingWorkerCountIsExact) {
  const ModelSpec model = ModelSpec::mlp(784, {128}, 10, Activation::Relu);
  for (const char* size : {"80GiB", "141GiB", "4GiB", "16384MiB"}) {
    SCOPED_TRACE(size);
    const int64_t bytes = parse_memory_size(size);
    const int n = largest_fitting_workers(input(model, 1, 32), bytes);
    ASSERT_GT(n, 0);
    EXPECT_LE(plan_cuda_memory(input(model, n, 32)).total() + kCudaHeadroom, bytes);
    EXPECT_GT(plan_cuda_memory(input(model, n + 1, 32)).total() + kCudaHeadroom, bytes);
  }
  EXPECT_EQ(largest_fitting_workers(input(model, 1, 32), int64_t(1) << 20), 0) << "1 MiB: none";
  EXPECT_EQ(parse_memory_size("80GiB"), int64_t(80) << 30);
  EXPECT_EQ(parse_memory_size("141 GiB"), int64_t(141) << 30);
  EXPECT_EQ(parse_memory_size("1000"), 1000);
  for (const char* bad : {"", "80X", "-1GiB", "GiB", "1e300GiB"})
    EXPECT_THROW(parse_memory_size(bad), Error) << bad;
}
