// Small simulations for the tests: a synthetic data set, its partition, a model and a CPU backend.
#pragma once
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>

#include <filesystem>
#include <functional>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "gossamer/backend.hpp"
#include "gossamer/config.hpp"
#include "gossamer/cuda_plan.hpp"
#include "gossamer/devices.hpp"
#include "gossamer/error.hpp"
#include "gossamer/philox.hpp"
#include "gossamer/simulation.hpp"

namespace gossamer::test_util {

// c with patch merged (RFC 7396). A patch written `{}` is JSON null, which merge_patch would
// take as "replace everything with null" (the schema's defaults: 16 workers): here it means no
// change.
inline void merge(nlohmann::json& c, const nlohmann::json& patch) {
  if (!patch.is_null()) c.merge_patch(patch);
}

// A tiny default config (synthetic gaussian mixture, 8 features, 3 classes, 256 samples)
// with `patch` merged over it.
inline nlohmann::json tiny_config(const nlohmann::json& patch = nlohmann::json::object()) {
  nlohmann::json c = {
      {"workers", 4},
      {"data",
       {{"dataset", "synthetic"},
        {"synthetic", {{"features", 8}, {"classes", 3}, {"train", 256}, {"test", 128}}}}},
      {"model", {{"hidden", {6}}, {"activation", "tanh"}}},
      {"optimizer", {{"lr", 0.1}, {"batch_size", 5}}},
      {"train", {{"steps", 20}, {"eval_every", 10}}},
  };
  merge(c, patch);
  return c;
}

using Sim = std::unique_ptr<Simulation>;

inline Sim make_sim(const nlohmann::json& patch, bool float64) {
  nlohmann::json c = tiny_config(patch);
  c["precision"] = float64 ? "float64" : "float32";
  c["backend"] = "cpu";
  return make_simulation(load_config(c, {}, "test"));
}

// The lines of a run's metrics.jsonl without the wall-clock fields, for equality checks.
inline std::vector<std::string> metrics_without_times(const std::filesystem::path& dir) {
  std::vector<std::string> lines;
  std::ifstream in(dir / "metrics.jsonl");
  for (std::string line; std::getline(in, line);) {
    nlohmann::json j = nlohmann::json::parse(line);
    j.erase("wall_time_s");
    if (j.contains("curvature")) j["curvature"].erase("time_s");
    lines.push_back(j.dump());
  }
  return lines;
}

// Seven workers that differ (their own inits, a Dirichlet split), with ensemble metrics: the
// sharding tests' run (7 workers make uneven shards for 2, 3 and 4).
inline nlohmann::json seven_workers(const nlohmann::json& patch) {
  nlohmann::json c = {{"workers", 7},
                      {"model", {{"same_init", false}}},
                      {"partition", {{"kind", "dirichlet"}}},
                      {"metrics", {{"ensemble", true}}}};
  merge(c, patch);
  return c;
}

// The Fashion-MNIST folder: GOSSAMER_FASHION_MNIST where set (the GPU machine's packed copy),
// else Debian's package's.
inline std::string fashion_mnist_dir() {
  const char* dir = std::getenv("GOSSAMER_FASHION_MNIST");
  return dir ? dir : "/usr/share/datasets/fashion-mnist";
}

// Whether a set-up failed because the Fashion-MNIST files are not there (the tests that need
// them then skip, saying so); any other error is rethrown by the caller.
inline bool fashion_missing(const Error& e) {
  return std::string(e.what()).find("fashion") != std::string::npos;
}

// Whether the GPU the suites see is the CPU emulation of tests/emu (gossamer_emulated_backend_tests),
// where the tests that train for hundreds of steps or evaluate whole data sets take minutes: they
// skip there, saying so, unless GOSSAMER_EMULATED_LONG is set, and run on a GPU.
inline bool emulated_device() {
  static const DeviceList list = list_devices();
  return !list.devices.empty() && list.devices[0].name.find("emulated") != std::string::npos;
}
#define SKIP_ON_THE_EMULATED_DEVICE()                                                          \
  if (::gossamer::test_util::emulated_device() && !std::getenv("GOSSAMER_EMULATED_LONG"))      \
  GTEST_SKIP() << "minutes on the emulated device (tests/emu; GOSSAMER_EMULATED_LONG=1 runs it)"

// The CNN paths the agreement tests run besides the general one: all on, then each fused path
// alone off (kCnnPathSwitches), so that a disagreement names the path it comes from.
inline std::vector<CnnPaths> cnn_paths_to_test() {
  std::vector<CnnPaths> paths(1);
  for (const CnnPathSwitch& s : kCnnPathSwitches) paths.emplace_back().*(s.on) = false;
  return paths;
}

// A layer of a CNN's list (model.layers): conv / residual (channels, kernel, stride), linear
// (channels: outputs), act, pools, gap; groupnorm(groups).
inline CnnLayerConfig layer(const std::string& type, int channels = 0, int kernel = 3,
                            int stride = 1) {
  CnnLayerConfig l;
  l.type = type;
  l.channels = channels;
  l.kernel = kernel;
  l.stride = stride;
  return l;
}
inline CnnLayerConfig groupnorm(int groups) {
  CnnLayerConfig l = layer("groupnorm");
  l.groups = groups;
  return l;
}

// n draws of scale N(0, 1) from Philox stream (seed, Data, stream): test inputs, never zeros.
inline std::vector<double> random_normals(size_t n, uint64_t seed, uint32_t stream, double scale) {
  std::vector<double> v(n);
  for (size_t i = 0; i < n; ++i) {
    const Philox4 r = philox_draw(seed, RngDomain::Data, stream, i);
    v[i] = scale * philox_normal(r.v[0], r.v[1]);
  }
  return v;
}

// ||a - b|| / ||b||, the relative error of a result a against its reference b; a non-finite
// element of a (unwritten, NaN) fails the test and gives infinity.
inline double rel_err(const std::vector<double>& a, const std::vector<double>& b) {
  EXPECT_EQ(a.size(), b.size());
  double num = 0, den = 0;
  for (size_t i = 0; i < a.size() && i < b.size(); ++i) {
    if (!std::isfinite(a[i])) {
      ADD_FAILURE() << "element " << i << " is " << a[i] << " (unwritten or non-finite)";
      return INFINITY;
    }
    num += (a[i] - b[i]) * (a[i] - b[i]);
    den += b[i] * b[i];
  }
  return std::sqrt(num / std::max(den, 1e-300));
}
inline double rel_err(double a, double b) { return rel_err(std::vector<double>{a}, std::vector<double>{b}); }

// The message of the config_error that tiny_config(patch) gets from load_config (source
// "f.json"), or "(accepted)".
inline std::string config_message(const nlohmann::json& patch) {
  try {
    load_config(tiny_config(patch), {}, "f.json");
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::Config) << e.what();
    return e.what();
  }
  return "(accepted)";
}

