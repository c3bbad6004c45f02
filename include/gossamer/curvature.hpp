// Curvature estimators (docs/ARCHITECTURE.md, Definitions), built on the backend's batched
// Hessian-vector products and losses over a fixed training subset. Vectors are rows of d
// doubles; every random draw is Philox, seeded, so an estimate repeats exactly.
#pragma once
#include <cstdint>
#include <vector>

#include "gossamer/backend.hpp"

namespace gossamer {

struct Estimate {
  double value = 0;
  double std_error = 0;  // Monte Carlo standard error; 0 for exact quantities
  int64_t samples = 0;
};

struct Eigenpair {
  double value = 0;
  double residual = 0;  // ||H u - value u|| with ||u|| = 1, by one more HVP
  std::vector<double> vector;
};

// tr H by Hutchinson (1990): mean of z^T H z over Rademacher probes z, all in one batch.
Estimate hutchinson_trace(Backend& backend, const std::vector<double>& w, int probes,
                          uint64_t seed);

// The k largest eigenvalues by Lanczos with full reorthogonalization (steps Lanczos
// vectors, at most d), with residuals.
std::vector<Eigenpair> lanczos_top_eigenvalues(Backend& backend, const std::vector<double>& w,
                                               int k, int steps, uint64_t seed);

// The k eigenvalues of largest modulus by power iteration with deflation, as PyHessian
// does: stop when |lambda - lambda_prev| <= tol (|lambda_prev| + 1e-6) or after max_iters.
std::vector<Eigenpair> power_top_eigenvalues(Backend& backend, const std::vector<double>& w, int k,
                                             int max_iters, double tol, uint64_t seed);

// 1/2 tr(H(wbar) Xi) = (1/2m) sum_k delta_k^T H(wbar) delta_k, delta_k = w_k - wbar: m HVPs in one
// batch. `workers` is m x d.
double hessian_xi_regularizer(Backend& backend, const std::vector<double>& workers, int m);

// E_{eps ~ N(0, sigma^2 I)} L(w + eps) - L(w), with antithetic pairs (eps, -eps), which
// cancel the gradient term's variance: samples pairs.
Estimate average_sharpness_isotropic(Backend& backend, const std::vector<double>& w, double sigma,
                                     int samples, uint64_t seed);

// E_{eps ~ N(0, Xi)} L(wbar + eps) - L(wbar), eps = (1/sqrt m) sum_k z_k delta_k, z ~ N(0, I_m)
// (covariance Xi without a d x d matrix), antithetic pairs.
Estimate average_sharpness_xi(Backend& backend, const std::vector<double>& workers, int m,
                              int samples, uint64_t seed);

// Worst-case (SAM) sharpness max_{||eps|| <= rho} L(w + eps) - L(w) by projected normalized
// gradient ascent from eps_0 = rho g/||g|| (Foret et al. 2021's first-order solution):
// eps <- P_rho(eps + (rho/2) grad/||grad||), `steps` times; reports the largest loss seen
// (a lower bound of the maximum).
double sam_sharpness(Backend& backend, const std::vector<double>& w, double rho, int steps);

// Claim 2 (gradient smoothing): the workers' mean gradient against the gradient at their
// mean, on the subset: returns {||(1/m) sum_k grad L(w_k) - grad L(wbar)||, ||grad L(wbar)||}.
std::pair<double, double> gradient_smoothing(Backend& backend, const std::vector<double>& workers,
                                             int m);

// The perturbations of average_sharpness_xi, for checks: samples x d.
std::vector<double> xi_perturbations(const std::vector<double>& workers, int m, int samples,
                                     uint64_t seed);

// The mean row of an m x d matrix.
std::vector<double> mean_row(const std::vector<double>& rows, int m);

}  // namespace gossamer
