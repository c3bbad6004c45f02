#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <thread>

#include "gossamer/devices.hpp"
#include "gossamer/error.hpp"
#include "gossamer/schedule.hpp"
#include "gossamer/trainer.hpp"
#include "helpers.hpp"

using namespace gossamer;
using namespace gossamer::test_util;
using nlohmann::json;

namespace {

double relative_error(const std::vector<double>& a, const std::vector<double>& b) {
  double num = 0, den = 0;
  for (size_t i = 0; i < a.size(); ++i) num += (a[i] - b[i]) * (a[i] - b[i]), den += b[i] * b[i];
  return std::sqrt(num / den);
}

void run_steps(Sim& s, int steps) {
  TopologySchedule topo(s->config.topology, s->config.workers, s->config.seed);
  for (int t = 0; t < steps; ++t)
    train_step(*s->backend, s->config, topo, t, learning_rate(s->config.optimizer, t, steps, 20),
               nullptr);
}

// An empty path for a run folder (run_training creates it).
std::string temp_dir(const std::string& name) {
  const auto d = fresh_temp_dir(name);
  std::filesystem::remove_all(d);
  return d.string();
}

}  // namespace

// With atc and a complete graph, W' = (11^T/m)(W - lr U): every worker lands on the mean of
// the adapted models, which is C-SGD's step from a common start (U is linear in g, w, buf).
class AtcCompleteTest : public ::testing::TestWithParam<json> {};

TEST_P(AtcCompleteTest, EqualsCsgdOver20StepsFloat64) {
  const json opt = GetParam();
  Sim dsgd = make_sim({{"algorithm", {{"name", "dsgd"}, {"form", "atc"}}},
                       {"topology", {{"name", "complete"}}},
                       {"optimizer", opt}},
                      true);
  Sim csgd = make_sim({{"algorithm", {{"name", "csgd"}}}, {"optimizer", opt}}, true);
  run_steps(dsgd, 20);
  run_steps(csgd, 20);
  const auto a = dsgd->backend->weights(), b = csgd->backend->weights();
  const auto w0 = init_weights(csgd->model, csgd->config.model, 4, csgd->config.seed);
  EXPECT_GT(relative_error(b, w0), 1e-3);  // the models did move
  EXPECT_LT(relative_error(a, b), 1e-6);
  EXPECT_LT(csgd->backend->consensus_distance(), 1e-20);
}

INSTANTIATE_TEST_SUITE_P(
    Optimizers, AtcCompleteTest,
    ::testing::Values(json{{"lr", 0.2}},
                      json{{"lr", 0.1}, {"momentum", 0.9}, {"weight_decay", 1e-3}},
                      json{{"lr", 0.1}, {"momentum", 0.8}, {"nesterov", true}}),
    [](const auto& info) { return std::to_string(info.index); });

TEST(AlgorithmTest, LocalSgdWithOneLocalStepEqualsCsgd) {
  Sim local = make_sim({{"algorithm", {{"name", "local_sgd"}, {"local_steps", 1}}}}, true);
  Sim csgd = make_sim({{"algorithm", {{"name", "csgd"}}}}, true);
  run_steps(local, 10);
  run_steps(csgd, 10);
  EXPECT_LT(relative_error(local->backend->weights(), csgd->backend->weights()), 1e-12);
}

TEST(AlgorithmTest, LocalSgdDriftsBetweenAveragings) {
  Sim s =
      make_sim({{"algorithm", {{"name", "local_sgd"}, {"local_steps", 3}}}, {"workers", 4}}, true);
  TopologySchedule topo(s->config.topology, 4, 1);
  train_step(*s->backend, s->config, topo, 0, 0.1);
  EXPECT_GT(s->backend->consensus_distance(), 0.0);
  train_step(*s->backend, s->config, topo, 1, 0.1);
  train_step(*s->backend, s->config, topo, 2, 0.1);
  EXPECT_EQ(s->backend->consensus_distance(), 0.0);
}

// With lr = 0 the step is W' = P W, and for doubly stochastic P
// ||W' - 1 wbar^T||_F <= sigma_2 ||W - 1 wbar^T||_F, so the consensus distance contracts by
// at least (1 - gap)^2 per step.
class ContractionTest : public ::testing::TestWithParam<std::string> {};

