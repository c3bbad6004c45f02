#include "gossamer/cli.hpp"

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cctype>
#include <cstdio>
#include <iostream>

#include "gossamer/checkpoint.hpp"
#include "gossamer/cuda_plan.hpp"
#include "gossamer/devices.hpp"
#include "gossamer/error.hpp"
#include "gossamer/simulation.hpp"
#include "gossamer/sweep.hpp"
#include "gossamer/topology.hpp"
#include "gossamer/transport.hpp"
#include "gossamer/trainer.hpp"
#include "config_schema.hpp"

namespace gossamer {

using nlohmann::json;
namespace {

json topology_report(const TopologySchedule& s, const MixingProperties& p,
                     const std::string& weights, int m) {
  json j;
  j["name"] = s.name();
  j["workers"] = m;
  j["weights"] = weights;
  j["time_varying"] = s.time_varying();
  j["phases"] = s.phases();
  j["degree"] = {{"min", p.min_degree}, {"max", p.max_degree}};
  j["nonnegative"] = p.nonnegative;
  j["row_stochastic"] = p.row_stochastic;
  j["doubly_stochastic"] = p.row_stochastic && p.column_stochastic;
  j["symmetric"] = p.symmetric;
  j["connected"] = p.connected;
  j["sigma2"] = p.gap.sigma2;
  j["lambda2_modulus"] = p.gap.lambda2;  // null where not computed (non-symmetric, large m)
  j["spectral_gap_sigma"] = p.gap.gap_sigma;
  j["spectral_gap_lambda"] = p.gap.gap_lambda;
  j["spectrum_method"] = p.gap.method;
  if (p.gap.tolerance > 0)
    j["spectrum_residual"] = {{"residual", p.gap.residual}, {"tolerance", p.gap.tolerance}};
  if (s.phases() > 1) j["period_gap_sigma"] = p.period_gap_sigma;
  if (m <= 16) {
    json phases = json::array();
    for (int i = 0; i < s.phases(); ++i) {
      const auto d = s.phase(i).dense();
      json rows = json::array();
      for (int r = 0; r < m; ++r)
        rows.push_back(std::vector<double>(d.begin() + r * m, d.begin() + (r + 1) * m));
      phases.push_back(rows);
    }
    j["matrix"] = s.phases() == 1 ? phases[0] : phases;
  }
  return j;
}

void print_topology(const json& j, int m) {
  std::printf(
      "topology %s, %d workers, weights %s%s\n", j["name"].get<std::string>().c_str(), m,
      j["weights"].get<std::string>().c_str(),
      j["time_varying"].get<bool>()
          ? (", time-varying, " + std::to_string(j["phases"].get<int>()) + " phases").c_str()
          : "");
  std::printf("  degree            %d..%d (neighbours besides itself)\n",
              j["degree"]["min"].get<int>(), j["degree"]["max"].get<int>());
  auto yes = [&](const char* k) { return j[k].get<bool>() ? "yes" : "no"; };
  std::printf(
      "  row-stochastic    %s\n  doubly stochastic %s\n  symmetric         %s\n  connected         "
      "%s\n",
      yes("row_stochastic"), yes("doubly_stochastic"), yes("symmetric"), yes("connected"));
  std::printf("  spectral gap      %.12g  (1 - sigma2, sigma2 = %.12g)\n",
              j["spectral_gap_sigma"].get<double>(), j["sigma2"].get<double>());
  if (j["lambda2_modulus"].is_number())
    std::printf("  lambda gap        %.12g  (1 - |lambda2|, |lambda2| = %.12g)\n",
                j["spectral_gap_lambda"].get<double>(), j["lambda2_modulus"].get<double>());
  else
    std::printf("  lambda gap        not computed (P is not symmetric; sigma only at this size)\n");
  if (j.contains("period_gap_sigma"))
    std::printf("  gap over a period %.12g  (1 - sigma2 of the product of the phases)\n",
                j["period_gap_sigma"].get<double>());
  std::printf("  computed by       %s", j["spectrum_method"].get<std::string>().c_str());
  if (j.contains("spectrum_residual"))
    std::printf(" (residual %.2g, tolerance %.2g)", j["spectrum_residual"]["residual"].get<double>(),
                j["spectrum_residual"]["tolerance"].get<double>());
  std::printf("\n");
  if (j.contains("matrix")) {
    const json& mats = j["phases"].get<int>() == 1 ? json::array({j["matrix"]}) : j["matrix"];
    for (size_t i = 0; i < mats.size(); ++i) {
      std::printf(mats.size() > 1 ? "  P_t for t mod %zu = %zu:\n" : "  P:\n", mats.size(), i);
      for (const auto& row : mats[i]) {
        std::printf("   ");
        for (const auto& v : row) std::printf(" %6.4f", v.get<double>());
        std::printf("\n");
      }
    }
  }
}

// `gossamer curvature`: the checkpoint's weights, the run's config (curvature keys
// overridable), the curvature estimators of the run's metrics, printed.
int curvature_command(const std::string& target, const std::vector<std::string>& what,
                      std::vector<std::string> overrides, bool as_json) {
  for (const auto& o : overrides)
    if (o.rfind("curvature.", 0) != 0)
      throw config_error("--set " + o + ": only curvature.* keys can be changed here");
  const std::string path = checkpoint_path(target);
  const Checkpoint ck = read_checkpoint(path);
  if (!what.empty()) overrides.push_back("curvature.what=" + json(what).dump());
  const RunConfig config = load_config(ck.config, overrides, path);
  const auto sim = make_simulation(config);
  load_checkpoint(path, ck, *sim->backend);
  CurvatureFiles files;
  const json result = measure_curvature(*sim->backend, config.curvature, config.seed, ck.step, &files);
  if (as_json) {
    json out{{"checkpoint", path}, {"step", ck.step}, {"curvature", result}};
    if (!files.workers.is_null()) out["workers"] = files.workers;
    if (!files.density.is_null()) out["density"] = files.density;
    std::cout << out.dump(2) << "\n";
    return kExitOk;
  }
  std::printf("curvature of w-bar at step %lld (%s), on %lld training samples\n",
              static_cast<long long>(ck.step), path.c_str(),
              static_cast<long long>(result["subset_samples"].get<int64_t>()));
  if (result.contains("trace"))
    std::printf("  Hessian trace         %.6g +- %.2g (Hutchinson, %lld probes)\n",
                result["trace"]["value"].get<double>(), result["trace"]["std_error"].get<double>(),
                static_cast<long long>(result["trace"]["samples"].get<int64_t>()));
  if (result.contains("top_eigenvalues")) {
    const auto& t = result["top_eigenvalues"];
    for (size_t i = 0; i < t["values"].size(); ++i)
      std::printf("  eigenvalue %-3zu        %.6g  (residual %.2g, %s)\n", i + 1,
                  t["values"][i].get<double>(), t["residuals"][i].get<double>(),
                  t["method"].get<std::string>().c_str());
  }
  if (result.contains("half_tr_h_xi"))
    std::printf("  1/2 tr(H Xi)          %.6g\n", result["half_tr_h_xi"].get<double>());
  if (result.contains("avg_sharpness_isotropic"))
    std::printf(
        "  avg sharpness (sigma) %.6g +- %.2g (sigma %g)\n  avg sharpness (Xi)    %.6g +- %.2g\n",
        result["avg_sharpness_isotropic"]["value"].get<double>(),
        result["avg_sharpness_isotropic"]["std_error"].get<double>(),
        result["avg_sharpness_isotropic"]["sigma"].get<double>(),
        result["avg_sharpness_xi"]["value"].get<double>(),
        result["avg_sharpness_xi"]["std_error"].get<double>());
  if (result.contains("sam_sharpness"))
    std::printf("  SAM sharpness         %.6g (rho %g, %d ascent steps)\n",
                result["sam_sharpness"]["value"].get<double>(),
                result["sam_sharpness"]["rho"].get<double>(),
                result["sam_sharpness"]["steps"].get<int>());
  if (result.contains("density"))
    std::printf("  spectral density      %d Lanczos runs of %d steps, mean eigenvalue %.6g "
                "(--json prints the grid)\n",
                result["density"]["runs"].get<int>(), result["density"]["steps"].get<int>(),
                result["density"]["mean_eigenvalue"].get<double>());
  if (result.contains("workers"))
    for (const auto& [key, s] : result["workers"].items()) {
      if (key == "file" || key == "trace_std_error") continue;
      std::printf("  workers' %-22s min %.6g, mean %.6g, max %.6g, std %.2g (%d workers)\n",
                  key.c_str(), s["min"].get<double>(), s["mean"].get<double>(),
                  s["max"].get<double>(), s["std"].get<double>(), config.workers);
    }
  return kExitOk;
}

}  // namespace

namespace {

// `gossamer plan`: the memory plan of the CUDA backend for a config, from its shapes.
// With `fit` (a memory size, or "" for the visible GPU's free memory): the most workers of the
// config that fit, and what limits them.
int plan_command(const RunConfig& c, const std::string* fit) {
  const DataSplit data = load_data(c.data, c.seed);
  const ModelSpec model = model_for(c, data);
  const auto backends = run_backends(c, model, data);
  if (fit) {
    int64_t bytes = 0;
    std::string where;
    if (fit->empty()) {
      const DeviceList gpus = list_devices();
      if (gpus.devices.empty())
        throw config_error("plan --fit: " + gpus.why_none + "; give a size: --fit 80GiB");
      bytes = int64_t(gpus.devices[0].free_memory);
      where = gpus.devices[0].name + " (free memory)";
    } else {
      bytes = parse_memory_size(*fit);
      where = *fit;
    }
    std::vector<CudaPlanInput> inputs;
    for (const auto& [label, in] : backends) inputs.push_back(in);
    const int lo = largest_fitting_workers(inputs, bytes);
    const CudaPlan plan = run_plan(backends, std::max(lo, 1));
    const MemoryPart* largest = &plan.parts.front();
    for (const auto& part : plan.parts)
      if (part.bytes > largest->bytes) largest = &part;
    const std::string of =
        " of " + model.describe() + " (batch " + std::to_string(c.optimizer.batch_size) + ") ";
    const std::string fits = lo >= 1
                                 ? std::to_string(lo) + " workers" + of + "fit in " + where + ": "
                                 : "not one worker" + of + "fits in " + where + ": one needs ";
    std::printf("%s%.2f GiB of buffers + %.2f GiB headroom; the largest part is %s (lower %s)\n",
                fits.c_str(), double(plan.total()) / 1073741824.0,
                double(kCudaHeadroom) / 1073741824.0, largest->name.c_str(), largest->knob.c_str());
    return kExitOk;
  }
  // Sharded over devices: the plan of the largest shard, the busiest shard's halo on top.
  const int shards = std::max(1, int(c.devices.size()));
  const int per_gpu = (c.workers + shards - 1) / shards;
  const CudaPlan plan = run_plan(backends, per_gpu);
  std::printf("CUDA backend plan: %d workers%s, %s, per-worker batch %d%s\n%s", per_gpu,
              shards > 1 ? (" a shard (" + std::to_string(c.workers) + " in " +
                            std::to_string(shards) + " shards)").c_str()
                         : "",
              model.describe().c_str(), c.optimizer.batch_size,
              c.algorithm.track_adsam ? ", with the equivalence tracker's two companions" : "",
              plan.table().c_str());
  std::printf("  %.2f GiB in all, plus %.2f GiB headroom for the CUDA context and cuBLAS\n",
              double(plan.total()) / 1073741824.0, double(kCudaHeadroom) / 1073741824.0);
  if (shards > 1) {
    TopologySchedule schedule(c.topology, c.workers, c.seed);
    const ShardLayout layout(c.workers, shards);
    // Every phase of a time-varying graph; a shuffled one's first 16 steps.
    const int steps = c.topology.shuffle ? 16 : schedule.phases();
    size_t most = 0;
    for (int t = 0; t < steps; ++t)
      for (const ShardMixing& sm : plan_halo(schedule.at(t), layout).shards)
        most = std::max(most, sm.halo.size());
    const int arrays = c.algorithm.form == "atc" ? (c.optimizer.momentum > 0 ? 3 : 2) : 1;
    const double bytes = double(most) * double(row_stride(model.dim, 4)) * 4 * arrays;
    std::printf("  + the halo: up to %zu foreign rows a shard for %s%s (%.2f GiB)\n", most,
                c.topology.name.c_str(),
                c.topology.shuffle ? " (shuffled: its first 16 steps)"
                : schedule.phases() > 1 ? " over its phases" : "",
                bytes / 1073741824.0);
  }
  const DeviceList gpus = list_devices();
  if (gpus.devices.empty()) {
    std::printf("(%s)\n", gpus.why_none.c_str());
    return kExitOk;
  }
  const DeviceInfo& d = gpus.devices[0];
  check_plan_fits(plan, int64_t(d.free_memory), d.name);  // throws, naming the knob, if not
  std::printf("fits on %s (%.1f GiB free)\n", d.name.c_str(), double(d.free_memory) / 1073741824.0);
  return kExitOk;
}
}  // namespace

namespace {

// One subcommand each: add() declares its options on the app, run() does it.
struct RunCommand {
  std::string config_path, out_dir, backend_name, resume_dir, devices;
  std::vector<std::string> overrides;
  Processes processes;
  CLI::App* cmd = nullptr;
  CLI::Option* out_opt = nullptr;

