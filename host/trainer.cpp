#include "gossamer/trainer.hpp"

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <csignal>
#include <ctime>
#include <filesystem>
#include <map>
#include <mutex>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <sstream>

#include "equivalence.hpp"
#include "gossamer/backend.hpp"
#include "gossamer/checkpoint.hpp"
#include "gossamer/curvature.hpp"
#include "gossamer/error.hpp"
#include "gossamer/schedule.hpp"
#include "gossamer/simulation.hpp"
#include "sinks.hpp"

namespace gossamer {

using nlohmann::json;
namespace fs = std::filesystem;

namespace {

std::atomic<bool> g_interrupted{false};
extern "C" void on_stop_signal(int) {
  g_interrupted = true;
}

// Installs the SIGINT and SIGTERM handlers for the length of a run: Ctrl-C, or the SIGTERM a
// batch scheduler sends before it kills a job, ends the run cleanly after the current step
// (checkpoint and summary.json written, metrics kept) instead of killing it mid-write.
// Runs of a sweep's concurrent jobs share one scope: the first installs the handlers, the last
// restores them, and a signal stops every run.
struct StopSignalScope {
  static std::mutex& mutex() {
    static std::mutex m;
    return m;
  }
  static inline int s_active = 0;
  static inline struct sigaction s_old_int {}, s_old_term {};
  StopSignalScope() {
    std::lock_guard<std::mutex> lock(mutex());
    if (s_active++ > 0) return;
    g_interrupted = false;
    struct sigaction sa {};
    sa.sa_handler = on_stop_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, &s_old_int);
    sigaction(SIGTERM, &sa, &s_old_term);
  }
  ~StopSignalScope() {
    std::lock_guard<std::mutex> lock(mutex());
    if (--s_active > 0) return;
    sigaction(SIGINT, &s_old_int, nullptr);
    sigaction(SIGTERM, &s_old_term, nullptr);
  }
};

// runs/NAME-TIMESTAMP, claimed by creating it (mkdir is atomic): a run started in the same
// second as another of the same name takes NAME-TIMESTAMP-2, -3, ...
std::string claim_default_out_dir(const std::string& name) {
  char stamp[32];
  const std::time_t now = std::time(nullptr);
  std::strftime(stamp, sizeof stamp, "%Y%m%d-%H%M%S", std::localtime(&now));
  const std::string base = "runs/" + name + "-" + stamp;
  std::error_code ec;
  fs::create_directories("runs", ec);
  for (int i = 1; i < 1000; ++i) {
    const std::string dir = i == 1 ? base : base + "-" + std::to_string(i);
    if (fs::create_directory(dir, ec)) return dir;
    if (ec) throw runtime_error(dir + ": cannot create the run folder: " + ec.message());
  }
  throw runtime_error(base + ": 999 run folders of this name and second exist; give --out");
}

void refuse_existing_run(const std::string& dir) {
  if (fs::exists(dir / fs::path("metrics.jsonl")) || fs::exists(dir / fs::path("summary.json")))
    throw config_error("--out " + dir +
                       ": already holds a run (metrics.jsonl or summary.json); choose another "
                       "folder or remove it");
}

// Created only once the simulation is built, so that a run refused at setup (no GPU, a plan
// that does not fit, bad data) leaves no empty run folder behind.
void create_out_dir(const std::string& dir) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) throw runtime_error(dir + ": cannot create the run folder: " + ec.message());
}

