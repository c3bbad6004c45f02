// The CUDA batched networks' own code (cuda/batched_net.cu, cnn.cu, cnn_kernels.cu, mlp.cu,
// mlp_kernels.cu, softmax_xent.cu, gemm.cu, compiled for the CPU against tests/emu: blocks in turn,
// threads as fibers, cuBLAS's GEMM in double) against the float64 CPU passes of host/cnn.cpp and
// host/mlp.cpp: logits, per-row losses, gradients and exact Hessian-vector products of several
// models at once, and the curvature's shared-point batches; the CNN with its fused paths (small
// convolutions without columns, fused activations, stored gradients, kept columns), without them,
// and with each one alone off (CnnPaths), and each net's allocation against the plan. What this
// cannot check (speed, races, cuBLAS itself) is for the GPU suites on a GPU; what it can is every
// index, flag and block reduction of those kernels, on every machine.
#include <gtest/gtest.h>

#include <atomic>
#include <cctype>
#include <chrono>
#include <cmath>
#include <iterator>
#include <thread>
#include <tuple>

#include "batched_net.cuh"
#include "capture_lock.cuh"
#include "gossamer/cuda_plan.hpp"
#include "helpers.hpp"
#include "network.hpp"

using namespace gossamer;
using namespace gossamer::test_util;

namespace {

struct Net {
  const char* name;  // the test's
  ModelSpec model;
};

// test_cuda_backend.cpp's networks on smaller images: every layer kind, both convolution paths
// (few columns and im2col + GEMM), every fusion (an activation in its convolution, in a pool's
// backward) and every case that keeps them off (an activation on the image, odd pools, a node
// with two readers).
const Net kNets[] = {
    {"TanhStrided5x5OddPool",
     ModelSpec::cnn(2, 12, 10,
                    {layer("conv", 4), layer("act"), layer("maxpool"), layer("conv", 6, 5, 2),
                     layer("act"), layer("avgpool"), layer("linear", 12), layer("act")},
                    3, Activation::Tanh)},
    {"GeluResidualGroupNorm",
     ModelSpec::cnn(2, 8, 8,
                    {layer("residual", 4), groupnorm(2), layer("residual", 4),
                     layer("residual", 8, 3, 2), layer("gap")},
                    3, Activation::Gelu)},
    {"TanhActivationOnTheImageFourPools",
     ModelSpec::cnn(1, 20, 20,
                    {layer("act"), layer("conv", 3, 1), layer("act"), layer("avgpool"),
                     groupnorm(1), layer("maxpool"), layer("maxpool"), layer("avgpool")},
                    4, Activation::Tanh)},
    {"ReluQuickstartLayers",
     ModelSpec::cnn(1, 12, 12,
                    {layer("conv", 16), layer("act"), layer("maxpool"), layer("residual", 32, 3, 2),
                     layer("linear", 32), layer("act")},
                    10, Activation::Relu)},
    // The quickstart's own 28 x 28 images: 2,352 columns of the first layer a model, which its
    // small weight gradient splits over two blocks a channel (small_grad_splits).
    {"ReluQuickstartSplitWeightGradient",
     ModelSpec::cnn(1, 28, 28,
                    {layer("conv", 4), layer("act"), layer("maxpool"), layer("residual", 8, 3, 2),
                     layer("linear", 8), layer("act")},
                    10, Activation::Relu)},
    // The first convolution's weight gradient through an average pool (weight_grad_through_pool).
    {"TanhAveragePoolFirst",
     ModelSpec::cnn(1, 8, 6, {layer("conv", 3), layer("act"), layer("avgpool"), layer("linear", 6)},
                    4, Activation::Tanh)},
    {"MlpGelu", ModelSpec::mlp(37, {19, 11}, 5, Activation::Gelu)},
};

constexpr int kModels = 3, kRows = 3;

// Three models' parameters, directions and rows in the backend's layouts (rows of W padded, the
// padding NaN so that a read past d shows), and what the CPU passes compute for each in float64.
struct Case {
  const ModelSpec& model;
  int64_t ld, features;
  std::vector<float> w, v, x;
  std::vector<int32_t> y;
  std::vector<double> logits, loss_sum, grad, hvp;  // [k][...]
  std::vector<double> shared_hvp;  // [k]: H v_k at model 0's point on model 0's rows

