#include "gossamer/schedule.hpp"

#include <cmath>

namespace gossamer {

double scaled_lr(const OptimizerConfig& c, int64_t total_batch) {
  const double ratio = double(total_batch) / double(c.base_batch);
  if (c.scaling == "linear") return c.lr * ratio;
  if (c.scaling == "sqrt") return c.lr * std::sqrt(ratio);
  return c.lr;
}

double learning_rate(const OptimizerConfig& c, int64_t step, int64_t total_steps,
                     int64_t total_batch) {
  double lr = scaled_lr(c, total_batch);
  const int64_t warm =
      c.warmup_fraction > 0 ? int64_t(std::llround(c.warmup_fraction * double(total_steps))) : c.warmup_steps;
  if (step < warm)
    lr *= c.warmup_start_factor + (1.0 - c.warmup_start_factor) * double(step) / double(warm);
  if (c.schedule == "step") {
    for (double f : c.milestones)
      if (step >= int64_t(std::floor(f * double(total_steps)))) lr *= c.gamma;
  } else if (c.schedule == "cosine" && step >= warm && total_steps > warm) {
    const double progress = double(step - warm) / double(total_steps - warm);
    lr *= c.min_lr_factor + (1.0 - c.min_lr_factor) * 0.5 * (1.0 + std::cos(M_PI * progress));
  }
  return lr;
}

}  // namespace gossamer
