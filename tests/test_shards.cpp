// Sharded CPU runs (docs/ARCHITECTURE.md, "Shards"): W's rows split over 2, 3 and 4 shards that
// exchange halo rows through the in-process transport give bit-identical weights, metrics and
// checkpoints to the unsharded run, for every kind of topology and algorithm; a resume may change
// the number of shards.
#include <gtest/gtest.h>

#include <fstream>
#include <iterator>
#include <sstream>

#include "gossamer/checkpoint.hpp"
#include "gossamer/error.hpp"
#include "gossamer/transport.hpp"
#include "gossamer/trainer.hpp"
#include "helpers.hpp"

using namespace gossamer;
using namespace gossamer::test_util;
using nlohmann::json;

namespace {

// Seven workers (uneven shards), workers that differ, 12 steps.
json base(const json& patch) {
  json c = {{"workers", 7},
            {"model", {{"same_init", false}}},
            {"partition", {{"kind", "dirichlet"}}},
            {"metrics", {{"ensemble", true}}}};
  c.merge_patch(patch);
  return c;
}

struct Snapshot {
  std::vector<double> weights, gradients;
  std::vector<int64_t> indices;
  double consensus, loss, mean_grad_norm;
  EvalStats mean;
  std::vector<EvalStats> workers;
  double ens_nll, ens_ece, mean_nll;
  int64_t nonfinite_weights;
};

Snapshot run_steps(const json& patch, bool float64, int steps = 12) {
  Sim s = make_sim(patch, float64);
  Backend& b = *s->backend;
  double norm = 0;
  for (int t = 0; t < steps; ++t) train_step(b, s->config, *s->topology, t, 0.1, &norm);
  Snapshot out;
  out.weights = b.weights();
  out.gradients = b.gradients();
  out.indices = b.minibatch_indices();
  out.consensus = b.consensus_distance();
  out.loss = b.take_train_loss().mean;
  out.mean_grad_norm = norm;
  out.mean = b.evaluate_mean(Split::Test);
  out.workers = b.evaluate_workers(Split::Test);
  const auto ens = b.evaluate_ensemble(Split::Test);
  out.ens_nll = ens.ensemble.nll;
  out.ens_ece = ens.ensemble.ece;
  out.mean_nll = ens.mean_model.nll;
  out.nonfinite_weights = b.first_nonfinite().weights;
  return out;
}

void expect_identical(const Snapshot& a, const Snapshot& b) {
  EXPECT_EQ(a.weights, b.weights);
  EXPECT_EQ(a.gradients, b.gradients);
  EXPECT_EQ(a.indices, b.indices);
  EXPECT_EQ(a.consensus, b.consensus);
  EXPECT_EQ(a.loss, b.loss);
  EXPECT_EQ(a.mean_grad_norm, b.mean_grad_norm);
  EXPECT_EQ(a.mean.loss, b.mean.loss);
  EXPECT_EQ(a.mean.accuracy, b.mean.accuracy);
  ASSERT_EQ(a.workers.size(), b.workers.size());
  for (size_t k = 0; k < a.workers.size(); ++k) EXPECT_EQ(a.workers[k].loss, b.workers[k].loss);
  EXPECT_EQ(a.ens_nll, b.ens_nll);
  EXPECT_EQ(a.ens_ece, b.ens_ece);
  EXPECT_EQ(a.mean_nll, b.mean_nll);
  EXPECT_EQ(a.nonfinite_weights, b.nonfinite_weights);
}

const json kCases[] = {
    {{"topology", {{"name", "ring"}}}},
    {{"topology", {{"name", "ring"}}}, {"algorithm", {{"form", "atc"}}}},
    {{"topology", {{"name", "exponential"}}}},
    {{"topology", {{"name", "one_peer_exponential"}}}},           // time-varying
    {{"topology", {{"name", "ring"}, {"shuffle", true}}}},         // relabelled every step
    {{"topology", {{"name", "erdos_renyi"}, {"probability", 0.5}}}},
    {{"algorithm", {{"name", "csgd"}}}},
    {{"algorithm", {{"name", "local_sgd"}, {"local_steps", 3}}}},
    {{"optimizer", {{"momentum", 0.9}, {"weight_decay", 1e-3}}}},
    {{"optimizer", {{"momentum", 0.9}, {"nesterov", true}}}, {"topology", {{"name", "torus"}}}},
    {{"algorithm", {{"name", "csgd_sam"}, {"sam_rho", 0.05}}}},
    {{"algorithm", {{"name", "csgd_adsam"}, {"adsam_sigma", 0.01}}}},
};

}  // namespace

class ShardEqualityTest : public ::testing::TestWithParam<int> {};