  explicit Case(const ModelSpec& m) : model(m), ld(row_stride(m.dim, 4)), features(m.input) {
    const std::vector<double> wd = random_normals(size_t(kModels * m.dim), 3, 1, 0.3);
    const std::vector<double> vd = random_normals(size_t(kModels * m.dim), 3, 2, 1.0);
    const std::vector<double> xd = random_normals(size_t(kModels * kRows * features), 3, 3, 1.0);
    w.assign(size_t(kModels * ld), NAN);
    v.assign(size_t(kModels * ld), NAN);
    for (int k = 0; k < kModels; ++k)
      for (int64_t i = 0; i < m.dim; ++i) {
        w[size_t(k * ld + i)] = float(wd[size_t(k * m.dim + i)]);
        v[size_t(k * ld + i)] = float(vd[size_t(k * m.dim + i)]);
      }
    x.assign(xd.begin(), xd.end());
    for (int r = 0; r < kModels * kRows; ++r) y.push_back(int32_t((r * 7 + 2) % m.classes));
    NetWorkspace<double> ws;
    std::vector<double> g(size_t(m.dim)), hv(size_t(m.dim));
    for (int k = 0; k < kModels; ++k) {
      // The float32 inputs exactly, in double.
      const std::vector<double> wk(w.begin() + k * ld, w.begin() + k * ld + m.dim),
          vk(v.begin() + k * ld, v.begin() + k * ld + m.dim),
          xk(x.begin() + k * kRows * features, x.begin() + (k + 1) * kRows * features);
      const ConstRowMap<double> xm(xk.data(), kRows, features);
      const int32_t* yk = y.data() + k * kRows;
      const RowMat<double>& z = net_logits(m, wk.data(), xm, ws);
      logits.insert(logits.end(), z.data(), z.data() + z.size());
      loss_sum.push_back(net_loss_grad(m, wk.data(), xm, yk, g.data(), ws).loss_sum);
      grad.insert(grad.end(), g.begin(), g.end());
      net_hvp(m, wk.data(), vk.data(), xm, yk, hv.data(), ws);
      hvp.insert(hvp.end(), hv.begin(), hv.end());
      const std::vector<double> w0(w.begin(), w.begin() + m.dim),
          x0(x.begin(), x.begin() + kRows * features);
      net_hvp(m, w0.data(), vk.data(), ConstRowMap<double>(x0.data(), kRows, features), y.data(),
              hv.data(), ws);
      shared_hvp.insert(shared_hvp.end(), hv.begin(), hv.end());
    }
  }
};

// One model's d entries of each row of out [kModels][ld].
std::vector<double> unpad(const std::vector<float>& out, int64_t ld, int64_t d) {
  std::vector<double> r;
  for (int k = 0; k < kModels; ++k)
    r.insert(r.end(), out.begin() + k * ld, out.begin() + k * ld + d);
  return r;
}

std::vector<double> doubles(const std::vector<float>& a) {
  return {a.begin(), a.end()};
}

// The batched network's passes on a Case, as the CUDA backend runs them: the buffers poisoned
// (NaN) first, the loss scaled to the mean over the rows.
struct Emulated {
  const Case& c;
  std::unique_ptr<BatchedNet> net;
  Gemm gemm{nullptr, MathMode::Fp32};
  DeviceArray<float> w, v, x, out;
  DeviceArray<int32_t> y;
  bool shared = false;  // one point and one chunk of rows for every model (strides 0)

