#include "gossamer/backend.hpp"

#include <cmath>
#include <utility>

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

void Backend::perturb_gaussian(double sigma, uint64_t seed, uint32_t stream) {
  std::vector<double> eps(static_cast<size_t>(dim()));
  for (size_t i = 0; i < eps.size(); ++i) {
    const Philox4 r = philox_draw(seed, RngDomain::Curvature, stream, uint64_t(i));
    eps[i] = sigma * philox_normal(r.v[0], r.v[1]);
  }
  perturb_weights(eps);
}

void Backend::perturb_along_mean_gradient(double rho) {
  std::vector<double> g = mean_gradient();
  double norm = 0;
  for (double v : g) norm += v * v;
  norm = std::sqrt(norm);
  for (auto& v : g) v = norm > 0 ? rho * v / norm : 0.0;
  perturb_weights(g);
}

std::string NonFiniteSteps::describe() const {
  const std::pair<int64_t, const char*> events[] = {
      {loss, "the training loss"}, {weights, "the weights"}, {momentum, "the momentum buffers"}};
  int64_t first = -1;
  for (const auto& [step, name] : events)
    if (step >= 0 && (first < 0 || step < first)) first = step;
  if (first < 0) return "";
  std::string what;
  for (const auto& [step, name] : events)
    if (step == first) what += (what.empty() ? "" : " and ") + std::string(name);
  return "NaN or Inf in " + what + " at step " + std::to_string(first);
}

bool perturbation_is_per_worker(size_t eps_values, int workers, int64_t dim) {
  if (int64_t(eps_values) == int64_t(workers) * dim) return true;
  if (int64_t(eps_values) == dim) return false;
  throw runtime_error("perturb_weights: expected d = " + std::to_string(dim) +
                      " or m x d = " + std::to_string(int64_t(workers) * dim) + " values, got " +
                      std::to_string(eps_values));
}

int64_t hvp_pairs(size_t points, size_t dirs, int64_t dim) {
  const int64_t pairs = whole_rows(dirs, dim, "hvp: dirs");
  if (int64_t(points) != dim && int64_t(points) != pairs * dim)
    throw runtime_error("hvp: points: expected d = " + std::to_string(dim) + " values (one point) or " +
                        std::to_string(pairs * dim) + " (one per direction), got " +
                        std::to_string(points));
  return pairs;
}

int64_t whole_rows(size_t values, int64_t dim, const char* what) {
  if (dim <= 0 || int64_t(values) % dim != 0)
    throw runtime_error(std::string(what) + ": expected whole rows of d = " + std::to_string(dim) +
                        " values, got " + std::to_string(values));
  return int64_t(values) / dim;
}

void check_row_values(size_t values, int rows, int64_t dim) {
  if (int64_t(values) != int64_t(rows) * dim)
    throw runtime_error("expected " + std::to_string(int64_t(rows) * dim) + " values (" +
                        std::to_string(rows) + " rows of d = " + std::to_string(dim) + "), got " +
                        std::to_string(values));
}

void check_state_rows(bool momentum, bool has_momentum) {
  if (momentum && !has_momentum)
    throw runtime_error("checkpoint rows: the optimizer keeps no momentum buffers");
}

void check_state_momentum(const BackendState& s, bool uses_momentum) {
  if (uses_momentum != !s.momentum.empty())
    throw runtime_error(
        "load_state: the state has " + std::string(s.momentum.empty() ? "no " : "") +
        "momentum buffers, the optimizer " + (uses_momentum ? "uses" : "does not use") + " them");
}

std::unique_ptr<Backend> make_backend(const std::string& which, const std::string& precision,
                                      const BackendSetup& setup, std::string* chosen) {
  const bool float64 = precision == "float64";
  if (which == "cpu") {
    *chosen = "cpu (asked for)";
    return make_cpu_backend(setup, float64);
  }
  const DeviceList gpus = list_devices();
  if (which == "cuda") {
    if (gpus.devices.empty()) throw runtime_error("--backend cuda: " + gpus.why_none);
#ifdef GOSSAMER_HAVE_CUDA
    auto backend = make_cuda_backend(setup, CudaOptions{});
    *chosen = backend->name() + " (asked for)";
    return backend;
#endif
  }
  if (gpus.devices.empty()) {
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

}  // namespace gossamer
