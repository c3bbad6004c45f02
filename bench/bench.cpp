// gossamer-bench: times the parts of a training step and the curvature kernels on a
// backend, beside the machine's measured ceilings, and writes one JSON result.
//
// Formulas (per step, m workers, per-worker batch B, layer sizes in_l x out_l, d params):
//   local gradient  FLOPs = m B (6 sum_l in_l out_l - 2 in_0 out_0)   (forward, dW, dA; no dA for
//   layer 0) gossip+update   bytes >= 4 m d (read W, G, buf; write W', buf: 5 for momentum, 3
//   without) x sizeof(scalar) HVP over K points: about twice the gradient's FLOPs; reported as the
//   time ratio HVP / gradient ceilings: a large copy (bytes read + written) and a large GEMM with
//   Eigen, on the same cores.
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <Eigen/Dense>
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>

#include "gossamer/simulation.hpp"
#include "gossamer/trainer.hpp"

using namespace gossamer;
using nlohmann::json;

namespace {

using Clock = std::chrono::steady_clock;

// Median seconds of `repeats` runs after `warmup` runs.
double median_seconds(const std::function<void()>& f, int repeats, int warmup = 2) {
  for (int i = 0; i < warmup; ++i) f();
  std::vector<double> t;
  for (int i = 0; i < repeats; ++i) {
    const auto t0 = Clock::now();
    f();
    t.push_back(std::chrono::duration<double>(Clock::now() - t0).count());
  }
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

struct Ceilings {
  double copy_gbs = 0, gemm_gflops = 0;
};

Ceilings measure_ceilings(int repeats) {
  Ceilings c;
  std::vector<float> a(size_t(64) << 20, 1.0f), b(a.size());  // 256 MiB each: far beyond the caches
  const double s = median_seconds([&] { std::copy(a.begin(), a.end(), b.begin()); }, repeats);
  c.copy_gbs = 2.0 * a.size() * sizeof(float) / s / 1e9;
  const int n = 1024;
  Eigen::MatrixXf x = Eigen::MatrixXf::Random(n, n), y = Eigen::MatrixXf::Random(n, n), z(n, n);
  const double g = median_seconds([&] { z.noalias() = x * y; }, repeats);
  c.gemm_gflops = 2.0 * n * n * double(n) / g / 1e9;
  return c;
}

json workload(const std::string& name) {
  // (a) and (b) of the CUDA backend issue; synthetic data of the MNIST shape (only shapes matter).
  json c = {
      {"backend", "cpu"},
      {"data",
       {{"dataset", "synthetic"},
        {"synthetic", {{"features", 784}, {"classes", 10}, {"train", 16384}, {"test", 1024}}}}},
      {"train", {{"steps", 10}}},
      {"curvature", {{"samples", 64}}}};
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
  } else {
    throw std::runtime_error("unknown workload " + name + " (a, b, quickstart)");
  }
  return c;
}

std::string git_revision() {
  FILE* p = popen("git rev-parse --short HEAD 2>/dev/null", "r");
  char buf[64] = {0};
  if (p) {
    if (!fgets(buf, sizeof buf, p)) buf[0] = 0;
    pclose(p);
  }
  std::string s(buf);
  if (!s.empty() && s.back() == '\n') s.pop_back();
  return s.empty() ? "unknown" : s;
}

std::string cpu_model() {
  std::ifstream in("/proc/cpuinfo");
  for (std::string line; std::getline(in, line);)
    if (line.rfind("model name", 0) == 0) return line.substr(line.find(':') + 2);
  return "unknown CPU";
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"gossamer-bench: step parts and curvature kernels against the machine's ceilings"};
  std::vector<std::string> names{"quickstart", "a"};
  int repeats = 10;
  std::string out_dir = "bench/results";
  app.add_option("--workload", names, "Workloads: quickstart, a, b")->delimiter(',');
  app.add_option("--repeats", repeats, "Timed repeats per part (median reported)")
      ->check(CLI::PositiveNumber);
  app.add_option("--out", out_dir, "Folder of the JSON result");
  CLI11_PARSE(app, argc, argv);

  const Ceilings ceil = measure_ceilings(5);
  const int threads = Eigen::nbThreads();
  std::printf(
      "machine: %s, %ld cores; copy %.1f GB/s, SGEMM 1024^3 %.1f GFLOP/s (Eigen, %d threads)\n",
      cpu_model().c_str(), sysconf(_SC_NPROCESSORS_ONLN), ceil.copy_gbs, ceil.gemm_gflops, threads);
  json result = {
      {"machine", {{"cpu", cpu_model()}, {"cores", sysconf(_SC_NPROCESSORS_ONLN)}}},
      {"backend", "cpu (float32)"},
      {"git_revision", git_revision()},
      {"ceilings", {{"copy_gb_per_s", ceil.copy_gbs}, {"sgemm_gflop_per_s", ceil.gemm_gflops}}},
      {"workloads", json::object()}};