TEST_P(ContractionTest, ConsensusDistanceShrinksAtLeastByTheGap) {
  const std::string name = GetParam();
  Sim s = make_sim({{"workers", 8},
                    {"topology", {{"name", name}}},
                    {"optimizer", {{"lr", 0.0}}},
                    {"model", {{"same_init", false}}}},
                   true);
  TopologySchedule topo(s->config.topology, 8, s->config.seed);
  const double gap = spectral_gap(topo.phase(0)).gap_sigma;
  const double cd0 = s->backend->consensus_distance();
  ASSERT_GT(cd0, 0.1);
  for (int t = 1; t <= 12; ++t) {
    train_step(*s->backend, s->config, topo, t - 1, 0.0);
    const double bound = std::pow(1.0 - gap, 2.0 * t) * cd0;
    EXPECT_LE(s->backend->consensus_distance(), bound * (1 + 1e-9) + 1e-28)
        << name << " step " << t;
  }
}

INSTANTIATE_TEST_SUITE_P(StaticTopologies, ContractionTest,
                         ::testing::Values("ring", "grid", "torus", "exponential", "hypercube",
                                           "star", "complete", "erdos_renyi"));

TEST(AlgorithmTest, MinibatchesComeFromTheWorkersOwnShardAndRepeatBySeed) {
  Sim a = make_sim({{"partition", {{"kind", "shards"}, {"classes_per_worker", 1}}}}, false);
  Sim b = make_sim({{"partition", {{"kind", "shards"}, {"classes_per_worker", 1}}}}, false);
  a->backend->sample(17);
  b->backend->sample(17);
  const auto idx = a->backend->minibatch_indices();
  EXPECT_EQ(idx, b->backend->minibatch_indices());
  const int batch = a->config.optimizer.batch_size;
  for (int k = 0; k < a->config.workers; ++k) {
    const auto begin = a->partition.indices.begin() + a->partition.offsets[k];
    const auto end = a->partition.indices.begin() + a->partition.offsets[k + 1];
    for (int j = 0; j < batch; ++j) EXPECT_NE(std::find(begin, end, idx[k * batch + j]), end);
  }
  a->backend->sample(18);
  EXPECT_NE(a->backend->minibatch_indices(), idx);
}

TEST(AlgorithmTest, Float32MatchesFloat64Reference) {
  Sim f32 = make_sim({{"optimizer", {{"momentum", 0.9}}}}, false);
  Sim f64 = make_sim({{"optimizer", {{"momentum", 0.9}}}}, true);
  run_steps(f32, 20);
  run_steps(f64, 20);
  EXPECT_LT(relative_error(f32->backend->weights(), f64->backend->weights()), 1e-5);
}

TEST(TrainerTest, SameSeedGivesBitIdenticalMetrics) {
  const json cfg = tiny_config({{"workers", 6},
                                {"train", {{"steps", 60}, {"eval_every", 15}}},
                                {"optimizer", {{"momentum", 0.9}}},
                                {"topology", {{"name", "one_peer_exponential"}}}});
  std::vector<std::string> lines[2];
  for (int run = 0; run < 2; ++run) {
    const std::string dir = temp_dir("determinism" + std::to_string(run));
    std::ostringstream log;
    const RunResult r = run_training(load_config(cfg, {}, "test"), dir, log);
    ASSERT_EQ(r.exit_code, kExitOk);
    std::ifstream in(dir + "/metrics.jsonl");
    for (std::string line; std::getline(in, line);) {
      json j = json::parse(line);
      j.erase("wall_time_s");
      lines[run].push_back(j.dump());
    }
    std::filesystem::remove_all(dir);
  }
  ASSERT_EQ(lines[0].size(), 5u);  // steps 0, 15, 30, 45, 60
  EXPECT_EQ(lines[0], lines[1]);
}

TEST(TrainerTest, DivergenceStopsWithExitCode3AndNamesTheStep) {
  const std::string dir = temp_dir("diverge");
  std::ostringstream log;
  const RunResult r = run_training(
      load_config(tiny_config({{"optimizer", {{"lr", 1e300}}}}), {}, "test"), dir, log);
  EXPECT_EQ(r.exit_code, kExitDiverged);
  EXPECT_EQ(r.status, "diverged");
  EXPECT_NE(r.summary["divergence"].get<std::string>().find("at step"), std::string::npos);
  std::ifstream in(dir + "/summary.json");
  EXPECT_EQ(json::parse(in)["status"], "diverged");
  std::filesystem::remove_all(dir);
}

