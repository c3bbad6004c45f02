// Spectral gap of mixing matrices with Eigen's dense solvers (docs/ARCHITECTURE.md, Definitions):
// sigma-based 1 - sigma_2(P), and lambda-based 1 - |lambda_2(P)|.
#include <Eigen/Dense>
#include <algorithm>
#include <functional>

#include "gossamer/topology.hpp"

namespace gossamer {
namespace {

Eigen::MatrixXd to_eigen(const Csr& p) {
  Eigen::MatrixXd a = Eigen::MatrixXd::Zero(p.n, p.n);
  for (int r = 0; r < p.n; ++r)
    for (int e = p.row_ptr[r]; e < p.row_ptr[r + 1]; ++e) a(r, p.col[e]) += p.val[e];
  return a;
}

double second_singular_value(const Eigen::MatrixXd& a) {
  if (a.rows() < 2) return 0.0;
  Eigen::BDCSVD<Eigen::MatrixXd> svd(a);  // singular values only, sorted descending
  return svd.singularValues()(1);
}

}  // namespace

SpectralGap spectral_gap(const Csr& p) {
  SpectralGap g;
  const Eigen::MatrixXd a = to_eigen(p);
  if (p.n < 2) {
    g.gap_sigma = g.gap_lambda = 1.0;
    return g;
  }
  g.sigma2 = second_singular_value(a);
  std::vector<double> moduli;
  if (a.isApprox(a.transpose(), 1e-12)) {
    Eigen::SelfAdjointEigenSolver<Eigen::MatrixXd> es(a, Eigen::EigenvaluesOnly);
    for (int i = 0; i < a.rows(); ++i) moduli.push_back(std::fabs(es.eigenvalues()(i)));
  } else {
    Eigen::EigenSolver<Eigen::MatrixXd> es(a, false);
    for (int i = 0; i < a.rows(); ++i) moduli.push_back(std::abs(es.eigenvalues()(i)));
  }
  std::sort(moduli.begin(), moduli.end(), std::greater<>());
  g.lambda2 = moduli[1];
  g.gap_sigma = 1.0 - g.sigma2;
  g.gap_lambda = 1.0 - g.lambda2;
  return g;
}

double product_gap(const std::vector<Csr>& phases) {
  Eigen::MatrixXd prod = Eigen::MatrixXd::Identity(phases[0].n, phases[0].n);
  for (const auto& p : phases) prod = to_eigen(p) * prod;
  return 1.0 - second_singular_value(prod);
}

}  // namespace gossamer