  Emulated(const Case& cs, const CnnPaths& paths)
      : c(cs),
        net(make_batched_net(cs.model, kModels * kRows, true, paths)),
        w(cs.w),
        v(cs.v),
        x(cs.x),
        out(cs.w.size()),
        y(cs.y) {
    net->poison(nullptr);
  }
  ModelBatch models(bool r) const {
    return {w.get(), shared ? 0 : c.ld, r ? v.get() : nullptr, r ? c.ld : 0, kModels};
  }
  RowBatch rows() const {
    return {x.get(), shared ? 0 : kRows * c.features, y.get(), shared ? 0 : kRows, kRows};
  }
  // dL/dw (r: H v) of every model into out: out = beta out + the pass's result.
  void pass(bool r, float beta = 0.f) {
    net->forward(models(r), rows(), gemm, nullptr);
    net->loss(models(r), rows(), 1.f / kRows, nullptr);
    net->backward(models(r), rows(), out.get(), c.ld, beta, gemm, nullptr);
  }
  std::vector<float> logits() {
    std::vector<float> z(size_t(kModels * kRows * c.model.classes));
    cudaMemcpy(z.data(), net->logits(), z.size() * sizeof(float), cudaMemcpyDeviceToHost);
    return z;
  }
  std::vector<double> loss_sums() {
    std::vector<float> l(size_t(kModels * kRows));
    cudaMemcpy(l.data(), net->row_loss(), l.size() * sizeof(float), cudaMemcpyDeviceToHost);
    std::vector<double> s(kModels, 0.0);
    for (size_t i = 0; i < l.size(); ++i) s[i / kRows] += l[i];
    return s;
  }
};

// A CNN's paths: all on, each fused path alone off, then all off (the general path).
std::vector<CnnPaths> all_paths() {
  std::vector<CnnPaths> paths = cnn_paths_to_test();
  paths.push_back(CnnPaths::general());
  return paths;
}

// A network of kNets, and (a CNN) one of all_paths().
class EmulatedCudaNet : public ::testing::TestWithParam<std::tuple<int, int>> {
 protected:
  static CnnPaths paths() { return all_paths()[size_t(std::get<1>(GetParam()))]; }
};

TEST_P(EmulatedCudaNet, LogitsGradientsAndHvpsMatchFloat64) {
  const int net = std::get<0>(GetParam());
  const Case c(kNets[net].model);
  Emulated e(c, paths());
  e.net->forward(e.models(false), e.rows(), e.gemm, nullptr);
  EXPECT_LT(rel_err(doubles(e.logits()), c.logits), 1e-5);
  e.net->loss(e.models(false), e.rows(), 1.f / kRows, nullptr);
  EXPECT_LT(rel_err(e.loss_sums(), c.loss_sum), 1e-5);

  e.out.poison();  // every parameter's gradient is written
  e.pass(false);
  const double eg = rel_err(unpad(e.out.fetch(), c.ld, c.model.dim), c.grad);
  EXPECT_LT(eg, 1e-5);
  e.out.poison();
  e.pass(true);
  const double eh = rel_err(unpad(e.out.fetch(), c.ld, c.model.dim), c.hvp);
  EXPECT_LT(eh, 1e-4);
  std::printf("gradients %.2e, HVPs %.2e\n", eg, eh);

  // beta: out = 0.5 out + H v, every parameter once.
  e.pass(true, 0.5f);
  std::vector<double> twice = c.hvp;
  for (double& t : twice) t *= 1.5;
  EXPECT_LT(rel_err(unpad(e.out.fetch(), c.ld, c.model.dim), twice), 1e-4);

  // The curvature's batches: one point and one chunk of rows, a direction a model.
  e.shared = true;
  e.out.poison();
  e.pass(true);
  EXPECT_LT(rel_err(unpad(e.out.fetch(), c.ld, c.model.dim), c.shared_hvp), 1e-4);
}

// The network allocates what core/cuda_plan.cpp plans for it (net_workspace_bytes), with and
// without the R-operator's twins: the emulated device's free memory drops by exactly that, give
// or take the one element an empty buffer still takes (DeviceArray asks cudaMalloc for at least
// one).
TEST_P(EmulatedCudaNet, AllocatesWhatThePlanCounts) {
  const ModelSpec& model = kNets[std::get<0>(GetParam())].model;
  const auto free_bytes = [] {
    size_t free = 0, total = 0;
    cudaMemGetInfo(&free, &total);
    return int64_t(free);
  };
  const int64_t buffers = 8 * int64_t(model.nodes.size() + model.layers.size()) + 16;
  for (bool with_r : {false, true}) {
    const int64_t before = free_bytes();
    const std::unique_ptr<BatchedNet> n = make_batched_net(model, kModels * kRows, with_r, paths());
    const int64_t used = before - free_bytes();
    const int64_t planned = net_workspace_bytes(model, kModels * kRows, with_r, paths());
    EXPECT_GE(used, planned) << (with_r ? "with R" : "");
    EXPECT_LE(used, planned + 8 * buffers) << (with_r ? "with R" : "");
  }
}

// Each network, a CNN on each of all_paths().
std::vector<std::tuple<int, int>> net_cases() {
  std::vector<std::tuple<int, int>> cases;
  for (int i = 0; i < int(std::size(kNets)); ++i) {
    const bool cnn = kNets[i].model.kind == ModelKind::Cnn;
    for (int p = 0; p < (cnn ? int(all_paths().size()) : 1); ++p) cases.emplace_back(i, p);
  }
  return cases;
}

// "Fused" (all on), "General" (all off), or "Without" and the switch's name in camel case.
std::string paths_name(const CnnPaths& paths) {
  const std::string off = cnn_paths_off(paths);
  if (off == "none" || off == "all") return off == "none" ? "Fused" : "General";
  std::string name = "Without";
  bool upper = true;
  for (const char ch : off) {
    if (ch == '_') {
      upper = true;
    } else {
      name += upper ? char(std::toupper(static_cast<unsigned char>(ch))) : ch;
      upper = false;
    }
  }
  return name;
}

INSTANTIATE_TEST_SUITE_P(Nets, EmulatedCudaNet, ::testing::ValuesIn(net_cases()),
                         [](const auto& info) {
                           const Net& n = kNets[std::get<0>(info.param)];
                           if (n.model.kind != ModelKind::Cnn) return std::string(n.name);
                           return n.name + paths_name(all_paths()[size_t(std::get<1>(info.param))]);
                         });

// capture_lock.cuh (sweep --jobs: CUDA backends in threads of one process): while one thread
// captures its step's graph, another thread's synchronizing call waits for the capture to end;
// such calls do not wait for one another; the capturing thread's own DeviceCallLock is a no-op.
TEST(CaptureLockTest, SynchronizingCallsWaitForAnotherThreadsCapture) {
  std::atomic<bool> called{false};
  std::thread other;
  {
    const CaptureLock alone;
    { const DeviceCallLock inside; }  // the capturing thread itself: no deadlock
    other = std::thread([&] {
      const DeviceCallLock lock;
      called = true;
    });
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    EXPECT_FALSE(called) << "a synchronizing call ran during another thread's capture";
  }
  other.join();
  EXPECT_TRUE(called);
  const DeviceCallLock held;
  std::thread([&] {
    const DeviceCallLock shared;  // an exclusive lock would wait forever here
    called = false;
  }).join();
  EXPECT_FALSE(called);
}

}  // namespace