// One evaluation: a line of metrics.jsonl.
json evaluate(Backend& backend, const RunConfig& c, int64_t step, double epoch, double lr,
              double grad_norm, double wall) {
  json m;
  m["step"] = step;
  m["epoch"] = epoch;
  m["lr"] = lr;
  const TrainLoss train = backend.take_train_loss();
  m["train_loss"] = train.steps ? json(train.mean) : json(nullptr);
  m["grad_norm"] = std::isnan(grad_norm) ? json(nullptr) : json(grad_norm);
  const EvalStats mean = backend.evaluate_mean(Split::Test);
  m["test_loss"] = mean.loss;
  m["test_acc"] = mean.accuracy;
  m["consensus_distance"] = backend.consensus_distance();
  if (c.train.eval_workers) {
    const auto workers = backend.evaluate_workers(Split::Test);
    double lsum = 0, asum = 0, lmin = INFINITY, lmax = -INFINITY, amin = INFINITY, amax = -INFINITY;
    for (const auto& w : workers) {
      lsum += w.loss, asum += w.accuracy;
      lmin = std::min(lmin, w.loss), lmax = std::max(lmax, w.loss);
      amin = std::min(amin, w.accuracy), amax = std::max(amax, w.accuracy);
    }
    m["worker_test_loss"] = {{"mean", lsum / workers.size()}, {"min", lmin}, {"max", lmax}};
    m["worker_test_acc"] = {{"mean", asum / workers.size()}, {"min", amin}, {"max", amax}};
  }
  if (c.metrics.ensemble) {
    const auto e = backend.evaluate_ensemble(Split::Test);
    const auto stats = [](const PredictiveStats& p) {
      return json{{"accuracy", p.accuracy},
                  {"nll", p.nll},
                  {"ece", p.ece},
                  {"bin_accuracy", p.bin_accuracy},
                  {"bin_confidence", p.bin_confidence},
                  {"bin_count", p.bin_count}};
    };
    m["ensemble"] = {{"workers", stats(e.ensemble)}, {"mean_model", stats(e.mean_model)}};
  }
  if (c.metrics.smoothing) {
    const auto [gap, norm] = gradient_smoothing(backend, backend.weights(), c.workers);
    m["gradient_smoothing"] = {{"norm", gap}, {"ratio", gap / norm}, {"grad_norm_at_mean", norm}};
  }
  m["wall_time_s"] = wall;
  return m;
}

// Non-finite JSON numbers are written as null by nlohmann; name them before they vanish.
std::string nonfinite_quantity(const json& m) {
  for (const char* key : {"train_loss", "test_loss", "consensus_distance", "grad_norm"})
    if (m.contains(key) && m[key].is_number_float() && !std::isfinite(m[key].get<double>()))
      return key;
  return "";
}

}  // namespace

std::string checkpoint_path(const std::string& p) {
  return fs::is_directory(p) ? (fs::path(p) / "checkpoint.bin").string() : p;
}

namespace {

// The files of a run that hold a line per curvature measurement beside metrics.jsonl.
constexpr const char* kSideFiles[] = {"worker_curvature.jsonl", "spectral_density.jsonl"};

// Keeps the lines of metrics.jsonl up to `step` (those after a checkpoint are written
// again, identically, by the resumed run); rewritten whole, then renamed.
void truncate_metrics(const std::string& path, int64_t step) {
  std::ifstream in(path);
  std::string kept, line;
  while (std::getline(in, line)) {
    const json j = json::parse(line, nullptr, false);
    if (j.is_discarded() || !j.contains("step"))
      throw runtime_error(path + ": not a metrics.jsonl line: " + line);
    if (j["step"].get<int64_t>() <= step) kept += line + "\n";
  }
  write_file_atomic(path, kept);
}

}  // namespace

namespace {

// Where a run is, for the message and summary.json of a run that fails part-way.
struct RunRecord {
  // What the run is doing, formatted only if it fails: "training step 41" is ("training step", 41).
  const char* activity = "setting up";
  int64_t at_step = -1;
  void set(const char* what, int64_t step) { activity = what, at_step = step; }
  std::string phase() const {
    return at_step < 0 ? activity : std::string(activity) + " " + std::to_string(at_step);
  }
  int64_t steps_done = 0;
  bool folder_ready = false;  // config.json written: the folder is this run's
};

RunResult train_in_folder(const RunConfig& c, RunResult result, std::ostream& log,
                          const RunOptions& opt, RunRecord& record);

// A failure after the folder became this run's leaves summary.json with status "failed" and
// the error (where the folder is still writable): a sweep or a script sees what happened.
void write_failed_summary(const RunConfig& c, const std::string& dir, const RunRecord& record,
                          const std::string& error) {
  try {
    write_json_atomic(dir + "/summary.json", {{"status", "failed"},
                                              {"error", error},
                                              {"phase", record.phase()},
                                              {"steps_done", record.steps_done},
                                              {"config_hash", config_hash(c.resolved)}});
  } catch (const std::exception&) {
    // The folder is not writable (disk full): the error itself reaches the user anyway.
  }
}

}  // namespace

