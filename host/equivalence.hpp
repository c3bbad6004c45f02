// The equivalence experiment of Zhu et al. (ICML 2023): beside a D-SGD run, on the same
// minibatch stream, (A) average-direction SAM with the D-SGD workers' covariance Xi,
//   w_A' = w_A - lr mean_k grad L_k(w_A + eps_k),  eps_k = (1/sqrt m) sum_j z_kj delta_j,
//   delta_j = w_j - wbar of the D-SGD run at the same step, z ~ N(0, I) (Philox, per step),
// and (C) plain C-SGD. If D-SGD ~ ADSAM, ||wbar - w_A|| stays below ||wbar - w_C||.
#pragma once
#include <memory>
#include <nlohmann/json.hpp>

#include "gossamer/simulation.hpp"

namespace gossamer {

class EquivalenceTracker {
 public:
  explicit EquivalenceTracker(const RunConfig& dsgd_config);
  // Steps both companions at step t, before the D-SGD run's own step t.
  void step(Backend& dsgd, int64_t t, double lr);
  // Distances to the D-SGD run's wbar and the companions' test accuracy.
  nlohmann::json report(Backend& dsgd);

 private:
  std::unique_ptr<Simulation> m_adsam, m_csgd;
};

}  // namespace gossamer