  void add(CLI::App& app) {
    cmd = app.add_subcommand(
        "run",
        "Train as CONFIG.json says; writes config.json, metrics.jsonl, summary.json, "
        "checkpoint.bin (and worker_curvature.jsonl, spectral_density.jsonl when measured)");
    auto* config_opt = cmd->add_option("config", config_path, "The run's JSON config");
    cmd->add_option("--resume", resume_dir,
                    "Continue the run in RUN_DIR from its checkpoint (its config.json is the config)")
        ->excludes(config_opt);
    cmd->add_option("--set", overrides,
                    "Override a config key: --set optimizer.lr=0.05 (repeatable)");
    out_opt = cmd->add_option(
        "--out", out_dir, "Run folder (default runs/NAME-TIMESTAMP); must not hold a run already");
    cmd->add_option("--backend", backend_name, "auto | cpu | cuda (overrides the config's backend)")
        ->check(CLI::IsMember(find_key("backend")->choices));
    cmd->add_option("--devices", devices,
                    "GPUs of this process, one shard each: --devices 0,1,2,3 (sets the config's "
                    "devices; an ordinal may repeat)");
    cmd->add_option("--world", processes.world,
                    "Number of processes of a multi-process run (each with --rank and the same "
                    "--rendezvous and --out)")
        ->check(CLI::Range(1, 1 << 16));
    cmd->add_option("--rank", processes.rank, "This process's rank, 0 to world - 1 (rank 0 writes the run folder)")
        ->check(CLI::NonNegativeNumber);
    cmd->add_option("--rendezvous", processes.rendezvous,
                    "A file path on a filesystem every rank sees: rank 0 writes NCCL's id there, the "
                    "others wait for it (use a fresh path a run)");
    cmd->add_option("--rendezvous-timeout", processes.timeout_seconds,
                    "Seconds ranks > 0 wait for the rendezvous file (default 300)")
        ->check(CLI::PositiveNumber);
  }

