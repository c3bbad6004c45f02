#include <gtest/gtest.h>

#include <Eigen/Dense>
#include <cmath>
#include <numeric>

#include "gossamer/curvature.hpp"
#include "gossamer/philox.hpp"
#include "gossamer/trainer.hpp"
#include "helpers.hpp"
#include "mlp.hpp"

using namespace gossamer;
using namespace gossamer::test_util;
using nlohmann::json;

namespace {

// A tiny model (8-12-3, d = 147) in float64, a few D-SGD steps from independent inits so
// the workers differ, and the whole training set as the curvature subset.
struct Tiny {
  Sim sim;
  std::vector<double> workers, wbar;
  int64_t d;
  Eigen::MatrixXd H;  // explicit Hessian at wbar, column by column from HVPs

  explicit Tiny(const std::string& activation = "tanh")
      : sim(make_sim(
            {{"model", {{"hidden", {12}}, {"activation", activation}, {"same_init", false}}},
             {"optimizer", {{"lr", 0.05}}}},
            true)) {
    TopologySchedule topo(sim->config.topology, sim->config.workers, sim->config.seed);
    for (int t = 0; t < 5; ++t) train_step(*sim->backend, sim->config, topo, t, 0.05);
    std::vector<int64_t> all(sim->data.train.n);
    std::iota(all.begin(), all.end(), 0);
    sim->backend->set_curvature_subset(all);
    workers = sim->backend->weights();
    wbar = mean_row(workers, sim->config.workers);
    d = sim->model.dim;
    std::vector<double> eye(size_t(d * d), 0.0);
    for (int64_t i = 0; i < d; ++i) eye[i * d + i] = 1.0;
    const std::vector<double> cols = sim->backend->hvp(wbar, eye);
    H = Eigen::Map<const Eigen::MatrixXd>(cols.data(), d, d);  // column i = H e_i
  }
};

double rel(double a, double b) {
  return std::fabs(a - b) / std::max(std::fabs(b), 1e-300);
}

}  // namespace

class HvpTest : public ::testing::TestWithParam<std::string> {};

TEST_P(HvpTest, MatchesFiniteDifferencesOfTheGradientFloat64) {
  Tiny t(GetParam());
  Sim& s = t.sim;
  std::vector<double> v(t.d);
  for (int64_t i = 0; i < t.d; ++i) {
    const Philox4 r = philox_draw(5, RngDomain::Data, 9, uint64_t(i));
    v[i] = philox_normal(r.v[0], r.v[1]);
  }
  const std::vector<double> hv = s->backend->hvp(t.wbar, v);
  // (g(w + h v) - g(w - h v)) / 2h: O(h^2) truncation.
  const double h = 1e-5;
  std::vector<double> points(2 * t.d);
  for (int64_t i = 0; i < t.d; ++i)
    points[i] = t.wbar[i] + h * v[i], points[t.d + i] = t.wbar[i] - h * v[i];
  std::vector<double> grads;
  s->backend->subset_loss(points, &grads);
  double err = 0, norm = 0;
  for (int64_t i = 0; i < t.d; ++i) {
    const double fd = (grads[i] - grads[t.d + i]) / (2 * h);
    err += (fd - hv[i]) * (fd - hv[i]);
    norm += hv[i] * hv[i];
  }
  EXPECT_GT(norm, 1e-8);
  EXPECT_LT(std::sqrt(err / norm), 1e-6);
}

INSTANTIATE_TEST_SUITE_P(Activations, HvpTest, ::testing::Values("tanh", "gelu", "relu"));

TEST(CurvatureTest, ExplicitHessianIsSymmetric) {
  Tiny t;
  EXPECT_LT((t.H - t.H.transpose()).cwiseAbs().maxCoeff(),
            1e-10 * std::max(1.0, t.H.cwiseAbs().maxCoeff()));
  EXPECT_GT(t.H.cwiseAbs().maxCoeff(), 1e-3);
}

