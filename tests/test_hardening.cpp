// The careless and hostile inputs and the faults a run meets: each ends in a clear error and a
// documented exit code, or in success; nothing is lost, nothing half-written is left behind.
// (One test per case a first round of trying the CLI found wrong.)
#include <gtest/gtest.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <csignal>
#include <filesystem>
#include <fstream>
#include <new>
#include <nlohmann/json.hpp>
#include <numeric>
#include <set>
#include <sstream>

#include "gossamer/dataset.hpp"
#include "gossamer/error.hpp"
#include "gossamer/partition.hpp"
#include "gossamer/sweep.hpp"
#include "gossamer/trainer.hpp"
#include "helpers.hpp"
#include "parallel.hpp"
#include "sinks.hpp"

using namespace gossamer;
using namespace gossamer::test_util;
using nlohmann::json;
namespace fs = std::filesystem;

namespace {

class HardeningTest : public TempDirTest {
 protected:
  std::string write(const std::string& name, const std::string& text) {
    const std::string path = (m_dir / name).string();
    std::ofstream(path) << text;
    return path;
  }
  std::string tiny_file() { return write("cfg.json", tiny_config().dump()); }
  json read(const fs::path& p) {
    std::ifstream in(p);
    return json::parse(in);
  }
};

std::string slurp(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

}  // namespace

// 1. Dirichlet with alpha <= 1e-6 crashed (0/0 cut points). Every draw now ends in a partition
// that covers the data with no empty worker, or in a config error that names alpha.
TEST_F(HardeningTest, DirichletWithTinyAlphaPartitionsOrRefusesNeverCrashes) {
  Sim s = make_sim({}, false);
  for (double alpha : {1e-6, 1e-12, 1e-300}) {
    for (int m : {2, 4, 16}) {
      PartitionConfig pc;
      pc.kind = "dirichlet";
      pc.alpha = alpha;
      try {
        const Partition p = make_partition(pc, s->data.train, m, 3);
        ASSERT_EQ(p.offsets.size(), size_t(m) + 1);
        for (int k = 0; k < m; ++k) EXPECT_GT(p.shard_size(k), 0) << "alpha " << alpha;
        std::vector<int64_t> all = p.indices;
        std::sort(all.begin(), all.end());
        std::vector<int64_t> every(s->data.train.n);
        std::iota(every.begin(), every.end(), 0);
        EXPECT_EQ(all, every) << "every sample exactly once";
      } catch (const Error& e) {
        EXPECT_EQ(e.kind(), ErrorKind::Config);
        EXPECT_NE(std::string(e.what()).find("partition.alpha"), std::string::npos) << e.what();
      }
    }
  }
}

// 2. An exception thrown inside an OpenMP loop (bad_alloc in the gradient pass) terminated the
// process; it now leaves the loop and reaches the caller.
TEST(ParallelForTest, AnExceptionInTheLoopIsRethrownAfterIt) {
  std::atomic<int> ran{0};
  const auto body = [&](int64_t i) {
    if (i == 3) throw std::bad_alloc();
    ++ran;
  };
  EXPECT_THROW(parallel_for(1000, body), std::bad_alloc);
  EXPECT_LT(ran.load(), 1000);
}

// 2 and 8. A batch, a topology or a model that cannot fit is refused before it is allocated,
// with the amount and the knob, exit 1, under an address-space limit of 4 GB.
TEST_F(HardeningTest, WhatCannotFitInHostMemoryIsRefusedWithTheAmountAndTheKnob) {
  const std::string limit = "ulimit -v 4000000; ";
  const std::string out = (m_dir / "big").string();
  const struct {
    std::string args, knob;
  } cases[] = {
      {"run " + tiny_file() + " --backend cpu --set optimizer.batch_size=16777216 --set workers=16 --out " + out,
       "optimizer.batch_size"},
      {"run " + tiny_file() + " --backend cpu --set model.hidden=[100000,100000] --out " + out,
       "model size"},
      {"topology --name complete --workers 100000", "workers"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.args);
    const Result r = run_cli(c.args, limit);
    EXPECT_EQ(r.code, kExitRuntime) << r.output;
    EXPECT_NE(r.output.find("GiB of host memory"), std::string::npos) << r.output;
    EXPECT_NE(r.output.find("; lower "), std::string::npos) << r.output;
    EXPECT_NE(r.output.find(c.knob), std::string::npos) << r.output;
    EXPECT_EQ(r.output.find("terminate called"), std::string::npos) << r.output;
    EXPECT_FALSE(fs::exists(out)) << "a run refused at setup leaves no folder";
  }
}

// 2. Out of memory part-way (after the folder is the run's): a message that says where, and
// summary.json with status "failed".
TEST_F(HardeningTest, OutOfMemoryMidRunNamesThePhaseAndRecordsTheFailure) {
  RunOptions opt;
  opt.after_step = [](Backend&, int64_t done) {
    if (done == 4) throw std::bad_alloc();
  };
  std::ostringstream log;
  const std::string dir = (m_dir / "oom").string();
  try {
    run_training(load_config(tiny_config(), {}, "t"), dir, log, opt);
    FAIL() << "expected the failure to reach the caller";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("out of host memory while training step 3"),
              std::string::npos)
        << e.what();
  }
  const json s = read(fs::path(dir) / "summary.json");
  EXPECT_EQ(s["status"], "failed");
  EXPECT_EQ(s["steps_done"], 4);
  EXPECT_NE(s["error"].get<std::string>().find("out of host memory"), std::string::npos);
}

