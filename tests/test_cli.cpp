// The CLI as a user meets it: exit codes and messages of the real binary.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <array>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "gossamer/devices.hpp"
#include "gossamer/error.hpp"
#include "helpers.hpp"

namespace fs = std::filesystem;

namespace {

using gossamer::test_util::Result;
using gossamer::test_util::run_cli;

class CliTest : public gossamer::test_util::TempDirTest {
 protected:
  std::string config(const std::string& text) {
    const std::string path = (m_dir / "cfg.json").string();
    std::ofstream(path) << text;
    return path;
  }
  std::string tiny() {
    return config(
        R"({"workers": 3, "data": {"synthetic": {"train": 120, "test": 60, "features": 4, "classes": 2}},
                      "model": {"hidden": [5]}, "optimizer": {"batch_size": 4}, "train": {"steps": 10, "eval_every": 5}})");
  }
};

}  // namespace

TEST_F(CliTest, RunSucceedsAndWritesTheRunFolder) {
  const Result r = run_cli("run " + tiny() + " --backend cpu --out " + (m_dir / "run").string());
  EXPECT_EQ(r.code, gossamer::kExitOk) << r.output;
  for (const char* f : {"config.json", "metrics.jsonl", "summary.json"})
    EXPECT_TRUE(fs::exists(m_dir / "run" / f)) << f;
  EXPECT_NE(r.output.find("step 10/10"), std::string::npos)
      << "a plain line per eval in a pipe: " << r.output;
  EXPECT_EQ(r.output.find("note "), std::string::npos) << r.output;
  // A per-worker batch beyond a worker's shard (120 samples over 3 workers) runs, and says so.
  const Result big =
      run_cli("run " + tiny() + " --set optimizer.batch_size=50 --set train.steps=2 " + "--out " +
              (m_dir / "big").string());
  EXPECT_EQ(big.code, gossamer::kExitOk) << big.output;
  EXPECT_NE(big.output.find("note     the per-worker batch 50 is larger than the smallest worker's "
                            "shard (40 samples)"),
            std::string::npos)
      << big.output;
}

TEST_F(CliTest, ConfigErrorsExitWith2) {
  Result r = run_cli("run " + config(R"({"optimizer": {"lrr": 0.1}})") + " --out " +
                     (m_dir / "a").string());
  EXPECT_EQ(r.code, gossamer::kExitUsage);
  EXPECT_NE(r.output.find("cfg.json: unknown key 'optimizer.lrr'; did you mean 'optimizer.lr'?"),
            std::string::npos)
      << r.output;
  r = run_cli("run " + config(R"({"workers": "many"})"));
  EXPECT_EQ(r.code, gossamer::kExitUsage);
  EXPECT_NE(r.output.find("workers: expected an integer"), std::string::npos) << r.output;
  r = run_cli("run " + config("{\"workers\": 3,}"));
  EXPECT_EQ(r.code, gossamer::kExitUsage);
  EXPECT_NE(r.output.find("not valid JSON"), std::string::npos) << r.output;
  r = run_cli("run " + tiny() + " --set optimizer.lr");
  EXPECT_EQ(r.code, gossamer::kExitUsage);
  EXPECT_NE(r.output.find("expected key.path=value"), std::string::npos) << r.output;
  // A set-up error (more workers than samples: the partition's) names the file too, and the
  // run folder is not created.
  r = run_cli("run " + tiny() + " --set workers=200 --out " + (m_dir / "w").string());
  EXPECT_EQ(r.code, gossamer::kExitUsage);
  EXPECT_NE(r.output.find("cfg.json: workers: 200 workers but only 120"), std::string::npos)
      << r.output;
  EXPECT_FALSE(fs::exists(m_dir / "w"));
  r = run_cli("run " + (m_dir / "absent.json").string());
  EXPECT_EQ(r.code, gossamer::kExitUsage);
  EXPECT_NE(r.output.find("cannot open"), std::string::npos);
  r = run_cli("run");
  EXPECT_EQ(r.code, gossamer::kExitUsage);
  r = run_cli("frobnicate");
  EXPECT_EQ(r.code, gossamer::kExitUsage);
}

