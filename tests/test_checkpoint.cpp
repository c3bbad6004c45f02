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

// W and the momentum travel in the backend's own precision, bit for bit: float32 and float64
// backends, awkward values (1/3, subnormal-near, huge, -0) included.
TEST_F(CheckpointTest, RoundTripKeepsEveryBit) {
  for (const bool float64 : {false, true}) {
    SCOPED_TRACE(float64 ? "float64" : "float32");
    Sim a = make_sim({{"optimizer", {{"momentum", 0.9}}}}, float64),
        b = make_sim({{"optimizer", {{"momentum", 0.9}}}}, float64);
    BackendState st = a->backend->save_state();
    const double values[] = {1.0 / 3, -2.5e-30, 7.0, 0.1, 1e30, -0.0, 3, 4};
    for (size_t i = 0; i < st.weights.size(); ++i) st.weights[i] = values[i % 8] * double(i + 1);
    st.momentum = st.weights;
    st.momentum[0] = 9;
    st.loss = {1.0 / 7, 3, -1};
    a->backend->load_state(st);
    Checkpoint c;
    c.step = 42;
    c.config = a->config.resolved;
    c.trainer = {{"best_test_acc", 0.5}};
    c.loss = a->backend->loss_window();
    const fs::path file = m_dir / "ck.bin";
    write_checkpoint(file.string(), c, *a->backend);
    EXPECT_FALSE(fs::exists(m_dir / "ck.bin.tmp"));
    const Checkpoint r = read_checkpoint(file.string());
    EXPECT_EQ(r.step, 42);
    EXPECT_EQ(r.config, c.config);
    EXPECT_EQ(r.trainer, c.trainer);
    EXPECT_EQ(r.scalar_bytes, float64 ? 8 : 4);
    EXPECT_TRUE(r.momentum);
    EXPECT_EQ(fs::file_size(file), r.data_offset + 2 * r.workers * r.dim * r.scalar_bytes + 4)
        << "the arrays in the backend's precision, nothing more";
    load_checkpoint(file.string(), r, *b->backend);
    const BackendState x = a->backend->save_state(), y = b->backend->save_state();
    EXPECT_EQ(y.weights, x.weights);
    EXPECT_EQ(y.momentum, x.momentum);
    EXPECT_EQ(y.loss.sum, 1.0 / 7);
    EXPECT_EQ(y.loss.steps, 3);
  }
}

// A checkpoint of a float64 run cannot be loaded into a float32 backend.
TEST_F(CheckpointTest, ABackendOfAnotherPrecisionIsRefused) {
  Sim a = make_sim({}, true), b = make_sim({}, false);
  Checkpoint c;
  c.config = a->config.resolved;
  c.trainer = json::object();
  write_checkpoint((m_dir / "ck.bin").string(), c, *a->backend);
  const Checkpoint r = read_checkpoint((m_dir / "ck.bin").string());
  try {
    load_checkpoint((m_dir / "ck.bin").string(), r, *b->backend);
    FAIL() << "loaded float64 rows into a float32 backend";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("float64"), std::string::npos) << e.what();
  }
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
  bad[8] = 1;  // an older gossamer's format is named
  write_bytes(m_dir / "old", bad);
  EXPECT_NE(refusal(m_dir / "old").find("format version 1 (W as float64"), std::string::npos);
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
  // The final weights too: both files' arrays (everything after the header) are identical.
  const Checkpoint a = read_checkpoint((m_dir / "whole" / "checkpoint.bin").string()),
                   b = read_checkpoint((m_dir / "parts" / "checkpoint.bin").string());
  const std::string fa = read_bytes(m_dir / "whole" / "checkpoint.bin"),
                    fb = read_bytes(m_dir / "parts" / "checkpoint.bin");
  EXPECT_EQ(fa.substr(a.data_offset, fa.size() - a.data_offset - 4),
            fb.substr(b.data_offset, fb.size() - b.data_offset - 4));
}