// A NaN written into one weight or one momentum entry after step 4 stops the run at the next
// update (step 5), naming the quantity, for every activation: with ReLU the NaN first-layer
// weight leaves the loss and the gradient finite (ReLU maps the NaN pre-activation to 0), so
// only the update's check of W sees it.
TEST(TrainerTest, NanInWeightsOrMomentumStopsTheRunAtTheNextUpdateForEveryActivation) {
  for (const char* activation : {"relu", "tanh", "gelu"}) {
    for (const bool in_momentum : {false, true}) {
      SCOPED_TRACE(std::string(activation) + (in_momentum ? " momentum" : " weights"));
      const std::string dir = temp_dir("nan-state");
      RunOptions opt;
      opt.after_step = [&](Backend& b, int64_t done) {
        if (done != 5) return;
        BackendState st = b.save_state();
        (in_momentum ? st.momentum : st.weights)[0] = NAN;  // worker 0, first-layer weight 0
        b.load_state(st);
      };
      std::ostringstream log;
      const RunResult r = run_training(
          load_config(tiny_config({{"model", {{"activation", activation}}},
                                   {"optimizer", {{"momentum", 0.9}}},
                                   {"train", {{"steps", 40}, {"eval_every", 40}}}}),
                      {}, "test"),
          dir, log, opt);
      EXPECT_EQ(r.exit_code, kExitDiverged) << log.str();
      EXPECT_EQ(r.summary["steps_done"], 6) << "stopped at the first check, not at an evaluation";
      const std::string why = r.summary.value("divergence", "");
      EXPECT_NE(why.find("at step 5"), std::string::npos) << why;
      EXPECT_NE(why.find(in_momentum ? "momentum" : "weights"), std::string::npos) << why;
      std::filesystem::remove_all(dir);
    }
  }
}

// steps_per_second counts the step loop only: checkpoints (made slow here) are reported in
// checkpoint_time_s and left out, the final one included.
TEST(TrainerTest, StepsPerSecondLeavesOutCheckpointWrites) {
  const std::string dir = temp_dir("ckpt-time");
  RunOptions opt;
  opt.after_checkpoint = [] { std::this_thread::sleep_for(std::chrono::milliseconds(300)); };
  std::ostringstream log;
  const RunResult r = run_training(
      load_config(tiny_config({{"train", {{"steps", 20}, {"checkpoint_every", 5}}}}), {}, "test"),
      dir, log, opt);
  ASSERT_EQ(r.exit_code, kExitOk) << log.str();
  const json& s = r.summary;
  const double ckpt = s["checkpoint_time_s"], wall = s["wall_time_s"], eval = s["eval_time_s"],
               setup = s["setup_time_s"], sps = s["steps_per_second"];
  EXPECT_GE(ckpt, 4 * 0.3) << "checkpoints at steps 5, 10, 15 and the final one";
  const double step_seconds = 20 / sps;
  EXPECT_GT(step_seconds, 0);
  EXPECT_LE(step_seconds, wall - setup - eval - ckpt + 0.05) << s.dump();
  std::filesystem::remove_all(dir);
}

// math "tf32" with backend auto: where auto resolves to the CPU the banner and the summary say
// that tf32 did not apply; where a GPU is visible, the run uses TF32 GEMMs.
TEST(TrainerTest, AutoBackendSaysWhatItDidWithTf32) {
  const std::string dir = temp_dir("auto-tf32");
  std::ostringstream log;
  const RunResult r =
      run_training(load_config(tiny_config({{"math", "tf32"}, {"train", {{"steps", 2}}}}), {}, "test"),
                   dir, log);
  ASSERT_EQ(r.exit_code, kExitOk) << log.str();
  const std::string choice = r.summary["backend_choice"];
  if (list_devices().devices.empty()) {
    EXPECT_NE(choice.find("math tf32 does not apply"), std::string::npos) << choice;
    EXPECT_NE(log.str().find("math tf32 does not apply"), std::string::npos) << log.str();
  } else {
    EXPECT_NE(choice.find("TF32"), std::string::npos) << choice;
  }
  std::filesystem::remove_all(dir);
}

