// Sharded CPU runs (docs/ARCHITECTURE.md, "Shards"): W's rows split over 2, 3 and 4 shards that
// exchange halo rows through the in-process transport give bit-identical weights, metrics and
// checkpoints to the unsharded run, for every kind of topology and algorithm; a resume may change
// the number of shards.
#include <gtest/gtest.h>

#include <chrono>
#include <fstream>
#include <iterator>
#include <sstream>
#include <thread>

#include "gossamer/checkpoint.hpp"
#include "gossamer/devices.hpp"
#include "gossamer/error.hpp"
#include "gossamer/transport.hpp"
#include "gossamer/trainer.hpp"
#include "helpers.hpp"

using namespace gossamer;
using namespace gossamer::test_util;
using nlohmann::json;

namespace {


Snapshot run_steps(const json& patch, bool float64, int steps = 12) {
  Sim s = make_sim(patch, float64);
  Backend& b = *s->backend;
  double norm = 0;
  for (int t = 0; t < steps; ++t) train_step(b, s->config, *s->topology, t, 0.1, &norm);
  return snapshot(b, norm);
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
    const Snapshot one = run_steps(seven_workers(c), false);
    for (int shards : {2, 3, 4}) {
      SCOPED_TRACE("shards " + std::to_string(shards));
      json sharded = seven_workers(c);
      sharded["shards"] = shards;
      expect_identical(run_steps(sharded, false), one);
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Once, ShardEqualityTest, ::testing::Values(0));

TEST(ShardTest, Float64ShardsAreBitIdenticalToo) {
  json c = seven_workers({{"topology", {{"name", "exponential"}}}, {"optimizer", {{"momentum", 0.5}}}});
  const Snapshot one = run_steps(c, true);
  c["shards"] = 3;
  expect_identical(run_steps(c, true), one);
}

// A whole run (metrics, the per-worker curvature file, the checkpoint's bytes), and a resume
// that changes the number of shards.
TEST(ShardTest, RunsAndResumesWithAnyNumberOfShardsGiveTheSameFiles) {
  const auto dir = fresh_temp_dir("shards");
  json cfg = tiny_config(seven_workers({{"topology", {{"name", "one_peer_exponential"}}},
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
  EXPECT_NE(config_message({{"shards", 5}}).find("f.json: shards: 5 shards for 4 workers"), std::string::npos);
  EXPECT_NE(config_message({{"shards", 2}, {"backend", "cuda"}}).find("shards: the CPU backend's shards"),
            std::string::npos);
  EXPECT_NE(config_message({{"shards", 0}}).find("shards"), std::string::npos);
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

// Consecutive copies between the same two shards become one run; anything else starts a new one.
TEST(ShardTest, RowRunsJoinConsecutiveCopies) {
  const std::vector<RowCopy> copies = {{1, 0, 4, 0}, {1, 0, 5, 1}, {1, 0, 6, 2},  // one run
                                       {2, 0, 8, 3},                              // another owner
                                       {0, 1, 0, 0}, {0, 1, 2, 1},                // a gap
                                       {2, 1, 9, 2}};
  const std::vector<RowRun> runs = row_runs(copies);
  ASSERT_EQ(runs.size(), 5u);
  EXPECT_EQ(runs[0].from, 1);
  EXPECT_EQ(runs[0].worker, 4);
  EXPECT_EQ(runs[0].count, 3);
  EXPECT_EQ(runs[1].worker, 8);
  EXPECT_EQ(runs[1].slot, 3);
  EXPECT_EQ(runs[2].count, 1);
  EXPECT_EQ(runs[3].worker, 2);
  EXPECT_EQ(runs[4].to, 1);
  // Every copy is covered once, in order.
  int64_t rows = 0;
  for (const RowRun& r : runs) rows += r.count;
  EXPECT_EQ(rows, int64_t(copies.size()));
  // A ring's halo over 4 shards of 12 workers: each shard reads one row on each side, 8 runs.
  Csr ring;
  ring.n = 12;
  for (int k = 0; k < 12; ++k) ring.add_row({{(k + 11) % 12, 1.0 / 3}, {k, 1.0 / 3}, {(k + 1) % 12, 1.0 / 3}});
  EXPECT_EQ(row_runs(plan_halo(ring, ShardLayout(12, 4)).copies).size(), 8u);
  // A shuffled ring reads scattered rows: where a shard reads most of the foreign rows, its halo
  // is all of them, one run from each other shard, and its rows of P read the same workers.
  Csr scattered;
  scattered.n = 12;
  for (int k = 0; k < 12; ++k) scattered.add_row({{k, 0.5}, {(k * 5 + 1) % 12, 0.25}, {(k * 7 + 3) % 12, 0.25}});
  const ShardLayout four(12, 4);
  const HaloPlan wide = plan_halo(scattered, four);
  for (int s = 0; s < 4; ++s) {
    const ShardMixing& sm = wide.shards[size_t(s)];
    if (sm.halo.size() != 9u) continue;  // this shard reads few foreign rows: single rows
    for (int r = 0; r < sm.local.n; ++r)
      for (int e = sm.local.row_ptr[size_t(r)]; e < sm.local.row_ptr[size_t(r) + 1]; ++e) {
        const int c = sm.local.col[size_t(e)];
        const int global = c < sm.local.n ? four.first(s) + c : sm.halo[size_t(c - sm.local.n)];
        EXPECT_EQ(global, scattered.col[size_t(scattered.row_ptr[size_t(four.first(s) + r)] + (e - sm.local.row_ptr[size_t(r)]))]);
      }
  }
  int widened = 0;
  std::vector<RowCopy> to_shard0;
  for (const RowCopy& c : wide.copies) if (c.to == 0) to_shard0.push_back(c);
  for (const auto& sm : wide.shards) widened += sm.halo.size() == 9u;
  EXPECT_GE(widened, 1);
  // Shard 0 (workers 0-2) reads 5 of its 9 foreign rows (1, 3, 5, 6, 10, 11 less its own 1).
  EXPECT_EQ(wide.shards[0].halo.size(), 9u);
  EXPECT_EQ(row_runs(to_shard0).size(), 3u);
}

// Rank 0 writes the id, the other ranks read it back, waiting for it; the file goes when all
// have joined.
TEST(RendezvousTest, RankZeroWritesAndTheOthersReadTheSameBytes) {
  const auto dir = fresh_temp_dir("rendezvous");
  Processes p;
  p.world = 3;
  p.rendezvous = (dir / "id").string();
  p.timeout_seconds = 10;
  std::string payload(128, '\0');
  for (size_t i = 0; i < payload.size(); ++i) payload[i] = char(i * 37 + 5);  // every byte value kind
  std::string got1, got2;
  Processes p1 = p, p2 = p;
  p1.rank = 1;
  p2.rank = 2;
  std::thread r1([&] { got1 = rendezvous(p1, ""); });  // before rank 0: they wait
  std::thread r2([&] { got2 = rendezvous(p2, ""); });
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  EXPECT_EQ(rendezvous(p, payload), payload);
  r1.join();
  r2.join();
  EXPECT_EQ(got1, payload);
  EXPECT_EQ(got2, payload);
  EXPECT_FALSE(std::filesystem::exists(dir / "id.tmp"));
  remove_rendezvous(p1);  // only rank 0 removes it
  EXPECT_TRUE(std::filesystem::exists(dir / "id"));
  remove_rendezvous(p);
  EXPECT_FALSE(std::filesystem::exists(dir / "id"));
  std::filesystem::remove_all(dir);
}

TEST(RendezvousTest, AFileThatNeverAppearsTimesOutNamingThePath) {
  const auto dir = fresh_temp_dir("rendezvous");
  Processes p;
  p.rank = 2;
  p.world = 4;
  p.rendezvous = (dir / "never").string();
  p.timeout_seconds = 0.2;
  const auto t0 = std::chrono::steady_clock::now();
  try {
    rendezvous(p, "");
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find(p.rendezvous), std::string::npos) << what;
    EXPECT_NE(what.find("did not appear within 0.2 s"), std::string::npos) << what;
    EXPECT_NE(what.find("rank 2 of 4"), std::string::npos) << what;
  }
  const double waited = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_GE(waited, 0.2);
  EXPECT_LT(waited, 5.0);
  // A file of another run's size, or not one rank 0 wrote, is named and refused.
  Processes writer = p;
  writer.rank = 0;
  writer.world = 3;
  rendezvous(writer, "ab");
  try {
    rendezvous(p, "");
    ADD_FAILURE() << "a file for 3 ranks was taken by a run of 4";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("world 4"), std::string::npos) << e.what();
  }
  std::ofstream(p.rendezvous) << "hello\n";
  EXPECT_THROW(rendezvous(p, ""), Error);
  Processes none = p;
  none.rendezvous.clear();
  EXPECT_THROW(rendezvous(none, ""), Error);
  std::filesystem::remove_all(dir);
}

TEST(ShardTest, BadDeviceLayoutsAreConfigErrorsNamingTheKey) {
  EXPECT_NE(config_message({{"devices", {0, 0, 0, 0, 0}}}).find("f.json: devices: 5 shards for 4 workers"),
            std::string::npos);
  EXPECT_NE(config_message({{"devices", {0}}, {"backend", "cpu"}}).find("devices: GPUs for the cuda backend"),
            std::string::npos);
  EXPECT_NE(config_message({{"devices", {0, 1}}, {"shards", 2}}).find("devices and shards"), std::string::npos);
  EXPECT_NE(config_message({{"devices", {-1}}}).find("devices"), std::string::npos);
  EXPECT_NE(config_message({{"transport", "mpi"}}).find("transport"), std::string::npos);
  EXPECT_EQ(config_message({{"devices", {0, 0}}, {"transport", "copy"}}), "(accepted)");
  // The layout keys are not the run's identity: a resume may change them.
  const RunConfig a = load_config(tiny_config(), {}, "a"),
                  b = load_config(tiny_config({{"devices", {0, 0}}, {"transport", "nccl"}}), {}, "b");
  EXPECT_EQ(config_hash(a.resolved), config_hash(b.resolved));
}

TEST(ShardTest, MultiProcessCommandLinesAreCheckedBeforeAnythingRuns) {
  const auto dir = fresh_temp_dir("multiproc");
  const std::string config = (dir / "c.json").string();
  std::ofstream(config) << tiny_config().dump();
  const auto expect_error = [&](const std::string& args, const std::string& text) {
    const Result r = run_cli("run " + config + " " + args);
    EXPECT_EQ(r.code, 2) << args << "\n" << r.output;
    EXPECT_NE(r.output.find(text), std::string::npos) << args << "\n" << r.output;
  };
  expect_error("--devices 0,x", "--devices: \"0,x\": expected GPU ordinals");
  expect_error("--world 2 --rank 2 --rendezvous " + (dir / "id").string() + " --out " + (dir / "r").string(),
               "--rank 2: expected 0 to --world - 1 (1)");
  expect_error("--world 2 --rank 1 --out " + (dir / "r").string(), "give --rendezvous FILE");
  expect_error("--world 2 --rank 1 --rendezvous " + (dir / "id").string(), "the same --out RUN_DIR");
  expect_error("--backend cpu --world 2 --rank 1 --rendezvous " + (dir / "id").string() + " --out " +
                   (dir / "r").string(),
               "--world 2: several processes run the CUDA backend's shards");
  // Nothing was written.
  EXPECT_FALSE(std::filesystem::exists(dir / "r"));
  EXPECT_FALSE(std::filesystem::exists(dir / "id"));
  std::filesystem::remove_all(dir);
}

// A device that does not exist: where no GPU is visible the run stops with the runtime's reason
// and the key that asked for a GPU (the GPU suite checks the ordinal's own message).
TEST(ShardTest, DevicesWithoutAGpuSayWhy) {
  if (!list_devices().devices.empty()) GTEST_SKIP() << "a GPU is visible here (CudaShardTest checks it)";
  const auto dir = fresh_temp_dir("nodevice");
  const std::string config = (dir / "c.json").string();
  std::ofstream(config) << tiny_config().dump();
  const Result r = run_cli("run " + config + " --devices 7 --out " + (dir / "r").string());
  EXPECT_NE(r.code, 0) << r.output;
  EXPECT_NE(r.output.find("devices"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find(list_devices().why_none), std::string::npos) << r.output;
  // The CUDA shards compute in float32: float64 with devices is a config error, before any GPU.
  const Result f64 = run_cli("run " + config + " --devices 0 --set precision=float64 --out " + (dir / "r64").string());
  EXPECT_EQ(f64.code, 2) << f64.output;
  EXPECT_NE(f64.output.find("the CUDA backend computes in float32"), std::string::npos) << f64.output;
  std::filesystem::remove_all(dir);
}
