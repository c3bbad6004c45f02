// gossamer-bench: times the parts of a training step and the curvature estimators on a
// backend (cpu or cuda), beside the machine's ceilings measured in the same run, and writes
// one JSON result: bench/results/DATE-DEVICE.json.
//
// Formulas (per step, m workers, per-worker batch B, layer sizes in_l x out_l, d params):
//   local gradient  FLOPs = m B (6 sum_l in_l out_l - 2 in_0 out_0)  (forward, dW, dA; no dA
//                   for layer 0); a CNN's in_l out_l is a convolution's multiply-adds a sample,
//                   cout cin k k out_h out_w (im2col and the element-wise nodes not counted)
//   gossip+update   bytes >= (5 with momentum, else 3) m d sizeof(float): read W, G (, buf),
//                   write W' (, buf'); neighbours' rows are re-read from cache, not counted
//   HVP over K points: about twice the gradient's FLOPs; reported as the time ratio HVP / gradient
// Ceilings: CPU: a 256 MiB copy and a 1024^3 Eigen SGEMM. CUDA: a 1 GiB device-to-device copy
// (bytes read + written) and 8192^3 cuBLAS SGEMMs in FP32 and TF32 (cuda/ceilings.cu).
// Timing: each part is called `calls` times back to back and timed by the backend (CUDA events
// on its stream for cuda, the host clock for cpu); the median over `repeats` such batches.
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <Eigen/Dense>
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <optional>

#include "gossamer/checkpoint.hpp"
#include "gossamer/curvature.hpp"
#include "gossamer/devices.hpp"
#include "gossamer/error.hpp"
#include "gossamer/model.hpp"
#include "gossamer/simulation.hpp"
#include "gossamer/trainer.hpp"
#include "gossamer/transport.hpp"
#include "gossamer_revision.h"  // GOSSAMER_GIT_REVISION: the build's commit
#include "workloads.hpp"
#ifdef GOSSAMER_HAVE_CUDA
#include "gossamer/cuda.hpp"
#endif

using namespace gossamer;
using gossamer_bench::workload;
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

// Median over `repeats` of the backend's seconds per call (`calls` back to back), after one
// warm-up batch (graph capture, caches).
double median_per_call(Backend& b, const std::function<void()>& f, int repeats, int calls) {
  b.seconds_per_call(f, calls);
  std::vector<double> t;
  for (int r = 0; r < repeats; ++r) t.push_back(b.seconds_per_call(f, calls));
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

// Checkpoint I/O of the workloads whose W is at most this many bytes (the 16,384-worker point of
// the series is 6.7 GB).
constexpr double kCheckpointBenchBytes = 8e9;

// Seconds to write the backend's checkpoint and to read (CRC pass) and load it back.
std::pair<double, double> checkpoint_io(const RunConfig& c, Backend& b, const std::string& path) {
  Checkpoint meta;
  meta.config = c.resolved;
  meta.trainer = json::object();
  meta.loss = b.loss_window();
  const auto t0 = std::chrono::steady_clock::now();
  write_checkpoint(path, meta, b);
  const auto t1 = std::chrono::steady_clock::now();
  load_checkpoint(path, read_checkpoint(path), b);
  const auto t2 = std::chrono::steady_clock::now();
  std::filesystem::remove(path);
  return {std::chrono::duration<double>(t1 - t0).count(),
          std::chrono::duration<double>(t2 - t1).count()};
}

// W, W' and G (and the momentum), bytes a worker in padded rows: what grows with m.
double state_bytes(const Backend& b) {
  const double row = double(row_stride(b.dim(), b.scalar_bytes())) * b.scalar_bytes();
  return row * (3 + (b.has_momentum() ? 1 : 0));
}

std::string cpu_model() {
  std::ifstream in("/proc/cpuinfo");
  for (std::string line; std::getline(in, line);)
    if (line.rfind("model name", 0) == 0) return line.substr(line.find(':') + 2);
  return "unknown CPU";
}

std::string slug(std::string s) {
  for (char& ch : s)
    if (!std::isalnum(static_cast<unsigned char>(ch))) ch = '-';
  return s;
}

}  // namespace

