#include <gtest/gtest.h>

#include <cmath>

#include "gossamer/philox.hpp"
#include "mlp.hpp"

using namespace gossamer;

namespace {

struct Problem {
  ModelSpec model;
  RowMat<double> x;
  std::vector<int32_t> y;
  std::vector<double> w;
};

Problem make_problem(const std::vector<int>& hidden, Activation act, uint64_t seed) {
  Problem p;
  const int in = 5, classes = 4, batch = 7;
  p.model = ModelSpec::mlp(in, hidden, classes, act);
  p.x.resize(batch, in);
  uint64_t c = 0;
  auto normal = [&] {
    const Philox4 r = philox_draw(seed, RngDomain::Data, 0, c++);
    return philox_normal(r.v[0], r.v[1]);
  };
  for (int i = 0; i < batch; ++i)
    for (int j = 0; j < in; ++j) p.x(i, j) = normal();
  for (int i = 0; i < batch; ++i) p.y.push_back(i % classes);
  p.w.resize(p.model.dim);
  for (auto& v : p.w) v = 0.7 * normal();
  return p;
}

double loss_at(const Problem& p, const std::vector<double>& w) {
  MlpWorkspace<double> ws;
  const ConstRowMap<double> x(p.x.data(), p.x.rows(), p.x.cols());
  return mlp_loss(p.model, w.data(), x, p.y.data(), ws).loss_sum / double(p.x.rows());
}

}  // namespace

// Central differences of the float64 loss: O(h^2) truncation, so h = 1e-5 leaves ~1e-10.
class MlpGradientTest : public ::testing::TestWithParam<std::tuple<Activation, std::vector<int>>> {
};

TEST_P(MlpGradientTest, MatchesCentralFiniteDifferencesFloat64) {
  const auto [act, hidden] = GetParam();
  const Problem p = make_problem(hidden, act, 3);
  MlpWorkspace<double> ws;
  std::vector<double> g(p.model.dim);
  const ConstRowMap<double> x(p.x.data(), p.x.rows(), p.x.cols());
  const BatchResult r = mlp_loss_grad(p.model, p.w.data(), x, p.y.data(), g.data(), ws);
  EXPECT_NEAR(r.loss_sum / double(p.x.rows()), loss_at(p, p.w), 1e-14);
  const double h = 1e-5;
  double err = 0, norm = 0;
  for (int64_t i = 0; i < p.model.dim; ++i) {
    auto plus = p.w, minus = p.w;
    plus[i] += h;
    minus[i] -= h;
    const double fd = (loss_at(p, plus) - loss_at(p, minus)) / (2 * h);
    err += (fd - g[i]) * (fd - g[i]);
    norm += g[i] * g[i];
  }
  EXPECT_GT(norm, 1e-6);
  EXPECT_LT(std::sqrt(err / norm), 1e-6) << "d = " << p.model.dim;
}

INSTANTIATE_TEST_SUITE_P(
    Activations, MlpGradientTest,
    ::testing::Values(std::make_tuple(Activation::Relu, std::vector<int>{6, 5}),
                      std::make_tuple(Activation::Tanh, std::vector<int>{6, 5}),
                      std::make_tuple(Activation::Gelu, std::vector<int>{6, 5}),
                      std::make_tuple(Activation::Gelu, std::vector<int>{3}),
                      std::make_tuple(Activation::Relu,
                                      std::vector<int>{})));  // softmax regression

TEST(MlpTest, LayoutOffsetsAreContiguous) {
  const ModelSpec m = ModelSpec::mlp(784, {128}, 10, Activation::Relu);
  ASSERT_EQ(m.layers.size(), 2u);
  EXPECT_EQ(m.layers[0].b_offset, 784 * 128);
  EXPECT_EQ(m.layers[1].w_offset, 784 * 128 + 128);
  EXPECT_EQ(m.dim, 784 * 128 + 128 + 128 * 10 + 10);
  EXPECT_EQ(row_stride(m.dim, 4) % 64, 0);
  EXPECT_GE(row_stride(m.dim, 4), m.dim);
}

TEST(MlpTest, ZeroWeightsGiveUniformPredictionLossLogC) {
  Problem p = make_problem({4}, Activation::Relu, 5);
  std::fill(p.w.begin(), p.w.end(), 0.0);
  EXPECT_NEAR(loss_at(p, p.w), std::log(4.0), 1e-14);
}
