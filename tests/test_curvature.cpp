#include <gtest/gtest.h>

#include <Eigen/Dense>
#include <algorithm>
#include <cmath>
#include <numeric>
#include <sstream>

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
  ASSERT_EQ(top.values.size(), 5u);
  for (int i = 0; i < 5; ++i) {
    const double exact = es.eigenvalues()(t.d - 1 - i);
    EXPECT_LT(rel(top.values[i], exact), 1e-8)
        << "eigenvalue " << i << ": " << top.values[i] << " vs " << exact;
    EXPECT_LT(top.residuals[i], 1e-6 * std::fabs(exact) + 1e-10);
  }
}

TEST(CurvatureTest, PowerIterationFindsTheLargestModulusEigenvalue) {
  Tiny t;
  Eigen::SelfAdjointEigenSolver<Eigen::MatrixXd> es(0.5 * (t.H + t.H.transpose()));
  const double lmax =
      std::max(std::fabs(es.eigenvalues()(t.d - 1)), std::fabs(es.eigenvalues()(0)));
  const auto top = power_top_eigenvalues(*t.sim->backend, t.wbar, 1, 1000, 1e-9, 4);
  EXPECT_LT(rel(std::fabs(top.values[0]), lmax), 1e-4);
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
  EXPECT_LT(rel(hessian_xi_regularizer(*t.sim->backend), dense), 1e-10);
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
  Backend& b = *t.sim->backend;
  const std::vector<double> eps = b.download(all_rows(*xi_perturbations(b, samples, 6)));
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
  const Estimate e = average_sharpness_xi(b, 400, 2);
  const double reg = hessian_xi_regularizer(b);
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
  Backend& b = *t.sim->backend;
  auto spread_by = [&](double scale) {  // the workers at wbar + scale delta_k
    std::vector<double> rows(t.workers.size());
    for (int k = 0; k < m; ++k)
      for (int64_t i = 0; i < t.d; ++i)
        rows[k * t.d + i] = t.wbar[i] + scale * (t.workers[k * t.d + i] - t.wbar[i]);
    return rows;
  };
  auto smoothing_at = [&](double scale) {
    b.set_weights(spread_by(scale));
    return gradient_smoothing(b).first;
  };
  const double small = smoothing_at(0.01), twice = smoothing_at(0.02);
  EXPECT_GT(small, 0.0);
  EXPECT_NEAR(twice / small, 4.0, 0.2);
  // The value itself: the same difference of gradients from the host-form subset losses.
  std::vector<double> rows = spread_by(0.01), grads;
  const std::vector<double> mean = mean_row(rows, m);
  rows.insert(rows.end(), mean.begin(), mean.end());
  b.subset_loss(rows, &grads);
  Eigen::VectorXd diff = -Eigen::Map<const Eigen::VectorXd>(grads.data() + m * t.d, t.d);
  for (int k = 0; k < m; ++k)
    diff += Eigen::Map<const Eigen::VectorXd>(grads.data() + k * t.d, t.d) / m;
  EXPECT_NEAR(small, diff.norm(), 1e-12 * diff.norm() + 1e-15);
  std::vector<double> same;
  for (int k = 0; k < m; ++k) same.insert(same.end(), t.wbar.begin(), t.wbar.end());
  b.set_weights(same);
  const auto [gap, grad_norm] = gradient_smoothing(b);
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
                        {"method", "power"},
                        {"probes", 8},
                        {"topk", 1},
                        {"lanczos_steps", 8},
                        {"mc_samples", 4},
                        {"sam_steps", 2},
                        {"samples", 64}}}};
  Sim same = make_sim(patch, true);
  const CurvatureConfig& c = same->config.curvature;
  CurvatureFiles files;
  const json r = measure_curvature(*same->backend, c, 1, 0, &files);
  const json& w = files.workers;
  EXPECT_EQ(w["step"], 0);
  EXPECT_EQ(r["workers"]["file"], "worker_curvature.jsonl");
  EXPECT_NEAR(r["workers"]["trace"]["mean"].get<double>(), r["trace"]["value"].get<double>(),
              1e-9 * std::fabs(r["trace"]["value"].get<double>()));
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
  CurvatureFiles a;
  measure_curvature(*apart->backend, apart->config.curvature, 1, 0, &a);
  EXPECT_NE(a.workers["trace"][0].get<double>(), a.workers["trace"][1].get<double>());
  // Only what was asked for.
  json only_trace = patch;
  only_trace["curvature"]["what"] = {"trace"};
  Sim t = make_sim(only_trace, true);
  CurvatureFiles o;
  const json oj = measure_curvature(*t->backend, t->config.curvature, 1, 0, &o);
  EXPECT_TRUE(o.workers.contains("trace"));
  EXPECT_FALSE(o.workers.contains("sam_sharpness"));
  EXPECT_FALSE(o.workers.contains("top_eigenvalue"));
  EXPECT_FALSE(oj["workers"].contains("sam_sharpness"));
  EXPECT_TRUE(o.density.is_null());
}