struct BenchOptions {
  std::vector<std::string> names{"quickstart", "a"};
  std::string backend = "cpu", math = "fp32", out_dir = "bench/results", export_dir;
  int repeats = 10, calls = 5;
  bool curvature = true, ceilings = true;
  std::string cnn_off;       // --cnn-off: a CNN's fused paths off (CudaOptions::cnn_paths)
  std::vector<int> shards;   // --shards: the halo table and the transport's cost
};

// The machine and its measured ceilings (NaN with --no-ceilings).
struct Machine {
  std::string device;
  double gemm_gflops = 0, copy_gbs = 0;
};

// The machine's ceilings into result["machine"] and result["ceilings"]; false (said on stderr)
// where the backend cannot run here.
bool measure_machine(const BenchOptions& o, json& result, Machine& m) {
  if (o.backend == "cpu") {
    const Ceilings ceil = o.ceilings ? measure_ceilings(5) : Ceilings{NAN, NAN};
    m.device = cpu_model();
    m.gemm_gflops = ceil.gemm_gflops;
    m.copy_gbs = ceil.copy_gbs;
    result["machine"] = {{"cpu", m.device}, {"cores", sysconf(_SC_NPROCESSORS_ONLN)}};
    result["ceilings"] = {{"copy_gb_per_s", m.copy_gbs},
                          {"sgemm_gflop_per_s", m.gemm_gflops},
                          {"sgemm", "Eigen 1024^3"}};
    return true;
  }
#ifdef GOSSAMER_HAVE_CUDA
  const DeviceList gpus = list_devices();
  if (gpus.devices.empty()) {
    std::fprintf(stderr, "gossamer-bench: --backend cuda: %s\n", gpus.why_none.c_str());
    return false;
  }
  m.device = gpus.devices[0].name;
  const CudaCeilings ceil = o.ceilings ? measure_cuda_ceilings(10) : CudaCeilings{NAN, NAN, NAN};
  m.copy_gbs = ceil.copy_gb_per_s;
  m.gemm_gflops = 1e3 * (o.math == "tf32" ? ceil.sgemm_tf32_tflops : ceil.sgemm_fp32_tflops);
  result["machine"] = {{"gpu", m.device},
                       {"memory_bytes", gpus.devices[0].total_memory},
                       {"multiprocessors", gpus.devices[0].multiprocessors},
                       {"cpu", cpu_model()}};
  result["ceilings"] = {{"copy_gb_per_s", m.copy_gbs},
                        {"sgemm_fp32_tflop_per_s", ceil.sgemm_fp32_tflops},
                        {"sgemm_tf32_tflop_per_s", ceil.sgemm_tf32_tflops},
                        {"sgemm", "cuBLAS 8192^3"}};
  return true;
#else
  std::fprintf(stderr, "gossamer-bench: built without CUDA\n");
  return false;
#endif
}

