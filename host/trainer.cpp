#include "gossamer/trainer.hpp"

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <csignal>
#include <ctime>
#include <filesystem>
#include <iostream>

#include "gossamer/backend.hpp"
#include "gossamer/error.hpp"
#include "gossamer/schedule.hpp"
#include "sinks.hpp"

namespace gossamer {

using nlohmann::json;
namespace fs = std::filesystem;

namespace {

std::atomic<bool> g_interrupted{false};
extern "C" void on_sigint(int) { g_interrupted = true; }

// Installs the SIGINT handler for the length of a run: Ctrl-C ends the run cleanly
// (summary.json written, metrics kept) instead of killing it mid-write.
struct SigintScope {
  struct sigaction old {};
  SigintScope() {
    g_interrupted = false;
    struct sigaction sa {};
    sa.sa_handler = on_sigint;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, &old);
  }
  ~SigintScope() { sigaction(SIGINT, &old, nullptr); }
};

std::string default_out_dir(const std::string& name) {
  char stamp[32];
  const std::time_t now = std::time(nullptr);
  std::strftime(stamp, sizeof stamp, "%Y%m%d-%H%M%S", std::localtime(&now));
  return "runs/" + name + "-" + stamp;
}

void prepare_out_dir(const std::string& dir) {
  if (fs::exists(dir / fs::path("metrics.jsonl")) || fs::exists(dir / fs::path("summary.json")))
    throw config_error("--out " + dir + ": already holds a run (metrics.jsonl or summary.json); choose another folder or remove it");
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) throw runtime_error(dir + ": cannot create the run folder: " + ec.message());
}

// One evaluation: a line of metrics.jsonl.
json evaluate(Backend& backend, const RunConfig& c, int64_t step, double epoch, double lr, double grad_norm,
              double wall) {
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
  m["wall_time_s"] = wall;
  return m;
}

// Non-finite JSON numbers are written as null by nlohmann; name them before they vanish.
std::string nonfinite_quantity(const json& m) {
  for (const char* key : {"train_loss", "test_loss", "consensus_distance", "grad_norm"})
    if (m.contains(key) && m[key].is_number_float() && !std::isfinite(m[key].get<double>())) return key;
  return "";
}

}  // namespace

void train_step(Backend& backend, const RunConfig& c, TopologySchedule& topology, int64_t t, double lr,
                double* grad_norm) {
  backend.sample(t);
  backend.local_gradient();
  if (grad_norm) *grad_norm = backend.mean_gradient_norm();
  if (c.algorithm.name == "csgd") {
    backend.average_gradients();
    backend.mix_update(nullptr, lr, MixForm::Default);
  } else if (c.algorithm.name == "local_sgd") {
    backend.mix_update(nullptr, lr, MixForm::Default);
    if ((t + 1) % c.algorithm.local_steps == 0) backend.average_weights();
  } else {
    backend.mix_update(&topology.at(t), lr, c.algorithm.form == "atc" ? MixForm::Atc : MixForm::Default);
  }
}

int64_t resolve_steps(const RunConfig& c, int64_t train_samples) {
  if (c.train.epochs <= 0) return c.train.steps;
  const double total_batch = double(c.workers) * c.optimizer.batch_size;
  return std::max<int64_t>(1, int64_t(std::ceil(c.train.epochs * double(train_samples) / total_batch)));
}