// --- vectors the backend owns, the batched per-worker pass and the spectral density ---

namespace {

Eigen::VectorXd row_vec(const std::vector<double>& v, int64_t r, int64_t d) {
  return Eigen::Map<const Eigen::VectorXd>(v.data() + r * d, d);
}

}  // namespace

class VectorOpsTest : public ::testing::TestWithParam<bool> {};

// Every vector operation against the same arithmetic in Eigen on host doubles.
TEST_P(VectorOpsTest, EachOperationMatchesItsHostDefinition) {
  Sim s = make_sim({{"workers", 3}, {"model", {{"same_init", false}}}}, GetParam());
  Backend& b = *s->backend;
  const int64_t d = b.dim();
  const double tol = GetParam() ? 1e-12 : 1e-5;
  auto a = b.vectors(4), c = b.vectors(4);
  b.fill_probes(all_rows(*a), Probe::Normal, 9, 40, 2);
  const std::vector<double> av = b.download(all_rows(*a));
  for (int64_t r = 0; r < 4; ++r)
    for (int64_t i = 0; i < d; i += 7)
      EXPECT_NEAR(av[r * d + i], curvature_probe(Probe::Normal, 9, 40 + uint32_t(r / 2), i), tol);
  b.fill_probes(all_rows(*c), Probe::Rademacher, 9, 0);
  const std::vector<double> cv = b.download(all_rows(*c));
  for (int64_t i = 0; i < d; ++i) ASSERT_EQ(std::fabs(cv[i]), 1.0);
  // dots, axpy (one row broadcast), scale, copy
  const auto dots = b.dots(all_rows(*a), all_rows(*c));
  for (int64_t r = 0; r < 4; ++r)
    EXPECT_NEAR(dots[r], row_vec(av, r, d).dot(row_vec(cv, r, d)), tol * double(d));
  b.axpy(all_rows(*c), {1, 2, 3, 4}, row_of(*a, 3));
  b.scale(rows_of(*c, 1, 2), {0.5, -1});
  const std::vector<double> c2 = b.download(all_rows(*c));
  const double factor[4] = {1, 0.5, -1, 1};
  for (int64_t r = 0; r < 4; ++r)
    EXPECT_LT((row_vec(c2, r, d) - factor[r] * (row_vec(cv, r, d) + (r + 1) * row_vec(av, 3, d)))
                  .norm(),
              tol * 10 * std::sqrt(double(d)));
  // project_out against an orthonormal basis (Gram-Schmidt on the host), then combine
  Eigen::MatrixXd B(d, 2);
  B.col(0) = row_vec(av, 0, d).normalized();
  B.col(1) = row_vec(av, 2, d) - B.col(0).dot(row_vec(av, 2, d)) * B.col(0);
  B.col(1).normalize();
  auto basis = b.vectors(2), r = b.vectors(1), out = b.vectors(2);
  std::vector<double> bv(size_t(2 * d));
  Eigen::Map<Eigen::MatrixXd>(bv.data(), d, 2) = B;
  b.upload(all_rows(*basis), bv);
  b.copy(all_rows(*r), row_of(*c, 3));
  b.project_out(all_rows(*r), all_rows(*basis));
  const Eigen::VectorXd x = row_vec(c2, 3, d), expect = x - B * (B.transpose() * x);
  EXPECT_LT((row_vec(b.download(all_rows(*r)), 0, d) - expect).norm(), tol * 10 * x.norm());
  b.combine(all_rows(*basis), {1, 2, -3, 0.5}, all_rows(*out));
  const std::vector<double> ov = b.download(all_rows(*out));
  EXPECT_LT((row_vec(ov, 0, d) - (B.col(0) + 2 * B.col(1))).norm(), tol * 10);
  EXPECT_LT((row_vec(ov, 1, d) - (-3 * B.col(0) + 0.5 * B.col(1))).norm(), tol * 10);
  // copy_weights and mean_weights
  auto w = b.vectors(3), mean = b.vectors(1);
  b.copy_weights(all_rows(*w));
  b.mean_weights(all_rows(*mean));
  const std::vector<double> all = b.weights(), wv = b.download(all_rows(*w));
  const std::vector<double> wbar = mean_row(all, 3), mv = b.download(all_rows(*mean));
  for (size_t i = 0; i < all.size(); ++i) ASSERT_EQ(wv[i], all[i]);
  for (int64_t i = 0; i < d; ++i) EXPECT_NEAR(mv[i], wbar[i], tol);
}

