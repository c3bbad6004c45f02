// GPU suites: skipped, saying why, where no GPU is visible.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>

#include "gossamer/activations.hpp"
#include "gossamer/cuda.hpp"
#include "gossamer/devices.hpp"
#include "gossamer/philox.hpp"
#include "gossamer/topology.hpp"
#include "helpers.hpp"

using namespace gossamer;

// GTEST_SKIP in SetUp skips the whole test body.
class CudaTest : public ::testing::Test {
 protected:
  void SetUp() override {
    static const DeviceList list = list_devices();
    if (list.devices.empty()) GTEST_SKIP() << list.why_none;
  }
};

TEST_F(CudaTest, SamplingDrawsTheCpuBackendsMinibatchIndices) {
  for (const char* kind : {"iid", "shared"}) {
    test_util::Sim s = test_util::make_sim(
        {{"workers", 5}, {"optimizer", {{"batch_size", 7}}}, {"partition", {{"kind", kind}}}}, false);
    for (int64_t step : {0, 1, 36, 1000003}) {
      s->backend->sample(step);
      EXPECT_EQ(cuda_sample_minibatches(s->partition, s->config.seed, step, 7),
                s->backend->minibatch_indices())
          << kind << " step " << step;
    }
  }
}

// The fused kernel against a float64 evaluation of the same formula, on random inputs,
// every topology shape that matters (static ring, directed exponential, complete), both
// forms, with and without (Nesterov) momentum, and m = 1, 3.
class CudaGossipTest
    : public CudaTest,
      public ::testing::WithParamInterface<std::tuple<std::string, int, bool, double, bool>> {};

TEST_P(CudaGossipTest, MatchesFloat64Reference) {
  const auto [name, m, atc, mu, nesterov] = GetParam();
  TopologyConfig tc;
  tc.name = name;
  tc.weights = "uniform";
  TopologySchedule topo(tc, m, 1);
  const Csr& P = topo.phase(0);
  const int64_t d = 1000, ld = row_stride(d, 4);  // d not a multiple of the vector width
  std::vector<float> W(size_t(m) * ld, 0.f), G = W, buf = W;
  for (size_t i = 0; i < W.size(); ++i) {
    if (int64_t(i % ld) >= d) continue;  // padding stays zero
    const Philox4 r = philox_draw(3, RngDomain::Data, 7, i);
    W[i] = float(philox_normal(r.v[0], r.v[1]));
    G[i] = float(philox_normal(r.v[2], r.v[3]));
    buf[i] = float(0.1 * philox_normal(r.v[1], r.v[2]));
  }
  const double lr = 0.05, wd = 1e-3;
  // float64 reference.
  auto u_of = [&](int j, int64_t i, double* new_buf) {
    const double v = G[j * ld + i] + wd * W[j * ld + i];
    if (mu == 0) return v;
    const double b = mu * buf[j * ld + i] + v;
    if (new_buf) *new_buf = b;
    return nesterov ? v + mu * b : b;
  };
  std::vector<double> ref(W.size(), 0.0), ref_buf(buf.begin(), buf.end());
  for (int k = 0; k < m; ++k)
    for (int64_t i = 0; i < ld; ++i) {
      double acc = 0;
      for (int e = P.row_ptr[k]; e < P.row_ptr[k + 1]; ++e) {
        const int j = P.col[e];
        acc += P.val[e] * (atc ? W[j * ld + i] - lr * u_of(j, i, nullptr) : W[j * ld + i]);
      }
      const double u = u_of(k, i, &ref_buf[k * ld + i]);
      ref[k * ld + i] = atc ? acc : acc - lr * u;
    }
  std::vector<float> out = W, out_buf = buf;
  cuda_gossip_update(P, ld, out, G, out_buf, lr, mu, wd, nesterov, atc);
  double num = 0, den = 0, bnum = 0, bden = 0;
  for (size_t i = 0; i < out.size(); ++i) {
    ASSERT_TRUE(std::isfinite(out[i])) << "element " << i << " unwritten or non-finite";
    num += (out[i] - ref[i]) * (out[i] - ref[i]);
    den += ref[i] * ref[i];
    bnum += (out_buf[i] - ref_buf[i]) * (out_buf[i] - ref_buf[i]);
    bden += ref_buf[i] * ref_buf[i];
  }
  EXPECT_LT(std::sqrt(num / den), 1e-6);
  if (mu > 0) EXPECT_LT(std::sqrt(bnum / bden), 1e-6);
}

INSTANTIATE_TEST_SUITE_P(Shapes, CudaGossipTest,
                         ::testing::Values(std::make_tuple("ring", 8, false, 0.0, false),
                                           std::make_tuple("ring", 8, true, 0.9, false),
                                           std::make_tuple("exponential", 12, false, 0.9, true),
                                           std::make_tuple("complete", 3, true, 0.5, true),
                                           std::make_tuple("ring", 1, false, 0.9, false)));

