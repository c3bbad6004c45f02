#include "gossamer/curvature.hpp"

#include <Eigen/Dense>
#include <algorithm>
#include <cmath>

#include "gossamer/error.hpp"
#include "gossamer/philox.hpp"
#include "rng.hpp"

namespace gossamer {
namespace {

using Vec = Eigen::VectorXd;
using ConstVecMap = Eigen::Map<const Vec>;
using VecMap = Eigen::Map<Vec>;

// Stream ids within the Curvature domain: estimator in the high bits, sample in the low.
constexpr uint32_t kProbeStream = 0u;

Vec random_unit(int64_t d, uint64_t seed, uint32_t stream) {
  PhiloxStream rng(seed, RngDomain::Curvature, kProbeStream | stream);
  Vec v(d);
  for (int64_t i = 0; i < d; ++i) v[i] = rng.normal();
  return v / v.norm();
}

Estimate mean_and_error(const std::vector<double>& x) {
  Estimate e;
  e.samples = int64_t(x.size());
  for (double v : x) e.value += v;
  e.value /= double(x.size());
  if (x.size() > 1) {
    double ss = 0;
    for (double v : x) ss += (v - e.value) * (v - e.value);
    e.std_error = std::sqrt(ss / double(x.size() - 1) / double(x.size()));
  }
  return e;
}

// Residual ||H u - lambda u|| of each pair, by one batch of HVPs.
void fill_residuals(Backend& backend, const std::vector<double>& w, std::vector<Eigenpair>& pairs) {
  if (pairs.empty()) return;
  const size_t d = w.size();
  std::vector<double> dirs;
  for (const auto& p : pairs) dirs.insert(dirs.end(), p.vector.begin(), p.vector.end());
  const std::vector<double> hu = backend.hvp(w, dirs);
  for (size_t i = 0; i < pairs.size(); ++i) {
    const ConstVecMap h(hu.data() + i * d, int64_t(d)), u(pairs[i].vector.data(), int64_t(d));
    pairs[i].residual = (h - pairs[i].value * u).norm();
  }
}

std::vector<double> to_std(const Vec& v) {
  return std::vector<double>(v.data(), v.data() + v.size());
}

// Antithetic Monte Carlo of E L(center + eps) - L(center) over the given perturbations.
Estimate antithetic_sharpness(Backend& backend, const std::vector<double>& center,
                              const std::vector<double>& eps, int samples) {
  const size_t d = center.size();
  std::vector<double> points;
  points.reserve((2 * size_t(samples) + 1) * d);
  points.insert(points.end(), center.begin(), center.end());
  for (int s = 0; s < samples; ++s)
    for (int sign : {1, -1})
      for (size_t i = 0; i < d; ++i) points.push_back(center[i] + sign * eps[s * d + i]);
  const std::vector<double> loss = backend.subset_loss(points, nullptr);
  std::vector<double> diffs(samples);
  for (int s = 0; s < samples; ++s) diffs[s] = 0.5 * (loss[1 + 2 * s] + loss[2 + 2 * s]) - loss[0];
  return mean_and_error(diffs);
}

}  // namespace

std::vector<double> mean_row(const std::vector<double>& rows, int m) {
  const size_t d = rows.size() / size_t(m);
  std::vector<double> mean(d, 0.0);
  for (int k = 0; k < m; ++k)
    for (size_t i = 0; i < d; ++i) mean[i] += rows[k * d + i];
  for (auto& v : mean) v /= m;
  return mean;
}

Estimate hutchinson_trace(Backend& backend, const std::vector<double>& w, int probes,
                          uint64_t seed) {
  const size_t d = w.size();
  std::vector<double> z(size_t(probes) * d);
  for (int p = 0; p < probes; ++p) {
    PhiloxStream rng(seed, RngDomain::Curvature, kProbeStream | 0x100000u | uint32_t(p));
    for (size_t i = 0; i < d; ++i) z[p * d + i] = (rng() & 1u) ? 1.0 : -1.0;
  }
  const std::vector<double> hz = backend.hvp(w, z);
  std::vector<double> quad(probes);
  for (int p = 0; p < probes; ++p)
    quad[p] =
        ConstVecMap(z.data() + p * d, int64_t(d)).dot(ConstVecMap(hz.data() + p * d, int64_t(d)));
  return mean_and_error(quad);
}

std::vector<Eigenpair> lanczos_top_eigenvalues(Backend& backend, const std::vector<double>& w,
                                               int k, int steps, uint64_t seed) {
  const int64_t d = int64_t(w.size());
  steps = int(std::min<int64_t>(steps, d));
  k = std::min(k, steps);
  Eigen::MatrixXd V(d, steps);  // Lanczos vectors, kept for full reorthogonalization
  std::vector<double> alpha, beta;
  V.col(0) = random_unit(d, seed, 0);
  int n = 0;
  std::vector<double> hv;
  for (int j = 0; j < steps; ++j) {
    backend.hvp_into(w, to_std(V.col(j)), hv);
    Vec r = ConstVecMap(hv.data(), d);
    alpha.push_back(V.col(j).dot(r));
    // Full reorthogonalization, twice ("twice is enough", Parlett): r <- r - V (V^T r).
    for (int pass = 0; pass < 2; ++pass)
      r -= V.leftCols(j + 1) * (V.leftCols(j + 1).transpose() * r);
    n = j + 1;
    const double b = r.norm();
    if (j + 1 == steps || b <= 1e-12 * std::max(1.0, std::fabs(alpha.back())))
      break;  // invariant subspace
    beta.push_back(b);
    V.col(j + 1) = r / b;
  }
  // Eigen-decomposition of the tridiagonal T = V^T H V.
  Eigen::MatrixXd T = Eigen::MatrixXd::Zero(n, n);
  for (int i = 0; i < n; ++i) T(i, i) = alpha[i];
  for (int i = 0; i + 1 < n; ++i) T(i, i + 1) = T(i + 1, i) = beta[i];
  Eigen::SelfAdjointEigenSolver<Eigen::MatrixXd> es(T);
  std::vector<Eigenpair> out;
  for (int i = 0; i < std::min(k, n); ++i) {
    const int col = n - 1 - i;  // ascending order: the largest last
    Eigenpair p;
    p.value = es.eigenvalues()(col);
    const Vec u = V.leftCols(n) * es.eigenvectors().col(col);
    p.vector = to_std(u / u.norm());
    out.push_back(std::move(p));
  }
  fill_residuals(backend, w, out);
  return out;
}

std::vector<Eigenpair> power_top_eigenvalues(Backend& backend, const std::vector<double>& w, int k,
                                             int max_iters, double tol, uint64_t seed) {
  const int64_t d = int64_t(w.size());
  std::vector<Eigenpair> out;
  auto deflate = [&](Vec& v) {
    for (const auto& p : out)
      v -= ConstVecMap(p.vector.data(), d).dot(v) * ConstVecMap(p.vector.data(), d);
    v /= v.norm();
  };
  for (int e = 0; e < k; ++e) {
    Vec v = random_unit(d, seed, 0x1000u + uint32_t(e));
    deflate(v);
    double lambda = 0;
    std::vector<double> hv;
    for (int it = 0; it < max_iters; ++it) {
      backend.hvp_into(w, to_std(v), hv);
      Vec h = ConstVecMap(hv.data(), d);
      const double next = h.dot(v);
      v = h;
      deflate(v);
      const bool converged = it > 0 && std::fabs(next - lambda) <= tol * (std::fabs(lambda) + 1e-6);
      lambda = next;
      if (converged) break;
    }
    Eigenpair p;
    p.value = lambda;
    p.vector = to_std(v);
    out.push_back(std::move(p));
  }
  fill_residuals(backend, w, out);
  return out;
}

double hessian_xi_regularizer(Backend& backend, const std::vector<double>& workers, int m) {
  const std::vector<double> mean = mean_row(workers, m);
  const size_t d = mean.size();
  std::vector<double> delta(workers.size());
  for (int k = 0; k < m; ++k)
    for (size_t i = 0; i < d; ++i) delta[k * d + i] = workers[k * d + i] - mean[i];
  const std::vector<double> hd = backend.hvp(mean, delta);
  double sum = 0;
  for (int k = 0; k < m; ++k)
    sum += ConstVecMap(delta.data() + k * d, int64_t(d))
               .dot(ConstVecMap(hd.data() + k * d, int64_t(d)));
  return sum / (2.0 * m);
}

Estimate average_sharpness_isotropic(Backend& backend, const std::vector<double>& w, double sigma,
                                     int samples, uint64_t seed) {
  const size_t d = w.size();
  std::vector<double> eps(size_t(samples) * d);
  for (int s = 0; s < samples; ++s) {
    PhiloxStream rng(seed, RngDomain::Curvature, kProbeStream | 0x200000u | uint32_t(s));
    for (size_t i = 0; i < d; ++i) eps[s * d + i] = sigma * rng.normal();
  }
  return antithetic_sharpness(backend, w, eps, samples);
}

std::vector<double> xi_perturbations(const std::vector<double>& workers, int m, int samples,
                                     uint64_t seed) {
  const std::vector<double> mean = mean_row(workers, m);
  const size_t d = mean.size();
  std::vector<double> eps(size_t(samples) * d, 0.0);
  for (int s = 0; s < samples; ++s) {
    PhiloxStream rng(seed, RngDomain::Curvature, kProbeStream | 0x300000u | uint32_t(s));
    for (int k = 0; k < m; ++k) {
      const double z = rng.normal() / std::sqrt(double(m));
      for (size_t i = 0; i < d; ++i) eps[s * d + i] += z * (workers[k * d + i] - mean[i]);
    }
  }
  return eps;
}

Estimate average_sharpness_xi(Backend& backend, const std::vector<double>& workers, int m,
                              int samples, uint64_t seed) {
  return antithetic_sharpness(backend, mean_row(workers, m),
                              xi_perturbations(workers, m, samples, seed), samples);
}

std::pair<double, double> gradient_smoothing(Backend& backend, const std::vector<double>& workers,
                                             int m) {
  const std::vector<double> mean = mean_row(workers, m);
  const size_t d = mean.size();
  std::vector<double> points = workers, grads;
  points.insert(points.end(), mean.begin(), mean.end());
  backend.subset_loss(points, &grads);
  const std::vector<double> mean_grad =
      mean_row(std::vector<double>(grads.begin(), grads.begin() + m * d), m);
  const ConstVecMap at_mean(grads.data() + m * d, int64_t(d));
  return {(ConstVecMap(mean_grad.data(), int64_t(d)) - at_mean).norm(), at_mean.norm()};
}

double sam_sharpness(Backend& backend, const std::vector<double>& w, double rho, int steps) {
  const int64_t d = int64_t(w.size());
  std::vector<double> grad;
  const double base = backend.subset_loss(w, &grad)[0];
  Vec g = ConstVecMap(grad.data(), d);
  if (g.norm() == 0 || rho == 0) return 0.0;
  Vec eps = rho * g / g.norm();
  double best = base;
  for (int s = 0; s <= steps; ++s) {
    std::vector<double> point(w);
    VecMap(point.data(), d) += eps;
    const double loss = backend.subset_loss(point, &grad)[0];
    best = std::max(best, loss);
    if (s == steps) break;
    g = ConstVecMap(grad.data(), d);
    if (g.norm() == 0) break;
    eps += 0.5 * rho * g / g.norm();
    if (eps.norm() > rho) eps *= rho / eps.norm();  // projection onto the ball
  }
  return best - base;
}

}  // namespace gossamer
