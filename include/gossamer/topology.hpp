// Mixing matrices (docs/ARCHITECTURE.md, Definitions): built per topology and weight rule, stored
// sparse (CSR), static or time-varying, with their spectral properties.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "gossamer/config.hpp"

namespace gossamer {

// Row k lists worker k's in-neighbours j (itself included) with weights P_kj.
struct Csr {
  int n = 0;
  std::vector<int> row_ptr{0};
  std::vector<int> col;
  std::vector<double> val;

  void add_row(
      const std::vector<std::pair<int, double>>& entries);  // sorted by column on the way in
  std::vector<double> dense() const;                        // n x n row-major
  static Csr from_dense(const std::vector<double>& p, int n);
  int64_t nnz() const { return int64_t(col.size()); }
  bool operator==(const Csr& o) const {
    return n == o.n && row_ptr == o.row_ptr && col == o.col && val == o.val;
  }
};

// P_t for every step t: a list of `phases` matrices cycled by step (one for a static
// topology), optionally relabelled each step by a random permutation (P' = Pi^T P Pi).
class TopologySchedule {
 public:
  TopologySchedule(const TopologyConfig& config, int workers, uint64_t seed);
  const Csr& at(int64_t step);
  int phases() const { return int(m_phases.size()); }
  const Csr& phase(int i) const { return m_phases[i]; }
  bool time_varying() const { return m_phases.size() > 1 || m_shuffle; }
  const std::string& name() const { return m_name; }

 private:
  std::string m_name;
  std::vector<Csr> m_phases;
  bool m_shuffle;
  uint64_t m_seed;
  Csr m_shuffled;
};

struct SpectralGap {
  double sigma2 = 0;      // second largest singular value
  double lambda2 = 0;     // second largest eigenvalue modulus (NaN: not computed at this size)
  double gap_sigma = 0;   // 1 - sigma2: the per-step contraction of the consensus distance
  double gap_lambda = 0;  // 1 - lambda2 (equals gap_sigma for symmetric P)
  std::string method = "dense";  // closed form (circulant / Laplacian), dense, Lanczos
  double residual = 0;   // Lanczos: ||A u - theta u|| of the reported Ritz pair of Q^T Q
  double tolerance = 0;  // Lanczos: the residual it stops at
};

struct MixingProperties {
  int min_degree = 0, max_degree = 0;  // in-neighbours other than itself
  bool nonnegative = false, row_stochastic = false, column_stochastic = false, symmetric = false;
  bool connected = false;       // over one period for a time-varying schedule
  SpectralGap gap;              // of phase 0
  double period_gap_sigma = 0;  // 1 - sigma2 of the product over one period
};

// Without a closed form, gaps are dense (Eigen) up to this many workers and Lanczos above.
inline constexpr int kDenseSpectrumWorkers = 1024;
inline constexpr double kSpectrumTolerance = 1e-10;

// rows x cols of the grid and torus: rows the largest divisor of m not above sqrt(m).
std::pair<int, int> grid_shape(int m);

// Dense (Eigen) references: any P, m x m.
SpectralGap spectral_gap(const Csr& p);
// 1 - sigma2 of the product P_{k-1} ... P_0 of a period's matrices.
double product_gap(const std::vector<Csr>& phases);
// From the CSR at any m (host/spectrum.cpp): closed forms for circulant P and for one weight on
// a grid, torus, hypercube or star; else dense up to kDenseSpectrumWorkers, Lanczos above. Of
// phase 0, or (period) of the product over one period.
SpectralGap schedule_gap(const TopologySchedule& schedule, bool period);
// sigma_2 by Lanczos on P^T P (deflated by the ones vector for doubly stochastic P), any m.
SpectralGap lanczos_spectral_gap(const Csr& p);
// Checks on the CSR (stochasticity, symmetry, connectivity) and the gaps: O(m + nnz) memory.
MixingProperties analyze_topology(const TopologySchedule& schedule);

}  // namespace gossamer
