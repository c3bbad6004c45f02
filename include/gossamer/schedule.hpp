// Learning rate at a step: batch scaling rule, linear warm-up, then constant / step / cosine.
#pragma once
#include <cstdint>

#include "gossamer/config.hpp"

namespace gossamer {

// Peak rate: lr x (total_batch / base_batch) for "linear", x sqrt(...) for "sqrt", x 1 for "none".
double scaled_lr(const OptimizerConfig& config, int64_t total_batch);

// lr_t = peak x warmup(t) x decay(t), with
//   warmup(t) = s + (1 - s) t / W for t < W (s = warmup_start_factor), else 1;
//     W = warmup_steps, or round(warmup_fraction T) when warmup_fraction > 0;
//   step:   decay(t) = gamma^(number of milestones f with t >= floor(f T));
//   cosine: decay(t) = a + (1 - a) (1 + cos(pi (t - W) / (T - W))) / 2 for t >= W (a =
//   min_lr_factor).
double learning_rate(const OptimizerConfig& config, int64_t step, int64_t total_steps,
                     int64_t total_batch);

}  // namespace gossamer
