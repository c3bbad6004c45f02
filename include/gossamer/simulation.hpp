// Everything a run is made of, built from its config: data, partition, model, topology,
// backend (workers at the configured init) and the curvature subset. The trainer, the
// `curvature` command and the tests all start here.
#pragma once
#include <memory>
#include <nlohmann/json.hpp>
#include <string>

#include "gossamer/backend.hpp"
#include "gossamer/config.hpp"
#include "gossamer/cuda_plan.hpp"
#include "gossamer/topology.hpp"

namespace gossamer {

struct Simulation {
  RunConfig config;
  DataSplit data;
  Partition partition;
  ModelSpec model;
  std::unique_ptr<TopologySchedule> topology;
  // Analyzed only where the algorithm gossips (config.algorithm.gossips()).
  MixingProperties mixing;
  std::unique_ptr<Backend> backend;
  std::string backend_note;  // which backend and why
  std::vector<int64_t> curvature_subset;
  // Seconds of each setup phase, in order: data, partition, topology, spectral analysis (where
  // the algorithm gossips), backend allocation, initialization.
  std::vector<std::pair<std::string, double>> setup_seconds;
};

// A config error of the set-up (a layer that does not fit the data's images, more workers than
// samples, a topology the worker count does not allow) names the config's source.
std::unique_ptr<Simulation> make_simulation(const RunConfig& config);
// The model a config describes, shaped by its data (make_model), its errors named as above.
ModelSpec model_for(const RunConfig& config, const DataSplit& data);

// The backend setup of a simulation's config, data, partition and model (what
// make_simulation hands to make_backend; tests build a second backend from it).
BackendSetup backend_setup(const Simulation& s);
// The same from the pieces (partition may be null where no backend is built: `gossamer plan`).
BackendSetup backend_setup(const RunConfig& config, const ModelSpec& model, const DataSplit& data,
                           const Partition* partition);

// The CUDA memory plan of a run (`gossamer plan`, sweep --jobs): every backend it builds, the
// run's own and, with algorithm.track_adsam, the equivalence tracker's two companions (C-SGD, and
// ADSAM, which holds a saved W) of the same shape; and their plans at `workers`, as one (the
// companions' parts labelled).
std::vector<std::pair<std::string, CudaPlanInput>> run_backends(const RunConfig& c,
                                                                const ModelSpec& model,
                                                                const DataSplit& data);
CudaPlan run_plan(const std::vector<std::pair<std::string, CudaPlanInput>>& backends, int workers);
// sweep --jobs on one GPU: the `jobs` largest plan totals (each with kCudaHeadroom) must fit in
// free_bytes together, else a config error with the need, the free memory and the knob.
void check_concurrent_plans(std::vector<int64_t> totals, int jobs, int64_t free_bytes,
                            const std::string& device);

// The lines a curvature measurement adds to files of its own (null where not measured):
// worker_curvature.jsonl (curvature.workers: every worker's arrays) and spectral_density.jsonl
// (curvature.what "density": the grid, the density, the quadrature's nodes and weights).
struct CurvatureFiles {
  nlohmann::json workers, density;
};

// One curvature measurement of w-bar (and, if configured, of each worker and of the spectral
// density) as a JSON object for metrics.jsonl; the per-worker arrays and the density go to
// *files. Probes are drawn from (seed, step), so it repeats exactly.
nlohmann::json measure_curvature(Backend& backend, const CurvatureConfig& config, uint64_t seed,
                                 int64_t step, CurvatureFiles* files = nullptr);

}  // namespace gossamer