// Only D-SGD mixes over the topology: its banner and summary give the spectral gap (4 workers on
// the ring, weights 1/3: eigenvalues 1, 1/3, -1/3, 1/3, so the gap is 2/3); C-SGD's and local
// SGD's say that no topology is used and analyze none.
TEST(TrainerTest, OnlyAGossipingRunReportsItsTopology) {
  for (const char* algorithm : {"dsgd", "csgd", "local_sgd"}) {
    SCOPED_TRACE(algorithm);
    const std::string dir = temp_dir(std::string("topology-") + algorithm);
    std::ostringstream log;
    const RunResult r = run_training(
        load_config(tiny_config({{"algorithm", {{"name", algorithm}}}, {"train", {{"steps", 4}}}}),
                    {}, "test"),
        dir, log);
    ASSERT_EQ(r.exit_code, kExitOk) << log.str();
    const json& topology = r.summary["topology"];
    EXPECT_EQ(topology["name"], "ring");
    if (std::string(algorithm) == "dsgd") {
      EXPECT_TRUE(topology["used"].get<bool>());
      EXPECT_NEAR(topology["spectral_gap_sigma"].get<double>(), 2.0 / 3.0, 1e-12);
      EXPECT_NE(log.str().find("on ring, spectral gap"), std::string::npos) << log.str();
      EXPECT_TRUE(r.summary["setup_phases_s"].contains("spectral analysis"));
    } else {
      EXPECT_FALSE(topology["used"].get<bool>());
      EXPECT_FALSE(topology.contains("spectral_gap_sigma"));
      EXPECT_NE(log.str().find("no topology"), std::string::npos) << log.str();
      EXPECT_EQ(log.str().find("spectral gap"), std::string::npos) << log.str();
      EXPECT_FALSE(r.summary["setup_phases_s"].contains("spectral analysis"));
    }
    std::filesystem::remove_all(dir);
  }
}

TEST(TrainerTest, WritesResolvedConfigMetricsAndSummary) {
  const std::string dir = temp_dir("outputs");
  std::ostringstream log;
  const RunResult r =
      run_training(load_config(tiny_config({{"train", {{"steps", 30}}}}), {}, "test"), dir, log);
  ASSERT_EQ(r.exit_code, kExitOk);
  std::ifstream cfg(dir + "/config.json");
  const json resolved = json::parse(cfg);
  EXPECT_EQ(resolved["optimizer"]["momentum"], 0.0);  // a default, filled in
  std::ifstream sum(dir + "/summary.json");
  const json summary = json::parse(sum);
  EXPECT_EQ(summary["status"], "completed");
  EXPECT_EQ(summary["steps_done"], 30);
  EXPECT_EQ(summary["config_hash"], config_hash(resolved));
  EXPECT_GT(summary["final"]["test_acc"].get<double>(),
            0.6);  // well above chance (1/3) on the mixture
  for (const char* key :
       {"train_loss", "test_loss", "test_acc", "consensus_distance", "grad_norm", "lr", "epoch"})
    EXPECT_TRUE(summary["final"].contains(key)) << key;
  // A second run into the same folder is refused; what is there stays.
  EXPECT_THROW(run_training(load_config(tiny_config(), {}, "test"), dir, log), Error);
  std::ifstream again(dir + "/summary.json");
  EXPECT_EQ(json::parse(again)["steps_done"], 30);
  std::filesystem::remove_all(dir);
}

// The SAM baselines reduce to C-SGD exactly when their perturbation is zero.
TEST(AlgorithmTest, SamWithRhoZeroAndAdsamWithSigmaZeroEqualCsgdExactly) {
  Sim csgd =
      make_sim({{"algorithm", {{"name", "csgd"}}}, {"optimizer", {{"momentum", 0.9}}}}, false);
  Sim sam = make_sim(
      {{"algorithm", {{"name", "csgd_sam"}, {"sam_rho", 0.0}}}, {"optimizer", {{"momentum", 0.9}}}},
      false);
  Sim adsam = make_sim({{"algorithm", {{"name", "csgd_adsam"}, {"adsam_sigma", 0.0}}},
                        {"optimizer", {{"momentum", 0.9}}}},
                       false);
  run_steps(csgd, 15);
  run_steps(sam, 15);
  run_steps(adsam, 15);
  EXPECT_EQ(sam->backend->weights(), csgd->backend->weights());
  EXPECT_EQ(adsam->backend->weights(), csgd->backend->weights());
  EXPECT_EQ(sam->backend->take_train_loss().mean,
            csgd->backend->take_train_loss().mean);  // one pass counted
}