  // --devices 0,1 as the config key; the processes checked against each other.
  void layout_options() {
    if (!devices.empty()) {
      for (char ch : devices)
        if (!(std::isdigit(static_cast<unsigned char>(ch)) || ch == ','))
          throw config_error("--devices: \"" + devices +
                             "\": expected GPU ordinals separated by commas, e.g. 0,1,2,3");
      overrides.push_back("devices=[" + devices + "]");
    }
    if (processes.rank >= processes.world)
      throw config_error("--rank " + std::to_string(processes.rank) + ": expected 0 to --world - 1 (" +
                         std::to_string(processes.world - 1) + ")");
    if (processes.world > 1 && processes.rendezvous.empty())
      throw config_error("--world " + std::to_string(processes.world) +
                         ": give --rendezvous FILE, a path every rank sees");
    if (processes.world > 1 && out_dir.empty() && resume_dir.empty())
      throw config_error("--world " + std::to_string(processes.world) +
                         ": give every rank the same --out RUN_DIR (or --resume RUN_DIR)");
  }

  int run() {
    if (!resume_dir.empty()) {
      const bool layout_only = std::all_of(overrides.begin(), overrides.end(), [](const std::string& o) {
        return o.rfind("shards=", 0) == 0 || o.rfind("devices=", 0) == 0 ||
               o.rfind("transport=", 0) == 0;
      });
      if (!layout_only || !out_dir.empty() || !backend_name.empty())
        throw config_error(
            "--resume: takes no --out, --backend or --set other than the layout (--set shards=N, "
            "devices=[...], transport=...); the run continues as its config.json says");
      layout_options();
      RunConfig config = load_config_file(resume_dir + "/config.json", overrides);
      config.processes = processes;
      RunOptions options;
      options.resume = true;
      return run_training(config, resume_dir, std::cout, options).exit_code;
    }
    if (config_path.empty()) throw config_error("run: give CONFIG.json, or --resume RUN_DIR");
    if (out_opt->count() > 0 && out_dir.empty())
      throw config_error("--out: empty; give a folder, or leave --out out for runs/NAME-TIME");
    if (!backend_name.empty()) overrides.push_back("backend=" + backend_name);
    layout_options();
    RunConfig config = load_config_file(config_path, overrides);
    config.processes = processes;
    return run_training(config, out_dir, std::cout).exit_code;
  }
};

struct TopologyCommand {
  TopologyConfig topo;
  int workers = 0;
  uint64_t seed = 1;
  bool as_json = false;
  CLI::App* cmd = nullptr;