// The step's parts against the ceilings, the whole step, the checkpoint's I/O, the set-up.
json bench_step(const BenchOptions& o, const Machine& mach, Simulation& sim, double t_setup) {
  const RunConfig& cfg = sim.config;
  Backend& b = *sim.backend;
  const ModelSpec& model = sim.model;
  const int m = cfg.workers, batch = cfg.optimizer.batch_size;
  // Multiply-adds a sample of the weight products, and of those that read the input (no dX).
  double weight_macs = 0, input_macs = 0;
  if (model.kind == ModelKind::Cnn) {
    for (const CnnNode& n : model.nodes) {
      const ConvShape& s = n.conv;
      if (s.w_offset < 0 || (n.op != CnnNode::Op::Conv && n.op != CnnNode::Op::Add)) continue;
      const double macs = double(s.cout) * s.cin * s.kh * s.kw * s.out_h * s.out_w;
      weight_macs += macs;
      if ((n.op == CnnNode::Op::Conv ? n.input : n.other) < 0) input_macs += macs;
    }
  } else {
    for (const auto& l : model.layers) weight_macs += double(l.in) * l.out;
    input_macs = double(model.layers[0].in) * model.layers[0].out;
  }
  const double grad_flops = double(m) * batch * (6 * weight_macs - 2.0 * input_macs);
  const double update_bytes =
      (cfg.optimizer.momentum > 0 ? 5.0 : 3.0) * m * double(model.dim) * sizeof(float);
  int64_t step = 0;
  const Csr& mixing = sim.topology->at(0);
  const auto median = [&](const std::function<void()>& f) {
    return median_per_call(b, f, o.repeats, o.calls);
  };
  const double t_sample = median([&] { b.sample(step++); });
  const double t_grad = median([&] { b.local_gradient(true); });
  // The update called again and again on one G is no training sequence: the CPU backend keeps U
  // in G's place, so with momentum each call feeds the last U back in (U grows (1 + mu)-fold a
  // call: workload a's W reached 1.9e9 in 55 calls and NaN two steps later). W and the momentum
  // are put back after it, so the parts after it run on the state of a training run.
  const std::optional<BackendState> before_update =
      b.has_momentum() ? std::optional<BackendState>(b.save_state()) : std::nullopt;
  const double t_update = median([&] { b.mix_update(&mixing, 1e-6, MixForm::Default); });
  if (before_update) b.load_state(*before_update);
  const double t_consensus = median([&] { b.consensus_distance(); });
  const double t_eval = median([&] { b.evaluate_mean(Split::Test); });
  const double t_step = median([&] { train_step(b, cfg, *sim.topology, step++, 1e-6); });
  if (const std::string bad = b.first_nonfinite().describe(); !bad.empty())
    throw std::runtime_error("the timed steps diverged (" + bad +
                             "): the times would be of NaN arithmetic");
  auto gflops = [](double flops, double s) { return flops / s / 1e9; };
  json w = {{"config", cfg.resolved},
            {"backend", b.name()},
            {"model", model.describe()},
            {"parts_seconds",
             {{"sample", t_sample},
              {"local_gradient", t_grad},
              {"gossip_update", t_update},
              {"consensus_distance", t_consensus},
              {"evaluate_mean_test", t_eval},
              {"step", t_step}}},
            {"local_gradient",
             {{"flops", grad_flops},
              {"gflop_per_s", gflops(grad_flops, t_grad)},
              {"fraction_of_sgemm", gflops(grad_flops, t_grad) / mach.gemm_gflops}}},
            {"gossip_update",
             {{"min_bytes", update_bytes},
              {"gb_per_s", update_bytes / t_update / 1e9},
              {"fraction_of_copy", update_bytes / t_update / 1e9 / mach.copy_gbs}}},
            {"steps_per_second", 1.0 / t_step},
            {"scaling",
             {{"setup_seconds", t_setup},
              {"ns_per_worker_step", t_step / m * 1e9},
              {"state_bytes_per_worker", state_bytes(b)}}}};
  std::printf("  %-22s %10s  %s\n", "part", "median", "rate (fraction of ceiling)");
  std::printf("  %-22s %8.3f ms\n", "sample", t_sample * 1e3);
  // " (42% of SGEMM)", or nothing where --no-ceilings left the ceiling unmeasured.
  const auto share = [](double rate, double ceiling, const char* what) {
    if (std::isnan(ceiling)) return std::string();
    char buf[48];
    std::snprintf(buf, sizeof buf, " (%.0f%% of %s)", 100 * rate / ceiling, what);
    return std::string(buf);
  };
  std::printf("  %-22s %8.3f ms  %.1f GFLOP/s%s\n", "forward + backward", t_grad * 1e3,
              gflops(grad_flops, t_grad),
              share(gflops(grad_flops, t_grad), mach.gemm_gflops, "SGEMM").c_str());
  std::printf("  %-22s %8.3f ms  %.1f GB/s%s\n", "gossip + update", t_update * 1e3,
              update_bytes / t_update / 1e9,
              share(update_bytes / t_update / 1e9, mach.copy_gbs, "copy").c_str());
  std::printf("  %-22s %8.3f ms\n", "consensus distance", t_consensus * 1e3);
  std::printf("  %-22s %8.3f ms\n", "evaluate w-bar (test)", t_eval * 1e3);
  std::printf("  %-22s %8.3f ms  (%.1f steps/s)\n", "whole step", t_step * 1e3, 1.0 / t_step);
  if (const double ck = double(m) * double(model.dim) * b.scalar_bytes();
      ck <= kCheckpointBenchBytes) {
    const auto [write_s, read_s] = checkpoint_io(cfg, b, o.out_dir + "/.bench-checkpoint.bin");
    w["checkpoint"] = {{"bytes", ck},
                       {"write_gb_per_s", ck / write_s / 1e9},
                       {"read_gb_per_s", ck / read_s / 1e9}};
    std::printf("  checkpoint %.2f GB: write %.2f GB/s, read (checked) + load %.2f GB/s\n",
                ck / 1e9, ck / write_s / 1e9, ck / read_s / 1e9);
  }
  std::printf("  setup %.2f s; %.1f ns a worker-step; %.1f MB of state a worker\n", t_setup,
              t_step / m * 1e9, state_bytes(b) / 1e6);
  return w;
}