TEST(AlgorithmTest, SamAndAdsamWithPerturbationsMoveOtherwiseAndKeepOneModel) {
  Sim csgd = make_sim({{"algorithm", {{"name", "csgd"}}}}, true);
  Sim sam = make_sim({{"algorithm", {{"name", "csgd_sam"}, {"sam_rho", 0.1}}}}, true);
  Sim adsam = make_sim({{"algorithm", {{"name", "csgd_adsam"}, {"adsam_sigma", 0.1}}}}, true);
  run_steps(csgd, 5);
  run_steps(sam, 5);
  run_steps(adsam, 5);
  EXPECT_GT(relative_error(sam->backend->weights(), csgd->backend->weights()), 1e-6);
  EXPECT_GT(relative_error(adsam->backend->weights(), csgd->backend->weights()), 1e-6);
  EXPECT_EQ(sam->backend->consensus_distance(), 0.0);
  EXPECT_EQ(adsam->backend->consensus_distance(), 0.0);
}

// One SAM step from w equals a plain C-SGD step whose gradient is taken at w + rho g/||g||.
TEST(AlgorithmTest, SamStepUsesTheGradientAtTheAscendedPoint) {
  const double rho = 0.2, lr = 0.1;
  Sim sam = make_sim({{"algorithm", {{"name", "csgd_sam"}, {"sam_rho", rho}}}}, true);
  Sim ref = make_sim({{"algorithm", {{"name", "csgd"}}}}, true);
  const std::vector<double> w0 = ref->backend->weights();
  ref->backend->sample(0);
  ref->backend->local_gradient(true);
  std::vector<double> g = ref->backend->mean_gradient();
  double norm = 0;
  for (double v : g) norm += v * v;
  for (auto& v : g) v *= rho / std::sqrt(norm);
  ref->backend->perturb_weights(g);
  ref->backend->local_gradient(true);
  ref->backend->restore_weights();
  EXPECT_EQ(ref->backend->weights(), w0);  // restored exactly
  ref->backend->average_gradients();
  ref->backend->mix_update(nullptr, lr, MixForm::Default);
  TopologySchedule topo(sam->config.topology, sam->config.workers, sam->config.seed);
  train_step(*sam->backend, sam->config, topo, 0, lr);
  EXPECT_LT(relative_error(sam->backend->weights(), ref->backend->weights()), 1e-14);
}

// With atc on a complete graph, D-SGD is C-SGD and Xi = 0, so the ADSAM companion is C-SGD
// too: both distances vanish. On a ring they do not, and the report says how far.
TEST(TrainerTest, EquivalenceCompanionsFollowTheSameDataStream) {
  const auto run = [](const json& patch) {
    const std::string dir = temp_dir("equivalence");
    std::ostringstream log;
    const json cfg = tiny_config({{"precision", "float64"},
                                  {"algorithm", {{"name", "dsgd"}, {"track_adsam", true}}},
                                  {"train", {{"steps", 20}, {"eval_every", 10}}}});
    json merged = cfg;
    merge(merged, patch);
    const RunResult r = run_training(load_config(merged, {}, "test"), dir, log);
    EXPECT_EQ(r.exit_code, kExitOk);
    std::filesystem::remove_all(dir);
    return r.summary["final"]["equivalence"];
  };
  const json exact = run({{"algorithm", {{"form", "atc"}}}, {"topology", {{"name", "complete"}}}});
  EXPECT_LT(exact["dist_wbar_csgd"].get<double>(), 1e-9);
  EXPECT_LT(exact["dist_wbar_adsam"].get<double>(), 1e-9);
  const json ring = run({{"model", {{"same_init", false}}}});
  EXPECT_GT(ring["dist_wbar_csgd"].get<double>(), 1e-6);
  EXPECT_GT(ring["dist_wbar_adsam"].get<double>(), 1e-6);
  EXPECT_GT(ring["adsam_test_acc"].get<double>(), 0.5);
}

// The backend contract's size and state checks (shared by the CPU and CUDA backends).
TEST(BackendContractTest, WrongPerturbationSizeAndMomentumMismatchAreRefused) {
  test_util::Sim s = test_util::make_sim({{"workers", 3}}, false);
  Backend& b = *s->backend;
  const int64_t d = b.dim();
  try {
    b.perturb_weights(std::vector<double>(size_t(d + 1), 0.0));
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("got " + std::to_string(d + 1)), std::string::npos)
        << e.what();
  }
  BackendState state = b.save_state();
  state.momentum.assign(state.weights.size(), 0.0);  // this optimizer has no momentum
  EXPECT_THROW(b.load_state(state), Error);
}