TEST(CurvatureTest, HutchinsonTraceWithinThreeStandardErrors) {
  Tiny t;
  const Estimate e = hutchinson_trace(*t.sim->backend, t.wbar, 400, 11);
  EXPECT_GT(e.std_error, 0.0);
  EXPECT_NEAR(e.value, t.H.trace(), 3 * e.std_error) << "exact " << t.H.trace();
}

TEST(CurvatureTest, LanczosTopFiveMatchesDenseEigenSolver) {
  Tiny t;
  Eigen::SelfAdjointEigenSolver<Eigen::MatrixXd> es(0.5 * (t.H + t.H.transpose()));
  const auto top = lanczos_top_eigenvalues(*t.sim->backend, t.wbar, 5, int(t.d), 3);
  ASSERT_EQ(top.size(), 5u);
  for (int i = 0; i < 5; ++i) {
    const double exact = es.eigenvalues()(t.d - 1 - i);
    EXPECT_LT(rel(top[i].value, exact), 1e-8)
        << "eigenvalue " << i << ": " << top[i].value << " vs " << exact;
    EXPECT_LT(top[i].residual, 1e-6 * std::fabs(exact) + 1e-10);
  }
}

TEST(CurvatureTest, PowerIterationFindsTheLargestModulusEigenvalue) {
  Tiny t;
  Eigen::SelfAdjointEigenSolver<Eigen::MatrixXd> es(0.5 * (t.H + t.H.transpose()));
  const double lmax =
      std::max(std::fabs(es.eigenvalues()(t.d - 1)), std::fabs(es.eigenvalues()(0)));
  const auto top = power_top_eigenvalues(*t.sim->backend, t.wbar, 1, 1000, 1e-9, 4);
  EXPECT_LT(rel(std::fabs(top[0].value), lmax), 1e-4);
}

TEST(CurvatureTest, RegularizerEqualsDenseComputation) {
  Tiny t;
  const int m = t.sim->config.workers;
  double dense = 0;
  for (int k = 0; k < m; ++k) {
    Eigen::VectorXd delta(t.d);
    for (int64_t i = 0; i < t.d; ++i) delta[i] = t.workers[k * t.d + i] - t.wbar[i];
    dense += delta.dot(t.H * delta);
  }
  dense /= 2.0 * m;
  EXPECT_GT(std::fabs(dense), 0.0);
  EXPECT_LT(rel(hessian_xi_regularizer(*t.sim->backend, t.workers, m), dense), 1e-10);
}

TEST(CurvatureTest, SmallSigmaSharpnessIsHalfSigmaSquaredTrace) {
  Tiny t;
  const double sigma = 1e-3;
  const Estimate e = average_sharpness_isotropic(*t.sim->backend, t.wbar, sigma, 400, 8);
  const double expect = 0.5 * sigma * sigma * t.H.trace();
  EXPECT_NEAR(e.value, expect, 3 * e.std_error + 1e-3 * std::fabs(expect)) << "SE " << e.std_error;
}

TEST(CurvatureTest, XiPerturbationsHaveCovarianceXi) {
  Tiny t;
  const int m = t.sim->config.workers, samples = 20000;
  const auto eps = xi_perturbations(t.workers, m, samples, 6);
  Eigen::MatrixXd xi = Eigen::MatrixXd::Zero(t.d, t.d), cov = xi;
  for (int k = 0; k < m; ++k) {
    Eigen::VectorXd delta(t.d);
    for (int64_t i = 0; i < t.d; ++i) delta[i] = t.workers[k * t.d + i] - t.wbar[i];
    xi += delta * delta.transpose() / m;
  }
  const Eigen::Map<const Eigen::MatrixXd> E(eps.data(), t.d, samples);
  cov = E * E.transpose() / samples;
  // Each entry's sampling error is about sqrt(2/samples) of the scale: 1% here.
  EXPECT_LT((cov - xi).norm() / xi.norm(), 0.05);
  // And the estimator: for a quadratic model its mean is 1/2 tr(H Xi).
  const Estimate e = average_sharpness_xi(*t.sim->backend, t.workers, m, 400, 2);
  const double reg = hessian_xi_regularizer(*t.sim->backend, t.workers, m);
  EXPECT_NEAR(e.value, reg, 3 * e.std_error + 0.05 * std::fabs(reg));
}