// w-bar, the curvature subset and the layer sizes, for the PyHessian-style peer to measure the
// same model on the same data.
void export_curvature_point(const std::string& dir, const std::string& name, Simulation& sim) {
  const ModelSpec& model = sim.model;
  std::filesystem::create_directories(dir);
  const auto write = [&](const std::string& file, const void* p, size_t bytes) {
    std::ofstream(dir + "/" + name + "-" + file, std::ios::binary)
        .write(static_cast<const char*>(p), std::streamsize(bytes));
  };
  const std::vector<double> wbar = mean_row(sim.backend->weights(), sim.config.workers);
  const std::vector<float> w32(wbar.begin(), wbar.end());
  std::vector<float> xs;
  std::vector<int32_t> ys;
  for (int64_t i : sim.curvature_subset) {
    const float* row = sim.data.train.row(i);
    xs.insert(xs.end(), row, row + model.input);
    ys.push_back(sim.data.train.y[i]);
  }
  write("wbar.f32", w32.data(), w32.size() * 4);
  write("x.f32", xs.data(), xs.size() * 4);
  write("y.i32", ys.data(), ys.size() * 4);
  json sizes = json::array({model.input});
  for (int h : model.hidden) sizes.push_back(h);
  sizes.push_back(model.classes);
  std::ofstream(dir + "/" + name + "-meta.json")
      << json{{"sizes", sizes},
              {"activation", sim.config.resolved["model"]["activation"]},
              {"samples", ys.size()},
              {"layout", "per layer: weight out x in row-major, then bias"}}
             .dump(2);
}