RunResult run_training(const RunConfig& c, const std::string& out_arg, std::ostream& log,
                       const RunOptions& opt) {
  RunResult result;
  const bool claimed = out_arg.empty();
  result.out_dir = claimed ? claim_default_out_dir(c.name) : out_arg;
  RunRecord record;
  try {
    return train_in_folder(c, result, log, opt, record);
  } catch (const std::exception& e) {
    std::string error = e.what();
    if (dynamic_cast<const std::bad_alloc*>(&e))
      error = "out of host memory while " + record.phase() +
              " (std::bad_alloc); lower workers, optimizer.batch_size or the model size, or "
              "run where more memory is free";
    if (record.folder_ready) {
      write_failed_summary(c, result.out_dir, record, error);
    } else if (claimed) {
      std::error_code ec;
      fs::remove(result.out_dir, ec);  // the empty folder this run claimed
    }
    if (error == e.what()) throw;
    throw runtime_error(error);
  }
}

namespace {

// One run in its folder, in named parts: the folder checks (and a completed run left alone), the
// simulation, the start or the resume, the banner, the step loop with its evaluations, curvature
// and checkpoints, and the summary.
class Training {
 public:
  Training(const RunConfig& c, RunResult result, std::ostream& log, const RunOptions& opt,
           RunRecord& record)
      : c(c), result(std::move(result)), log(log), opt(opt), record(record),
        t0(std::chrono::steady_clock::now()) {}

  RunResult run() {
    if (opt.resume && completed_already()) return result;
    check_folder();
    sim = make_simulation(c);
    steps = resolve_steps(c, sim->data.train.n);
    total_batch = int64_t(c.workers) * c.optimizer.batch_size;
    epochs_per_step = double(total_batch) / double(sim->data.train.n);
    if (!opt.resume) create_out_dir(result.out_dir);
    record.folder_ready = opt.resume;
    if (c.algorithm.track_adsam) equivalence = std::make_unique<EquivalenceTracker>(c);
    start_or_resume();
    metrics = std::make_unique<MetricsWriter>(result.out_dir + "/metrics.jsonl");
    banner();
    loop();
    return finish();
  }

 private:
  Backend& backend() { return *sim->backend; }
  double seconds() const {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  }
  double loop_seconds() const { return seconds() - loop_start; }
  bool curvature_due(int64_t step) const {
    return c.curvature.every > 0 && (step % c.curvature.every == 0 || step == steps);
  }

  // A finished run is left as it is: resuming it would rewrite its checkpoint and summary.
  bool completed_already() {
    const fs::path summary = fs::path(result.out_dir) / "summary.json";
    if (!fs::exists(summary)) return false;
    std::ifstream in(summary);
    const json done_summary = json::parse(in, nullptr, false);
    if (done_summary.is_discarded() || done_summary.value("status", "") != "completed") return false;
    log << "gossamer: " << result.out_dir << " is a completed run ("
        << done_summary.value("steps_done", int64_t(0))
        << " steps); nothing to resume, nothing written\n";
    result.status = "completed";
    result.exit_code = kExitOk;
    result.summary = done_summary;
    return true;
  }

  void check_folder() {
    if (!opt.resume) return refuse_existing_run(result.out_dir);
    resume_from = read_checkpoint(checkpoint_path(result.out_dir));
    if (config_hash(resume_from.config) != config_hash(c.resolved))
      throw config_error(
          result.out_dir +
          "/config.json: does not match the config the checkpoint was written with (hash " +
          config_hash(resume_from.config) + " vs " + config_hash(c.resolved) +
          "); restore it or start a new run");
    if (c.algorithm.track_adsam)
      throw config_error(result.out_dir +
                         ": algorithm.track_adsam runs cannot be resumed (the companion models "
                         "are not checkpointed)");
  }

