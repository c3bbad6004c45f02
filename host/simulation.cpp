// The assembly of a simulation (simulation.hpp): the config's data, partition, model, topology
// and backend, each phase timed, and the backend factory behind `backend`: "auto" | "cpu" | "cuda".
#include "gossamer/simulation.hpp"

#include <algorithm>
#include <chrono>
#include <functional>

#include "gossamer/devices.hpp"
#include "gossamer/error.hpp"
#include "gossamer/philox.hpp"
#ifdef GOSSAMER_HAVE_CUDA
#include "gossamer/cuda.hpp"
#endif

namespace gossamer {
namespace {

// What a CPU fallback says about math "tf32", which only the CUDA backend has.
std::string tf32_note(const BackendSetup& setup) {
  return setup.tf32 ? "; math tf32 does not apply: the cpu backend computes exact float32" : "";
}

}  // namespace

std::unique_ptr<Backend> make_backend(const std::string& which, const std::string& precision,
                                      const BackendSetup& setup, std::string* chosen) {
  const bool float64 = precision == "float64";
  if (setup.processes.world > 1 && (which == "cpu" || float64 || setup.shards > 1))
    throw config_error("--world " + std::to_string(setup.processes.world) +
                       ": several processes run the CUDA backend's shards (NCCL); the CPU backend "
                       "runs in one process (shards: S for its shards)");
  if (which == "cpu") {
    *chosen = "cpu (asked for)";
    return make_cpu_backend(setup, float64);
  }
  const DeviceList gpus = list_devices();
  // Devices, several processes or NCCL name the CUDA backend, whatever `backend` says.
  const bool gpu_layout = !setup.devices.empty() || setup.processes.world > 1 || setup.transport == "nccl";
  if (which == "cuda" || gpu_layout) {
    const std::string why = which == "cuda" ? "--backend cuda" : "devices / --world / transport nccl";
    if (float64)
      throw config_error(why + ": the CUDA backend computes in float32; precision \"float64\" is "
                               "a CPU reference mode");
    if (gpus.devices.empty()) throw runtime_error(why + ": " + gpus.why_none);
#ifdef GOSSAMER_HAVE_CUDA
    auto backend = make_cuda_backend(setup, CudaOptions{});
    *chosen = backend->name() + " (asked for: " + why + ")";
    return backend;
#else
    throw config_error(why + ": this build has no CUDA backend (nvcc was not found when it was "
                             "configured, or -DGOSSAMER_CUDA=OFF)");
#endif
  }
  if (setup.shards > 1) {
    *chosen = "cpu (auto: shards > 1 runs the CPU backend's sharded path" + tf32_note(setup) + ")";
  } else if (gpus.devices.empty()) {
    *chosen = "cpu (auto: " + gpus.why_none + tf32_note(setup) + ")";
  } else if (float64) {
    *chosen = "cpu (auto: precision float64 is a CPU reference mode" + tf32_note(setup) + ")";
  } else {
    // `auto` picks the CUDA backend for float32 runs where a GPU is visible: its FP32 agreement
    // suite (every operation against the CPU backend, a 100-step quickstart, bit-identical
    // resume) passed on an NVIDIA H200 (bench/results/README.md).
#ifdef GOSSAMER_HAVE_CUDA
    auto backend = make_cuda_backend(setup, CudaOptions{});
    *chosen = backend->name() + " (auto: GPU 0, the first of " +
              std::to_string(gpus.devices.size()) + " visible)";
    return backend;
#else
    *chosen = "cpu (auto: a GPU is visible, but this build has no CUDA backend" +
              tf32_note(setup) + ")";
#endif
  }
  return make_cpu_backend(setup, float64);
}

BackendSetup backend_setup(const RunConfig& c, const ModelSpec& model, const DataSplit& data,
                           const Partition* partition) {
  BackendSetup setup;
  setup.model = &model;
  setup.data = &data;
  setup.partition = partition;
  setup.workers = c.workers;
  setup.batch = c.optimizer.batch_size;
  setup.seed = c.seed;
  setup.optimizer = {c.optimizer.momentum, c.optimizer.weight_decay, c.optimizer.nesterov};
  setup.tf32 = c.math == "tf32";
  setup.perturbs = c.algorithm.perturbs_weights();
  setup.shards = c.shards;
  setup.devices = c.devices;
  setup.transport = c.transport;
  setup.processes = c.processes;
  setup.augment = {data.train.height, data.train.width, data.train.channels, c.data.augment_crop,
                   c.data.augment_flip};
  return setup;
}

BackendSetup backend_setup(const Simulation& s) {
  return backend_setup(s.config, s.model, s.data, &s.partition);
}

namespace {

// f(), a config error it throws prefixed with c's source (the file, or a sweep's point), where
// c came from one: load_config names it in its own errors, the set-up's know only the key.
template <class F>
auto naming_source(const RunConfig& c, F&& f) {
  try {
    return f();
  } catch (const Error& e) {
    if (e.kind() != ErrorKind::Config || c.source.empty()) throw;
    throw config_error(c.source + ": " + e.what());
  }
}

ModelSpec shaped_model(const RunConfig& c, const DataSplit& data) {
  return make_model(c.model, data.train.features, data.train.classes, data.train.channels,
                    data.train.height, data.train.width);
}

std::unique_ptr<Simulation> build_simulation(const RunConfig& c) {
  auto s = std::make_unique<Simulation>();
  s->config = c;
  // Each phase timed: the banner and summary.json show where setup time goes.
  const auto phase = [&](const char* name, const std::function<void()>& body) {
    const auto t0 = std::chrono::steady_clock::now();
    body();
    s->setup_seconds.push_back(
        {name, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count()});
  };
  phase("data", [&] { s->data = load_data(c.data, c.seed); });
  phase("partition",
        [&] { s->partition = make_partition(c.partition, s->data.train, c.workers, c.seed); });
  s->model = shaped_model(c, s->data);
  phase("topology", [&] {
    s->topology = std::make_unique<TopologySchedule>(c.topology, c.workers, c.seed);
  });
  // The mixing matrix's spectrum says nothing of a run that does not gossip (and costs up to a
  // Lanczos run on P^T P for a large irregular graph), so only D-SGD's is analyzed.
  if (c.algorithm.gossips())
    phase("spectral analysis", [&] { s->mixing = analyze_topology(*s->topology); });
  phase("backend allocation", [&] {
    s->backend = make_backend(c.backend, c.precision, backend_setup(*s), &s->backend_note);
  });
  phase("initialization", [&] {
    s->backend->initialize_weights(c.model, c.seed);
    // The curvature subset: the first N of a seeded permutation of the training set.
    const int64_t n = s->data.train.n, take = std::min(n, c.curvature.samples);
    for (int64_t i = 0; i < take; ++i)
      s->curvature_subset.push_back(
          int64_t(philox_permute(uint64_t(i), uint64_t(n), c.seed, 0xFFFFFFFEu, 0)));
    s->backend->set_curvature_subset(s->curvature_subset);
  });
  return s;
}

}  // namespace

std::unique_ptr<Simulation> make_simulation(const RunConfig& c) {
  return naming_source(c, [&] { return build_simulation(c); });
}

ModelSpec model_for(const RunConfig& c, const DataSplit& data) {
  return naming_source(c, [&] { return shaped_model(c, data); });
}

// Every backend a run builds: the run's own and, with algorithm.track_adsam, the equivalence
// tracker's two companions (C-SGD, and ADSAM, which holds a saved W) of the same shape.
std::vector<std::pair<std::string, CudaPlanInput>> run_backends(const RunConfig& c,
                                                                const ModelSpec& model,
                                                                const DataSplit& data) {
  std::vector<std::pair<std::string, RunConfig>> runs = {{"", c}};
  if (c.algorithm.track_adsam) {
    RunConfig csgd = c, adsam = c;
    csgd.algorithm.kind = Algorithm::Csgd;
    adsam.algorithm.kind = Algorithm::CsgdAdsam;
    runs.push_back({"tracker's C-SGD: ", csgd});
    runs.push_back({"tracker's ADSAM: ", adsam});
  }
  std::vector<std::pair<std::string, CudaPlanInput>> out;
  for (const auto& [label, config] : runs)
    out.push_back({label, cuda_plan_input(backend_setup(config, model, data, /*partition=*/nullptr))});
  return out;
}

CudaPlan run_plan(const std::vector<std::pair<std::string, CudaPlanInput>>& backends, int workers) {
  CudaPlan plan;
  for (auto [label, in] : backends) {
    in.workers = workers;
    const CudaPlan one = plan_cuda_memory(in);
    if (label.empty()) {
      plan = one;
      continue;
    }
    for (MemoryPart part : one.parts) {
      part.name = label + part.name;
      plan.parts.push_back(part);
    }
  }
  return plan;
}

void check_concurrent_plans(std::vector<int64_t> totals, int jobs, int64_t free_bytes,
                            const std::string& device) {
  if (jobs <= 1 || totals.empty()) return;
  std::sort(totals.begin(), totals.end(), std::greater<int64_t>());
  const size_t n = std::min(totals.size(), size_t(jobs));
  int64_t need = 0;
  for (size_t i = 0; i < n; ++i) need += totals[i] + kCudaHeadroom;
  if (need > free_bytes)
    throw config_error("--jobs " + std::to_string(jobs) + ": the " + std::to_string(n) +
                       " largest points need " + std::to_string(double(need) / 1073741824.0) +
                       " GiB of device memory together (plans and headroom), " + device + " has " +
                       std::to_string(double(free_bytes) / 1073741824.0) +
                       " GiB free; lower --jobs");
}

}  // namespace gossamer
