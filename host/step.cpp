// One training step of each algorithm (docs/ARCHITECTURE.md, Definitions), through the backend
// contract only: D-SGD (default and atc), C-SGD, local SGD, and the SAM baselines.
#include <cmath>
#include <nlohmann/json.hpp>

#include "gossamer/error.hpp"
#include "gossamer/trainer.hpp"

namespace gossamer {

void train_step(Backend& backend, const RunConfig& c, TopologySchedule& topology, int64_t t,
                double lr, double* grad_norm) {
  backend.sample(t);
  const Algorithm a = c.algorithm.kind;
  if (a == Algorithm::CsgdAdsam && c.algorithm.adsam_sigma > 0) {
    // Average-direction SAM: the gradient at w + eps, eps ~ N(0, sigma^2 I), one eps for the one
    // model. eps_i of step t: Philox (seed, Curvature domain, stream 0x400000 + t, counter i).
    backend.perturb_gaussian(c.algorithm.adsam_sigma, c.seed, 0x400000u + uint32_t(t));
    backend.local_gradient(true);
    backend.restore_weights();
  } else {
    backend.local_gradient(true);
  }
  if (grad_norm) *grad_norm = backend.mean_gradient_norm();
  if (a == Algorithm::CsgdSam) {
    // SAM (Foret et al. 2021) on the total batch: ascend to w + rho g/||g||, take the gradient
    // there.
    backend.average_gradients();
    backend.perturb_along_mean_gradient(c.algorithm.sam_rho);
    backend.local_gradient(false);  // the same minibatches, at the perturbed weights
    backend.restore_weights();
  }
  if (c.algorithm.centralized()) {
    backend.average_gradients();
    backend.mix_update(nullptr, lr, MixForm::Default);
  } else if (a == Algorithm::LocalSgd) {
    backend.mix_update(nullptr, lr, MixForm::Default);
    if ((t + 1) % c.algorithm.local_steps == 0) backend.average_weights();
  } else {
    backend.mix_update(&topology.at(t), lr,
                       c.algorithm.form == "atc" ? MixForm::Atc : MixForm::Default);
  }
}

int64_t resolve_steps(const RunConfig& c, int64_t train_samples) {
  if (c.train.epochs <= 0) return c.train.steps;
  const double total_batch = double(c.workers) * c.optimizer.batch_size;
  const double steps = std::ceil(c.train.epochs * double(train_samples) / total_batch);
  // Beyond 2^53 a double no longer counts steps exactly (and beyond 2^63 the cast overflows).
  constexpr double kMaxSteps = 9007199254740992.0;
  if (!(steps <= kMaxSteps))
    throw config_error("train.epochs: " + nlohmann::json(c.train.epochs).dump() + " epochs of " +
                       std::to_string(train_samples) + " samples at total batch " +
                       nlohmann::json(total_batch).dump() + " are " + nlohmann::json(steps).dump() +
                       " steps, more than the 2^53 a run can count; lower train.epochs");
  return std::max<int64_t>(1, int64_t(steps));
}

}  // namespace gossamer