// The CPU backend draws every worker's initial weights into W itself (no m x d array on the
// host): the same numbers as the host reference init_weights, bit for bit, in float32 and float64,
// for every init and with per-worker streams.
TEST(InitTest, BackendInitializationEqualsTheHostReference) {
  for (const bool float64 : {false, true})
    for (const char* init : {"kaiming", "xavier", "zeros"})
      for (const bool same : {true, false}) {
        SCOPED_TRACE(std::string(init) + (same ? " same" : " per worker") + (float64 ? " f64" : " f32"));
        Sim s = make_sim({{"workers", 5}, {"model", {{"init", init}, {"same_init", same}, {"hidden", {7, 3}}}}},
                         float64);
        const std::vector<double> reference =
            init_weights(s->model, s->config.model, 5, s->config.seed);
        s->backend->set_weights(reference);
        const std::vector<double> expected = s->backend->weights();  // rounded to the precision
        s->backend->initialize_weights(s->config.model, s->config.seed);
        EXPECT_EQ(s->backend->weights(), expected);
        if (std::string(init) != "zeros") {
          EXPECT_NE(expected[0], 0.0);
          EXPECT_EQ(expected[0] == expected[s->model.dim], same);
        }
      }
}

// More workers than training samples with a shared partition: the run trains, and the workers'
// minibatches differ (each worker its own stream over the whole set).
TEST(TrainerTest, SharedPartitionRunsMoreWorkersThanSamples) {
  const std::string dir = temp_dir("shared");
  std::ostringstream log;
  const RunResult r = run_training(
      load_config(tiny_config({{"workers", 300},
                               {"partition", {{"kind", "shared"}}},
                               {"train", {{"steps", 3}}}}),
                  {}, "test"),
      dir, log);
  EXPECT_EQ(r.exit_code, kExitOk) << log.str();
  Sim s = make_sim({{"workers", 300}, {"partition", {{"kind", "shared"}}}}, false);
  s->backend->sample(0);
  const auto idx = s->backend->minibatch_indices();
  EXPECT_NE(std::vector<int64_t>(idx.begin(), idx.begin() + 5),
            std::vector<int64_t>(idx.begin() + 5, idx.begin() + 10));
  std::filesystem::remove_all(dir);
}

// train.checkpoint_every = -1: no checkpoint at all, not even at the end.
TEST(TrainerTest, CheckpointEveryMinusOneWritesNone) {
  const std::string dir = temp_dir("no-ckpt");
  std::ostringstream log;
  const RunResult r = run_training(
      load_config(tiny_config({{"train", {{"steps", 5}, {"checkpoint_every", -1}}}}), {}, "test"),
      dir, log);
  EXPECT_EQ(r.exit_code, kExitOk) << log.str();
  EXPECT_FALSE(std::filesystem::exists(dir + "/checkpoint.bin"));
  EXPECT_EQ(r.summary["checkpoint_time_s"], 0.0);
  std::filesystem::remove_all(dir);
}

// The backend contract's checks: the same invalid calls get the same errors from the float32
// and float64 CPU backends (the CUDA suite compares the GPU's against these), and none is
// accepted; nothing is read past a buffer (an HVP's points, a subset's rows).
TEST(ContractTest, InvalidCallsGetTheSameErrorsOnEveryBackend) {
  Sim f32 = make_sim({}, false), f64 = make_sim({}, true);
  const int m = f32->config.workers;
  const auto a = contract_errors(*f32->backend, m), b = contract_errors(*f64->backend, m);
  EXPECT_EQ(a, b);
  for (const auto& e : a) EXPECT_NE(e, "(accepted)");
  EXPECT_NE(a[0].find("hvp: dirs: expected whole rows"), std::string::npos) << a[0];
  EXPECT_NE(a[3].find("restore_weights"), std::string::npos) << a[3];
  EXPECT_NE(a[9].find("the points must divide the directions"), std::string::npos) << a[9];
  const std::string &grads_count = a[a.size() - 2], &grads_block = a.back();
  EXPECT_NE(grads_count.find("2 points and 3 gradient rows"), std::string::npos) << grads_count;
  EXPECT_NE(grads_block.find("a block apart from the points"), std::string::npos) << grads_block;
  // A block made by one backend is refused by another.
  auto v = f32->backend->vectors(1);
  try {
    f64->backend->dots(all_rows(*v), all_rows(*v));
    FAIL() << "accepted another backend's block";
  } catch (const std::exception& e) {
    EXPECT_NE(std::string(e.what()).find("another backend"), std::string::npos) << e.what();
  }
}