// The kernel against the same per-row function on the CPU in float64, with logits of every
// scale (large ones test the max-subtraction), odd row counts and a single row.
TEST_F(CudaTest, SoftmaxCrossEntropyMatchesTheCpuRowFunction) {
  for (int64_t rows : {1, 7, 1000}) {
    const int classes = 10;
    std::vector<float> logits(size_t(rows) * classes);
    std::vector<int32_t> labels(rows);
    for (size_t i = 0; i < logits.size(); ++i) {
      const Philox4 r = philox_draw(11, RngDomain::Data, 3, i);
      logits[i] = float(philox_normal(r.v[0], r.v[1]) * (i % 3 == 0 ? 30.0 : 1.0));
    }
    for (int64_t i = 0; i < rows; ++i) labels[i] = int32_t(i % classes);
    std::vector<float> gpu = logits, loss;
    std::vector<unsigned char> correct;
    cuda_softmax_xent(gpu, labels, classes, 1.0f / float(rows), loss, correct);
    for (int64_t i = 0; i < rows; ++i) {
      std::vector<double> row(logits.begin() + i * classes, logits.begin() + (i + 1) * classes);
      bool right = false;
      const double ref =
          softmax_xent_row(row.data(), classes, labels[i], 1.0 / double(rows), &right);
      ASSERT_TRUE(std::isfinite(loss[i])) << "row " << i;
      EXPECT_NEAR(loss[i], ref, 1e-5 * (1 + std::fabs(ref))) << "row " << i;
      EXPECT_EQ(bool(correct[i]), right) << "row " << i;
      for (int c = 0; c < classes; ++c)
        EXPECT_NEAR(gpu[i * classes + c], row[c], 1e-6) << "row " << i << " class " << c;
    }
  }
}

// TF32 rounds the GEMM's inputs to a 10-bit mantissa (unit roundoff 2^-11 ~ 4.9e-4): on random
// normal data with K = 512 the normalized error of C against a float64 product is ~3e-4, far
// above FP32's ~1e-7. A TF32 result within 1e-5 means the tensor cores were not used. Smaller
// shapes, as the backend's layers have them, are reported: cuBLAS may keep exact FP32 kernels
// where its heuristics find them faster (tf32 permits tensor cores, it does not force them).
TEST_F(CudaTest, GemmTf32RoundsInputsFp32DoesNot) {
  struct Shape {
    int M, N, K;
  };
  for (const Shape& s : {Shape{512, 512, 512}, Shape{32, 128, 784}, Shape{128, 784, 32},
                         Shape{64, 256, 784}, Shape{5, 64, 8}}) {
    std::vector<float> A(size_t(s.M) * s.K), B(size_t(s.K) * s.N);
    for (size_t i = 0; i < A.size(); ++i) {
      const Philox4 r = philox_draw(5, RngDomain::Data, 1, i);
      A[i] = float(philox_normal(r.v[0], r.v[1]));
    }
    for (size_t i = 0; i < B.size(); ++i) {
      const Philox4 r = philox_draw(5, RngDomain::Data, 2, i);
      B[i] = float(philox_normal(r.v[0], r.v[1]));
    }
    std::vector<double> ref(size_t(s.M) * s.N, 0.0);
    for (int i = 0; i < s.M; ++i)
      for (int k = 0; k < s.K; ++k)
        for (int j = 0; j < s.N; ++j)
          ref[size_t(i) * s.N + j] += double(A[size_t(i) * s.K + k]) * B[size_t(k) * s.N + j];
    const auto err = [&](const std::vector<float>& c) {
      double num = 0, den = 0;
      for (size_t i = 0; i < ref.size(); ++i) {
        if (!std::isfinite(c[i])) return double(INFINITY);
        num += (c[i] - ref[i]) * (c[i] - ref[i]);
        den += ref[i] * ref[i];
      }
      return std::sqrt(num / den);
    };
    const double fp32 = err(cuda_gemm(A, B, s.M, s.N, s.K, false));
    const double tf32 = err(cuda_gemm(A, B, s.M, s.N, s.K, true));
    std::printf("GEMM %d x %d x %d: normalized error FP32 %.3g, TF32 %.3g%s\n", s.M, s.N, s.K,
                fp32, tf32, tf32 > 1e-5 ? " (tensor cores)" : " (FP32 kernel)");
    EXPECT_LT(fp32, 1e-5);
    EXPECT_LT(tf32, 3e-3);
    if (s.M == 512) EXPECT_GT(tf32, 5e-5) << "math tf32 did not round the inputs";
  }
}
