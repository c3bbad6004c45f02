#include "equivalence.hpp"

#include <cmath>

#include "gossamer/curvature.hpp"
#include "gossamer/trainer.hpp"

namespace gossamer {

namespace {
RunConfig as_csgd(RunConfig c) {
  c.algorithm.kind = Algorithm::Csgd;
  c.algorithm.track_adsam = false;
  return c;
}

// The ADSAM companion is C-SGD stepped by the tracker with perturbed gradients: named so, its
// backend (and the memory plan) holds the saved W a perturbation needs.
RunConfig as_adsam(RunConfig c) {
  c = as_csgd(c);
  c.algorithm.kind = Algorithm::CsgdAdsam;
  return c;
}

double distance(const std::vector<double>& a, const std::vector<double>& b) {
  double s = 0;
  for (size_t i = 0; i < a.size(); ++i) s += (a[i] - b[i]) * (a[i] - b[i]);
  return std::sqrt(s);
}
}  // namespace

EquivalenceTracker::EquivalenceTracker(const RunConfig& c)
    : m_adsam(make_simulation(as_adsam(c))), m_csgd(make_simulation(as_csgd(c))) {
  // Both start at w-bar of the D-SGD workers' init, as one model.
  const std::vector<double> w0 = m_csgd->backend->weights();
  const std::vector<double> mean = mean_row(w0, c.workers);
  std::vector<double> rows;
  for (int k = 0; k < c.workers; ++k) rows.insert(rows.end(), mean.begin(), mean.end());
  m_adsam->backend->set_weights(rows);
  m_csgd->backend->set_weights(rows);
}

void EquivalenceTracker::step(Backend& dsgd, int64_t t, double lr) {
  const RunConfig& c = m_csgd->config;
  train_step(*m_csgd->backend, c, *m_csgd->topology, t, lr);
  // eps_k of step t: the Xi-perturbations of the D-SGD workers now, one per worker, drawn on the
  // D-SGD backend and handed to the ADSAM one (another backend: through the host).
  const auto eps = xi_perturbations(dsgd, c.workers, c.seed ^ (0x5A3Dull << 40) ^ uint64_t(t));
  Backend& a = *m_adsam->backend;
  a.sample(t);
  a.perturb_weights(dsgd.download(all_rows(*eps)));
  a.local_gradient(true);
  a.restore_weights();
  a.average_gradients();
  a.mix_update(nullptr, lr, MixForm::Default);
}

nlohmann::json EquivalenceTracker::report(Backend& dsgd) {
  const int m = m_csgd->config.workers;
  const std::vector<double> wbar = mean_row(dsgd.weights(), m);
  const std::vector<double> wa = mean_row(m_adsam->backend->weights(), m),
                            wc = mean_row(m_csgd->backend->weights(), m);
  return {{"dist_wbar_adsam", distance(wbar, wa)},
          {"dist_wbar_csgd", distance(wbar, wc)},
          {"adsam_test_acc", m_adsam->backend->evaluate_mean(Split::Test).accuracy},
          {"csgd_test_acc", m_csgd->backend->evaluate_mean(Split::Test).accuracy}};
}

}  // namespace gossamer