  // A resume loads the checkpoint and cuts the line files back to its step (the lines after it
  // are written again, identically); a new run writes its resolved config.
  void start_or_resume() {
    if (!opt.resume) {
      write_json_atomic(result.out_dir + "/config.json", c.resolved);
      record.folder_ready = true;
      return;
    }
    load_checkpoint(checkpoint_path(result.out_dir), resume_from, backend());
    done = resume_from.step;
    last = resume_from.trainer.at("last");
    best_acc = resume_from.trainer.at("best_test_acc");
    eval_seconds = resume_from.trainer.at("eval_time_s");
    checkpoint_seconds = resume_from.trainer.value("checkpoint_time_s", 0.0);
    prior_wall = resume_from.trainer.at("wall_time_s");
    truncate_metrics(result.out_dir + "/metrics.jsonl", done);
    for (const char* side : kSideFiles)
      if (fs::exists(result.out_dir + "/" + side)) truncate_metrics(result.out_dir + "/" + side, done);
  }

  void banner() {
    std::ostringstream phases;
    for (const auto& [name, secs] : sim->setup_seconds)
      phases << (phases.tellp() > 0 ? ", " : "") << name << " " << std::fixed
             << std::setprecision(3) << secs << " s";
    log << "gossamer: " << c.name << " -> " << result.out_dir
        << (opt.resume ? " (resumed at step " + std::to_string(done) + ")" : "") << "\n"
        << "  data     " << sim->data.train.source << ": " << sim->data.train.n << " train / "
        << sim->data.test.n << " test, " << sim->data.train.features << " features, "
        << sim->data.train.classes << " classes\n"
        << "  model    " << sim->model.describe() << "\n"
        << "  workers  " << c.workers << " x batch " << c.optimizer.batch_size
        << " = total batch " << total_batch << ", " << c.partition.kind << " partition\n"
        << "  algo     " << algorithm_name(c.algorithm.kind)
        << (c.algorithm.kind == Algorithm::Dsgd ? " (" + c.algorithm.form + ")" : "") << " on "
        << c.topology.name << ", spectral gap " << sim->mixing.gap.gap_sigma << " ("
        << sim->mixing.gap.method << ")\n"
        << "  backend  " << sim->backend_note << "\n"
        << "  setup    " << phases.str() << "\n"
        << "  steps    " << steps << " (" << steps * epochs_per_step << " epochs), peak lr "
        << scaled_lr(c.optimizer, total_batch) << "\n";
    if (c.curvature.every > 0)
      log << "  curvature every " << c.curvature.every << " steps on "
          << sim->curvature_subset.size() << " training samples\n";
  }

  // The curvature measurement's own files, opened when first written.
  MetricsWriter& side_file(const std::string& name) {
    auto& w = side_files[name];
    if (!w) w = std::make_unique<MetricsWriter>(result.out_dir + "/" + name);
    return *w;
  }

  // One metrics line (and the curvature files' lines); returns the first non-finite quantity
  // of the line, "" if none.
  std::string record_metrics(int64_t step, double lr, double grad_norm) {
    record.set("evaluating at step", step);
    const double e0 = seconds();
    last = evaluate(backend(), c, step, double(step) * epochs_per_step, lr, grad_norm,
                    prior_wall + e0);
    // The last line: w-bar on the whole training set too, for the generalization gap.
    if (step == steps) {
      const EvalStats train = backend().evaluate_mean(Split::Train);
      last["train_loss_wbar"] = train.loss;
      last["train_acc_wbar"] = train.accuracy;
      last["generalization_gap"] = last["test_loss"].get<double>() - train.loss;
    }
    if (equivalence) last["equivalence"] = equivalence->report(backend());
    if (curvature_due(step)) {
      CurvatureFiles files;
      last["curvature"] = measure_curvature(backend(), c.curvature, c.seed, step, &files);
      if (!files.workers.is_null()) side_file("worker_curvature.jsonl").write(files.workers);
      if (!files.density.is_null()) side_file("spectral_density.jsonl").write(files.density);
    }
    eval_seconds += seconds() - e0;
    session_eval_seconds += seconds() - e0;
    best_acc = std::max(best_acc, last["test_acc"].get<double>());
    const std::string bad = nonfinite_quantity(last);
    metrics->write(last);
    progress->eval(last, loop_seconds());
    return bad;
  }

