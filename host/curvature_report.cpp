// One curvature measurement as a run records it: w-bar's estimators for metrics.jsonl, every
// worker's arrays for worker_curvature.jsonl and the spectral density for spectral_density.jsonl.
#include <chrono>

#include "gossamer/curvature.hpp"
#include "gossamer/simulation.hpp"

namespace gossamer {

using nlohmann::json;

namespace {

json estimate_json(const Estimate& e) {
  return {{"value", e.value}, {"std_error", e.std_error}, {"samples", e.samples}};
}

// mean, std (population), min and max of an array (the metrics line's view of the workers).
json spread(const std::vector<double>& x) {
  double mean = 0, var = 0, lo = x.at(0), hi = x.at(0);
  for (double v : x) mean += v, lo = std::min(lo, v), hi = std::max(hi, v);
  mean /= double(x.size());
  for (double v : x) var += (v - mean) * (v - mean);
  return {{"mean", mean}, {"std", std::sqrt(var / double(x.size()))}, {"min", lo}, {"max", hi}};
}

json top_eigen_json(const TopEigen& t, const std::string& method) {
  return {{"method", method}, {"values", t.values}, {"residuals", t.residuals}};
}

// Every worker's estimators: the batched trace and top eigenvalue, then the sharpness ones
// worker by worker, at the rows of a copy of the workers on the backend.
json measure_workers(Backend& backend, const CurvatureConfig& c, uint64_t key) {
  const WorkerCurvature wc =
      worker_curvature(backend, c.wants("trace") ? c.probes : 0,
                       c.wants("topk") ? int(c.power_iters) : 0, c.power_tol, key);
  json w = json::object();
  if (!wc.trace.empty()) {
    std::vector<double> value, error;
    for (const auto& e : wc.trace) value.push_back(e.value), error.push_back(e.std_error);
    w["trace"] = value;
    w["trace_std_error"] = error;
  }
  if (!wc.top_eigenvalue.empty()) {
    w["top_eigenvalue"] = wc.top_eigenvalue;
    w["power_iterations"] = wc.power_iterations;
  }
  if (c.wants("avgsharp") || c.wants("samsharp")) {
    const int m = backend.workers();
    auto all = backend.vectors(m);
    backend.copy_weights(all_rows(*all));
    std::vector<double> avg, sam;
    for (int k = 0; k < m; ++k) {
      const Rows wk = row_of(*all, k);
      if (c.wants("avgsharp"))
        avg.push_back(average_sharpness_isotropic(backend, wk, c.sigma, c.mc_samples, key).value);
      if (c.wants("samsharp")) sam.push_back(sam_sharpness(backend, wk, c.sam_rho, c.sam_steps));
    }
    if (!avg.empty()) w["avg_sharpness_isotropic"] = avg;
    if (!sam.empty()) w["sam_sharpness"] = sam;
  }
  return w;
}

}  // namespace

json measure_curvature(Backend& backend, const CurvatureConfig& c, uint64_t seed, int64_t step,
                       CurvatureFiles* files) {
  const auto t0 = std::chrono::steady_clock::now();
  const uint64_t key =
      seed ^ (0x9E3779B97F4A7C15ull * uint64_t(step + 1));  // fresh probes each measurement
  auto wbar_block = backend.vectors(1);
  const Rows wbar = all_rows(*wbar_block);
  backend.mean_weights(wbar);
  json out = {{"subset_samples", backend.curvature_subset_size()}};
  if (c.wants("trace")) out["trace"] = estimate_json(hutchinson_trace(backend, wbar, c.probes, key));
  if (c.wants("topk"))
    out["top_eigenvalues"] = top_eigen_json(
        c.method == "power"
            ? power_top_eigenvalues(backend, wbar, c.topk, int(c.power_iters), c.power_tol, key)
            : lanczos_top_eigenvalues(backend, wbar, c.topk, c.lanczos_steps, key),
        c.method);
  if (c.wants("reg")) out["half_tr_h_xi"] = hessian_xi_regularizer(backend);
  if (c.wants("avgsharp") || c.wants("samsharp")) {
    if (c.wants("avgsharp")) {
      json iso =
          estimate_json(average_sharpness_isotropic(backend, wbar, c.sigma, c.mc_samples, key));
      iso["sigma"] = c.sigma;
      out["avg_sharpness_isotropic"] = iso;
      out["avg_sharpness_xi"] = estimate_json(average_sharpness_xi(backend, c.mc_samples, key));
    }
    if (c.wants("samsharp"))
      out["sam_sharpness"] = {{"rho", c.sam_rho},
                              {"steps", c.sam_steps},
                              {"value", sam_sharpness(backend, wbar, c.sam_rho, c.sam_steps)}};
  }
  if (c.wants("density")) {
    const SpectralDensity s = spectral_density(backend, wbar, c.density_runs, c.density_steps,
                                               c.density_bins, c.density_width, key);
    double mean = 0;  // the density's mean eigenvalue: tr(H)/d estimated by the quadrature
    for (size_t r = 0; r < s.nodes.size(); ++r)
      for (size_t j = 0; j < s.nodes[r].size(); ++j) mean += s.weights[r][j] * s.nodes[r][j];
    mean /= double(s.nodes.size());
    out["density"] = {{"runs", c.density_runs},   {"steps", s.nodes[0].size()},
                      {"sigma", s.sigma},         {"mean_eigenvalue", mean},
                      {"grid_min", s.grid.front()}, {"grid_max", s.grid.back()},
                      {"file", "spectral_density.jsonl"}};
    if (files)
      files->density = {{"step", step},   {"grid", s.grid},       {"density", s.density},
                        {"sigma", s.sigma}, {"nodes", s.nodes}, {"weights", s.weights}};
  }
  if (c.workers) {
    json w = measure_workers(backend, c, key);
    json summary = json::object();
    for (const auto& [name, values] : w.items())
      if (name != "power_iterations") summary[name] = spread(values.get<std::vector<double>>());
    summary["file"] = "worker_curvature.jsonl";
    out["workers"] = summary;
    if (files) {
      w["step"] = step;
      files->workers = w;
    }
  }
  out["time_s"] = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return out;
}

}  // namespace gossamer