TEST(CurvatureTest, SamSharpnessBracketsItsSecondOrderModel) {
  Tiny t;
  EXPECT_EQ(sam_sharpness(*t.sim->backend, t.wbar, 0.0, 5), 0.0);
  std::vector<double> grad;
  t.sim->backend->subset_loss(t.wbar, &grad);
  const double gnorm = Eigen::Map<const Eigen::VectorXd>(grad.data(), t.d).norm();
  Eigen::SelfAdjointEigenSolver<Eigen::MatrixXd> es(0.5 * (t.H + t.H.transpose()));
  const double rho = 1e-3, lmax = es.eigenvalues()(t.d - 1), lmin = es.eigenvalues()(0);
  const double s = sam_sharpness(*t.sim->backend, t.wbar, rho, 5);
  // max over the ball of g.e + e^T H e / 2 lies in [rho |g| + rho^2 lmin / 2, rho |g| + rho^2 lmax
  // / 2].
  EXPECT_GE(s, rho * gnorm + 0.5 * rho * rho * std::min(lmin, 0.0) - 1e-9);
  EXPECT_LE(s, rho * gnorm + 0.5 * rho * rho * std::max(lmax, 0.0) + 1e-9);
}

TEST(ClaimMetricsTest, GradientSmoothingIsSecondOrderInTheSpread) {
  // sum_k delta_k = 0, so (1/m) sum_k grad L(wbar + s delta_k) - grad L(wbar) = O(s^2).
  Tiny t;
  const int m = t.sim->config.workers;
  auto smoothing_at = [&](double scale) {
    std::vector<double> rows(t.workers.size());
    for (int k = 0; k < m; ++k)
      for (int64_t i = 0; i < t.d; ++i)
        rows[k * t.d + i] = t.wbar[i] + scale * (t.workers[k * t.d + i] - t.wbar[i]);
    return gradient_smoothing(*t.sim->backend, rows, m).first;
  };
  const double small = smoothing_at(0.01), twice = smoothing_at(0.02);
  EXPECT_GT(small, 0.0);
  EXPECT_NEAR(twice / small, 4.0, 0.2);
  std::vector<double> same;
  for (int k = 0; k < m; ++k) same.insert(same.end(), t.wbar.begin(), t.wbar.end());
  const auto [gap, grad_norm] = gradient_smoothing(*t.sim->backend, same, m);
  EXPECT_LT(gap, 1e-12 * grad_norm);  // zero but for the rounding of the mean
}

TEST(ClaimMetricsTest, EnsembleOfOneModelIsThatModel) {
  Sim s = make_sim({{"algorithm", {{"name", "csgd"}}}}, true);  // C-SGD: all workers equal
  TopologySchedule topo(s->config.topology, s->config.workers, s->config.seed);
  for (int t = 0; t < 5; ++t) train_step(*s->backend, s->config, topo, t, 0.1);
  const auto e = s->backend->evaluate_ensemble(Split::Test);
  EXPECT_NEAR(e.ensemble.accuracy, e.mean_model.accuracy, 1e-15);
  EXPECT_NEAR(e.ensemble.nll, e.mean_model.nll, 1e-12);
  EXPECT_NEAR(e.ensemble.ece, e.mean_model.ece, 1e-12);
  // w-bar's NLL and accuracy by the evaluation path agree with the calibration path.
  const EvalStats mean = s->backend->evaluate_mean(Split::Test);
  EXPECT_NEAR(e.mean_model.nll, mean.loss, 1e-12);
  EXPECT_NEAR(e.mean_model.accuracy, mean.accuracy, 1e-15);
}