// 3. train.epochs = 1e19 silently ran 1 step (the step count overflowed).
TEST_F(HardeningTest, EpochsBeyondWhatARunCanCountAreRefused) {
  for (const char* epochs : {"1e19", "1e300"}) {
    const Result r = run_cli("run " + tiny_file() + " --set train.epochs=" + epochs + " --out " +
                             (m_dir / "e").string());
    EXPECT_EQ(r.code, kExitUsage) << r.output;
    EXPECT_NE(r.output.find("train.epochs"), std::string::npos) << r.output;
    EXPECT_FALSE(fs::exists(m_dir / "e"));
  }
}

// 4. A name that leaves runs/, nests folders or holds a NUL.
TEST_F(HardeningTest, RunNamesAreOneFolderName) {
  for (const std::string& name : std::vector<std::string>{"../../escape", "a/b",
                                                          std::string("a\0b", 3), "..", "", "x\ny"}) {
    try {
      load_config(tiny_config({{"name", name}}), {}, "cfg.json");
      ADD_FAILURE() << "accepted " << json(name).dump();
    } catch (const Error& e) {
      EXPECT_EQ(e.kind(), ErrorKind::Config);
      EXPECT_NE(std::string(e.what()).find("cfg.json: name"), std::string::npos) << e.what();
    }
  }
  EXPECT_NO_THROW(load_config(tiny_config({{"name", "my run 2.v1"}}), {}, "cfg.json"));
}

// 5. Runs of one config started in the same second all get their own folder.
TEST_F(HardeningTest, RunsStartedInTheSameSecondGetTheirOwnFolders) {
  const fs::path cwd = fs::current_path();
  fs::current_path(m_dir);
  std::set<std::string> folders;
  std::ostringstream log;
  for (int i = 0; i < 3; ++i) {
    const RunResult r = run_training(
        load_config(tiny_config({{"train", {{"steps", 2}}}}), {}, "t"), "", log);
    EXPECT_EQ(r.status, "completed") << log.str();
    folders.insert(r.out_dir);
  }
  fs::current_path(cwd);
  EXPECT_EQ(folders.size(), 3u);
}