  for (const auto& name : names) {
    const RunConfig cfg = load_config(workload(name), {}, "workload " + name);
    auto sim = make_simulation(cfg);
    Backend& b = *sim->backend;
    const ModelSpec& model = sim->model;
    const int m = cfg.workers, batch = cfg.optimizer.batch_size;
    double weight_macs = 0;
    for (const auto& l : model.layers) weight_macs += double(l.in) * l.out;
    const double grad_flops =
        double(m) * batch * (6 * weight_macs - 2.0 * model.layers[0].in * model.layers[0].out);
    const double update_bytes =
        (cfg.optimizer.momentum > 0 ? 5.0 : 3.0) * m * double(model.dim) * sizeof(float);
    int64_t step = 0;
    const Csr& mixing = sim->topology->at(0);

    const double t_sample = median_seconds([&] { b.sample(step++); }, repeats);
    const double t_grad = median_seconds([&] { b.local_gradient(true); }, repeats);
    const double t_update =
        median_seconds([&] { b.mix_update(&mixing, 1e-6, MixForm::Default); }, repeats);
    const double t_consensus = median_seconds([&] { b.consensus_distance(); }, repeats);
    const double t_step =
        median_seconds([&] { train_step(b, cfg, *sim->topology, step++, 1e-6); }, repeats);
    // Curvature: one batched HVP over K = min(m, 64) (point, direction) pairs vs one batched
    // gradient over the same K points, on the same 64-sample subset.
    const int k = std::min(m, 64);
    const std::vector<double> all = b.weights();
    const std::vector<double> points(all.begin(), all.begin() + int64_t(k) * model.dim);
    std::vector<double> grads, hv;  // reused by both: no allocation inside the timed region
    const double t_subset_grad =
        median_seconds([&] { b.subset_loss(points, &grads); }, std::max(3, repeats / 3), 1);
    const double t_hvp =
        median_seconds([&] { b.hvp_into(points, points, hv); }, std::max(3, repeats / 3), 1);

    auto gflops = [](double flops, double s) { return flops / s / 1e9; };
    json w = {{"config", cfg.resolved},
              {"model", model.describe()},
              {"parts_seconds",
               {{"sample", t_sample},
                {"local_gradient", t_grad},
                {"gossip_update", t_update},
                {"consensus_distance", t_consensus},
                {"step", t_step}}},
              {"local_gradient",
               {{"flops", grad_flops},
                {"gflop_per_s", gflops(grad_flops, t_grad)},
                {"fraction_of_sgemm", gflops(grad_flops, t_grad) / ceil.gemm_gflops}}},
              {"gossip_update",
               {{"min_bytes", update_bytes},
                {"gb_per_s", update_bytes / t_update / 1e9},
                {"fraction_of_copy", update_bytes / t_update / 1e9 / ceil.copy_gbs}}},
              {"steps_per_second", 1.0 / t_step},
              {"hvp_vs_gradient",
               {{"pairs", k},
                {"subset_samples", 64},
                {"hvp_s", t_hvp},
                {"gradient_s", t_subset_grad},
                {"ratio", t_hvp / t_subset_grad}}}};
    result["workloads"][name] = w;
    std::printf("\nworkload %s: m = %d, %s, batch %d, %s\n", name.c_str(), m,
                model.describe().c_str(), batch, cfg.topology.name.c_str());
    std::printf("  %-20s %10s  %s\n", "part", "median", "rate (fraction of ceiling)");
    std::printf("  %-20s %8.3f ms\n", "sample", t_sample * 1e3);
    std::printf("  %-20s %8.3f ms  %.1f GFLOP/s (%.0f%% of SGEMM)\n", "local gradient",
                t_grad * 1e3, gflops(grad_flops, t_grad),
                100 * gflops(grad_flops, t_grad) / ceil.gemm_gflops);
    std::printf("  %-20s %8.3f ms  %.1f GB/s (%.0f%% of copy)\n", "gossip + update", t_update * 1e3,
                update_bytes / t_update / 1e9, 100 * update_bytes / t_update / 1e9 / ceil.copy_gbs);
    std::printf("  %-20s %8.3f ms\n", "consensus distance", t_consensus * 1e3);
    std::printf("  %-20s %8.3f ms  (%.1f steps/s)\n", "whole step", t_step * 1e3, 1.0 / t_step);
    std::printf("  HVP / gradient over %d points: %.2fx (%.3f / %.3f ms)\n", k,
                t_hvp / t_subset_grad, t_hvp * 1e3, t_subset_grad * 1e3);
  }

  char date[16];
  const std::time_t now = std::time(nullptr);
  std::strftime(date, sizeof date, "%Y-%m-%d", std::localtime(&now));
  std::filesystem::create_directories(out_dir);
  const std::string path = out_dir + "/" + date + "-cpu.json";
  std::ofstream(path) << result.dump(2) << "\n";
  std::printf("\nwrote %s\n", path.c_str());
  return 0;
}