TEST_F(CliTest, MissingDataExitsWith1NamingTheFile) {
  const Result r =
      run_cli("run " + config(R"({"data": {"dataset": "idx", "path": "/nonexistent"}})") +
              " --out " + (m_dir / "r").string());
  EXPECT_EQ(r.code, gossamer::kExitRuntime);
  EXPECT_NE(r.output.find("/nonexistent/train-images-idx3-ubyte"), std::string::npos) << r.output;
  EXPECT_FALSE(std::filesystem::exists(m_dir / "r")) << "a refused run left its folder behind";
}

TEST_F(CliTest, PlanPrintsTheCudaMemoryPlanWithoutAGpu) {
  const Result r = run_cli("plan " + tiny() + " --set workers=64 --set optimizer.momentum=0.9");
  EXPECT_EQ(r.code, 0) << r.output;
  EXPECT_NE(r.output.find("64 workers"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("momentum and its ping-pong twin"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("GiB in all"), std::string::npos) << r.output;
  EXPECT_EQ(run_cli("plan " + tiny() + " --set workers=zero").code, gossamer::kExitUsage);
}

TEST_F(CliTest, CudaWithoutAGpuExitsWith1SayingWhy) {
  if (!gossamer::list_devices().devices.empty()) GTEST_SKIP() << "a GPU is visible here";
  const Result r = run_cli("run " + tiny() + " --backend cuda --out " + (m_dir / "r").string());
  EXPECT_EQ(r.code, gossamer::kExitRuntime);
  EXPECT_NE(r.output.find("--backend cuda: "), std::string::npos) << r.output;
  EXPECT_FALSE(std::filesystem::exists(m_dir / "r"));
}

TEST_F(CliTest, DivergedRunExitsWith3) {
  const Result r =
      run_cli("run " + tiny() + " --set optimizer.lr=1e300 --out " + (m_dir / "d").string());
  EXPECT_EQ(r.code, gossamer::kExitDiverged) << r.output;
  EXPECT_NE(r.output.find("diverged"), std::string::npos);
}

TEST_F(CliTest, CtrlCWritesTheSummaryAndKeepsTheMetrics) {
  const auto dir = m_dir / "int";
  const Result r =
      run_cli("run " + tiny() + " --set train.steps=100000000 --set train.eval_every=500 --out " +
                  dir.string(),
              "timeout --preserve-status -s INT 2 ");
  EXPECT_EQ(r.code, gossamer::kExitInterrupted) << r.output;
  std::ifstream summary(dir / "summary.json");
  const auto s = nlohmann::json::parse(summary);
  EXPECT_EQ(s["status"], "interrupted");
  EXPECT_GT(s["steps_done"].get<int64_t>(), 0);
  std::ifstream metrics(dir / "metrics.jsonl");
  std::string first;
  std::getline(metrics, first);
  EXPECT_EQ(nlohmann::json::parse(first)["step"], 0);
  EXPECT_TRUE(fs::exists(dir / "checkpoint.bin"));
  // ... and the run continues from it, stopped again after a moment.
  const Result again =
      run_cli("run --resume " + dir.string(), "timeout --preserve-status -s INT 2 ");
  EXPECT_EQ(again.code, gossamer::kExitInterrupted) << again.output;
  EXPECT_NE(again.output.find("resumed at step"), std::string::npos) << again.output;
  std::ifstream summary2(dir / "summary.json");
  EXPECT_GT(nlohmann::json::parse(summary2)["steps_done"].get<int64_t>(),
            s["steps_done"].get<int64_t>());
}

TEST_F(CliTest, CurvatureOfASavedRun) {
  const auto dir = m_dir / "c";
  ASSERT_EQ(run_cli("run " + tiny() + " --out " + dir.string()).code, 0);
  Result r =
      run_cli("curvature " + dir.string() + " --what trace,reg --set curvature.probes=8 --json");
  ASSERT_EQ(r.code, 0) << r.output;
  const auto j = nlohmann::json::parse(r.output);
  EXPECT_EQ(j["step"], 10);
  EXPECT_TRUE(j["curvature"].contains("trace"));
  EXPECT_TRUE(j["curvature"].contains("half_tr_h_xi"));
  EXPECT_FALSE(j["curvature"].contains("top_eigenvalues"));
  // Text output, with every worker's figures summarized.
  r = run_cli("curvature " + dir.string() +
              " --what trace --set curvature.probes=4 --set curvature.workers=true");
  ASSERT_EQ(r.code, 0) << r.output;
  EXPECT_NE(r.output.find("Hessian trace"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("workers' trace"), std::string::npos) << r.output;
  r = run_cli("curvature " + dir.string() + " --set optimizer.lr=1");
  EXPECT_EQ(r.code, gossamer::kExitUsage);
  r = run_cli("curvature " + (m_dir / "nothing").string());
  EXPECT_EQ(r.code, gossamer::kExitRuntime);
  EXPECT_NE(r.output.find("cannot open the checkpoint"), std::string::npos) << r.output;
}

TEST_F(CliTest, TopologyPrintsItsProperties) {
  Result r = run_cli("topology --name ring --workers 8 --json");
  ASSERT_EQ(r.code, 0) << r.output;
  const auto j = nlohmann::json::parse(r.output);
  EXPECT_NEAR(j["spectral_gap_sigma"].get<double>(),
              1 - (1.0 / 3 + 2.0 / 3 * std::cos(2 * M_PI / 8)), 1e-12);
  EXPECT_EQ(j["matrix"].size(), 8u);
  EXPECT_TRUE(j["doubly_stochastic"].get<bool>());
  r = run_cli("topology --name exponential --workers 8");
  EXPECT_EQ(r.code, 0);
  EXPECT_NE(r.output.find("symmetric         no"), std::string::npos) << r.output;
  r = run_cli("topology --name hypercube --workers 6");
  EXPECT_EQ(r.code, gossamer::kExitUsage);
  EXPECT_NE(r.output.find("power of 2"), std::string::npos);
}

TEST_F(CliTest, DevicesAnswersEitherWay) {
  const Result r = run_cli("devices");
  EXPECT_EQ(r.code, 0);
  EXPECT_TRUE(r.output.find("GPU 0:") != std::string::npos ||
              r.output.find("no GPU visible") != std::string::npos ||
              r.output.find("without CUDA") != std::string::npos)
      << r.output;
}

// plan counts every backend a run builds: with the equivalence tracker, its two companions, the
// ADSAM one with its saved W; and --fit then finds about a third of the workers.
TEST_F(CliTest, PlanCountsTheEquivalenceTrackersCompanions) {
  const Result r = run_cli("plan " + tiny() + " --set algorithm.track_adsam=true");
  EXPECT_EQ(r.code, gossamer::kExitOk) << r.output;
  EXPECT_NE(r.output.find("two companions"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("tracker's ADSAM: saved copy of W"), std::string::npos) << r.output;
  const auto workers = [&](const std::string& extra) {
    const Result fit = run_cli("plan " + tiny() + " --fit 141GiB" + extra);
    EXPECT_EQ(fit.code, gossamer::kExitOk) << fit.output;
    return std::stod(fit.output.substr(0, fit.output.find(' ')));
  };
  const double alone = workers(""), tracked = workers(" --set algorithm.track_adsam=true");
  EXPECT_GT(tracked, alone / 3.5);
  EXPECT_LT(tracked, alone / 2.5);
  // Where not even one worker fits, it says so, and what one needs (not "0 workers fit").
  const Result none = run_cli("plan " + tiny() + " --fit 16MiB");
  EXPECT_EQ(none.code, gossamer::kExitOk) << none.output;
  EXPECT_EQ(none.output.rfind("not one worker of ", 0), 0u) << none.output;
  EXPECT_NE(none.output.find("fits in 16MiB: one needs "), std::string::npos) << none.output;
}
