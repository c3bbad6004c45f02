// One run: config -> data -> partition -> model -> topology -> backend -> training loop -> sinks.
#pragma once
#include <functional>
#include <nlohmann/json.hpp>
#include <ostream>
#include <string>

#include "gossamer/backend.hpp"
#include "gossamer/config.hpp"
#include "gossamer/topology.hpp"

namespace gossamer {

struct RunResult {
  int exit_code = 0;   // kExitOk, kExitDiverged, kExitInterrupted
  std::string status;  // completed | diverged | interrupted
  std::string out_dir;
  nlohmann::json summary;
};

struct RunOptions {
  // Continue the run in out_dir from its checkpoint.bin (config from its config.json).
  bool resume = false;
  // Stop (as Ctrl-C would: checkpoint, summary "interrupted") once this many steps are
  // done; -1: never. For tests of resumption and for time-sliced runs.
  int64_t stop_after = -1;
  // What the banner calls the run instead of its config's name: a sweep's point
  // ("SWEEP/point-003"), whose config is the sweep's base config with the point's keys.
  std::string label;
  // For tests: called after every step with the number of steps done (to inject faults into
  // the backend's state), and after every checkpoint write (to make checkpoints slow).
  std::function<void(Backend&, int64_t done)> after_step;
  std::function<void()> after_checkpoint;
};

// Trains as the config says and writes RUN_DIR/{config.json, metrics.jsonl, summary.json,
// checkpoint.bin}. out_dir empty: runs/NAME-TIMESTAMP. Progress and log lines go to `log`.
RunResult run_training(const RunConfig& config, const std::string& out_dir, std::ostream& log,
                       const RunOptions& options = {});

// The checkpoint of a run folder, or the file itself; a diverged run's folder, which keeps
// none, is refused saying so.
std::string checkpoint_path(const std::string& run_dir_or_file);

// One training step t of the configured algorithm at learning rate lr:
//   dsgd:      sample, local gradients, W' = P_t W - lr U (or P_t (W - lr U) for atc)
//   csgd:      sample, local gradients, mean gradient, W' = W - lr U
//   local_sgd: sample, local gradients, W' = W - lr U; exact averaging after every H-th step
// grad_norm, if given, receives ||mean_k G[k]|| of this step.
void train_step(Backend& backend, const RunConfig& config, TopologySchedule& topology, int64_t step,
                double lr, double* grad_norm = nullptr);

// Steps of the run: train.steps, or ceil(epochs n_train / total batch) when train.epochs > 0.
int64_t resolve_steps(const RunConfig& config, int64_t train_samples);

}  // namespace gossamer