TEST_P(ShardEqualityTest, ShardedRunsAreBitIdenticalToOneShard) {
  for (const json& c : kCases) {
    SCOPED_TRACE(c.dump());
    const Snapshot one = run_steps(base(c), false);
    for (int shards : {2, 3, 4}) {
      SCOPED_TRACE("shards " + std::to_string(shards));
      json sharded = base(c);
      sharded["shards"] = shards;
      expect_identical(run_steps(sharded, false), one);
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Once, ShardEqualityTest, ::testing::Values(0));

TEST(ShardTest, Float64ShardsAreBitIdenticalToo) {
  json c = base({{"topology", {{"name", "exponential"}}}, {"optimizer", {{"momentum", 0.5}}}});
  const Snapshot one = run_steps(c, true);
  c["shards"] = 3;
  expect_identical(run_steps(c, true), one);
}

// A whole run (metrics, the per-worker curvature file, the checkpoint's bytes), and a resume
// that changes the number of shards.
TEST(ShardTest, RunsAndResumesWithAnyNumberOfShardsGiveTheSameFiles) {
  const auto dir = fresh_temp_dir("shards");
  json cfg = tiny_config(base({{"topology", {{"name", "one_peer_exponential"}}},
                               {"train", {{"steps", 20}, {"eval_every", 5}, {"checkpoint_every", 10}}},
                               {"curvature",
                                {{"every", 10},
                                 {"workers", true},
                                 {"what", {"trace", "topk", "reg"}},
                                 {"probes", 4},
                                 {"topk", 2},
                                 {"lanczos_steps", 6},
                                 {"samples", 64}}}}));
  cfg["backend"] = "cpu";
  std::ostringstream log;
  const auto read = [&](const std::string& run, const char* file) {
    std::ifstream in(dir / run / file, std::ios::binary);
    return std::string((std::istreambuf_iterator<char>(in)), {});
  };
  // The checkpoint's rows (its header holds timings): loaded into one unsharded backend.
  const auto final_weights = [&](const std::string& run) {
    Sim s = make_simulation(load_config(cfg, {}, "test"));
    const std::string path = (dir / run / "checkpoint.bin").string();
    load_checkpoint(path, read_checkpoint(path), *s->backend);
    return s->backend->weights();
  };
  run_training(load_config(cfg, {}, "test"), (dir / "one").string(), log);
  json sharded = cfg;
  sharded["shards"] = 3;
  run_training(load_config(sharded, {}, "test"), (dir / "three").string(), log);
  EXPECT_EQ(metrics_without_times(dir / "three"), metrics_without_times(dir / "one"));
  EXPECT_EQ(read("three", "worker_curvature.jsonl"), read("one", "worker_curvature.jsonl"));
  EXPECT_EQ(final_weights("three"), final_weights("one"));
  // 2 shards to step 10, then 4 shards from the checkpoint.
  json two = cfg;
  two["shards"] = 2;
  RunOptions stop;
  stop.stop_after = 10;
  run_training(load_config(two, {}, "test"), (dir / "resumed").string(), log, stop);
  json four = cfg;
  four["shards"] = 4;
  RunOptions resume;
  resume.resume = true;
  run_training(load_config(four, {}, "test"), (dir / "resumed").string(), log, resume);
  EXPECT_EQ(metrics_without_times(dir / "resumed"), metrics_without_times(dir / "one"));
  EXPECT_EQ(final_weights("resumed"), final_weights("one"));
  std::filesystem::remove_all(dir);
}

// The halo plan: which rows each shard reads, and its rows of P renumbered.
TEST(ShardTest, HaloPlanOfARingAndAnExponentialGraph) {
  TopologyConfig ring;
  ring.name = "ring";
  ring.weights = "uniform";
  TopologySchedule ring8(ring, 8, 1);
  const HaloPlan plan = plan_halo(ring8.at(0), ShardLayout(8, 2));
  ASSERT_EQ(plan.shards.size(), 2u);
  EXPECT_EQ(plan.shards[0].halo, (std::vector<int>{4, 7}));  // workers 0..3 read 7 and 4
  EXPECT_EQ(plan.shards[1].halo, (std::vector<int>{0, 3}));
  EXPECT_EQ(plan.rows_exchanged(), 4);
  EXPECT_EQ(plan.shards[0].local.n, 4);
  EXPECT_EQ(plan.shards[0].local.nnz(), 12);
  for (int c : plan.shards[0].local.col) EXPECT_LT(c, 6);
  TopologyConfig expo = ring;
  expo.name = "exponential";
  TopologySchedule expo16(expo, 16, 1);
  const HaloPlan e = plan_halo(expo16.at(0), ShardLayout(16, 4));
  // Worker k reads k + 1, 2, 4, 8 (mod 16): a shard of 4 reads 4 + 4 + 4 foreign rows at most.
  for (const auto& s : e.shards) EXPECT_LE(s.halo.size(), 12u);
  const ShardLayout uneven(7, 3);
  EXPECT_EQ(uneven.count(0), 3);
  EXPECT_EQ(uneven.count(2), 2);
  EXPECT_EQ(uneven.owner(2), 0);
  EXPECT_EQ(uneven.owner(3), 1);
  EXPECT_EQ(uneven.owner(6), 2);
}

TEST(ShardTest, BadShardCountsAreConfigErrorsNamingTheKey) {
  const auto message = [](const json& patch) {
    try {
      load_config(tiny_config(patch), {}, "f.json");
    } catch (const Error& e) {
      EXPECT_EQ(e.kind(), ErrorKind::Config);
      return std::string(e.what());
    }
    return std::string("(accepted)");
  };
  EXPECT_NE(message({{"shards", 5}}).find("f.json: shards: 5 shards for 4 workers"), std::string::npos);
  EXPECT_NE(message({{"shards", 2}, {"backend", "cuda"}}).find("shards: sharding runs on the cpu"),
            std::string::npos);
  EXPECT_NE(message({{"shards", 0}}).find("shards"), std::string::npos);
}

// `run --resume` takes a new shard count and nothing else.
TEST(ShardTest, ResumeTakesShardsAndNoOtherSet) {
  const auto dir = fresh_temp_dir("shardcli");
  const Result other = run_cli("run --resume " + dir.string() + " --set optimizer.lr=0.5");
  EXPECT_EQ(other.code, 2) << other.output;
  EXPECT_NE(other.output.find("--set shards=N"), std::string::npos) << other.output;
  // The shard count is taken: the error is now about the folder, which holds no run.
  const Result shards = run_cli("run --resume " + dir.string() + " --set shards=2");
  EXPECT_NE(shards.code, 0);
  EXPECT_EQ(shards.output.find("--set shards=N"), std::string::npos) << shards.output;
  EXPECT_NE(shards.output.find("config.json"), std::string::npos) << shards.output;
  std::filesystem::remove_all(dir);
}