  double save_checkpoint() {
    record.set("writing the checkpoint at step", done);
    const double c0 = seconds();
    Checkpoint ck;
    ck.step = done;
    ck.config = c.resolved;
    ck.trainer = {{"last", last},
                  {"best_test_acc", best_acc},
                  {"eval_time_s", eval_seconds},
                  {"checkpoint_time_s", checkpoint_seconds},
                  {"wall_time_s", prior_wall + seconds()}};
    ck.loss = backend().loss_window();
    write_checkpoint(result.out_dir + "/checkpoint.bin", ck, backend());
    if (opt.after_checkpoint) opt.after_checkpoint();
    const double took = seconds() - c0;
    checkpoint_seconds += took;
    return took;
  }

  // The steps, with their checks, evaluations and checkpoints; sets status and divergence.
  void loop() {
    progress = std::make_unique<Progress>(log, &log == &std::cout && isatty(STDOUT_FILENO), steps);
    StopSignalScope stop_signals;
    // The progress display's ETA counts from the first step, not from the data loading.
    loop_start = seconds();
    if (!opt.resume) record_metrics(0, learning_rate(c.optimizer, 0, steps, total_batch), NAN);
    for (int64_t t = done; t < steps; ++t) {
      const double lr = learning_rate(c.optimizer, t, steps, total_batch);
      const bool eval_now =
          (t + 1) % c.train.eval_every == 0 || t + 1 == steps || curvature_due(t + 1);
      double grad_norm = NAN;
      if (equivalence) equivalence->step(backend(), t, lr);
      record.set("training step", t);
      train_step(backend(), c, *sim->topology, t, lr, eval_now ? &grad_norm : nullptr);
      done = record.steps_done = t + 1;
      if (done % c.train.check_every == 0 || eval_now) {
        // The loss of every step, and every value the update wrote into W and the momentum.
        if (divergence = backend().first_nonfinite().describe(); !divergence.empty()) break;
      }
      if (eval_now && !evaluate_step(lr, grad_norm)) break;
      if (opt.after_step) opt.after_step(backend(), done);
      if (c.train.checkpoint_every > 0 && done % c.train.checkpoint_every == 0 && done < steps)
        loop_checkpoint_seconds += save_checkpoint();
      progress->step(done, loop_seconds());
      if (g_interrupted || done == opt.stop_after) {
        status = "interrupted";
        break;
      }
    }
    progress->finish();
    loop_end = seconds();
    if (!divergence.empty()) status = "diverged";
    // A diverged state is not worth continuing from; the last good checkpoint stays.
    if (status != "diverged" && c.train.checkpoint_every >= 0) save_checkpoint();
  }

  // The evaluation after a step; false (with divergence set) where something is NaN or Inf.
  bool evaluate_step(double lr, double grad_norm) {
    if (!backend().weights_finite()) {
      divergence = "weights contain NaN or Inf at step " + std::to_string(done);
      return false;
    }
    if (const std::string bad = record_metrics(done, lr, grad_norm); !bad.empty()) {
      divergence = bad + " is NaN or Inf at step " + std::to_string(done);
      return false;
    }
    return true;
  }