  void add(CLI::App& app) {
    topo.name = "ring";
    topo.weights = "uniform";
    cmd = app.add_subcommand(
        "topology", "Print a mixing matrix's properties: degree, stochasticity, spectral gap");
    cmd->add_option("--name", topo.name, "Topology")
        ->required()
        ->check(CLI::IsMember({"ring", "grid", "torus", "exponential", "one_peer_exponential",
                               "hypercube", "star", "complete", "erdos_renyi"}));
    cmd->add_option("--workers", workers, "Number of workers m")
        ->required()
        ->check(CLI::Range(1, 1 << 20));
    cmd->add_option("--weights", topo.weights, "uniform | metropolis")
        ->check(CLI::IsMember(find_key("topology.weights")->choices));
    cmd->add_option("--probability", topo.probability,
                    "erdos_renyi edge probability (0: 2 ln(m)/m)")
        ->check(CLI::Range(0.0, 1.0));
    cmd->add_option("--seed", seed, "Seed (erdos_renyi)");
    cmd->add_flag("--json", as_json, "Print JSON");
  }

  int run() const {
    TopologySchedule schedule(topo, workers, seed);
    const json j = topology_report(schedule, analyze_topology(schedule), topo.weights, workers);
    if (as_json)
      std::cout << j.dump(2) << "\n";
    else
      print_topology(j, workers);
    return kExitOk;
  }
};

struct DevicesCommand {
  bool as_json = false;
  CLI::App* cmd = nullptr;