INSTANTIATE_TEST_SUITE_P(Precisions, VectorOpsTest, ::testing::Values(false, true),
                         [](const auto& info) { return info.param ? "float64" : "float32"; });

// HVP pairing: pair i at point i mod P, for P = 1, 2 and as many points as directions, against
// one HVP at a time through the host form.
TEST(CurvatureTest, HvpPairsEachDirectionWithPointIModP) {
  Tiny t;
  Backend& b = *t.sim->backend;
  const int64_t d = t.d;
  auto pts = b.vectors(2), dirs = b.vectors(4), out = b.vectors(4);
  b.upload(row_of(*pts, 0), t.wbar);
  b.upload(row_of(*pts, 1), std::vector<double>(t.workers.begin(), t.workers.begin() + d));
  b.fill_probes(all_rows(*dirs), Probe::Normal, 3, 7);
  b.hvp(all_rows(*pts), all_rows(*dirs), all_rows(*out));
  const std::vector<double> hv = b.download(all_rows(*out)), dv = b.download(all_rows(*dirs));
  const std::vector<double> p = b.download(all_rows(*pts));
  for (int64_t i = 0; i < 4; ++i) {
    const std::vector<double> point(p.begin() + (i % 2) * d, p.begin() + (i % 2 + 1) * d);
    const std::vector<double> dir(dv.begin() + i * d, dv.begin() + (i + 1) * d);
    const std::vector<double> one = b.hvp(point, dir);
    EXPECT_LT((row_vec(hv, i, d) - row_vec(one, 0, d)).norm(), 1e-12 * row_vec(one, 0, d).norm())
        << "pair " << i;
  }
}

// The batched pass over every worker gives what w-bar's estimators give at each worker alone.
TEST(CurvatureTest, EveryWorkerInOnePassEqualsEachWorkerAlone) {
  Tiny t;
  Backend& b = *t.sim->backend;
  const int m = t.sim->config.workers;
  const WorkerCurvature wc = worker_curvature(b, 12, 200, 1e-6, 21);
  ASSERT_EQ(int(wc.trace.size()), m);
  ASSERT_EQ(int(wc.top_eigenvalue.size()), m);
  for (int k = 0; k < m; ++k) {
    const std::vector<double> wk(t.workers.begin() + k * t.d, t.workers.begin() + (k + 1) * t.d);
    const Estimate e = hutchinson_trace(b, wk, 12, 21);
    EXPECT_NEAR(wc.trace[k].value, e.value, 1e-10 * std::fabs(e.value)) << "worker " << k;
    EXPECT_NEAR(wc.trace[k].std_error, e.std_error, 1e-10 * e.std_error);
    const TopEigen p = power_top_eigenvalues(b, wk, 1, 200, 1e-6, 21);
    EXPECT_NEAR(wc.top_eigenvalue[k], p.values[0], 1e-9 * std::fabs(p.values[0])) << "worker " << k;
    EXPECT_GE(wc.power_iterations[k], 2);
  }
  EXPECT_NE(wc.trace[0].value, wc.trace[1].value);  // the workers differ
}