RunResult run_training(const RunConfig& c, const std::string& out_arg, std::ostream& log) {
  const auto t0 = std::chrono::steady_clock::now();
  const auto seconds = [&] { return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(); };

  const DataSplit data = load_data(c.data, c.seed);
  const Partition partition = make_partition(c.partition, data.train, c.workers, c.seed);
  const ModelSpec model = ModelSpec::mlp(data.train.features, c.model.hidden, data.train.classes, c.model.activation);
  TopologySchedule topology(c.topology, c.workers, c.seed);
  const MixingProperties props = analyze_topology(topology);

  BackendSetup setup;
  setup.model = &model;
  setup.data = &data;
  setup.partition = &partition;
  setup.workers = c.workers;
  setup.batch = c.optimizer.batch_size;
  setup.seed = c.seed;
  setup.optimizer = {c.optimizer.momentum, c.optimizer.weight_decay, c.optimizer.nesterov};
  std::string chosen;
  std::unique_ptr<Backend> backend = make_backend(c.backend, c.precision, setup, &chosen);
  backend->set_weights(init_weights(model, c.model, c.workers, c.seed));

  RunResult result;
  result.out_dir = out_arg.empty() ? default_out_dir(c.name) : out_arg;
  prepare_out_dir(result.out_dir);
  write_json_atomic(result.out_dir + "/config.json", c.resolved);
  MetricsWriter metrics(result.out_dir + "/metrics.jsonl");

  const int64_t steps = resolve_steps(c, data.train.n);
  const int64_t total_batch = int64_t(c.workers) * c.optimizer.batch_size;
  const double epochs_per_step = double(total_batch) / double(data.train.n);
  log << "gossamer: " << c.name << " -> " << result.out_dir << "\n"
      << "  data     " << data.train.source << ": " << data.train.n << " train / " << data.test.n << " test, "
      << data.train.features << " features, " << data.train.classes << " classes\n"
      << "  model    " << model.describe() << "\n"
      << "  workers  " << c.workers << " x batch " << c.optimizer.batch_size << " = total batch " << total_batch << ", "
      << c.partition.kind << " partition\n"
      << "  algo     " << c.algorithm.name << (c.algorithm.name == "dsgd" ? " (" + c.algorithm.form + ")" : "") << " on "
      << c.topology.name << (props.spectrum_computed ? ", spectral gap " + std::to_string(props.gap.gap_sigma) : "")
      << "\n"
      << "  backend  " << chosen << "\n"
      << "  steps    " << steps << " (" << steps * epochs_per_step << " epochs), peak lr " << scaled_lr(c.optimizer, total_batch)
      << "\n";

  Progress progress(log, &log == &std::cout && isatty(STDOUT_FILENO), steps);
  SigintScope sigint;
  // The progress display's ETA counts from the first step, not from the data loading.
  const double loop_start = seconds();
  const auto loop_seconds = [&] { return seconds() - loop_start; };
  json last;
  double eval_seconds = 0, best_acc = -1;
  auto record = [&](int64_t step, double lr, double grad_norm) {
    const double e0 = seconds();
    last = evaluate(*backend, c, step, double(step) * epochs_per_step, lr, grad_norm, e0);
    eval_seconds += seconds() - e0;
    best_acc = std::max(best_acc, last["test_acc"].get<double>());
    const std::string bad = nonfinite_quantity(last);
    metrics.write(last);
    progress.eval(last, loop_seconds());
    return bad;
  };

  std::string status = "completed", divergence;
  int64_t done = 0;
  record(0, learning_rate(c.optimizer, 0, steps, total_batch), NAN);
  for (int64_t t = 0; t < steps; ++t) {
    const double lr = learning_rate(c.optimizer, t, steps, total_batch);
    const bool eval_now = (t + 1) % c.train.eval_every == 0 || t + 1 == steps;
    double grad_norm = NAN;
    train_step(*backend, c, topology, t, lr, eval_now ? &grad_norm : nullptr);
    done = t + 1;
    if (done % c.train.check_every == 0 || eval_now) {
      if (const int64_t bad = backend->first_nonfinite_step(); bad >= 0) {
        divergence = "training loss is NaN or Inf at step " + std::to_string(bad);
        break;
      }
    }
    if (eval_now) {
      if (!backend->weights_finite()) {
        divergence = "weights contain NaN or Inf at step " + std::to_string(done);
        break;
      }
      if (const std::string bad = record(done, lr, grad_norm); !bad.empty()) {
        divergence = bad + " is NaN or Inf at step " + std::to_string(done);
        break;
      }
    }
    progress.step(done, loop_seconds());
    if (g_interrupted) {
      status = "interrupted";
      break;
    }
  }
  progress.finish();
  if (!divergence.empty()) status = "diverged";

  const double wall = seconds();
  json s;
  s["status"] = status;
  s["steps_done"] = done;
  s["steps_planned"] = steps;
  s["final"] = last;
  s["best_test_acc"] = best_acc;
  s["wall_time_s"] = wall;
  s["eval_time_s"] = eval_seconds;
  s["setup_time_s"] = loop_start;  // data loading, partition, topology analysis, backend set-up
  s["steps_per_second"] = done / std::max(wall - loop_start - eval_seconds, 1e-9);  // training steps only
  s["config_hash"] = config_hash(c.resolved);
  s["backend"] = backend->name();
  s["model"] = {{"layers", model.describe()}, {"parameters", model.dim}};
  s["total_batch"] = total_batch;
  s["peak_lr"] = scaled_lr(c.optimizer, total_batch);
  s["topology"] = {{"name", c.topology.name}, {"time_varying", topology.time_varying()}};
  if (props.spectrum_computed)
    s["topology"].update({{"spectral_gap_sigma", props.gap.gap_sigma}, {"spectral_gap_lambda", props.gap.gap_lambda},
                          {"period_gap_sigma", props.period_gap_sigma}});
  if (!divergence.empty()) s["divergence"] = divergence;
  write_json_atomic(result.out_dir + "/summary.json", s);

  if (status == "diverged") log << "gossamer: diverged: " << divergence << "; summary in " << result.out_dir << "\n";
  else if (status == "interrupted") log << "gossamer: interrupted at step " << done << "; metrics and summary kept in " << result.out_dir << "\n";
  else
    log << "gossamer: done: " << done << " steps in " << wall << " s (" << s["steps_per_second"].get<double>()
        << " steps/s excluding evaluation), test accuracy of w-bar " << last["test_acc"].get<double>() << "\n";
  result.status = status;
  result.exit_code = status == "diverged" ? kExitDiverged : status == "interrupted" ? kExitInterrupted : kExitOk;
  result.summary = s;
  return result;
}

}  // namespace gossamer