// One batched HVP over K = min(m, 64) (point, direction) pairs vs one batched gradient over the
// same K points, on the curvature subset; then the estimators of the PyHessian comparison at
// w-bar, which stays on the backend as in a run: Hutchinson with 64 probes, power iteration with
// deflation for the top 10 (at most 100 iterations, tolerance 1e-3: PyHessian's defaults),
// Lanczos top 10; every worker's trace (kWorkerProbes probes) and top eigenvalue (power,
// PyHessian's tolerance) in one batched pass; the spectral density (8 runs of 64 Lanczos steps).
json bench_curvature(Simulation& sim) {
  constexpr int kWorkerProbes = 8;
  Backend& b = *sim.backend;
  const int m = sim.config.workers;
  const int k = std::min(m, 64);
  // The first k workers as points (and as directions), on the backend as the estimators use
  // them: the passes alone are timed, no host transfer.
  auto all = b.vectors(m), grads = b.vectors(k), hv = b.vectors(k);
  b.copy_weights(all_rows(*all));
  const Rows points = rows_of(*all, 0, k);
  const auto once = [&](const std::function<void()>& f) { return median_per_call(b, f, 3, 1); };
  const double t_subset_grad = once([&] { b.subset_loss(points, all_rows(*grads)); });
  const double t_hvp = once([&] { b.hvp(points, points, all_rows(*hv)); });
  std::pair<double, double> smoothing;
  const double t_smoothing = once([&] { smoothing = gradient_smoothing(b); });
  Estimate trace;
  TopEigen power, lanczos;
  WorkerCurvature workers;
  SpectralDensity density;
  auto point = b.vectors(1);
  b.mean_weights(all_rows(*point));
  const Rows p = all_rows(*point);
  const double t_hutch = once([&] { trace = hutchinson_trace(b, p, 64, 7); });
  const double t_power = once([&] { power = power_top_eigenvalues(b, p, 10, 100, 1e-3, 7); });
  const double t_lanczos = once([&] { lanczos = lanczos_top_eigenvalues(b, p, 10, 40, 7); });
  const double t_workers =
      once([&] { workers = worker_curvature(b, kWorkerProbes, 100, 1e-3, 7); });
  const double t_density = once([&] { density = spectral_density(b, p, 8, 64, 256, 0.01, 7); });
  int max_iters = 0;
  for (int it : workers.power_iterations) max_iters = std::max(max_iters, it);
  std::printf("  HVP / gradient over %d points: %.2fx (%.3f / %.3f ms)\n", k, t_hvp / t_subset_grad,
              t_hvp * 1e3, t_subset_grad * 1e3);
  std::printf("  Hutchinson 64 probes: %.3f s (tr H = %.4g +- %.2g)\n", t_hutch, trace.value,
              trace.std_error);
  std::printf(
      "  power top-10: %.3f s (lambda_1 = %.4g); Lanczos top-10: %.3f s (lambda_1 = %.4g)\n",
      t_power, power.values.at(0), t_lanczos, lanczos.values.at(0));
  std::printf(
      "  every worker (%d): trace (%d probes) + top eigenvalue (%d power iterations): %.3f s\n", m,
      kWorkerProbes, max_iters, t_workers);
  std::printf("  spectral density (8 runs x 64 Lanczos steps): %.3f s\n", t_density);
  std::printf("  gradient smoothing (%d + 1 subset gradients): %.3f s (ratio %.3g)\n", m,
              t_smoothing, smoothing.first / smoothing.second);
  return {{"subset_samples", sim.config.curvature.samples},
          {"hvp_vs_gradient",
           {{"pairs", k},
            {"hvp_s", t_hvp},
            {"gradient_s", t_subset_grad},
            {"ratio", t_hvp / t_subset_grad}}},
          {"hutchinson_64",
           {{"seconds", t_hutch}, {"trace", trace.value}, {"std_error", trace.std_error}}},
          {"power_top10", {{"seconds", t_power}, {"eigenvalues", power.values}}},
          {"lanczos_top10_40_steps", {{"seconds", t_lanczos}, {"eigenvalues", lanczos.values}}},
          {"every_worker",
           {{"seconds", t_workers},
            {"workers", m},
            {"trace_probes", kWorkerProbes},
            {"power_max_iterations_taken", max_iters},
            {"trace_worker0", workers.trace.at(0).value},
            {"top_eigenvalue_worker0", workers.top_eigenvalue.at(0)}}},
          {"density_8x64", {{"seconds", t_density}, {"sigma", density.sigma}}},
          {"gradient_smoothing",
           {{"seconds", t_smoothing},
            {"gradients", m + 1},
            {"ratio", smoothing.first / smoothing.second}}}};
}

