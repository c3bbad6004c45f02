#include <chrono>
#include <functional>

#include "gossamer/curvature.hpp"
#include "gossamer/philox.hpp"
#include "gossamer/simulation.hpp"

namespace gossamer {

using nlohmann::json;

namespace {

json estimate_json(const Estimate& e) {
  return {{"value", e.value}, {"std_error", e.std_error}, {"samples", e.samples}};
}

std::vector<Eigenpair> top_eigenvalues(Backend& b, const std::vector<double>& w,
                                       const CurvatureConfig& c, int k, uint64_t seed) {
  return c.method == "power" ? power_top_eigenvalues(b, w, k, int(c.power_iters), c.power_tol, seed)
                             : lanczos_top_eigenvalues(b, w, k, c.lanczos_steps, seed);
}

}  // namespace

json measure_curvature(Backend& backend, const CurvatureConfig& c, int m, int64_t subset_size,
                       uint64_t seed, int64_t step) {
  const auto t0 = std::chrono::steady_clock::now();
  const uint64_t key =
      seed ^ (0x9E3779B97F4A7C15ull * uint64_t(step + 1));  // fresh probes each measurement
  const std::vector<double> all = backend.weights();
  const std::vector<double> wbar = mean_row(all, m);
  json out = {{"subset_samples", subset_size}};
  if (c.wants("trace"))
    out["trace"] = estimate_json(hutchinson_trace(backend, wbar, c.probes, key));
  if (c.wants("topk")) {
    json values = json::array(), residuals = json::array();
    for (const auto& p : top_eigenvalues(backend, wbar, c, c.topk, key)) {
      values.push_back(p.value);
      residuals.push_back(p.residual);
    }
    out["top_eigenvalues"] = {{"method", c.method}, {"values", values}, {"residuals", residuals}};
  }
  if (c.wants("reg")) out["half_tr_h_xi"] = hessian_xi_regularizer(backend, all, m);
  if (c.wants("avgsharp")) {
    json iso =
        estimate_json(average_sharpness_isotropic(backend, wbar, c.sigma, c.mc_samples, key));
    iso["sigma"] = c.sigma;
    out["avg_sharpness_isotropic"] = iso;
    out["avg_sharpness_xi"] =
        estimate_json(average_sharpness_xi(backend, all, m, c.mc_samples, key));
  }
  if (c.wants("samsharp"))
    out["sam_sharpness"] = {{"rho", c.sam_rho},
                            {"steps", c.sam_steps},
                            {"value", sam_sharpness(backend, wbar, c.sam_rho, c.sam_steps)}};
  if (c.workers) {
    // Every worker's own model, for the estimators of `what` that apply to one model (the
    // same probes and perturbations as w-bar's, so identical workers give w-bar's figures).
    const size_t d = wbar.size();
    json traces = json::array(), trace_errors = json::array(), tops = json::array(),
         avg = json::array(), sam = json::array();
    for (int k = 0; k < m; ++k) {
      const std::vector<double> wk(all.begin() + k * d, all.begin() + (k + 1) * d);
      if (c.wants("trace")) {
        const Estimate e = hutchinson_trace(backend, wk, c.probes, key);
        traces.push_back(e.value);
        trace_errors.push_back(e.std_error);
      }
      if (c.wants("topk")) tops.push_back(top_eigenvalues(backend, wk, c, 1, key)[0].value);
      if (c.wants("avgsharp"))
        avg.push_back(average_sharpness_isotropic(backend, wk, c.sigma, c.mc_samples, key).value);
      if (c.wants("samsharp")) sam.push_back(sam_sharpness(backend, wk, c.sam_rho, c.sam_steps));
    }
    json& w = out["workers"] = json::object();
    if (c.wants("trace")) w["trace"] = traces, w["trace_std_error"] = trace_errors;
    if (c.wants("topk")) w["top_eigenvalue"] = tops;
    if (c.wants("avgsharp")) w["avg_sharpness_isotropic"] = avg;
    if (c.wants("samsharp")) w["sam_sharpness"] = sam;
  }
  out["time_s"] = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return out;
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
  setup.perturbs = c.algorithm.name == "csgd_sam" || c.algorithm.name == "csgd_adsam";
  return setup;
}

BackendSetup backend_setup(const Simulation& s) {
  return backend_setup(s.config, s.model, s.data, &s.partition);
}

std::unique_ptr<Simulation> make_simulation(const RunConfig& c) {
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
  s->model = ModelSpec::mlp(s->data.train.features, c.model.hidden, s->data.train.classes,
                            c.model.activation);
  phase("topology", [&] {
    s->topology = std::make_unique<TopologySchedule>(c.topology, c.workers, c.seed);
  });
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

}  // namespace gossamer