  void add(CLI::App& app) {
    cmd = app.add_subcommand("devices",
                             "List the GPUs the CUDA runtime sees, or say why none is visible");
    cmd->add_flag("--json", as_json, "Print JSON");
  }

  int run() const {
    const DeviceList list = list_devices();
    if (as_json) {
      json j = {{"devices", json::array()}};
      for (const auto& d : list.devices)
        j["devices"].push_back(
            {{"index", d.index},
             {"name", d.name},
             {"total_memory_bytes", d.total_memory},
             {"free_memory_bytes", d.free_memory},
             {"compute_capability", std::to_string(d.major) + "." + std::to_string(d.minor)},
             {"multiprocessors", d.multiprocessors}});
      if (list.devices.empty()) j["why_none"] = list.why_none;
      std::cout << j.dump(2) << "\n";
    } else if (list.devices.empty()) {
      std::cout << list.why_none << "\n";
    } else {
      for (const auto& d : list.devices)
        std::printf("GPU %d: %s, %.1f GiB (%.1f GiB free), compute capability %d.%d, %d SMs\n",
                    d.index, d.name.c_str(), d.total_memory / 1073741824.0,
                    d.free_memory / 1073741824.0, d.major, d.minor, d.multiprocessors);
    }
    return kExitOk;
  }
};

struct CurvatureCommand {
  std::string target;
  std::vector<std::string> what, overrides;
  bool as_json = false;
  CLI::App* cmd = nullptr;

  void add(CLI::App& app) {
    cmd = app.add_subcommand("curvature",
                             "Measure curvature of a saved run (its checkpoint): trace, top "
                             "eigenvalues, 1/2 tr(H Xi), sharpness, spectral density");
    cmd->add_option("target", target, "RUN_DIR or a checkpoint file")->required();
    cmd->add_option("--what", what,
                    "trace,topk,reg,avgsharp,samsharp,density (default: the run's curvature.what)")
        ->delimiter(',')
        ->check(CLI::IsMember(find_key("curvature.what")->choices));
    cmd->add_option("--set", overrides,
                    "Override a curvature key: --set curvature.probes=256 (repeatable)");
    cmd->add_flag("--json", as_json, "Print JSON");
  }