// Sharding (docs/ARCHITECTURE.md, "Shards"): for S shards of the workload's workers, the rows
// and bytes each shard receives a step (the most over shards, averaged over a period of a
// time-varying topology, in float32 rows as on a GPU) for its topology and the others of the
// table; and the sharded gossip + update against the unsharded one on the bench's backend (the
// in-process transport's cost: the halo plan and the row copies).
json bench_shards(const BenchOptions& o, const std::string& name) {
  json out = json::array();
  const RunConfig base = load_config(workload(name, "cpu"), {}, "workload " + name);
  const int m = base.workers;
  for (const char* topo : {"ring", "torus", "exponential", "one_peer_exponential"}) {
    TopologyConfig tc = base.topology;
    tc.name = topo;
    TopologySchedule schedule(tc, m, base.seed);
    const int64_t period = schedule.phases();
    for (int S : o.shards) {
      if (S > m) continue;
      const ShardLayout layout(m, S);
      double most_rows = 0, total_rows = 0;
      for (int64_t t = 0; t < period; ++t) {
        const HaloPlan plan = plan_halo(schedule.phase(int(t)), layout);
        std::vector<int64_t> per(size_t(S), 0);
        for (const auto& c : plan.copies) ++per[size_t(c.to)];
        most_rows += double(*std::max_element(per.begin(), per.end())) / double(period);
        total_rows += double(plan.copies.size()) / double(period);
      }
      const int64_t d = ModelSpec::mlp(base.data.synthetic_features, base.model.hidden,
                                       base.data.synthetic_classes, base.model.activation)
                            .dim;
      const double row_bytes = double(d) * 4;  // float32 rows, as the CUDA backend sends them
      out.push_back({{"topology", topo},
                     {"shards", S},
                     {"rows_per_shard_step_max", most_rows},
                     {"bytes_per_shard_step_max", most_rows * row_bytes},
                     {"rows_per_step_all_shards", total_rows},
                     {"fraction_of_w_per_shard", most_rows / (double(m) / S)}});
      std::printf(
          "  %-22s S = %d: %8.1f rows (%7.2f MB) into the busiest shard a step, %5.1f %% of its "
          "rows\n",
          topo, S, most_rows, most_rows * row_bytes / 1e6, 100 * most_rows / (double(m) / S));
    }
  }
  // The transport's cost: the sharded gossip + update against one shard, the workload's own
  // topology, on the bench's backend: CPU shards (in-process copies), or CUDA shards on GPU 0
  // (device copies between shards on one GPU: the halo plan, the copies and S smaller launches).
  const auto time_update = [&](int shards) {
    json cfg = workload(name, o.backend);
    if (o.backend == "cuda") {
      if (shards > 1) cfg["devices"] = std::vector<int>(size_t(shards), 0);
    } else {
      cfg["shards"] = shards;
    }
    auto sim = make_simulation(load_config(cfg, {}, "workload " + name));
    Backend& b = *sim->backend;
    const Csr& mixing = sim->topology->at(0);
    return median_per_call(
        b, [&] { b.mix_update(&mixing, 1e-6, MixForm::Default); }, o.repeats, o.calls);
  };
  double one = NAN;  // the unsharded time, measured once
  for (int S : o.shards) {
    if (S > m || S < 2) continue;
    if (std::isnan(one)) one = time_update(1);
    const double sharded = time_update(S);
    out.push_back(
        {{"gossip_update_seconds",
          {{"backend", o.backend}, {"shards", S}, {"one_shard", one}, {"sharded", sharded}}}});
    std::printf("  %s gossip + update, %s: %.3f ms unsharded, %.3f ms in %d shards (%.2fx)\n",
                o.backend.c_str(), base.topology.name.c_str(), one * 1e3, sharded * 1e3, S,
                sharded / one);
  }
  return out;
}