// What a backend holds after some steps, everything the contract returns for all workers and
// the metrics: the sharding tests compare these between layouts.
struct Snapshot {
  std::vector<double> weights, gradients;
  std::vector<int64_t> indices;
  double consensus = 0, loss = 0, mean_grad_norm = 0;
  EvalStats mean;
  std::vector<EvalStats> workers;
  double ens_nll = 0, ens_ece = 0, mean_nll = 0;
  int64_t nonfinite_weights = -1;
};

inline Snapshot snapshot(Backend& b, double mean_grad_norm) {
  Snapshot out;
  out.weights = b.weights();
  out.gradients = b.gradients();
  out.indices = b.minibatch_indices();
  out.consensus = b.consensus_distance();
  out.loss = b.take_train_loss().mean;
  out.mean_grad_norm = mean_grad_norm;
  out.mean = b.evaluate_mean(Split::Test);
  out.workers = b.evaluate_workers(Split::Test);
  const auto ens = b.evaluate_ensemble(Split::Test);
  out.ens_nll = ens.ensemble.nll;
  out.ens_ece = ens.ensemble.ece;
  out.mean_nll = ens.mean_model.nll;
  out.nonfinite_weights = b.first_nonfinite().weights;
  return out;
}

// A fresh folder per test, named after it, removed afterwards.
inline std::filesystem::path fresh_temp_dir(const std::string& tag) {
  const auto dir = std::filesystem::temp_directory_path() /
                   ("gossamer-" + tag + "-" + std::to_string(::getpid()) + "-" +
                    ::testing::UnitTest::GetInstance()->current_test_info()->name());
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir;
}

