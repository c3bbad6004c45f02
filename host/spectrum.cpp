// Spectral gaps at any number of workers, from the CSR, never an m x m matrix (docs/ARCHITECTURE.md, "Rules
// of scale"):
// - circulant P (ring, exponential, one-peer phases, complete; found from the CSR itself):
//   eigenvalues lambda_j = sum_o c_o exp(2 pi i j o / m), the DFT of the first row c; P is
//   normal, so its singular values are |lambda_j|, and circulant phases commute, so a period's
//   product has eigenvalues prod_t lambda_j(P_t);
// - P = I - w L with one weight w on every edge (uniform weights) of a grid, torus, hypercube or
//   star: lambda = 1 - w mu over the Laplacian's eigenvalues mu, known in closed form (a grid's
//   and a torus's are sums of a path's or cycle's: 2 - 2 cos(pi k / n), 2 - 2 cos(2 pi k / n));
// - otherwise dense (Eigen) up to kDenseSpectrumWorkers, and above by Lanczos with full
//   reorthogonalization on Q^T Q (Q = P or a period's product), deflated by the ones vector when
//   Q is doubly stochastic, with the residual ||A u - theta u|| of the reported pair.
#include <Eigen/Dense>
#include <algorithm>
#include <cmath>
#include <complex>
#include <functional>
#include <numbers>
#include <numeric>

#include "gossamer/philox.hpp"
#include "gossamer/topology.hpp"

