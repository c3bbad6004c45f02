// The benchmark workloads by name, as configs, and the CNN's paths (shared by gossamer-bench and
// gossamer-traffic).
#pragma once
#include <CLI/CLI.hpp>
#include <cstdlib>
#include <ctime>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <string>

#include "gossamer/cuda_plan.hpp"
#include "gossamer/simulation.hpp"
#ifdef GOSSAMER_HAVE_CUDA
#include "gossamer/cuda.hpp"
#endif

namespace gossamer_bench {

// (a) and (b) of the CUDA backend benchmark, the quickstart's shape, and one point of the scaling
// series (c): "m<N>" is N workers of 784-128-10, per-worker batch 32, ring, every worker
// sampling one shared set of 16,384 samples. Synthetic data of the MNIST shape (only shapes
// matter for timing).
inline nlohmann::json workload(const std::string& name, const std::string& backend) {
  nlohmann::json c = {
      {"backend", backend},
      {"data",
       {{"dataset", "synthetic"},
        {"synthetic", {{"features", 784}, {"classes", 10}, {"train", 16384}, {"test", 1024}}}}},
      {"train", {{"steps", 10}}},
      {"curvature", {{"samples", 1024}}}};
  if (name == "a") {
    c.merge_patch({{"workers", 64},
                   {"model", {{"hidden", {256, 256}}}},
                   {"optimizer", {{"batch_size", 64}, {"momentum", 0.9}}},
                   {"topology", {{"name", "ring"}}}});
  } else if (name == "b") {
    c.merge_patch({{"workers", 1024},
                   {"model", {{"hidden", {128}}}},
                   {"optimizer", {{"batch_size", 32}}},
                   {"topology", {{"name", "exponential"}}}});
  } else if (name == "quickstart") {
    c.merge_patch({{"workers", 16},
                   {"model", {{"hidden", {128}}}},
                   {"optimizer", {{"batch_size", 32}}},
                   {"topology", {{"name", "ring"}}}});
  } else if (name == "c" || name == "c1024") {
    // Workload (c): the CNN quickstart's network (conv 16, max pool, residual 32 at stride 2,
    // linear 32; 65,130 parameters) on Fashion-MNIST images, 16 or 1,024 workers.
    c["data"] = {{"dataset", "fashion-mnist"}, {"train_samples", 16384}, {"test_samples", 1024}};
    // Where Debian's package is not installed (the GPU machine), bench/gpu-check.sh names the copy.
    if (const char* path = std::getenv("GOSSAMER_FASHION_MNIST")) c["data"]["path"] = path;
    c.merge_patch({{"workers", name == "c" ? 16 : 1024},
                   {"model",
                    {{"kind", "cnn"},
                     {"layers", nlohmann::json::array(
                                    {{{"type", "conv"}, {"channels", 16}},
                                     {{"type", "act"}},
                                     {{"type", "maxpool"}},
                                     {{"type", "residual"}, {"channels", 32}, {"stride", 2}},
                                     {{"type", "linear"}, {"out", 32}},
                                     {{"type", "act"}}})}}},
                   {"optimizer", {{"batch_size", 32}}},
                   {"topology", {{"name", "ring"}}}});
  } else if (name.size() > 1 && name[0] == 'm' &&
             name.find_first_not_of("0123456789", 1) == std::string::npos) {
    const int m = std::stoi(name.substr(1));
    c.merge_patch({{"workers", m},
                   {"model", {{"hidden", {128}}}},
                   {"optimizer", {{"batch_size", 32}}},
                   {"topology", {{"name", "ring"}}},
                   // every worker samples the one shared set: any m, data of a fixed size
                   {"partition", {{"kind", "shared"}}}});
  } else {
    throw std::runtime_error("unknown workload " + name + " (a, b, c, c1024, quickstart, m<N>)");
  }
  return c;
}

// out_dir/DATE-stem.json (today's local date), out_dir created if missing: a result file's path.
inline std::string dated_result_path(const std::string& out_dir, const std::string& stem) {
  char date[16];
  const std::time_t now = std::time(nullptr);
  std::strftime(date, sizeof date, "%Y-%m-%d", std::localtime(&now));
  std::filesystem::create_directories(out_dir);
  return out_dir + "/" + date + "-" + stem + ".json";
}

// --cnn-off NAMES (gossamer-bench and gossamer-traffic): a CNN's fused paths to turn off
// (CudaOptions::cnn_paths), comma-separated, from all on; "all" is the general im2col-and-cuBLAS
// path, "none" every path on; without it, the backend's default (CnnPaths::defaults()).
inline CLI::Option* add_cnn_off_option(CLI::App& app, std::string& names) {
  std::string list;
  for (const gossamer::CnnPathSwitch& s : gossamer::kCnnPathSwitches)
    list += std::string("\n  ") + s.name + ": " + s.what;
  return app
      .add_option("--cnn-off", names,
                  "CUDA backend: run a CNN with every fused path on but these, to measure what "
                  "each gains (comma-separated; none: all on; all: the general path, im2col and "
                  "cuBLAS for every convolution, every gradient zeroed and added to; without "
                  "--cnn-off: the backend's default, " +
                      gossamer::cnn_paths_off(gossamer::CnnPaths::defaults()) + " off):" + list)
      ->type_name("NAMES");
}

// Whether `paths` are the CUDA backend's default (CnnPaths::defaults()).
inline bool default_cnn_paths(const gossamer::CnnPaths& paths) {
  return gossamer::cnn_paths_off(paths) == gossamer::cnn_paths_off(gossamer::CnnPaths::defaults());
}

// The workload's CUDA backend built again with a CNN's paths as given (--cnn-off), from the same
// initial weights, to measure on the same card what the paths turned off gain; nothing to do for
// the default paths, which the backend has.
inline void use_cnn_paths(gossamer::Simulation& sim, const gossamer::CnnPaths& paths) {
  if (default_cnn_paths(paths)) return;
#ifdef GOSSAMER_HAVE_CUDA
  gossamer::CudaOptions options;  // the callers refuse --cnn-off without a CUDA backend
  options.cnn_paths = paths;
  sim.backend.reset();  // one backend's buffers on the card at a time
  sim.backend = gossamer::make_cuda_backend(gossamer::backend_setup(sim), options);
  sim.backend->initialize_weights(sim.config.model, sim.config.seed);
  sim.backend->set_curvature_subset(sim.curvature_subset);
#else
  (void)sim, (void)paths;
  throw std::runtime_error("--cnn-off: this build has no CUDA backend");
#endif
}

}  // namespace gossamer_bench
