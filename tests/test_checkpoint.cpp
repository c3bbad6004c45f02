#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "gossamer/checkpoint.hpp"
#include "gossamer/error.hpp"
#include "gossamer/trainer.hpp"
#include "helpers.hpp"

using namespace gossamer;
using namespace gossamer::test_util;
using nlohmann::json;
namespace fs = std::filesystem;

namespace {

// Momentum, a time-varying topology and curvature in the metrics: all must survive a resume.
json resumable_config() {
  return tiny_config(
      {{"workers", 5},
       {"optimizer", {{"momentum", 0.9}, {"schedule", "cosine"}, {"warmup_steps", 5}}},
       {"topology", {{"name", "one_peer_exponential"}}},
       {"train", {{"steps", 60}, {"eval_every", 10}}},
       {"curvature",
        {{"every", 20}, {"probes", 4}, {"topk", 2}, {"lanczos_steps", 6}, {"samples", 64}}}});
}

std::string read_bytes(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), {});
}

void write_bytes(const fs::path& p, const std::string& bytes) {
  std::ofstream(p, std::ios::binary) << bytes;
}

class CheckpointTest : public TempDirTest {
 protected:
  RunResult train(const fs::path& dir, RunOptions options = {}) {
    std::ostringstream log;
    const RunConfig c = options.resume ? load_config_file((dir / "config.json").string(), {})
                                       : load_config(resumable_config(), {}, "test");
    return run_training(c, dir.string(), log, options);
  }
  std::string refusal(const fs::path& file) {
    try {
      read_checkpoint(file.string());
    } catch (const Error& e) {
      return e.what();
    }
    ADD_FAILURE() << "accepted " << file;
    return "";
  }
};

}  // namespace

TEST_F(CheckpointTest, RoundTripKeepsEveryBit) {
  Checkpoint c;
  c.step = 42;
  c.config = load_config(tiny_config(), {}, "t").resolved;
  c.trainer = {{"best_test_acc", 0.5}};
  c.state.weights = {1.0 / 3, -2.5e-300, 7.0, 0.1, 1e300, -0.0, 3, 4};
  c.state.weights.resize(size_t(c.config["workers"].get<int>()) * 2, 0.25);
  c.state.momentum = c.state.weights;
  c.state.momentum[0] = 9;
  c.state.loss_sum = 1.0 / 7;
  c.state.loss_steps = 3;
  const fs::path file = m_dir / "ck.bin";
  write_checkpoint(file.string(), c);
  const Checkpoint r = read_checkpoint(file.string());
  EXPECT_EQ(r.step, 42);
  EXPECT_EQ(r.config, c.config);
  EXPECT_EQ(r.trainer, c.trainer);
  EXPECT_EQ(r.state.weights, c.state.weights);
  EXPECT_EQ(r.state.momentum, c.state.momentum);
  EXPECT_EQ(r.state.loss_sum, c.state.loss_sum);
  EXPECT_EQ(r.state.loss_steps, 3);
  EXPECT_FALSE(fs::exists(m_dir / "ck.bin.tmp"));
}

TEST_F(CheckpointTest, CorruptCheckpointsAreRefused) {
  ASSERT_EQ(train(m_dir / "run").exit_code, kExitOk);
  const std::string good = read_bytes(m_dir / "run" / "checkpoint.bin");
  std::string bad = good;
  bad[0] = 'X';
  write_bytes(m_dir / "magic", bad);
  EXPECT_NE(refusal(m_dir / "magic").find("not a gossamer checkpoint"), std::string::npos);
  bad = good;
  bad[8] = 9;  // version 9
  write_bytes(m_dir / "version", bad);
  EXPECT_NE(refusal(m_dir / "version").find("format version 9"), std::string::npos);
  bad = good;
  bad[good.size() / 2] ^= 0x10;
  write_bytes(m_dir / "flipped", bad);
  EXPECT_NE(refusal(m_dir / "flipped").find("checksum mismatch"), std::string::npos);
  write_bytes(m_dir / "cut", good.substr(0, good.size() - 100));
  EXPECT_NE(refusal(m_dir / "cut").find("checksum mismatch"), std::string::npos);
  write_bytes(m_dir / "tiny", good.substr(0, 10));
  EXPECT_FALSE(refusal(m_dir / "tiny").empty());
}

TEST_F(CheckpointTest, ResumeRefusesAChangedConfig) {
  const fs::path dir = m_dir / "run";
  RunOptions stop;
  stop.stop_after = 20;
  ASSERT_EQ(train(dir, stop).exit_code, kExitInterrupted);
  json cfg = json::parse(read_bytes(dir / "config.json"));
  cfg["optimizer"]["lr"] = 0.3;
  write_bytes(dir / "config.json", cfg.dump());
  RunOptions resume;
  resume.resume = true;
  try {
    train(dir, resume);
    FAIL() << "resumed with another config";
  } catch (const Error& e) {
    EXPECT_NE(
        std::string(e.what()).find("does not match the config the checkpoint was written with"),
        std::string::npos);
  }
}

TEST_F(CheckpointTest, ResumedRunIsBitIdenticalToAnUninterruptedOne) {
  ASSERT_EQ(train(m_dir / "whole").exit_code, kExitOk);
  RunOptions stop;
  stop.stop_after = 25;  // between evaluations: the training-loss window is mid-way
  const RunResult first = train(m_dir / "parts", stop);
  ASSERT_EQ(first.exit_code, kExitInterrupted);
  EXPECT_EQ(first.summary["steps_done"], 25);
  RunOptions resume;
  resume.resume = true;
  const RunResult second = train(m_dir / "parts", resume);
  ASSERT_EQ(second.exit_code, kExitOk);
  const auto whole = metrics_without_times(m_dir / "whole"),
             parts = metrics_without_times(m_dir / "parts");
  ASSERT_EQ(whole.size(), 7u);  // steps 0, 10, ..., 60
  EXPECT_EQ(parts, whole);
  EXPECT_NE(whole[2].find("curvature"), std::string::npos);
  EXPECT_EQ(read_checkpoint((m_dir / "whole" / "checkpoint.bin").string()).state.weights,
            read_checkpoint((m_dir / "parts" / "checkpoint.bin").string()).state.weights);
}