// Eight ReLU workers that converge at very different iterations: once half have stopped, the
// running ones are packed into smaller blocks, and every worker still gets its own figure.
TEST(CurvatureTest, PackingTheRunningWorkersKeepsEachWorkersFigure) {
  Sim s = make_sim({{"workers", 8},
                    {"model", {{"hidden", {12}}, {"activation", "relu"}, {"same_init", false}}},
                    {"optimizer", {{"lr", 0.05}}}},
                   true);
  TopologySchedule topo(s->config.topology, 8, s->config.seed);
  for (int t = 0; t < 5; ++t) train_step(*s->backend, s->config, topo, t, 0.05);
  std::vector<int64_t> all(s->data.train.n);
  std::iota(all.begin(), all.end(), 0);
  s->backend->set_curvature_subset(all);
  const WorkerCurvature wc = worker_curvature(*s->backend, 0, 200, 1e-6, 21);
  std::vector<int> sorted = wc.power_iterations;
  std::sort(sorted.begin(), sorted.end());
  ASSERT_LT(sorted[3], sorted[7]) << "no packing: half of the workers did not stop first "
                                  << ::testing::PrintToString(wc.power_iterations);
  const std::vector<double> w = s->backend->weights();
  const int64_t d = s->model.dim;
  for (int k = 0; k < 8; ++k) {
    const std::vector<double> wk(w.begin() + k * d, w.begin() + (k + 1) * d);
    const TopEigen p = power_top_eigenvalues(*s->backend, wk, 1, 200, 1e-6, 21);
    EXPECT_NEAR(wc.top_eigenvalue[k], p.values[0], 1e-9 * std::fabs(p.values[0])) << "worker " << k;
  }
}

// Lanczos quadrature is exact for polynomials of degree < 2 x steps: with steps = d,
// sum_j w_j theta_j^p = v^T H^p v for the unit start vector v (closed form, explicit H).
TEST(CurvatureTest, SpectralDensityQuadratureReproducesTheMomentsOfH) {
  Tiny t;
  Backend& b = *t.sim->backend;
  auto point = b.vectors(1);
  b.upload(all_rows(*point), t.wbar);
  const uint64_t seed = 17;
  const SpectralDensity s = spectral_density(b, all_rows(*point), 2, int(t.d), 400, 0.01, seed);
  ASSERT_EQ(s.nodes.size(), 2u);
  const Eigen::MatrixXd H = 0.5 * (t.H + t.H.transpose());
  for (int r = 0; r < 2; ++r) {
    Eigen::VectorXd v(t.d);
    for (int64_t i = 0; i < t.d; ++i)
      v[i] = curvature_probe(Probe::Normal, seed, 0x400000u + uint32_t(r), uint64_t(i));
    v.normalize();
    Eigen::VectorXd hp = v;
    for (int p = 0; p <= 3; ++p) {
      double quad = 0;
      for (size_t j = 0; j < s.nodes[r].size(); ++j)
        quad += s.weights[r][j] * std::pow(s.nodes[r][j], p);
      const double exact = v.dot(hp);
      EXPECT_NEAR(quad, exact, 1e-8 * std::max(1.0, std::fabs(exact))) << "run " << r << " p " << p;
      hp = H * hp;
    }
  }
  // The density integrates to 1 on its grid, and its mean is the quadrature's mean eigenvalue.
  const double step = s.grid[1] - s.grid[0];
  double mass = 0, mean = 0, quad_mean = 0;
  for (size_t g = 0; g < s.grid.size(); ++g) {
    const double wgt = (g == 0 || g + 1 == s.grid.size()) ? 0.5 : 1.0;
    mass += wgt * s.density[g] * step;
    mean += wgt * s.density[g] * s.grid[g] * step;
  }
  for (int r = 0; r < 2; ++r)
    for (size_t j = 0; j < s.nodes[r].size(); ++j) quad_mean += s.weights[r][j] * s.nodes[r][j] / 2;
  EXPECT_NEAR(mass, 1.0, 1e-12);
  EXPECT_NEAR(mean, quad_mean, 0.01 * (s.grid.back() - s.grid.front()));
}