// The contract's checks, the same on every backend: invalid calls and the message each gets.
inline std::vector<std::string> contract_errors(Backend& b, int m) {
  const int64_t d = b.dim();
  const std::vector<std::function<void()>> calls = {
      [&] { b.hvp(std::vector<double>(size_t(d)), std::vector<double>(size_t(d) + 1)); },
      [&] { b.hvp(std::vector<double>(2 * size_t(d)), std::vector<double>(3 * size_t(d))); },
      [&] { b.subset_loss(std::vector<double>(size_t(d) - 1), nullptr); },
      [&] { b.restore_weights(); },
      [&] { b.perturb_weights(std::vector<double>(3)); },
      [&] { b.set_weights(std::vector<double>(size_t(m) * size_t(d) - 1)); },
      [&] {
        BackendState s = b.save_state();
        s.momentum = s.weights;  // momentum buffers for an optimizer without momentum
        b.load_state(s);
      },
      [&] { b.vectors(0); },
      [&] {
        auto v = b.vectors(2), o = b.vectors(3);
        b.hvp(all_rows(*v), all_rows(*v), all_rows(*o));  // 2 directions, 3 outputs
      },
      [&] {
        auto p = b.vectors(2), v = b.vectors(3), o = b.vectors(3);
        b.hvp(all_rows(*p), all_rows(*v), all_rows(*o));  // 2 points do not divide 3
      },
      [&] {
        auto v = b.vectors(2);
        b.dots(rows_of(*v, 1, 2), rows_of(*v, 0, 2));  // past the block's end
      },
      [&] {
        auto v = b.vectors(1);
        b.upload(all_rows(*v), std::vector<double>(size_t(d) + 1));
      },
      [&] {
        auto v = b.vectors(3);
        b.copy_weights(all_rows(*v));  // m rows needed
      },
      [&] {
        auto v = b.vectors(2);
        b.project_out(row_of(*v, 0), rows_of(*v, 0, 2));  // overlaps its basis
      },
      [&] {
        auto v = b.vectors(2), o = b.vectors(1);
        b.combine(all_rows(*v), {1.0}, all_rows(*o));  // 1 coefficient for 2 x 1
      },
      [&] {
        b.set_curvature_subset({0, -1});
      },
      [&] { b.sample(-1); },
      [&] {
        auto p = b.vectors(2), g = b.vectors(3);
        b.subset_loss(all_rows(*p), all_rows(*g));  // 2 points, 3 gradient rows
      },
      [&] {
        auto p = b.vectors(2);
        b.subset_loss(row_of(*p, 0), row_of(*p, 1));  // gradients into the points' block
      },
  };
  std::vector<std::string> errors;
  for (const auto& call : calls) {
    try {
      call();
      errors.push_back("(accepted)");
    } catch (const std::exception& e) {
      errors.push_back(e.what());
    }
  }
  return errors;
}

#ifdef GOSSAMER_CLI
struct Result {
  int code;            // the exit code; -1 if the process died of a signal
  std::string output;  // stdout and stderr
};

// The real binary, as a user runs it; `prefix` goes before it in the shell (timeout, ulimit).
inline Result run_cli(const std::string& args, const std::string& prefix = "") {
  const std::string cmd = prefix + std::string(GOSSAMER_CLI) + " " + args + " 2>&1";
  FILE* p = popen(cmd.c_str(), "r");
  std::string out;
  char buf[4096];
  while (size_t n = fread(buf, 1, sizeof buf, p)) out.append(buf, n);
  const int status = pclose(p);
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, out};
}
#endif

class TempDirTest : public ::testing::Test {
 protected:
  void SetUp() override { m_dir = fresh_temp_dir("test"); }
  void TearDown() override { std::filesystem::remove_all(m_dir); }
  std::filesystem::path m_dir;
};

}  // namespace gossamer::test_util