int run_bench(int argc, char** argv) {
  CLI::App app{"gossamer-bench: step parts and curvature estimators against the ceilings"};
  BenchOptions o;
  app.add_option("--backend", o.backend, "cpu or cuda")->check(CLI::IsMember({"cpu", "cuda"}));
  app.add_option("--math", o.math, "GEMM math of the cuda backend")
      ->check(CLI::IsMember({"fp32", "tf32"}));
  app.add_option("--workload", o.names,
                 "Workloads: quickstart, a, b, c and c1024 (the CNN quickstart's network on "
                 "Fashion-MNIST, 16 or 1,024 workers), and m<N> (the scaling series: N workers of "
                 "784-128-10, batch 32, ring)")
      ->delimiter(',');
  app.add_option("--repeats", o.repeats, "Timed batches per part (median reported)")
      ->check(CLI::PositiveNumber);
  app.add_option("--calls", o.calls, "Calls per timed batch")->check(CLI::PositiveNumber);
  app.add_flag("!--no-curvature", o.curvature, "Skip the curvature estimators");
  gossamer_bench::add_cnn_off_option(app, o.cnn_off);
  app.add_flag("!--no-ceilings", o.ceilings,
               "Skip the ceiling measurements (under a profiler: the workload's own kernels "
               "come first; fractions of the ceilings are then not reported)");
  app.add_option("--out", o.out_dir, "Folder of the JSON result");
  app.add_option("--shards", o.shards,
                 "Shard counts for the halo table (rows and bytes a shard receives a step, per "
                 "topology) and the transport's cost on the backend (CPU shards, or CUDA shards on "
                 "GPU 0), e.g. --shards 2,4,8")
      ->delimiter(',')
      ->check(CLI::Range(1, 1 << 20));
  app.add_option("--export-curvature", o.export_dir,
                 "Write each workload's w-bar, curvature subset and layer sizes here, for the "
                 "PyHessian-style peer to measure the same model on the same data");
  CLI11_PARSE(app, argc, argv);
  if (!o.cnn_off.empty() && o.backend != "cuda")
    throw config_error("--cnn-off: the CNN's paths are the CUDA backend's; add --backend cuda");
  const CnnPaths paths = cnn_paths_without(o.cnn_off, "--cnn-off");
  std::filesystem::create_directories(o.out_dir);  // the result, and the checkpoint I/O's file

  json result = {
      {"git_revision", GOSSAMER_GIT_REVISION},  // at build time (cmake/revision.cmake)
      {"timing", "median over repeats of (calls back to back) / calls"},
      {"repeats", o.repeats},
      {"calls", o.calls},
      {"workloads", json::object()}};
  Machine mach;
  if (!measure_machine(o, result, mach)) return 1;
  if (o.ceilings)
    std::printf("device: %s; copy %.1f GB/s, SGEMM %.1f GFLOP/s (%s)\n", mach.device.c_str(),
                mach.copy_gbs, mach.gemm_gflops, o.math.c_str());
  else
    std::printf("device: %s; ceilings not measured (--no-ceilings; %s)\n", mach.device.c_str(),
                o.math.c_str());

  const std::string path = gossamer_bench::dated_result_path(
      o.out_dir, o.backend == "cpu" ? std::string("cpu") : slug(mach.device));
  for (const auto& name : o.names) {
    json wc = workload(name, o.backend);
    wc["math"] = o.math;
    const RunConfig cfg = load_config(wc, {}, "workload " + name);
    const auto setup_start = std::chrono::steady_clock::now();
    auto sim = make_simulation(cfg);
    const double t_setup =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - setup_start).count();
    const bool cnn = sim->model.kind == ModelKind::Cnn;
    if (cnn)
      gossamer_bench::use_cnn_paths(*sim, paths);  // after the set-up's timing
    else if (!o.cnn_off.empty())
      std::printf("(--cnn-off: workload %s has no CNN; nothing to turn off)\n", name.c_str());
    std::printf("\nworkload %s: m = %d, %s, batch %d, %s, %s\n", name.c_str(), cfg.workers,
                sim->model.describe().c_str(), cfg.optimizer.batch_size, cfg.topology.name.c_str(),
                sim->backend->name().c_str());
    json w = bench_step(o, mach, *sim, t_setup);
    if (cnn && o.backend == "cuda") w["cnn_paths_off"] = cnn_paths_off(paths);  // CudaOptions
    if (!o.shards.empty()) {
      std::printf("  sharding (halo rows a step):\n");
      w["shards"] = bench_shards(o, name);
    }
    if (o.curvature && name[0] != 'm') {
      w["curvature"] = bench_curvature(*sim);
      if (!o.export_dir.empty()) export_curvature_point(o.export_dir, name, *sim);
    }
    result["workloads"][name] = w;
    // After every workload: a run stopped by a time box keeps what it measured.
    std::ofstream(path) << result.dump(2) << "\n";
    std::printf("  (wrote %s)\n", path.c_str());
  }
  return 0;
}

// Errors end in one line and exit 2 (bad input) or 1, as the CLI's do (a throw out of main would
// abort).
int main(int argc, char** argv) {
  try {
    return run_bench(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "gossamer-bench: error: %s\n", e.what());
    const auto* g = dynamic_cast<const Error*>(&e);
    return g && g->kind() == ErrorKind::Config ? kExitUsage : kExitRuntime;
  }
}
