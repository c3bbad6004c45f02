// Curvature estimators (docs/ARCHITECTURE.md, Definitions), built on the backend's batched
// Hessian-vector products and losses over a fixed training subset. Vectors are rows of d
// doubles; every random draw is Philox, seeded, so an estimate repeats exactly.
#pragma once
#include <cstdint>
#include <memory>
#include <vector>

#include "gossamer/backend.hpp"

namespace gossamer {

struct Estimate {
  double value = 0;
  double std_error = 0;  // Monte Carlo standard error; 0 for exact quantities
  int64_t samples = 0;
};

// The k largest eigenpairs of H at a point, largest first.
struct TopEigen {
  std::vector<double> values;
  std::vector<double> residuals;     // ||H u - value u|| with ||u|| = 1, by one more batch of HVPs
  std::unique_ptr<Vectors> vectors;  // the unit eigenvectors u, one row each, on the backend
};

// Every estimator works on vectors the backend owns (device memory on the CUDA backend): the
// point is a row of a Vectors block, probes are drawn where the vectors live, the workers' rows
// are copied there (copy_weights), and only scalars and the small tridiagonal problems reach the
// host. The forms taking a host point upload it once.

// tr H by Hutchinson (1990): mean of z^T H z over Rademacher probes z (probe p: stream
// kTraceStream + p), in batches of HVPs.
Estimate hutchinson_trace(Backend& backend, Rows point, int probes, uint64_t seed);
Estimate hutchinson_trace(Backend& backend, const std::vector<double>& w, int probes,
                          uint64_t seed);

// The k largest eigenvalues by Lanczos with full reorthogonalization (steps Lanczos
// vectors, at most d; the basis stays on the backend), with residuals.
TopEigen lanczos_top_eigenvalues(Backend& backend, Rows point, int k, int steps, uint64_t seed);
TopEigen lanczos_top_eigenvalues(Backend& backend, const std::vector<double>& w, int k, int steps,
                                 uint64_t seed);

// The k eigenvalues of largest modulus by power iteration with deflation, as PyHessian
// does: stop when |lambda - lambda_prev| <= tol (|lambda_prev| + 1e-6) or after max_iters.
TopEigen power_top_eigenvalues(Backend& backend, Rows point, int k, int max_iters, double tol,
                               uint64_t seed);
TopEigen power_top_eigenvalues(Backend& backend, const std::vector<double>& w, int k,
                               int max_iters, double tol, uint64_t seed);

// Every worker's own curvature in one pass (docs/ARCHITECTURE.md, "Curvature on the backend"):
// Hutchinson's trace with its standard error over (worker, probe) pairs, batched (the same
// probes as w-bar's hutchinson_trace, so identical workers give w-bar's figures), and the top
// eigenvalue by power iteration on all m workers at once, each stopping by power_top_eigenvalues'
// rule (the batch runs until every worker has stopped or max_iters; when half of it has stopped,
// the running workers are packed into smaller blocks).
struct WorkerCurvature {
  std::vector<Estimate> trace;        // m; empty when probes == 0
  std::vector<double> top_eigenvalue; // m; empty when max_iters == 0
  std::vector<int> power_iterations;  // m: the iterations each worker took
};
WorkerCurvature worker_curvature(Backend& backend, int probes, int max_iters, double tol,
                                 uint64_t seed);

// The spectral density of H by stochastic Lanczos quadrature (Ubaru, Chen & Saad 2017; as
// PyHessian's density): `runs` Lanczos runs of `steps` from normal start vectors give nodes
// (Ritz values) and weights (squared first components of the Ritz vectors, summing to 1 per
// run); the density on `bins` grid points is their mean Gaussian smoothing with standard
// deviation width x (max node - min node), normalized to integrate to 1 on the grid.
struct SpectralDensity {
  std::vector<double> grid, density;
  std::vector<std::vector<double>> nodes, weights;  // per run
  double sigma = 0;                                 // the smoothing's standard deviation
};
SpectralDensity spectral_density(Backend& backend, Rows point, int runs, int steps, int bins,
                                 double width, uint64_t seed);
// The density of given nodes and weights (per run) on a grid (the smoothing above).
SpectralDensity smooth_density(std::vector<std::vector<double>> nodes,
                               std::vector<std::vector<double>> weights, int bins, double width);

// 1/2 tr(H(wbar) Xi) = (1/2m) sum_k delta_k^T H(wbar) delta_k, delta_k = w_k - wbar: m HVPs in one
// batch, of the backend's current workers, on the backend.
double hessian_xi_regularizer(Backend& backend);

// E_{eps ~ N(0, sigma^2 I)} L(w + eps) - L(w), with antithetic pairs (eps, -eps), which
// cancel the gradient term's variance: samples pairs (eps_s: sigma times a normal probe of
// its own stream), in one batch of 2 samples + 1 subset losses.
Estimate average_sharpness_isotropic(Backend& backend, Rows point, double sigma, int samples,
                                     uint64_t seed);
Estimate average_sharpness_isotropic(Backend& backend, const std::vector<double>& w, double sigma,
                                     int samples, uint64_t seed);

// E_{eps ~ N(0, Xi)} L(wbar + eps) - L(wbar) of the backend's current workers, eps = (1/sqrt m)
// sum_k z_k delta_k, z ~ N(0, I_m) (covariance Xi without a d x d matrix), antithetic pairs.
Estimate average_sharpness_xi(Backend& backend, int samples, uint64_t seed);

// Worst-case (SAM) sharpness max_{||eps|| <= rho} L(w + eps) - L(w) by projected normalized
// gradient ascent from eps_0 = rho g/||g|| (Foret et al. 2021's first-order solution):
// eps <- P_rho(eps + (rho/2) grad/||grad||), `steps` times; reports the largest loss seen
// (a lower bound of the maximum).
double sam_sharpness(Backend& backend, Rows point, double rho, int steps);
double sam_sharpness(Backend& backend, const std::vector<double>& w, double rho, int steps);

// Claim 2 (gradient smoothing) of the backend's current workers: their mean gradient against
// the gradient at their mean, on the subset: returns {||(1/m) sum_k grad L(w_k) - grad L(wbar)||,
// ||grad L(wbar)||}. One batch of m + 1 subset gradients.
std::pair<double, double> gradient_smoothing(Backend& backend);

// The perturbations of average_sharpness_xi of the backend's current workers, a row each: the
// equivalence tracker's, and for checks.
std::unique_ptr<Vectors> xi_perturbations(Backend& backend, int samples, uint64_t seed);

// The mean row of an m x d matrix.
std::vector<double> mean_row(const std::vector<double>& rows, int m);

}  // namespace gossamer
