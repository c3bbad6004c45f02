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

// Probe streams within the Curvature domain, one range per estimator.
constexpr uint32_t kLanczosStream = 0u;           // Lanczos' start vector
constexpr uint32_t kPowerStream = 0x1000u;        // + eigenpair index
constexpr uint32_t kTraceStream = 0x100000u;      // + probe
constexpr uint32_t kIsotropicStream = 0x200000u;  // + sample
constexpr uint32_t kXiStream = 0x300000u;         // + sample
constexpr uint32_t kDensityStream = 0x400000u;    // + run

// Rows of probes a batch holds: about 256 MiB of doubles over `blocks` blocks, at least 1.
int64_t batch_rows(int64_t d, int64_t blocks) {
  const int64_t budget = (int64_t(256) << 20) / 8 / std::max<int64_t>(1, blocks);
  return std::max<int64_t>(1, budget / std::max<int64_t>(1, d));
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

std::vector<double> inverse_norms(const std::vector<double>& squares) {
  std::vector<double> out(squares.size());
  for (size_t i = 0; i < squares.size(); ++i)
    out[i] = squares[i] > 0 ? 1.0 / std::sqrt(squares[i]) : 0.0;
  return out;
}

// A unit start vector from a normal probe, in row `r`.
void unit_probe(Backend& b, Rows r, uint64_t seed, uint32_t stream) {
  b.fill_probes(r, Probe::Normal, seed, stream);
  b.scale(r, inverse_norms(b.dots(r, r)));
}

// Residuals ||H u - lambda u|| of unit rows u at a point, by one batch of HVPs.
std::vector<double> residuals(Backend& b, Rows point, Rows u, const std::vector<double>& values) {
  auto hu = b.vectors(u.count);
  b.hvp(point, u, all_rows(*hu));
  std::vector<double> minus(values.size());
  for (size_t i = 0; i < values.size(); ++i) minus[i] = -values[i];
  b.axpy(all_rows(*hu), minus, u);
  std::vector<double> r = b.dots(all_rows(*hu), all_rows(*hu));
  for (auto& v : r) v = std::sqrt(std::max(0.0, v));
  return r;
}

// The point as a one-row block of the backend.
std::unique_ptr<Vectors> point_block(Backend& b, const std::vector<double>& w) {
  auto p = b.vectors(1);
  b.upload(all_rows(*p), w);
  return p;
}

// Lanczos with full reorthogonalization from the unit row 0 of V (V has `steps` rows): the
// tridiagonal T = V^T H V (alpha: diagonal, beta: off-diagonal), stopped early at an invariant
// subspace. Only scalars come back from the backend.
struct Tridiagonal {
  std::vector<double> alpha, beta;
};

Tridiagonal lanczos(Backend& b, Rows point, Vectors& V, int steps) {
  auto r = b.vectors(1);
  const Rows rr = all_rows(*r);
  Tridiagonal t;
  for (int j = 0; j < steps; ++j) {
    b.hvp(point, row_of(V, j), rr);
    t.alpha.push_back(b.dots(row_of(V, j), rr)[0]);
    // Full reorthogonalization, twice ("twice is enough", Parlett): r <- r - V (V^T r).
    for (int pass = 0; pass < 2; ++pass) b.project_out(rr, rows_of(V, 0, j + 1));
    const double beta = std::sqrt(std::max(0.0, b.dots(rr, rr)[0]));
    if (j + 1 == steps || beta <= 1e-12 * std::max(1.0, std::fabs(t.alpha.back()))) break;
    t.beta.push_back(beta);
    b.copy(row_of(V, j + 1), rr);
    b.scale(row_of(V, j + 1), {1.0 / beta});
  }
  return t;
}

Eigen::SelfAdjointEigenSolver<Eigen::MatrixXd> solve(const Tridiagonal& t) {
  const int n = int(t.alpha.size());
  Eigen::MatrixXd T = Eigen::MatrixXd::Zero(n, n);
  for (int i = 0; i < n; ++i) T(i, i) = t.alpha[i];
  for (int i = 0; i + 1 < n; ++i) T(i, i + 1) = T(i + 1, i) = t.beta[i];
  return Eigen::SelfAdjointEigenSolver<Eigen::MatrixXd>(T);
}

// ||r|| of one row.
double norm_of(Backend& b, Rows r) {
  return std::sqrt(std::max(0.0, b.dots(r, r)[0]));
}

// Antithetic Monte Carlo of E L(center + eps) - L(center) over the rows eps of a block: one
// batch of subset losses at center, center + eps_s and center - eps_s.
Estimate antithetic_sharpness(Backend& b, Rows center, Rows eps) {
  const int64_t n = eps.count;
  auto points = b.vectors(2 * n + 1);
  b.axpy(all_rows(*points), std::vector<double>(size_t(2 * n + 1), 1.0), center);
  b.axpy(rows_of(*points, 1, n), std::vector<double>(size_t(n), 1.0), eps);
  b.axpy(rows_of(*points, 1 + n, n), std::vector<double>(size_t(n), -1.0), eps);
  const std::vector<double> loss = b.subset_loss(all_rows(*points));
  std::vector<double> diffs(size_t(n), 0.0);
  for (int64_t s = 0; s < n; ++s)
    diffs[size_t(s)] = 0.5 * (loss[size_t(1 + s)] + loss[size_t(1 + n + s)]) - loss[0];
  return mean_and_error(diffs);
}

// The workers' mean (one row) and their deviations from it, delta_k = w_k - wbar (m rows).
struct Deviations {
  std::unique_ptr<Vectors> mean, delta;
};
Deviations deviations(Backend& b) {
  const int m = b.workers();
  Deviations d{b.vectors(1), b.vectors(m)};
  b.mean_weights(all_rows(*d.mean));
  b.copy_weights(all_rows(*d.delta));
  b.axpy(all_rows(*d.delta), std::vector<double>(size_t(m), -1.0), all_rows(*d.mean));
  return d;
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

namespace {

// Hutchinson at each of the P rows of `points`: every point's z^T H z for probes 0 .. probes-1
// (probe p: stream kTraceStream + p, the same for every point), in batches of (probe, point)
// pairs at row p P + k, so that hvp pairs row i with point i mod P.
std::vector<Estimate> hutchinson_traces(Backend& b, Rows points, int probes, uint64_t seed) {
  if (probes < 1) throw runtime_error("hutchinson_trace: probes must be >= 1");
  const int64_t P = points.count;
  const int64_t chunk = std::clamp<int64_t>(batch_rows(b.dim(), 2) / P, 1, probes);
  auto z = b.vectors(chunk * P), hz = b.vectors(chunk * P);
  std::vector<std::vector<double>> quad(static_cast<size_t>(P));
  for (int64_t p0 = 0; p0 < probes; p0 += chunk) {
    const int64_t n = std::min<int64_t>(chunk, probes - p0) * P;
    const Rows zr = rows_of(*z, 0, n), hr = rows_of(*hz, 0, n);
    b.fill_probes(zr, Probe::Rademacher, seed, kTraceStream + uint32_t(p0), P);
    b.hvp(points, zr, hr);
    const std::vector<double> q = b.dots(zr, hr);
    for (int64_t i = 0; i < n; ++i) quad[size_t(i % P)].push_back(q[size_t(i)]);
  }
  std::vector<Estimate> out;
  for (const auto& q : quad) out.push_back(mean_and_error(q));
  return out;
}

}  // namespace

Estimate hutchinson_trace(Backend& b, Rows point, int probes, uint64_t seed) {
  return hutchinson_traces(b, point, probes, seed).at(0);
}

Estimate hutchinson_trace(Backend& b, const std::vector<double>& w, int probes, uint64_t seed) {
  auto p = point_block(b, w);
  return hutchinson_trace(b, all_rows(*p), probes, seed);
}

TopEigen lanczos_top_eigenvalues(Backend& b, Rows point, int k, int steps, uint64_t seed) {
  steps = int(std::min<int64_t>(steps, b.dim()));
  if (steps < 1 || k < 1) throw runtime_error("lanczos: steps and k must be >= 1");
  auto V = b.vectors(steps);
  unit_probe(b, row_of(*V, 0), seed, kLanczosStream);
  const Tridiagonal t = lanczos(b, point, *V, steps);
  const int n = int(t.alpha.size());
  k = std::min(k, n);
  const auto es = solve(t);
  TopEigen out;
  std::vector<double> coeffs;  // Ritz vector i = V^T y_i, y_i the eigenvector of T
  for (int i = 0; i < k; ++i) {
    const int col = n - 1 - i;  // ascending order: the largest last
    out.values.push_back(es.eigenvalues()(col));
    for (int j = 0; j < n; ++j) coeffs.push_back(es.eigenvectors()(j, col));
  }
  out.vectors = b.vectors(k);
  const Rows u = all_rows(*out.vectors);
  b.combine(rows_of(*V, 0, n), coeffs, u);
  b.scale(u, inverse_norms(b.dots(u, u)));
  out.residuals = residuals(b, point, u, out.values);
  return out;
}

TopEigen lanczos_top_eigenvalues(Backend& b, const std::vector<double>& w, int k, int steps,
                                 uint64_t seed) {
  auto p = point_block(b, w);
  return lanczos_top_eigenvalues(b, all_rows(*p), k, steps, seed);
}

TopEigen power_top_eigenvalues(Backend& b, Rows point, int k, int max_iters, double tol,
                               uint64_t seed) {
  if (k < 1 || max_iters < 1) throw runtime_error("power iteration: k and max_iters must be >= 1");
  TopEigen out;
  out.vectors = b.vectors(k);
  auto hv = b.vectors(1);
  const Rows h = all_rows(*hv);
  for (int e = 0; e < k; ++e) {
    const Rows v = row_of(*out.vectors, e);
    // Deflation: v (and each iterate) kept orthogonal to the eigenvectors already found.
    const auto deflate = [&] {
      if (e > 0) b.project_out(v, rows_of(*out.vectors, 0, e));
      b.scale(v, inverse_norms(b.dots(v, v)));
    };
    b.fill_probes(v, Probe::Normal, seed, kPowerStream + uint32_t(e));
    deflate();
    double lambda = 0;
    for (int it = 0; it < max_iters; ++it) {
      b.hvp(point, v, h);
      const double next = b.dots(h, v)[0];
      b.copy(v, h);
      deflate();
      const bool converged = it > 0 && std::fabs(next - lambda) <= tol * (std::fabs(lambda) + 1e-6);
      lambda = next;
      if (converged) break;
    }
    out.values.push_back(lambda);
  }
  out.residuals = residuals(b, point, all_rows(*out.vectors), out.values);
  return out;
}

TopEigen power_top_eigenvalues(Backend& b, const std::vector<double>& w, int k, int max_iters,
                               double tol, uint64_t seed) {
  auto p = point_block(b, w);
  return power_top_eigenvalues(b, all_rows(*p), k, max_iters, tol, seed);
}

WorkerCurvature worker_curvature(Backend& b, int probes, int max_iters, double tol,
                                 uint64_t seed) {
  const int m = b.workers();
  WorkerCurvature out;
  auto points = b.vectors(m);
  const Rows w = all_rows(*points);
  b.copy_weights(w);
  if (probes > 0) out.trace = hutchinson_traces(b, w, probes, seed);
  if (max_iters > 0) {
    // All m workers iterate as one batch; when half of the batch has stopped, the running
    // workers' points and vectors are packed into smaller blocks, so the HVPs follow the running
    // workers only.
    std::unique_ptr<Vectors> pts, v = b.vectors(m), hv = b.vectors(m);
    Rows pr = w;
    b.fill_probes(all_rows(*v), Probe::Normal, seed, kPowerStream, m);  // w-bar's first start
    b.scale(all_rows(*v), inverse_norms(b.dots(all_rows(*v), all_rows(*v))));
    out.top_eigenvalue.assign(m, 0.0);
    out.power_iterations.assign(m, 0);
    std::vector<int> ids(m);  // the worker of each row of the blocks
    for (int k = 0; k < m; ++k) ids[size_t(k)] = k;
    std::vector<bool> done(m, false);
    int running = m;
    for (int it = 0; it < max_iters && running > 0; ++it) {
      if (running * 2 <= int(ids.size()) && ids.size() > 1) {
        auto p2 = b.vectors(running), v2 = b.vectors(running);
        std::vector<int> kept;
        for (size_t r = 0; r < ids.size(); ++r)
          if (!done[size_t(ids[r])]) {
            b.copy(row_of(*p2, int64_t(kept.size())), {pr.block, pr.first + int64_t(r), 1});
            b.copy(row_of(*v2, int64_t(kept.size())), row_of(*v, int64_t(r)));
            kept.push_back(ids[r]);
          }
        pts = std::move(p2);
        v = std::move(v2);
        hv = b.vectors(running);
        pr = all_rows(*pts);
        ids = kept;
      }
      const Rows vr = all_rows(*v), hr = all_rows(*hv);
      b.hvp(pr, vr, hr);
      const std::vector<double> next = b.dots(hr, vr);
      b.copy(vr, hr);
      b.scale(vr, inverse_norms(b.dots(vr, vr)));
      for (size_t r = 0; r < ids.size(); ++r) {
        const int k = ids[r];
        if (done[size_t(k)]) continue;
        const double prev = out.top_eigenvalue[size_t(k)];
        out.top_eigenvalue[size_t(k)] = next[r];
        out.power_iterations[size_t(k)] = it + 1;
        if (it > 0 && std::fabs(next[r] - prev) <= tol * (std::fabs(prev) + 1e-6)) {
          done[size_t(k)] = true;
          --running;
        }
      }
    }
  }
  return out;
}

SpectralDensity smooth_density(std::vector<std::vector<double>> nodes,
                               std::vector<std::vector<double>> weights, int bins, double width) {
  if (nodes.empty() || nodes[0].empty() || bins < 2 || !(width > 0))
    throw runtime_error("spectral density: needs runs, bins >= 2 and width > 0");
  double lo = nodes[0][0], hi = lo;
  for (const auto& run : nodes)
    for (double x : run) lo = std::min(lo, x), hi = std::max(hi, x);
  SpectralDensity out;
  out.sigma = width * std::max(hi - lo, 1e-12 * std::max(1.0, std::fabs(hi)));
  const double a = lo - 3 * out.sigma, step = (hi - lo + 6 * out.sigma) / (bins - 1);
  out.grid.resize(bins);
  out.density.assign(bins, 0.0);
  const double norm = 1.0 / (out.sigma * std::sqrt(2 * M_PI) * double(nodes.size()));
  for (int g = 0; g < bins; ++g) {
    const double x = out.grid[g] = a + g * step;
    for (size_t r = 0; r < nodes.size(); ++r)
      for (size_t j = 0; j < nodes[r].size(); ++j) {
        const double u = (x - nodes[r][j]) / out.sigma;
        out.density[g] += weights[r][j] * std::exp(-0.5 * u * u) * norm;
      }
  }
  // Normalized so that the grid's trapezoid sum is exactly 1 (the tails beyond 3 sigma are cut).
  double total = 0;
  for (int g = 0; g < bins; ++g)
    total += out.density[g] * step * (g == 0 || g == bins - 1 ? 0.5 : 1.0);
  if (total > 0)
    for (auto& v : out.density) v /= total;
  out.nodes = std::move(nodes);
  out.weights = std::move(weights);
  return out;
}

SpectralDensity spectral_density(Backend& b, Rows point, int runs, int steps, int bins,
                                 double width, uint64_t seed) {
  steps = int(std::min<int64_t>(steps, b.dim()));
  if (runs < 1 || steps < 1) throw runtime_error("spectral density: runs and steps must be >= 1");
  auto V = b.vectors(steps);
  std::vector<std::vector<double>> nodes(runs), weights(runs);
  for (int r = 0; r < runs; ++r) {
    unit_probe(b, row_of(*V, 0), seed, kDensityStream + uint32_t(r));
    const auto es = solve(lanczos(b, point, *V, steps));
    for (Eigen::Index j = 0; j < es.eigenvalues().size(); ++j) {
      nodes[r].push_back(es.eigenvalues()(j));
      weights[r].push_back(es.eigenvectors()(0, j) * es.eigenvectors()(0, j));
    }
  }
  return smooth_density(std::move(nodes), std::move(weights), bins, width);
}

double hessian_xi_regularizer(Backend& b) {
  const int m = b.workers();
  const Deviations dev = deviations(b);
  auto hd = b.vectors(m);
  b.hvp(all_rows(*dev.mean), all_rows(*dev.delta), all_rows(*hd));
  double sum = 0;
  for (double q : b.dots(all_rows(*dev.delta), all_rows(*hd))) sum += q;
  return sum / (2.0 * m);
}

Estimate average_sharpness_isotropic(Backend& b, Rows point, double sigma, int samples,
                                     uint64_t seed) {
  auto eps = b.vectors(samples);  // sample s: normal probe stream kIsotropicStream + s, times sigma
  b.fill_probes(all_rows(*eps), Probe::Normal, seed, kIsotropicStream);
  b.scale(all_rows(*eps), std::vector<double>(size_t(samples), sigma));
  return antithetic_sharpness(b, point, all_rows(*eps));
}

Estimate average_sharpness_isotropic(Backend& b, const std::vector<double>& w, double sigma,
                                     int samples, uint64_t seed) {
  auto p = point_block(b, w);
  return average_sharpness_isotropic(b, all_rows(*p), sigma, samples, seed);
}

namespace {
// eps_s = sum_k c_sk delta_k, c_sk = z_sk / sqrt(m): the z of sample s from its own stream.
std::unique_ptr<Vectors> xi_rows(Backend& b, const Deviations& dev, int samples, uint64_t seed) {
  const int m = b.workers();
  std::vector<double> c(size_t(samples) * size_t(m));
  for (int s = 0; s < samples; ++s) {
    PhiloxStream rng(seed, RngDomain::Curvature, kXiStream + uint32_t(s));
    for (int k = 0; k < m; ++k) c[size_t(s) * m + k] = rng.normal() / std::sqrt(double(m));
  }
  auto eps = b.vectors(samples);
  b.combine(all_rows(*dev.delta), c, all_rows(*eps));
  return eps;
}
}  // namespace

std::unique_ptr<Vectors> xi_perturbations(Backend& b, int samples, uint64_t seed) {
  return xi_rows(b, deviations(b), samples, seed);
}

Estimate average_sharpness_xi(Backend& b, int samples, uint64_t seed) {
  const Deviations dev = deviations(b);  // w-bar, the center, and the deviations
  const auto eps = xi_rows(b, dev, samples, seed);
  return antithetic_sharpness(b, all_rows(*dev.mean), all_rows(*eps));
}

std::pair<double, double> gradient_smoothing(Backend& b) {
  const int m = b.workers();
  // Rows 0 .. m-1: the workers; row m: their mean. One batch of subset gradients at all of them.
  auto points = b.vectors(m + 1), grads = b.vectors(m + 1), diff = b.vectors(1);
  b.copy_weights(rows_of(*points, 0, m));
  b.mean_weights(row_of(*points, m));
  b.subset_loss(all_rows(*points), all_rows(*grads));
  const Rows at_mean = row_of(*grads, m);
  b.combine(rows_of(*grads, 0, m), std::vector<double>(size_t(m), 1.0 / m), all_rows(*diff));
  b.axpy(all_rows(*diff), {-1.0}, at_mean);
  return {norm_of(b, all_rows(*diff)), norm_of(b, at_mean)};
}

double sam_sharpness(Backend& b, Rows point, double rho, int steps) {
  auto g = b.vectors(1), eps = b.vectors(1), at = b.vectors(1);
  const Rows gr = all_rows(*g), er = all_rows(*eps), ar = all_rows(*at);
  const double base = b.subset_loss(point, gr)[0];
  double gn = norm_of(b, gr);
  if (gn == 0 || rho == 0) return 0.0;
  b.copy(er, gr);
  b.scale(er, {rho / gn});  // eps_0 = rho g / ||g||
  double best = base;
  for (int s = 0; s <= steps; ++s) {
    b.copy(ar, point);
    b.axpy(ar, {1.0}, er);
    best = std::max(best, b.subset_loss(ar, gr)[0]);
    if (s == steps) break;
    gn = norm_of(b, gr);
    if (gn == 0) break;
    b.axpy(er, {0.5 * rho / gn}, gr);
    const double en = norm_of(b, er);
    if (en > rho) b.scale(er, {rho / en});  // projection onto the ball
  }
  return best - base;
}

double sam_sharpness(Backend& b, const std::vector<double>& w, double rho, int steps) {
  auto p = point_block(b, w);
  return sam_sharpness(b, all_rows(*p), rho, steps);
}

}  // namespace gossamer