namespace gossamer {
namespace {

constexpr double kTwoPi = 2 * std::numbers::pi;

// The first row as (offset, value) pairs when row k is row 0 shifted by k (mod m), else empty.
std::vector<std::pair<int, double>> circulant_row(const Csr& p) {
  const int m = p.n;
  std::vector<std::pair<int, double>> first, row;
  for (int k = 0; k < m; ++k) {
    row.clear();
    for (int e = p.row_ptr[k]; e < p.row_ptr[k + 1]; ++e)
      if (p.val[e] != 0) row.push_back({((p.col[e] - k) % m + m) % m, p.val[e]});
    std::sort(row.begin(), row.end());
    if (k == 0)
      first = row;
    else if (row != first)
      return {};
  }
  return first;
}

// lambda_j for j = 0 .. m-1 of the circulant with first row `c`.
std::vector<std::complex<double>> circulant_eigenvalues(const std::vector<std::pair<int, double>>& c,
                                                        int m) {
  std::vector<std::complex<double>> lambda(m, 0.0);
  if (int(c.size()) == m) {  // every entry equal (complete): only lambda_0 is nonzero
    bool equal = true;
    for (const auto& [o, v] : c) equal = equal && v == c[0].second;
    if (equal) {
      lambda[0] = c[0].second * m;
      return lambda;
    }
  }
  for (int j = 0; j < m; ++j) {
    std::complex<double> s = 0;
    for (const auto& [o, v] : c) {
      const double angle = kTwoPi * double((int64_t(j) * o) % m) / m;  // exact reduction mod m
      s += v * std::complex<double>(std::cos(angle), std::sin(angle));
    }
    lambda[j] = s;
  }
  return lambda;
}

// 1 - max_{j >= 1} |prod_t lambda_j(P_t)|: every P_t circulant.
SpectralGap circulant_gap(const std::vector<std::vector<std::complex<double>>>& phases, int m,
                          bool period) {
  double second = 0;
  for (int j = 1; j < m; ++j) {
    std::complex<double> prod = 1;
    for (size_t t = 0; t < (period ? phases.size() : 1); ++t) prod *= phases[t][j];
    second = std::max(second, std::abs(prod));
  }
  SpectralGap g;
  g.sigma2 = g.lambda2 = second;
  g.gap_sigma = g.gap_lambda = 1 - second;
  g.method = "closed form (circulant: DFT of the first row)";
  return g;
}

// The one weight w of every off-diagonal entry, or 0 if they differ.
double single_edge_weight(const Csr& p) {
  double w = 0;
  for (int r = 0; r < p.n; ++r)
    for (int e = p.row_ptr[r]; e < p.row_ptr[r + 1]; ++e) {
      if (p.col[e] == r || p.val[e] == 0) continue;
      if (w == 0) w = p.val[e];
      if (p.val[e] != w) return 0;
    }
  return w;
}

// Laplacian eigenvalues of a path (wrap = false) or cycle of n nodes, as gossamer builds them (a
// 2-cycle is one edge, so a path).
std::vector<double> line_laplacian(int n, bool wrap) {
  std::vector<double> mu(n);
  for (int k = 0; k < n; ++k)
    mu[k] = wrap && n > 2 ? 2 - 2 * std::cos(kTwoPi * k / n) : 2 - 2 * std::cos(std::numbers::pi * k / n);
  return mu;
}

// The Laplacian spectrum of a named undirected graph, empty if it has no closed form here.
std::vector<double> laplacian_spectrum(const std::string& name, int m) {
  std::vector<double> mu;
  if (name == "grid" || name == "torus") {
    const auto [rows, cols] = grid_shape(m);
    const auto a = line_laplacian(rows, name == "torus"), b = line_laplacian(cols, name == "torus");
    mu.reserve(size_t(m));
    for (double x : a)
      for (double y : b) mu.push_back(x + y);
  } else if (name == "hypercube") {
    for (int k = 0; k < m; ++k) mu.push_back(2.0 * __builtin_popcount(unsigned(k)));
  } else if (name == "star" && m >= 2) {
    mu.assign(size_t(m), 1.0);
    mu[0] = 0;
    mu[1] = m;
  } else if (name == "ring" && m <= 2) {
    mu = line_laplacian(m, false);
  }
  return mu;
}

SpectralGap laplacian_gap(const std::vector<double>& mu, double w) {
  // lambda = 1 - w mu; the one mu = 0 (smallest) is the consensus direction.
  std::vector<double> sorted = mu;
  std::sort(sorted.begin(), sorted.end());
  double second = 0;
  for (size_t i = 1; i < sorted.size(); ++i) second = std::max(second, std::fabs(1 - w * sorted[i]));
  SpectralGap g;
  g.sigma2 = g.lambda2 = second;
  g.gap_sigma = g.gap_lambda = 1 - second;
  g.method = "closed form (1 - w x Laplacian eigenvalues)";
  return g;
}

void csr_multiply(const Csr& p, const double* x, double* y) {
  for (int r = 0; r < p.n; ++r) {
    double s = 0;
    for (int e = p.row_ptr[r]; e < p.row_ptr[r + 1]; ++e) s += p.val[e] * x[p.col[e]];
    y[r] = s;
  }
}

void csr_multiply_transposed(const Csr& p, const double* x, double* y) {
  std::fill(y, y + p.n, 0.0);
  for (int r = 0; r < p.n; ++r)
    for (int e = p.row_ptr[r]; e < p.row_ptr[r + 1]; ++e) y[p.col[e]] += p.val[e] * x[r];
}

bool doubly_stochastic(const Csr& p) {
  std::vector<double> cols(size_t(p.n), 0.0);
  for (int r = 0; r < p.n; ++r) {
    double row = 0;
    for (int e = p.row_ptr[r]; e < p.row_ptr[r + 1]; ++e) row += p.val[e], cols[p.col[e]] += p.val[e];
    if (std::fabs(row - 1) > 1e-12 * p.n) return false;
  }
  for (double c : cols)
    if (std::fabs(c - 1) > 1e-12 * p.n) return false;
  return true;
}

// sigma_2 of Q = P_{k-1} ... P_0 by Lanczos on Q^T Q.
SpectralGap lanczos_gap(const std::vector<const Csr*>& q, double tolerance) {
  const int m = q[0]->n;
  bool deflate = true;
  for (const Csr* p : q) deflate = deflate && doubly_stochastic(*p);
  std::vector<double> tmp(static_cast<size_t>(m)), tmp2(static_cast<size_t>(m));
  const auto apply = [&](const std::vector<double>& x, std::vector<double>& y) {
    tmp = x;
    for (const Csr* p : q) csr_multiply(*p, tmp.data(), tmp2.data()), tmp.swap(tmp2);
    for (auto it = q.rbegin(); it != q.rend(); ++it)
      csr_multiply_transposed(**it, tmp.data(), tmp2.data()), tmp.swap(tmp2);
    y = tmp;
  };
  const auto project = [&](std::vector<double>& v) {  // out of span(1) when deflating
    if (!deflate) return;
    double mean = 0;
    for (double x : v) mean += x;
    mean /= m;
    for (double& x : v) x -= mean;
  };
  // The basis is held whole (full reorthogonalization): at most 256 MiB of it.
  const int max_steps = int(std::clamp<int64_t>((int64_t(256) << 20) / (8 * int64_t(m)), 8, 300));
  const int steps_cap = std::min(max_steps, deflate ? m - 1 : m);
  std::vector<std::vector<double>> basis;
  std::vector<double> alpha, beta;
  std::vector<double> v(static_cast<size_t>(m)), w(static_cast<size_t>(m));
  for (int i = 0; i < m; ++i) {
    const Philox4 r = philox_draw(1, RngDomain::Topology, 0xA5u, uint64_t(i));
    v[i] = philox_normal(r.v[0], r.v[1]);
  }
  project(v);
  const auto normalize = [&](std::vector<double>& x) {
    double n2 = 0;
    for (double e : x) n2 += e * e;
    const double n = std::sqrt(n2);
    for (double& e : x) e /= n;
    return n;
  };
  normalize(v);
  SpectralGap g;
  g.method = "Lanczos on the CSR";
  const int target = deflate ? 0 : 1;  // index of sigma_2^2 among the Ritz values, largest first
  double theta = 0, residual = INFINITY;
  for (int k = 0; k < steps_cap; ++k) {
    basis.push_back(v);
    apply(v, w);
    project(w);
    const double a = std::inner_product(w.begin(), w.end(), v.begin(), 0.0);
    alpha.push_back(a);
    for (int pass = 0; pass < 2; ++pass)  // full reorthogonalization, twice is enough
      for (const auto& b : basis) {
        const double c = std::inner_product(w.begin(), w.end(), b.begin(), 0.0);
        for (int i = 0; i < m; ++i) w[i] -= c * b[i];
      }
    const double b = normalize(w);
    // Ritz values of the tridiagonal T_k, largest first; the residual of pair i is |b s_k,i|.
    const int n = int(alpha.size());
    Eigen::MatrixXd t = Eigen::MatrixXd::Zero(n, n);
    for (int i = 0; i < n; ++i) {
      t(i, i) = alpha[i];
      if (i + 1 < n) t(i, i + 1) = t(i + 1, i) = beta[i];
    }
    Eigen::SelfAdjointEigenSolver<Eigen::MatrixXd> es(t);
    if (n > target) {
      const int idx = n - 1 - target;
      theta = es.eigenvalues()(idx);
      residual = std::fabs(b * es.eigenvectors()(n - 1, idx));
    }
    beta.push_back(b);
    if ((n > target && residual <= tolerance) || b < 1e-14) break;
    v = w;
  }
  g.sigma2 = std::sqrt(std::max(theta, 0.0));
  g.gap_sigma = 1 - g.sigma2;
  g.residual = residual;
  g.tolerance = tolerance;
  return g;
}

}  // namespace

std::pair<int, int> grid_shape(int m) {
  int rows = int(std::sqrt(double(m)));
  while (rows > 1 && m % rows) --rows;
  return {std::max(rows, 1), m / std::max(rows, 1)};
}

SpectralGap schedule_gap(const TopologySchedule& s, bool period) {
  const int m = s.phase(0).n;
  SpectralGap g;
  if (m < 2) {
    g.gap_sigma = g.gap_lambda = 1;
    g.method = "one worker";
    return g;
  }
  const int count = period ? s.phases() : 1;
  // Circulant phases.
  std::vector<std::vector<std::complex<double>>> spectra;
  for (int t = 0; t < count; ++t) {
    const auto row = circulant_row(s.phase(t));
    if (row.empty()) break;
    spectra.push_back(circulant_eigenvalues(row, m));
  }
  if (int(spectra.size()) == count) return circulant_gap(spectra, m, period);
  // One weight on every edge of a named graph.
  if (count == 1) {
    const double w = single_edge_weight(s.phase(0));
    const auto mu = laplacian_spectrum(s.name(), m);
    if (w > 0 && int(mu.size()) == m) return laplacian_gap(mu, w);
  }
  if (m <= kDenseSpectrumWorkers) {
    if (!period) return spectral_gap(s.phase(0));
    std::vector<Csr> phases;
    for (int t = 0; t < count; ++t) phases.push_back(s.phase(t));
    g.gap_sigma = product_gap(phases);
    g.sigma2 = 1 - g.gap_sigma;
    g.method = "dense";
    return g;
  }
  std::vector<const Csr*> q;
  for (int t = 0; t < count; ++t) q.push_back(&s.phase(t));
  g = lanczos_gap(q, kSpectrumTolerance);
  // For symmetric P, |lambda| = sigma; otherwise no modulus is computed at this size.
  bool symmetric = count == 1;
  const Csr& p = s.phase(0);
  for (int r = 0; r < m && symmetric; ++r)
    for (int e = p.row_ptr[r]; e < p.row_ptr[r + 1] && symmetric; ++e) {
      const int c = p.col[e];
      const auto begin = p.col.begin() + p.row_ptr[c], end = p.col.begin() + p.row_ptr[c + 1];
      const auto it = std::lower_bound(begin, end, r);
      symmetric = it != end && *it == r && p.val[size_t(it - p.col.begin())] == p.val[e];
    }
  g.lambda2 = symmetric ? g.sigma2 : NAN;
  g.gap_lambda = 1 - g.lambda2;
  return g;
}

SpectralGap lanczos_spectral_gap(const Csr& p) {
  return lanczos_gap({&p}, kSpectrumTolerance);
}

}  // namespace gossamer