  int run() const { return curvature_command(target, what, overrides, as_json); }
};

struct SweepCommand {
  std::string path, out;
  int jobs = 1;
  CLI::App* cmd = nullptr;

  void add(CLI::App& app) {
    cmd = app.add_subcommand("sweep", "Run every point of SWEEP.json (resumable) and write sweep.csv");
    cmd->add_option("sweep", path, "The sweep file")->required();
    cmd->add_option("--out", out,
                    "Sweep folder (default runs/NAME); run again with the same folder to resume");
    cmd->add_option("--jobs", jobs,
                    "Points run at once (default 1): on the CPU each gets its share of the cores; "
                    "on a GPU each gets its own stream, and the N largest points' memory plans "
                    "must fit on the card together")
        ->check(CLI::Range(1, 1024));
  }

  int run() const {
    const Sweep sweep = load_sweep(path);
    return run_sweep(sweep, out.empty() ? "runs/" + sweep.name : out, std::cout, jobs);
  }
};

struct PlanCommand {
  std::string path, fit;
  std::vector<std::string> overrides;
  CLI::App* cmd = nullptr;
  CLI::Option* fit_opt = nullptr;

  void add(CLI::App& app) {
    cmd = app.add_subcommand(
        "plan",
        "Print the CUDA backend's device-memory plan for CONFIG.json (no GPU needed); with a "
        "GPU visible, say whether it fits");
    cmd->add_option("config", path, "The run config")->required();
    cmd->add_option("--set", overrides, "Override a key: --set workers=1024 (repeatable)");
    fit_opt = cmd->add_option(
        "--fit", fit,
        "The most workers that fit: in SIZE (80GiB, 141GiB), or with no SIZE in the visible "
        "GPU's free memory");
    fit_opt->expected(0, 1);
  }

  int run() const {
    return plan_command(load_config_file(path, overrides), fit_opt->count() > 0 ? &fit : nullptr);
  }
};

}  // namespace

int cli_main(int argc, char** argv) {
  CLI::App app{
      "gossamer: a simulator of decentralized SGD (D-SGD) with many workers on one machine"};
  app.require_subcommand(1);
  app.fallthrough();  // --verbose after the subcommand too
  bool verbose = false;
  app.add_flag("--verbose", verbose, "More detail on errors");
  RunCommand run;
  TopologyCommand topology;
  DevicesCommand devices;
  CurvatureCommand curvature;
  SweepCommand sweep;
  PlanCommand plan;
  run.add(app);
  topology.add(app);
  devices.add(app);
  curvature.add(app);
  sweep.add(app);
  plan.add(app);
  auto* reference =
      app.add_subcommand("config-reference", "Print the reference of every config key (Markdown)");

  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    app.exit(e);
    return kExitUsage;
  }

  try {
    if (*run.cmd) return run.run();
    if (*sweep.cmd) return sweep.run();
    if (*curvature.cmd) return curvature.run();
    if (*topology.cmd) return topology.run();
    if (*devices.cmd) return devices.run();
    if (*plan.cmd) return plan.run();
    if (*reference) {
      std::cout << config_reference_markdown();
      return kExitOk;
    }
  } catch (const Error& e) {
    std::cerr << "gossamer: error: " << e.what() << "\n";
    return e.kind() == ErrorKind::Config ? kExitUsage : kExitRuntime;
  } catch (const std::bad_alloc&) {
    std::cerr << "gossamer: error: out of host memory (std::bad_alloc) in `gossamer "
              << app.get_subcommands().front()->get_name()
              << "`; lower the workers, the batch or the model size, or run where more memory is "
                 "free\n";
    return kExitRuntime;
  } catch (const std::exception& e) {
    std::cerr << "gossamer: error: " << e.what() << "\n";
    if (verbose) std::cerr << "  (unexpected exception type: " << typeid(e).name() << ")\n";
    return kExitRuntime;
  }
  return kExitUsage;
}

}  // namespace gossamer