TEST(CurvatureTest, SmoothedDensityOfOneNodeIsAGaussian) {
  const SpectralDensity s = smooth_density({{2.0, 4.0}}, {{1.0, 0.0}}, 2001, 0.1);
  EXPECT_DOUBLE_EQ(s.sigma, 0.2);
  // The peak at the node, the value there 1/(sigma sqrt(2 pi)) (up to the cut tails' 0.3%).
  size_t peak = 0;
  for (size_t g = 0; g < s.grid.size(); ++g)
    if (s.density[g] > s.density[peak]) peak = g;
  EXPECT_NEAR(s.grid[peak], 2.0, s.grid[1] - s.grid[0]);
  EXPECT_NEAR(s.density[peak], 1.0 / (0.2 * std::sqrt(2 * M_PI)), 0.01);
  EXPECT_THROW(smooth_density({{1.0}}, {{1.0}}, 1, 0.1), std::exception);
}

// A run with curvature.workers and "density" writes worker_curvature.jsonl and
// spectral_density.jsonl, a line per measurement; a resume keeps them line for line.
TEST(CurvatureReportTest, RunFolderGetsTheWorkerAndDensityFiles) {
  const auto dir = fresh_temp_dir("curvfiles");
  json cfg = tiny_config({{"train", {{"steps", 20}, {"eval_every", 10}, {"checkpoint_every", 10}}},
                          {"curvature",
                           {{"every", 10},
                            {"workers", true},
                            {"what", {"trace", "topk", "density"}},
                            {"probes", 4},
                            {"topk", 2},
                            {"lanczos_steps", 6},
                            {"density_runs", 2},
                            {"density_steps", 8},
                            {"density_bins", 32},
                            {"samples", 64}}}});
  cfg["backend"] = "cpu";
  const RunConfig config = load_config(cfg, {}, "test");
  std::ostringstream log;
  run_training(config, (dir / "whole").string(), log);
  const auto lines = [&](const char* run, const char* f) {
    std::vector<json> out;
    std::ifstream in(dir / run / f);
    for (std::string l; std::getline(in, l);) out.push_back(json::parse(l));
    return out;
  };
  const auto workers = lines("whole", "worker_curvature.jsonl");
  const auto density = lines("whole", "spectral_density.jsonl");
  ASSERT_EQ(workers.size(), 3u);  // steps 0, 10, 20
  ASSERT_EQ(density.size(), 3u);
  EXPECT_EQ(workers[1]["step"], 10);
  EXPECT_EQ(workers[1]["trace"].size(), size_t(config.workers));
  EXPECT_EQ(density[2]["grid"].size(), 32u);
  EXPECT_EQ(density[2]["nodes"].size(), 2u);
  const auto metrics = metrics_without_times(dir / "whole");
  EXPECT_NE(metrics.back().find("\"density\""), std::string::npos);
  EXPECT_NE(metrics.back().find("worker_curvature.jsonl"), std::string::npos);
  // Stopped after step 10, then resumed: the same lines.
  RunOptions stop;
  stop.stop_after = 10;
  run_training(config, (dir / "parts").string(), log, stop);
  EXPECT_EQ(lines("parts", "worker_curvature.jsonl").size(), 2u);
  RunOptions resume;
  resume.resume = true;
  run_training(config, (dir / "parts").string(), log, resume);
  EXPECT_EQ(lines("parts", "worker_curvature.jsonl"), workers);
  EXPECT_EQ(lines("parts", "spectral_density.jsonl"), density);
  std::filesystem::remove_all(dir);
}
