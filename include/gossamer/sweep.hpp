// Sweeps: one base config and axes of config keys; each point is a normal run folder.
//
// SWEEP.json:
//   { "name": "batch-scaling",                 optional; names the default folder runs/NAME
//     "base": "../quickstart.json" | { ... },   a config file (relative to SWEEP.json) or inline
//     "set": { "train.steps": 600 },            optional; fixed overrides of every point
//     "grid": { "optimizer.batch_size": [16, 64], "topology.name": ["ring", "exponential"] },
//     "points": [ { "algorithm.name": "csgd" }, ... ] }
// with "grid" (every combination, the first key varying slowest), or "points" (an
// explicit list), or both (every point crossed with the grid). Every point's config is
// validated before the first run starts.
#pragma once
#include <nlohmann/json.hpp>
#include <ostream>
#include <string>
#include <vector>

namespace gossamer {

struct SweepPoint {
  nlohmann::ordered_json values;       // key path -> value, the point's coordinates
  std::vector<std::string> overrides;  // the same as --set strings
  std::string folder;                  // point-000, point-001, ...
};

struct Sweep {
  std::string name;
  nlohmann::json base;             // the base config (user form)
  std::vector<std::string> axes;   // key paths, in order
  std::vector<std::string> fixed;  // the "set" overrides, as --set strings
  std::vector<SweepPoint> points;
};

Sweep load_sweep(const std::string& path);

// Runs every point not yet finished into out_dir/point-NNN (a finished point is skipped;
// an interrupted one resumes from its checkpoint), then writes out_dir/sweep.csv. With jobs > 1,
// that many points run at once, each with its share of the CPU threads (the CPU backend's results
// do not depend on the thread count) or its own stream on the GPU (the N largest points' memory
// plans must fit on it together, checked before the first starts); each point's log lines reach
// `log` whole when it ends. Returns the exit code: 0, 1 when a point failed, 130 when interrupted.
int run_sweep(const Sweep& sweep, const std::string& out_dir, std::ostream& log, int jobs = 1);

// The rows of sweep.csv from the point folders as they are now: the axes, status, steps
// done, total batch, then the final figures of completed points (empty otherwise).
std::string sweep_csv(const Sweep& sweep, const std::string& out_dir);

}  // namespace gossamer