  json summary(double wall) const {
    json s;
    s["status"] = status;
    s["steps_done"] = done;
    s["steps_planned"] = steps;
    s["final"] = last;
    s["best_test_acc"] = best_acc;
    s["wall_time_s"] = prior_wall + wall;
    s["eval_time_s"] = eval_seconds;
    s["checkpoint_time_s"] = checkpoint_seconds;
    s["setup_phases_s"] = json::object();
    for (const auto& [name, secs] : sim->setup_seconds) s["setup_phases_s"][name] = secs;
    // data loading, partition, topology analysis, backend set-up (this session)
    s["setup_time_s"] = loop_start;
    // The step loop of this session only: its evaluations, curvature and checkpoints excluded,
    // and nothing after the last step (the final checkpoint, the summary).
    s["steps_per_second"] =
        double(done - (opt.resume ? resume_from.step : 0)) /
        std::max(loop_end - loop_start - session_eval_seconds - loop_checkpoint_seconds, 1e-9);
    s["config_hash"] = config_hash(c.resolved);
    s["backend"] = sim->backend->name();
    s["backend_choice"] = sim->backend_note;  // why this backend, and what it does with `math`
    s["model"] = {{"layers", sim->model.describe()}, {"parameters", sim->model.dim}};
    s["total_batch"] = total_batch;
    s["peak_lr"] = scaled_lr(c.optimizer, total_batch);
    s["topology"] = {{"name", c.topology.name},
                     {"time_varying", sim->topology->time_varying()},
                     {"spectral_gap_sigma", sim->mixing.gap.gap_sigma},
                     {"spectral_gap_lambda", sim->mixing.gap.gap_lambda},
                     {"period_gap_sigma", sim->mixing.period_gap_sigma},
                     {"spectrum_method", sim->mixing.gap.method}};
    if (!divergence.empty()) s["divergence"] = divergence;
    return s;
  }

  RunResult finish() {
    const double wall = seconds();
    const json s = summary(wall);
    write_json_atomic(result.out_dir + "/summary.json", s);
    if (status == "diverged")
      log << "gossamer: diverged: " << divergence << "; summary in " << result.out_dir << "\n";
    else if (status == "interrupted" && c.train.checkpoint_every < 0)
      log << "gossamer: interrupted at step " << done << "; metrics and summary kept in "
          << result.out_dir << " (no checkpoint: train.checkpoint_every is -1)\n";
    else if (status == "interrupted")
      log << "gossamer: interrupted at step " << done
          << "; checkpoint, metrics and summary kept in " << result.out_dir
          << " (continue with: gossamer run --resume " << result.out_dir << ")\n";
    else
      log << "gossamer: done: " << done << " steps in " << prior_wall + wall << " s ("
          << s["steps_per_second"].get<double>()
          << " steps/s excluding evaluation), test accuracy of w-bar "
          << last["test_acc"].get<double>() << "\n";
    result.status = status;
    result.exit_code = status == "diverged"      ? kExitDiverged
                       : status == "interrupted" ? kExitInterrupted
                                                 : kExitOk;
    result.summary = s;
    return result;
  }

  const RunConfig& c;
  RunResult result;
  std::ostream& log;
  const RunOptions& opt;
  RunRecord& record;
  const std::chrono::steady_clock::time_point t0;

  Checkpoint resume_from;
  std::unique_ptr<Simulation> sim;
  std::unique_ptr<EquivalenceTracker> equivalence;
  std::unique_ptr<MetricsWriter> metrics;
  std::map<std::string, std::unique_ptr<MetricsWriter>> side_files;
  std::unique_ptr<Progress> progress;
  int64_t steps = 0, total_batch = 0, done = 0;
  double epochs_per_step = 0;
  json last;
  double eval_seconds = 0, session_eval_seconds = 0, best_acc = -1, prior_wall = 0;
  // Checkpoint writes: all sessions (reported), and this session's inside the step loop
  // (taken out of steps_per_second, as the evaluations are).
  double checkpoint_seconds = 0, loop_checkpoint_seconds = 0;
  double loop_start = 0, loop_end = 0;
  std::string status = "completed", divergence;
};

RunResult train_in_folder(const RunConfig& c, RunResult result, std::ostream& log,
                          const RunOptions& opt, RunRecord& record) {
  return Training(c, std::move(result), log, opt, record).run();
}

}  // namespace

}  // namespace gossamer
