// gossamer-traffic: how a benchmark workload's training step moves device memory, kernel by
// kernel, measured on the emulated CUDA device (tests/emu/traffic.hpp) instead of a GPU: for
// each of gossamer's kernels, its launches and threads, its global loads' and stores' requests and
// 32-byte sectors (coalescing: the bytes asked for over the sectors' bytes, 1 at best) and the
// distinct sectors it reads and writes (a floor on its DRAM traffic); and the GEMMs cuBLAS would
// run. What it cannot say is time: it finds uncoalesced kernels and counts bytes before a GPU visit
// (bench/NOTES.md). Writes bench/results/DATE-emulated-traffic-WORKLOAD.json.
//
// The step is one train_step after a first one (which captures the step's graph); with --hvp, one
// batched Hessian-vector product over the first --hvp workers' weights on --curvature-samples
// samples follows it, reported apart.
#include "emu/traffic.hpp"

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <fstream>

#include "gossamer/error.hpp"
#include "gossamer/simulation.hpp"
#include "gossamer/trainer.hpp"
#include "gossamer_revision.h"  // GOSSAMER_GIT_REVISION: the build's commit
#include "workloads.hpp"

using namespace gossamer;
using nlohmann::json;

namespace {

json accesses(const gossamer_emu::Accesses& a) {
  return {{"requests", a.requests},
          {"sectors", a.sectors},
          {"bytes", a.bytes},
          {"sectors_per_request", a.requests ? double(a.sectors) / double(a.requests) : 0.0},
          {"efficiency", a.efficiency()}};
}

// The report as JSON and as a table on stdout, kernels by their DRAM floor, largest first.
json report(const char* what, gossamer_emu::TrafficReport r) {
  std::sort(r.kernels.begin(), r.kernels.end(), [](const auto& a, const auto& b) {
    return a.read_sectors + a.written_sectors > b.read_sectors + b.written_sectors;
  });
  json kernels = json::array(), gemms = json::array();
  double floor_bytes = 0, gemm_flops = 0;
  std::printf(
      "\n%s: kernels by distinct bytes read + written (the DRAM floor); threads a "
      "launch, load and store efficiency, sectors a request\n",
      what);
  std::printf("  %-34s %8s %9s %10s %10s %9s %9s %9s\n", "kernel", "launches", "threads", "read MB",
              "written MB", "load eff", "store eff", "sect/req");
  for (const auto& k : r.kernels) {
    const double read = 32.0 * double(k.read_sectors), written = 32.0 * double(k.written_sectors);
    floor_bytes += read + written;
    const uint64_t req = k.loads.requests + k.stores.requests;
    std::printf("  %-34s %8llu %9.3g %10.3f %10.3f %9.3f %9.3f %9.2f\n", k.kernel.c_str(),
                (unsigned long long)k.launches, double(k.threads) / double(k.launches), read / 1e6,
                written / 1e6, k.loads.efficiency(), k.stores.efficiency(),
                req ? double(k.loads.sectors + k.stores.sectors) / double(req) : 0.0);
    kernels.push_back({{"kernel", k.kernel},
                       {"launches", k.launches},
                       {"threads", k.threads},
                       {"loads", accesses(k.loads)},
                       {"stores", accesses(k.stores)},
                       {"distinct_bytes_read", read},
                       {"distinct_bytes_written", written}});
  }
  std::printf(
      "  cuBLAS GEMMs (column-major m x n x k, batch: calls; operands read and written once, "
      "MB):\n");
  double gemm_bytes = 0;
  for (const auto& g : r.gemms) {
    const double flops = 2.0 * g.m * g.n * double(g.k) * g.batch * double(g.calls);
    gemm_flops += flops;
    gemm_bytes += double(g.bytes_read + g.bytes_written);
    std::printf("    %d x %d x %d, batch %d: %llu; read %.3f, written %.3f\n", g.m, g.n, g.k,
                g.batch, (unsigned long long)g.calls, double(g.bytes_read) / 1e6,
                double(g.bytes_written) / 1e6);
    gemms.push_back({{"m", g.m},
                     {"n", g.n},
                     {"k", g.k},
                     {"batch", g.batch},
                     {"calls", g.calls},
                     {"flops", flops},
                     {"operand_bytes_read", g.bytes_read},
                     {"operand_bytes_written", g.bytes_written}});
  }
  // Memsets and copies (only their device side): not kernels of ours, listed apart.
  json transfers = json::array();
  double transfer_bytes = 0;
  std::printf("  memsets and copies (calls; MB read, written):\n");
  for (const auto& t : r.transfers) {
    const double read = 32.0 * double(t.read_sectors), written = 32.0 * double(t.written_sectors);
    transfer_bytes += read + written;
    std::printf("    %s: %llu; read %.3f, written %.3f\n", t.kernel.c_str(),
                (unsigned long long)t.launches, read / 1e6, written / 1e6);
    transfers.push_back({{"call", t.kernel},
                         {"calls", t.launches},
                         {"bytes_read", read},
                         {"bytes_written", written}});
  }
  std::printf(
      "  total: kernels %.3f MB distinct (read + written), memsets and copies %.3f MB, GEMMs "
      "%.4f GFLOP and %.3f MB of operands\n",
      floor_bytes / 1e6, transfer_bytes / 1e6, gemm_flops / 1e9, gemm_bytes / 1e6);
  return {{"kernels", kernels},
          {"gemms", gemms},
          {"transfers", transfers},
          {"kernel_distinct_bytes", floor_bytes},
          {"transfer_bytes", transfer_bytes},
          {"gemm_flops", gemm_flops},
          {"gemm_operand_bytes", gemm_bytes}};
}

int run(int argc, char** argv) {
  CLI::App app{
      "gossamer-traffic: a workload's step, kernel by kernel, on the emulated CUDA device"};
  std::string name = "c", out_dir = "bench/results";
  int workers = 0, hvp = 0, samples = 64;
  std::string cnn_off;
  app.add_option("--workload", name,
                 "Workload of gossamer-bench (c: the CNN; a, b, quickstart, m<N>)");
  app.add_option("--workers", workers,
                 "Workers (default: the workload's); coalescing does not depend on it, the bytes "
                 "grow with it")
      ->check(CLI::PositiveNumber);
  app.add_option("--hvp", hvp, "Also one batched HVP at this many workers' weights")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--curvature-samples", samples, "Samples of the HVP's subset")
      ->check(CLI::PositiveNumber);
  gossamer_bench::add_cnn_off_option(app, cnn_off);
  app.add_option("--out", out_dir, "Folder of the JSON result");
  CLI11_PARSE(app, argc, argv);

  json wc = gossamer_bench::workload(name, "cuda");
  if (workers > 0) wc["workers"] = workers;
  wc["curvature"]["samples"] = samples;
  const RunConfig cfg = load_config(wc, {}, "workload " + name);
  if (hvp > cfg.workers)
    throw config_error("--hvp " + std::to_string(hvp) + ": at most the " +
                       std::to_string(cfg.workers) + " workers");
  const CnnPaths paths = cnn_paths_without(cnn_off, "--cnn-off");
  const std::string off = cnn_paths_off(paths);
  auto sim = make_simulation(cfg);
  gossamer_bench::use_cnn_paths(*sim, paths);
  Backend& b = *sim->backend;
  std::printf("workload %s: m = %d, %s, batch %d, %s, on %s\n", name.c_str(), cfg.workers,
              sim->model.describe().c_str(), cfg.optimizer.batch_size, cfg.topology.name.c_str(),
              b.name().c_str());
  // Progress lines: a run of workload c with --hvp 4 took 2 min 41 s on the 2-core VM.
  const auto phase = [](const char* what) {
    std::printf("  %s ...\n", what);
    std::fflush(stdout);
  };
  phase("first step (captures the step's graph)");
  train_step(b, cfg, *sim->topology, 0, 1e-6);
  phase("second step, traced");
  gossamer_emu::start_traffic();
  train_step(b, cfg, *sim->topology, 1, 1e-6);
  json result = {{"git_revision", GOSSAMER_GIT_REVISION},
                 {"device", "emulated (tests/emu): access counts, no times"},
                 {"workload", name},
                 {"cnn_paths_off", off},  // CudaOptions::cnn_paths
                 {"config", cfg.resolved},
                 {"model", sim->model.describe()},
                 {"step", report("one training step", gossamer_emu::stop_traffic())}};
  if (hvp > 0) {
    // The first `hvp` workers as points and directions, on the device as the estimators use them:
    // only the pass is traced, no host transfer.
    auto all = b.vectors(b.workers()), out = b.vectors(hvp);
    b.copy_weights(all_rows(*all));
    const Rows points = rows_of(*all, 0, hvp);
    phase("one batched HVP, traced");
    gossamer_emu::start_traffic();
    b.hvp(points, points, all_rows(*out));
    result["hvp"] = report("one batched HVP", gossamer_emu::stop_traffic());
    result["hvp"]["points"] = hvp;
  }
  const std::string path = gossamer_bench::dated_result_path(
      out_dir, "emulated-traffic-" + name +
                   (gossamer_bench::default_cnn_paths(paths) ? "" : "-without-" + off));
  std::ofstream(path) << result.dump(2) << "\n";
  std::printf("\n(wrote %s)\n", path.c_str());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "gossamer-traffic: error: %s\n", e.what());
    const auto* g = dynamic_cast<const Error*>(&e);
    return g && g->kind() == ErrorKind::Config ? kExitUsage : kExitRuntime;
  }
}
