#include "gossamer/trainer.hpp"

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <csignal>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <limits>
#include <map>
#include <mutex>
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
    const auto [gap, norm] = gradient_smoothing(backend);
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

// A run folder's summary.json as an object, or an empty object where it is absent or unreadable
// (status "" then).
json run_summary(const fs::path& dir) {
  std::ifstream in(dir / "summary.json");
  const json s = in ? json::parse(in, nullptr, false) : json();
  return s.is_object() ? s : json::object();
}

}  // namespace

std::string checkpoint_path(const std::string& p) {
  if (!fs::is_directory(p)) return p;
  const fs::path checkpoint = fs::path(p) / "checkpoint.bin";
  if (!fs::exists(checkpoint))
    if (const json s = run_summary(p); s.value("status", "") == "diverged")
      throw runtime_error(p + ": a diverged run (" +
                          s.value("divergence", std::string("NaN or Inf")) +
                          ") keeps no checkpoint");
  return checkpoint.string();
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

namespace {

RunResult run_in_folder(const RunConfig& c, const std::string& out_arg, std::ostream& log,
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

// A rank > 0 of a multi-process run takes part in every collective of the run, so it runs the
// same trainer, but in a private scratch folder that it removes at the end: rank 0 alone writes
// the run folder. A resume starts from a copy of the run folder (its checkpoint and metrics).
RunResult run_follower(const RunConfig& c, const std::string& out_arg, std::ostream& log,
                       const RunOptions& opt) {
  const fs::path scratch = fs::temp_directory_path() /
                           ("gossamer-rank-" + std::to_string(c.processes.rank) + "-" +
                            std::to_string(::getpid()));
  std::error_code ec;
  fs::remove_all(scratch, ec);
  if (opt.resume) {
    fs::copy(out_arg, scratch, fs::copy_options::recursive, ec);
    if (ec)
      throw runtime_error("rank " + std::to_string(c.processes.rank) + ": cannot copy the run folder " +
                          out_arg + " to " + scratch.string() + " to resume: " + ec.message());
  }
  std::ostream quiet(nullptr);  // rank 0 reports progress
  RunResult r;
  try {
    r = run_in_folder(c, scratch.string(), quiet, opt);
  } catch (...) {
    fs::remove_all(scratch, ec);
    throw;
  }
  fs::remove_all(scratch, ec);
  log << "gossamer: rank " << c.processes.rank << " of " << c.processes.world << ": " << r.status
      << " (rank 0 writes " << out_arg << ")\n";
  r.out_dir = out_arg;
  return r;
}

}  // namespace

RunResult run_training(const RunConfig& c, const std::string& out_arg, std::ostream& log,
                       const RunOptions& opt) {
  if (c.processes.world > 1 && out_arg.empty())
    throw config_error("--world " + std::to_string(c.processes.world) +
                       ": every rank needs the same run folder (--out RUN_DIR)");
  if (c.processes.rank > 0) return run_follower(c, out_arg, log, opt);
  return run_in_folder(c, out_arg, log, opt);
}

namespace {

// One run in its folder, in named parts: the folder checks (and a completed run left alone), the
// simulation, the start or the resume, the banner, the step loop with its evaluations, curvature
// and checkpoints, and the summary.
class Training {
 public:
  Training(const RunConfig& c, RunResult result, std::ostream& log, const RunOptions& opt,
           RunRecord& record)
      : m_c(c), m_result(std::move(result)), m_log(log), m_opt(opt), m_record(record),
        m_t0(std::chrono::steady_clock::now()) {}

  RunResult run() {
    if (m_opt.resume && finished_already()) return m_result;
    check_folder();
    m_sim = make_simulation(m_c);
    m_steps = resolve_steps(m_c, m_sim->data.train.n);
    m_total_batch = int64_t(m_c.workers) * m_c.optimizer.batch_size;
    m_epochs_per_step = double(m_total_batch) / double(m_sim->data.train.n);
    if (!m_opt.resume) create_out_dir(m_result.out_dir);
    m_record.folder_ready = m_opt.resume;
    if (m_c.algorithm.track_adsam) m_equivalence = std::make_unique<EquivalenceTracker>(m_c);
    start_or_resume();
    m_metrics = std::make_unique<MetricsWriter>(m_result.out_dir + "/metrics.jsonl");
    banner();
    loop();
    return finish();
  }

 private:
  Backend& backend() { return *m_sim->backend; }
  double seconds() const {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - m_t0).count();
  }
  double loop_seconds() const { return seconds() - m_loop_start; }
  bool curvature_due(int64_t step) const {
    return m_c.curvature.every > 0 && (step % m_c.curvature.every == 0 || step == m_steps);
  }

  // A finished run, completed or diverged (which keeps no checkpoint), is left as it is:
  // resuming it would rewrite its checkpoint and summary, or find none.
  bool finished_already() {
    const json done_summary = run_summary(m_result.out_dir);
    const std::string status = done_summary.value("status", "");
    if (status == "completed") {
      m_log << "gossamer: " << m_result.out_dir << " is a completed run ("
            << done_summary.value("steps_done", int64_t(0))
            << " steps); nothing to resume, nothing written\n";
      m_result.exit_code = kExitOk;
    } else if (status == "diverged") {
      m_log << "gossamer: " << m_result.out_dir << " is a diverged run ("
            << done_summary.value("divergence", std::string("NaN or Inf"))
            << "); nothing to resume, nothing written: start it again with a lower optimizer.lr\n";
      m_result.exit_code = kExitDiverged;
    } else {
      return false;
    }
    m_result.status = status;
    m_result.summary = done_summary;
    return true;
  }

  void check_folder() {
    if (!m_opt.resume) return refuse_existing_run(m_result.out_dir);
    m_resume_from = read_checkpoint(checkpoint_path(m_result.out_dir));
    if (config_hash(m_resume_from.config) != config_hash(m_c.resolved))
      throw config_error(
          m_result.out_dir +
          "/config.json: does not match the config the checkpoint was written with (hash " +
          config_hash(m_resume_from.config) + " vs " + config_hash(m_c.resolved) +
          "); restore it or start a new run");
    if (m_c.algorithm.track_adsam)
      throw config_error(m_result.out_dir +
                         ": algorithm.track_adsam runs cannot be resumed (the companion models "
                         "are not checkpointed)");
  }

  // A resume loads the checkpoint and cuts the line files back to its step (the lines after it
  // are written again, identically); a new run writes its resolved config.
  void start_or_resume() {
    if (!m_opt.resume) {
      write_json_atomic(m_result.out_dir + "/config.json", m_c.resolved);
      m_record.folder_ready = true;
      return;
    }
    load_checkpoint(checkpoint_path(m_result.out_dir), m_resume_from, backend());
    m_done = m_resume_from.step;
    m_last = m_resume_from.trainer.at("last");
    m_best_acc = m_resume_from.trainer.at("best_test_acc");
    m_eval_seconds = m_resume_from.trainer.at("eval_time_s");
    m_checkpoint_seconds = m_resume_from.trainer.value("checkpoint_time_s", 0.0);
    m_prior_wall = m_resume_from.trainer.at("wall_time_s");
    truncate_metrics(m_result.out_dir + "/metrics.jsonl", m_done);
    for (const char* side : kSideFiles)
      if (fs::exists(m_result.out_dir + "/" + side)) truncate_metrics(m_result.out_dir + "/" + side, m_done);
  }

  // The banner's words after the algorithm's name: D-SGD's form, topology and spectral gap;
  // for the others, that no topology is used (the config's topology.name is ignored).
  std::string algorithm_note() const {
    std::ostringstream note;
    if (m_c.algorithm.gossips())
      note << " (" << m_c.algorithm.form << ") on " << m_c.topology.name << ", spectral gap "
           << m_sim->mixing.gap.gap_sigma << " (" << m_sim->mixing.gap.method << ")";
    else if (m_c.algorithm.kind == Algorithm::LocalSgd)
      note << " (" << m_c.algorithm.local_steps
           << " local steps, then exact averaging; no topology)";
    else
      note << " (exact averaging of the gradients; no topology)";
    return note.str();
  }

  void banner() {
    std::ostringstream phases;
    for (const auto& [name, secs] : m_sim->setup_seconds)
      phases << (phases.tellp() > 0 ? ", " : "") << name << " " << std::fixed
             << std::setprecision(3) << secs << " s";
    m_log << "gossamer: " << (m_opt.label.empty() ? m_c.name : m_opt.label) << " -> "
          << m_result.out_dir
          << (m_opt.resume ? " (resumed at step " + std::to_string(m_done) + ")" : "") << "\n"
          << "  data     " << m_sim->data.train.source << ": " << m_sim->data.train.n << " train / "
          << m_sim->data.test.n << " test, " << m_sim->data.train.features << " features, "
          << m_sim->data.train.classes << " classes\n"
          << "  model    " << m_sim->model.describe() << "\n"
          << "  workers  " << m_c.workers << " x batch " << m_c.optimizer.batch_size
          << " = total batch " << m_total_batch << ", " << m_c.partition.kind << " partition\n"
          << "  algo     " << algorithm_name(m_c.algorithm.kind) << algorithm_note() << "\n"
          << "  backend  " << m_sim->backend_note << "\n"
          << "  setup    " << phases.str() << "\n"
          << "  steps    " << m_steps << " (" << m_steps * m_epochs_per_step << " epochs), peak lr "
          << scaled_lr(m_c.optimizer, m_total_batch) << "\n";
    if (m_c.curvature.every > 0)
      m_log << "  curvature every " << m_c.curvature.every << " steps on "
          << m_sim->curvature_subset.size() << " training samples\n";
    // Allowed (a batch runs on through the next epochs of the worker's stream), but rarely meant.
    int64_t smallest = std::numeric_limits<int64_t>::max();
    for (int k = 0; k < m_c.workers; ++k)
      smallest = std::min(smallest, m_sim->partition.shard_size(k));
    if (m_c.optimizer.batch_size > smallest)
      m_log << "  note     the per-worker batch " << m_c.optimizer.batch_size
            << " is larger than the smallest worker's shard (" << smallest
            << " samples): its samples repeat within a batch\n";
  }

  // The curvature measurement's own files, opened when first written.
  MetricsWriter& side_file(const std::string& name) {
    auto& w = m_side_files[name];
    if (!w) w = std::make_unique<MetricsWriter>(m_result.out_dir + "/" + name);
    return *w;
  }

  // One metrics line (and the curvature files' lines); returns the first non-finite quantity
  // of the line, "" if none.
  std::string record_metrics(int64_t step, double lr, double grad_norm) {
    m_record.set("evaluating at step", step);
    m_progress->busy(step, "evaluating");
    const double e0 = seconds();
    m_last = evaluate(backend(), m_c, step, double(step) * m_epochs_per_step, lr, grad_norm,
                    m_prior_wall + e0);
    // The last line: w-bar on the whole training set too, for the generalization gap.
    if (step == m_steps) {
      m_progress->busy(step, "evaluating w-bar on the " + std::to_string(m_sim->data.train.n) +
                                 " training samples");
      const EvalStats train = backend().evaluate_mean(Split::Train);
      m_last["train_loss_wbar"] = train.loss;
      m_last["train_acc_wbar"] = train.accuracy;
      m_last["generalization_gap"] = m_last["test_loss"].get<double>() - train.loss;
    }
    if (m_equivalence) m_last["equivalence"] = m_equivalence->report(backend());
    if (curvature_due(step)) {
      m_progress->busy(step, "measuring curvature");
      CurvatureFiles files;
      m_last["curvature"] = measure_curvature(backend(), m_c.curvature, m_c.seed, step, &files);
      if (!files.workers.is_null()) side_file("worker_curvature.jsonl").write(files.workers);
      if (!files.density.is_null()) side_file("spectral_density.jsonl").write(files.density);
    }
    m_eval_seconds += seconds() - e0;
    m_session_eval_seconds += seconds() - e0;
    m_best_acc = std::max(m_best_acc, m_last["test_acc"].get<double>());
    const std::string bad = nonfinite_quantity(m_last);
    m_metrics->write(m_last);
    m_progress->eval(m_last, loop_seconds());
    return bad;
  }

  double save_checkpoint() {
    m_record.set("writing the checkpoint at step", m_done);
    const double c0 = seconds();
    Checkpoint ck;
    ck.step = m_done;
    ck.config = m_c.resolved;
    ck.trainer = {{"last", m_last},
                  {"best_test_acc", m_best_acc},
                  {"eval_time_s", m_eval_seconds},
                  {"checkpoint_time_s", m_checkpoint_seconds},
                  {"wall_time_s", m_prior_wall + seconds()}};
    ck.loss = backend().loss_window();
    write_checkpoint(m_result.out_dir + "/checkpoint.bin", ck, backend());
    if (m_opt.after_checkpoint) m_opt.after_checkpoint();
    const double took = seconds() - c0;
    m_checkpoint_seconds += took;
    return took;
  }

  // The steps, with their checks, evaluations and checkpoints; sets status and divergence.
  void loop() {
    m_progress = std::make_unique<Progress>(m_log, &m_log == &std::cout && isatty(STDOUT_FILENO), m_steps);
    StopSignalScope stop_signals;
    // The progress display's ETA counts from the first step, not from the data loading.
    m_loop_start = seconds();
    if (!m_opt.resume) record_metrics(0, learning_rate(m_c.optimizer, 0, m_steps, m_total_batch), NAN);
    for (int64_t t = m_done; t < m_steps; ++t) {
      const double lr = learning_rate(m_c.optimizer, t, m_steps, m_total_batch);
      const bool eval_now =
          (t + 1) % m_c.train.eval_every == 0 || t + 1 == m_steps || curvature_due(t + 1);
      double grad_norm = NAN;
      if (m_equivalence) m_equivalence->step(backend(), t, lr);
      m_record.set("training step", t);
      train_step(backend(), m_c, *m_sim->topology, t, lr, eval_now ? &grad_norm : nullptr);
      m_done = m_record.steps_done = t + 1;
      if (m_done % m_c.train.check_every == 0 || eval_now) {
        // The loss of every step, and every value the update wrote into W and the momentum.
        if (m_divergence = backend().first_nonfinite().describe(); !m_divergence.empty()) break;
      }
      if (eval_now && !evaluate_step(lr, grad_norm)) break;
      if (m_opt.after_step) m_opt.after_step(backend(), m_done);
      if (m_c.train.checkpoint_every > 0 && m_done % m_c.train.checkpoint_every == 0 && m_done < m_steps)
        m_loop_checkpoint_seconds += save_checkpoint();
      m_progress->step(m_done, loop_seconds());
      if (g_interrupted || m_done == m_opt.stop_after) {
        m_status = "interrupted";
        break;
      }
    }
    m_progress->finish();
    m_loop_end = seconds();
    if (!m_divergence.empty()) m_status = "diverged";
    // A diverged state is not worth continuing from; the last good checkpoint stays.
    if (m_status != "diverged" && m_c.train.checkpoint_every >= 0) save_checkpoint();
  }

  // The evaluation after a step; false (with divergence set) where something is NaN or Inf.
  bool evaluate_step(double lr, double grad_norm) {
    if (!backend().weights_finite()) {
      m_divergence = "weights contain NaN or Inf at step " + std::to_string(m_done);
      return false;
    }
    if (const std::string bad = record_metrics(m_done, lr, grad_norm); !bad.empty()) {
      m_divergence = bad + " is NaN or Inf at step " + std::to_string(m_done);
      return false;
    }
    return true;
  }

  json summary(double wall) const {
    json s;
    s["status"] = m_status;
    s["steps_done"] = m_done;
    s["steps_planned"] = m_steps;
    s["final"] = m_last;
    s["best_test_acc"] = m_best_acc;
    s["wall_time_s"] = m_prior_wall + wall;
    s["eval_time_s"] = m_eval_seconds;
    s["checkpoint_time_s"] = m_checkpoint_seconds;
    s["setup_phases_s"] = json::object();
    for (const auto& [name, secs] : m_sim->setup_seconds) s["setup_phases_s"][name] = secs;
    // data loading, partition, topology analysis, backend set-up (this session)
    s["setup_time_s"] = m_loop_start;
    // The step loop of this session only: its evaluations, curvature and checkpoints excluded,
    // and nothing after the last step (the final checkpoint, the summary).
    s["steps_per_second"] =
        double(m_done - (m_opt.resume ? m_resume_from.step : 0)) /
        std::max(m_loop_end - m_loop_start - m_session_eval_seconds - m_loop_checkpoint_seconds, 1e-9);
    s["config_hash"] = config_hash(m_c.resolved);
    s["backend"] = m_sim->backend->name();
    s["backend_choice"] = m_sim->backend_note;  // why this backend, and what it does with `math`
    s["model"] = {{"layers", m_sim->model.describe()}, {"parameters", m_sim->model.dim}};
    s["total_batch"] = m_total_batch;
    s["peak_lr"] = scaled_lr(m_c.optimizer, m_total_batch);
    // Only D-SGD mixes over the topology; the others' summary says so instead of giving the
    // spectral gap of a matrix the run never used.
    if (m_c.algorithm.gossips())
      s["topology"] = {{"name", m_c.topology.name},
                       {"used", true},
                       {"time_varying", m_sim->topology->time_varying()},
                       {"spectral_gap_sigma", m_sim->mixing.gap.gap_sigma},
                       {"spectral_gap_lambda", m_sim->mixing.gap.gap_lambda},
                       {"period_gap_sigma", m_sim->mixing.period_gap_sigma},
                       {"spectrum_method", m_sim->mixing.gap.method}};
    else
      s["topology"] = {{"name", m_c.topology.name}, {"used", false}};
    if (!m_divergence.empty()) s["divergence"] = m_divergence;
    return s;
  }

  RunResult finish() {
    const double wall = seconds();
    const json s = summary(wall);
    write_json_atomic(m_result.out_dir + "/summary.json", s);
    if (m_status == "diverged")
      m_log << "gossamer: diverged: " << m_divergence << "; summary in " << m_result.out_dir << "\n";
    else if (m_status == "interrupted" && m_c.train.checkpoint_every < 0)
      m_log << "gossamer: interrupted at step " << m_done << "; metrics and summary kept in "
          << m_result.out_dir << " (no checkpoint: train.checkpoint_every is -1)\n";
    else if (m_status == "interrupted")
      m_log << "gossamer: interrupted at step " << m_done
          << "; checkpoint, metrics and summary kept in " << m_result.out_dir
          << " (continue with: gossamer run --resume " << m_result.out_dir << ")\n";
    else
      m_log << "gossamer: done: " << m_done << " steps in " << m_prior_wall + wall << " s ("
          << s["steps_per_second"].get<double>()
          << " steps/s excluding evaluation), test accuracy of w-bar "
          << m_last["test_acc"].get<double>() << "\n";
    m_result.status = m_status;
    m_result.exit_code = m_status == "diverged"      ? kExitDiverged
                       : m_status == "interrupted" ? kExitInterrupted
                                                 : kExitOk;
    m_result.summary = s;
    return m_result;
  }

  const RunConfig& m_c;
  RunResult m_result;
  std::ostream& m_log;
  const RunOptions& m_opt;
  RunRecord& m_record;
  const std::chrono::steady_clock::time_point m_t0;

  Checkpoint m_resume_from;
  std::unique_ptr<Simulation> m_sim;
  std::unique_ptr<EquivalenceTracker> m_equivalence;
  std::unique_ptr<MetricsWriter> m_metrics;
  std::map<std::string, std::unique_ptr<MetricsWriter>> m_side_files;
  std::unique_ptr<Progress> m_progress;
  int64_t m_steps = 0, m_total_batch = 0, m_done = 0;
  double m_epochs_per_step = 0;
  json m_last;
  double m_eval_seconds = 0, m_session_eval_seconds = 0, m_best_acc = -1, m_prior_wall = 0;
  // Checkpoint writes: all sessions (reported), and this session's inside the step loop
  // (taken out of steps_per_second, as the evaluations are).
  double m_checkpoint_seconds = 0, m_loop_checkpoint_seconds = 0;
  double m_loop_start = 0, m_loop_end = 0;
  std::string m_status = "completed", m_divergence;
};

RunResult train_in_folder(const RunConfig& c, RunResult result, std::ostream& log,
                          const RunOptions& opt, RunRecord& record) {
  return Training(c, std::move(result), log, opt, record).run();
}

}  // namespace

}  // namespace gossamer