// A diverged run keeps no checkpoint: --resume says it diverged (exit 3, nothing written) and
// `curvature` says why there is nothing to measure, instead of "cannot open the checkpoint".
TEST_F(HardeningTest, ADivergedRunIsNamedAsSuchWhenResumedOrMeasured) {
  const std::string dir = (m_dir / "diverged").string();
  ASSERT_EQ(run_cli("run " + tiny_file() + " --set optimizer.lr=1e300 --out " + dir).code,
            kExitDiverged);
  const std::string summary = slurp(fs::path(dir) / "summary.json");
  Result r = run_cli("run --resume " + dir);
  EXPECT_EQ(r.code, kExitDiverged) << r.output;
  EXPECT_NE(r.output.find("is a diverged run (NaN or Inf in the "), std::string::npos) << r.output;
  EXPECT_EQ(slurp(fs::path(dir) / "summary.json"), summary);
  EXPECT_FALSE(fs::exists(fs::path(dir) / "checkpoint.bin"));
  r = run_cli("curvature " + dir);
  EXPECT_EQ(r.code, kExitRuntime) << r.output;
  EXPECT_NE(r.output.find("diverged run (NaN or Inf"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("keeps no checkpoint"), std::string::npos) << r.output;
}

// 6. --resume of a completed run rewrote its checkpoint and summary.
TEST_F(HardeningTest, ResumingACompletedRunWritesNothing) {
  const std::string dir = (m_dir / "done").string();
  ASSERT_EQ(run_cli("run " + tiny_file() + " --out " + dir).code, kExitOk);
  const std::string summary = slurp(fs::path(dir) / "summary.json"),
                    checkpoint = slurp(fs::path(dir) / "checkpoint.bin");
  const auto stamp = fs::last_write_time(fs::path(dir) / "checkpoint.bin");
  const Result r = run_cli("run --resume " + dir);
  EXPECT_EQ(r.code, kExitOk) << r.output;
  EXPECT_NE(r.output.find("nothing to resume"), std::string::npos) << r.output;
  EXPECT_EQ(slurp(fs::path(dir) / "summary.json"), summary);
  EXPECT_EQ(slurp(fs::path(dir) / "checkpoint.bin"), checkpoint);
  EXPECT_EQ(fs::last_write_time(fs::path(dir) / "checkpoint.bin"), stamp);
}

// 7. A directory given as the config file.
TEST_F(HardeningTest, ADirectoryAsTheConfigIsNamed) {
  for (const std::string cmd : {"run ", "sweep ", "plan "}) {
    const Result r = run_cli(cmd + m_dir.string());
    EXPECT_EQ(r.code, kExitUsage) << r.output;
    EXPECT_NE(r.output.find(m_dir.string() + ": is a directory"), std::string::npos) << r.output;
  }
}

// 9. A key twice in one object was accepted silently (the last one won).
TEST_F(HardeningTest, DuplicateKeysAreRefused) {
  const Result r = run_cli("run " + write("dup.json", R"({"workers": 4, "workers": 8})"));
  EXPECT_EQ(r.code, kExitUsage) << r.output;
  EXPECT_NE(r.output.find("key 'workers' appears twice"), std::string::npos) << r.output;
  const Result nested = run_cli(
      "plan " + write("dup2.json", R"({"optimizer": {"lr": 0.1, "batch_size": 4, "lr": 1}})"));
  EXPECT_EQ(nested.code, kExitUsage) << nested.output;
  EXPECT_NE(nested.output.find("key 'lr' appears twice"), std::string::npos) << nested.output;
  // The same key in two objects is fine.
  EXPECT_EQ(run_cli("plan " + write("ok.json", R"({"model": {"hidden": [4]}, "data": {"synthetic": {"features": 4}}})")).code,
            kExitOk);
}

// 10. SIGTERM (a batch scheduler's) ended the run with no checkpoint and no summary.
TEST_F(HardeningTest, SigtermStopsTheRunLikeCtrlC) {
  const auto dir = m_dir / "term";
  const Result r =
      run_cli("run " + tiny_file() + " --set train.steps=100000000 --set train.eval_every=500 --out " +
                  dir.string(),
              "timeout --preserve-status -s TERM 2 ");
  EXPECT_EQ(r.code, kExitInterrupted) << r.output;
  EXPECT_EQ(read(dir / "summary.json")["status"], "interrupted");
  EXPECT_TRUE(fs::exists(dir / "checkpoint.bin"));
  const Result again = run_cli("run --resume " + dir.string(), "timeout --preserve-status -s TERM 2 ");
  EXPECT_EQ(again.code, kExitInterrupted) << again.output;
  EXPECT_NE(again.output.find("resumed at step"), std::string::npos) << again.output;
}

// 11. A full disk: the temporary file goes, the target keeps its old content.
TEST_F(HardeningTest, AFailedAtomicWriteLeavesNoTemporaryFile) {
  if (!fs::exists("/dev/full")) GTEST_SKIP() << "no /dev/full here";
  const fs::path target = m_dir / "summary.json";
  std::ofstream(target) << "old";
  fs::create_symlink("/dev/full", m_dir / "summary.json.tmp");  // writes fail with ENOSPC
  try {
    write_file_atomic(target.string(), std::string(1 << 20, 'x'));
    FAIL() << "expected a write error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("disk full"), std::string::npos) << e.what();
  }
  EXPECT_FALSE(fs::exists(fs::symlink_status(m_dir / "summary.json.tmp")));
  EXPECT_EQ(slurp(target), "old");
}

// 11. A full disk in the middle of a metrics line: the file is cut back to its whole lines.
TEST_F(HardeningTest, AMetricsLineIsWrittenWholeOrNotAtAll) {
  const fs::path path = m_dir / "metrics.jsonl";
  MetricsWriter writer(path.string());
  writer.write({{"step", 0}});
  const auto size = fs::file_size(path);
  struct rlimit old {};
  getrlimit(RLIMIT_FSIZE, &old);
  const auto old_handler = std::signal(SIGXFSZ, SIG_IGN);
  struct rlimit small = old;
  small.rlim_cur = size + 10;  // room for part of the next line only
  setrlimit(RLIMIT_FSIZE, &small);
  EXPECT_THROW(writer.write({{"step", 1}, {"padding", std::string(200, 'p')}}), Error);
  setrlimit(RLIMIT_FSIZE, &old);
  std::signal(SIGXFSZ, old_handler);
  EXPECT_EQ(fs::file_size(path), size);
  std::ifstream in(path);
  for (std::string line; std::getline(in, line);) EXPECT_NO_THROW(json::parse(line)) << line;
}

// A long pause between steps (an evaluation, a curvature measurement) is named on the terminal's
// bar, never left as a bar that looks stuck; off a terminal only the evaluations' lines appear.
TEST(ProgressTest, TheBarNamesWhatAPauseIsDoing) {
  std::ostringstream tty;
  Progress bar(tty, true, 100);
  bar.step(50, 1.0);
  EXPECT_NE(tty.str().find("] step 50/100  ETA 1s"), std::string::npos) << tty.str();
  bar.busy(50, "measuring curvature");
  const std::string last = tty.str().substr(tty.str().rfind('\r'));
  EXPECT_EQ(last, "\r[===============               ] step 50/100  measuring curvature...\033[K");
  bar.step(51, 1.01);  // within the 0.1 s throttle, and still redrawn over the note
  EXPECT_NE(tty.str().substr(tty.str().rfind('\r')).find("step 51/100  ETA "), std::string::npos);
  std::ostringstream pipe;
  Progress lines(pipe, false, 100);
  lines.step(10, 1.0);
  lines.busy(10, "evaluating");
  EXPECT_EQ(pipe.str(), "");
  lines.eval({{"step", 10}, {"test_acc", 0.5}, {"wall_time_s", 1.0}}, 1.0);
  const std::string printed = pipe.str();
  EXPECT_EQ(printed.rfind("step 10/100 | train_loss - | test_loss - | test_acc 0.5000", 0), 0u)
      << printed;
  EXPECT_EQ(std::count(printed.begin(), printed.end(), '\n'), 1) << printed;
}

// 11. A failure once the folder is the run's (here a write error) leaves summary.json "failed".
TEST_F(HardeningTest, AFailedRunLeavesASummarySayingSo) {
  RunOptions opt;
  opt.after_step = [](Backend&, int64_t done) {
    if (done == 6) throw runtime_error("metrics.jsonl: write failed (disk full?)");
  };
  std::ostringstream log;
  const std::string dir = (m_dir / "failed").string();
  EXPECT_THROW(run_training(load_config(tiny_config(), {}, "t"), dir, log, opt), Error);
  const json s = read(fs::path(dir) / "summary.json");
  EXPECT_EQ(s["status"], "failed");
  EXPECT_EQ(s["error"], "metrics.jsonl: write failed (disk full?)");
  EXPECT_EQ(s["steps_done"], 6);
}

// 13. --out "" silently meant the default folder; two budgets by --set silently let steps win.
TEST_F(HardeningTest, AnEmptyOutAndTwoBudgetsAreRefused) {
  const Result empty = run_cli("run " + tiny_file() + " --out ''");
  EXPECT_EQ(empty.code, kExitUsage) << empty.output;
  EXPECT_NE(empty.output.find("--out: empty"), std::string::npos) << empty.output;
  const Result both = run_cli("run " + tiny_file() + " --set train.epochs=0.5 --set train.steps=7 --out " +
                              (m_dir / "b").string());
  EXPECT_EQ(both.code, kExitUsage) << both.output;
  EXPECT_NE(both.output.find("give one of them"), std::string::npos) << both.output;
}

// 14. A data error in one sweep point stopped the whole sweep; now the point is recorded as
// failed with its message, the others run, and the sweep exits 1.
TEST_F(HardeningTest, ASweepPointThatFailsIsRecordedAndTheOthersRun) {
  json base = tiny_config({{"train", {{"steps", 4}}}});
  const std::string sweep_path = write(
      "sweep.json",
      json{{"name", "s"},
           {"base", base},
           {"points",
            {{{"data.dataset", "idx"}, {"data.path", (m_dir / "nowhere").string()}},
             {{"data.dataset", "synthetic"}, {"data.path", ""}}}}}
          .dump());
  const std::string out = (m_dir / "sweep-out").string();
  const Result r = run_cli("sweep " + sweep_path + " --out " + out);
  EXPECT_EQ(r.code, kExitRuntime) << r.output;
  std::ifstream csv(fs::path(out) / "sweep.csv");
  std::string header, first, second;
  std::getline(csv, header);
  std::getline(csv, first);
  std::getline(csv, second);
  EXPECT_NE(header.find(",error"), std::string::npos) << header;
  EXPECT_NE(first.find(",failed,"), std::string::npos) << first;
  EXPECT_NE(first.find("no such file"), std::string::npos) << first;
  EXPECT_NE(second.find(",completed,"), std::string::npos) << second;
}