TEST(ClaimMetricsTest, EnsembleOfDifferentWorkersDiffers) {
  Sim s = make_sim({{"model", {{"same_init", false}}}, {"optimizer", {{"lr", 0.0}}}}, true);
  const auto e = s->backend->evaluate_ensemble(Split::Test);
  EXPECT_NE(e.ensemble.nll, e.mean_model.nll);
}

TEST(ClaimMetricsTest, ExpectedCalibrationErrorClosedForm) {
  CalibrationBins bins;
  // Bin of confidence 0.95: 10 samples, 8 right -> |0.8 - 0.95| = 0.15, weight 10/20.
  for (int i = 0; i < 10; ++i) bins.add(0.95, i < 8, i < 8 ? 0.95 : 0.01);
  // Bin of confidence 0.5: 10 samples, 5 right -> |0.5 - 0.5| = 0.
  for (int i = 0; i < 10; ++i) bins.add(0.5, i < 5, i < 5 ? 0.5 : 0.2);
  const PredictiveStats p = bins.stats();
  EXPECT_NEAR(p.ece, 0.5 * 0.15, 1e-15);
  EXPECT_NEAR(p.accuracy, 13.0 / 20, 1e-15);
  EXPECT_NEAR(
      p.nll,
      -(8 * std::log(0.95) + 2 * std::log(0.01) + 5 * std::log(0.5) + 5 * std::log(0.2)) / 20,
      1e-14);
  EXPECT_EQ(p.bin_count[14], 10);
  EXPECT_EQ(p.bin_count[7], 10);
}

// curvature.workers: every worker's model measured with w-bar's probes and perturbations, so
// workers that are all equal to w-bar (same init, no training) reproduce w-bar's figures (to
// rounding: w-bar = (w + w + w)/3 may differ from w in the last bit), and workers that differ
// do not.
TEST(CurvatureReportTest, IdenticalWorkersReproduceTheMeanModelsFigures) {
  const json patch = {{"workers", 3},
                      {"curvature",
                       {{"workers", true},
                        {"what", {"trace", "topk", "avgsharp", "samsharp"}},
                        {"probes", 8},
                        {"topk", 1},
                        {"lanczos_steps", 8},
                        {"mc_samples", 4},
                        {"sam_steps", 2},
                        {"samples", 64}}}};
  Sim same = make_sim(patch, true);
  const CurvatureConfig& c = same->config.curvature;
  const json r = measure_curvature(*same->backend, c, 3, 64, 1, 0);
  const json& w = r["workers"];
  ASSERT_EQ(w["trace"].size(), 3u);
  for (int k = 0; k < 3; ++k) {
    const auto near = [](const json& a, const json& b) {
      EXPECT_NEAR(a.get<double>(), b.get<double>(), 1e-9 * std::fabs(b.get<double>()));
    };
    near(w["trace"][k], r["trace"]["value"]);
    near(w["trace_std_error"][k], r["trace"]["std_error"]);
    near(w["top_eigenvalue"][k], r["top_eigenvalues"]["values"][0]);
    near(w["avg_sharpness_isotropic"][k], r["avg_sharpness_isotropic"]["value"]);
    near(w["sam_sharpness"][k], r["sam_sharpness"]["value"]);
  }
  json spread = patch;
  spread["model"] = {{"same_init", false}};
  Sim apart = make_sim(spread, true);
  const json a = measure_curvature(*apart->backend, apart->config.curvature, 3, 64, 1, 0);
  EXPECT_NE(a["workers"]["trace"][0].get<double>(), a["workers"]["trace"][1].get<double>());
  // Only what was asked for.
  json only_trace = patch;
  only_trace["curvature"]["what"] = {"trace"};
  Sim t = make_sim(only_trace, true);
  const json o = measure_curvature(*t->backend, t->config.curvature, 3, 64, 1, 0);
  EXPECT_TRUE(o["workers"].contains("trace"));
  EXPECT_FALSE(o["workers"].contains("sam_sharpness"));
  EXPECT_FALSE(o["workers"].contains("top_eigenvalue"));
}
