#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "gossamer/error.hpp"
#include "gossamer/sweep.hpp"
#include "helpers.hpp"

using namespace gossamer;
using namespace gossamer::test_util;
using nlohmann::json;
namespace fs = std::filesystem;

namespace {

class SweepTest : public TempDirTest {
 protected:
  std::string sweep_file(const json& grid, const json& points = nullptr) {
    json s = {
        {"name", "t"},
        {"base", tiny_config({{"workers", 3}, {"train", {{"steps", 12}, {"eval_every", 6}}}})}};
    if (!grid.is_null()) s["grid"] = grid;
    if (!points.is_null()) s["points"] = points;
    const std::string path = (m_dir / "sweep.json").string();
    std::ofstream(path) << s.dump();
    return path;
  }
  std::string failure(const std::string& path) {
    try {
      load_sweep(path);
    } catch (const Error& e) {
      EXPECT_EQ(e.kind(), ErrorKind::Config);
      return e.what();
    }
    ADD_FAILURE() << "accepted";
    return "";
  }
  static std::vector<std::vector<std::string>> rows(const std::string& csv) {
    std::vector<std::vector<std::string>> out;
    std::istringstream in(csv);
    for (std::string line; std::getline(in, line);) {
      std::vector<std::string> cells;
      std::istringstream l(line);
      for (std::string cell; std::getline(l, cell, ',');) cells.push_back(cell);
      if (!line.empty() && line.back() == ',') cells.push_back("");
      out.push_back(cells);
    }
    return out;
  }
};

}  // namespace

TEST_F(SweepTest, GridExpandsFirstAxisSlowest) {
  const Sweep s = load_sweep(sweep_file(
      {{"optimizer.batch_size", {4, 8}}, {"topology.name", {"ring", "complete", "star"}}}));
  ASSERT_EQ(s.points.size(), 6u);
  EXPECT_EQ(s.axes, (std::vector<std::string>{"optimizer.batch_size", "topology.name"}));
  EXPECT_EQ(s.points[0].values["optimizer.batch_size"], 4);
  EXPECT_EQ(s.points[2].values["topology.name"], "star");
  EXPECT_EQ(s.points[3].values["optimizer.batch_size"], 8);
  EXPECT_EQ(s.points[5].folder, "point-005");
}

TEST_F(SweepTest, ListAndGridCross) {
  const Sweep s = load_sweep(sweep_file(
      {{"seed", {1, 2}}}, json::array({{{"algorithm.name", "csgd"}},
                                       {{"algorithm.name", "dsgd"}, {"topology.name", "ring"}}})));
  ASSERT_EQ(s.points.size(), 4u);
  EXPECT_EQ(s.points[1].values["seed"], 2);
  EXPECT_EQ(s.points[2].values["algorithm.name"], "dsgd");
  EXPECT_EQ(s.axes, (std::vector<std::string>{"seed", "algorithm.name", "topology.name"}));
}

TEST_F(SweepTest, SetAppliesToEveryPointWithoutBeingAnAxis) {
  const std::string path = sweep_file({{"seed", {1, 2}}});
  json s = json::parse(std::ifstream(path));
  s["set"] = {{"optimizer.lr", 0.05}};
  std::ofstream(path) << s.dump();
  const Sweep sw = load_sweep(path);
  EXPECT_EQ(sw.axes, std::vector<std::string>{"seed"});
  EXPECT_EQ(sw.points[1].overrides.front(), "optimizer.lr=0.05");
  s["set"] = {{"optimizer.lr", -1}};
  std::ofstream(path) << s.dump();
  EXPECT_NE(failure(path).find("optimizer.lr: expected a number >= 0"), std::string::npos);
}

TEST_F(SweepTest, InvalidAxesAreClearErrors) {
  // Named as the sweep file's key, not as a command line's --set.
  EXPECT_NE(failure(sweep_file({{"optimizer.lrr", {0.1}}}))
                .find("sweep.json (set, grid or points): unknown key 'optimizer.lrr'; did you mean "
                      "'optimizer.lr'?"),
            std::string::npos);
  EXPECT_NE(failure(sweep_file({{"workers", {2, "x"}}})).find("workers: expected an integer"),
            std::string::npos);
  EXPECT_NE(
      failure(sweep_file({{"seed", json::array()}})).find("grid.seed: expected a non-empty list"),
      std::string::npos);
  EXPECT_NE(failure(sweep_file(nullptr)).find("expected grid or points"), std::string::npos);
}

TEST_F(SweepTest, RunsWritesCsvAndSkipsFinishedPointsOnRerun) {
  const Sweep s = load_sweep(sweep_file({{"algorithm.name", {"dsgd", "csgd"}}, {"seed", {1, 2}}}));
  const std::string out = (m_dir / "out").string();
  std::ostringstream log;
  ASSERT_EQ(run_sweep(s, out, log), kExitOk);
  const auto table = rows(sweep_csv(s, out));
  ASSERT_EQ(table.size(), 5u);
  const std::vector<std::string> header = table[0];
  EXPECT_EQ(header[0], "point");
  EXPECT_EQ(header[1], "algorithm.name");
  EXPECT_EQ(header[2], "seed");
  EXPECT_EQ(header[3], "status");
  for (size_t r = 1; r < table.size(); ++r) {
    ASSERT_EQ(table[r].size(), header.size()) << "row " << r;
    EXPECT_EQ(table[r][3], "completed");
    EXPECT_EQ(header.back(), "error");
    EXPECT_EQ(table[r].back(), "") << "a completed point has no error";
    for (size_t col = 4; col < header.size() - 2; ++col) {  // the last two: folder, error
      if (header[col] == "half_tr_h_xi" || header[col] == "hessian_trace" ||
          header[col] == "top_eigenvalue") {
        EXPECT_EQ(table[r][col], "") << "no curvature was measured";
        continue;
      }
      EXPECT_NO_THROW(std::stod(table[r][col])) << header[col] << " = '" << table[r][col] << "'";
    }
  }
  std::ifstream written(fs::path(out) / "sweep.csv");
  EXPECT_EQ(std::string((std::istreambuf_iterator<char>(written)), {}), sweep_csv(s, out));

  // Rerun: every finished point is skipped and keeps its results.
  const auto before = fs::last_write_time(fs::path(out) / "point-002" / "summary.json");
  std::ostringstream again;
  ASSERT_EQ(run_sweep(s, out, again), kExitOk);
  EXPECT_EQ(fs::last_write_time(fs::path(out) / "point-002" / "summary.json"), before);
  size_t skipped = 0;
  for (size_t pos = 0; (pos = again.str().find("skipped", pos)) != std::string::npos; ++pos)
    ++skipped;
  EXPECT_EQ(skipped, 4u);

  // A point whose summary is gone but whose checkpoint is there resumes from it.
  fs::remove(fs::path(out) / "point-001" / "summary.json");
  std::ostringstream resumed;
  ASSERT_EQ(run_sweep(s, out, resumed), kExitOk);
  EXPECT_NE(resumed.str().find("resuming from its checkpoint"), std::string::npos);
  EXPECT_TRUE(fs::exists(fs::path(out) / "point-001" / "summary.json"));

  // A diverged point keeps its status and no final figures.
  const Sweep wild = load_sweep(sweep_file({{"optimizer.lr", {1e300}}}));
  std::ostringstream wild_log;
  ASSERT_EQ(run_sweep(wild, (m_dir / "wild").string(), wild_log), kExitOk);
  const auto wild_rows = rows(sweep_csv(wild, (m_dir / "wild").string()));
  ASSERT_EQ(wild_rows.size(), 2u);
  EXPECT_EQ(wild_rows[1][2], "diverged");
  EXPECT_EQ(wild_rows[1][5], "") << "test_acc of a diverged point";

  // Another sweep into the same folder is refused.
  const Sweep other = load_sweep(sweep_file({{"seed", {7}}}));
  EXPECT_THROW(run_sweep(other, out, resumed), Error);
}

// --jobs N: the same points, the same metrics (the CPU backend's results do not depend on the
// thread count), each point's log whole; a failing point among concurrent ones is recorded.
TEST_F(SweepTest, JobsRunPointsAtOnceWithTheSameResults) {
  const Sweep s = load_sweep(
      sweep_file({{"topology.name", {"ring", "exponential"}}, {"seed", {1, 2, 3}}}));
  std::ostringstream one_log, three_log;
  const std::string one = (m_dir / "one").string(), three = (m_dir / "three").string();
  ASSERT_EQ(run_sweep(s, one, one_log, 1), kExitOk) << one_log.str();
  ASSERT_EQ(run_sweep(s, three, three_log, 3), kExitOk) << three_log.str();
  for (const auto& p : s.points)
    EXPECT_EQ(test_util::metrics_without_times(fs::path(three) / p.folder),
              test_util::metrics_without_times(fs::path(one) / p.folder))
        << p.folder;
  EXPECT_NE(three_log.str().find("3 points at once"), std::string::npos) << three_log.str();
  // Each point's lines arrive together: its "point i/6" line is followed by its own banner,
  // which names the sweep's point (not the base config).
  for (size_t i = 1; i <= 6; ++i) {
    const size_t at = three_log.str().find("point " + std::to_string(i) + "/6");
    ASSERT_NE(at, std::string::npos);
    const size_t banner = three_log.str().find("gossamer: ", at);
    EXPECT_EQ(banner, three_log.str().find("\n", at) + 1);
    const std::string named = "gossamer: " + s.name + "/" + s.points[i - 1].folder + " -> ";
    EXPECT_EQ(three_log.str().compare(banner, named.size(), named), 0)
        << three_log.str().substr(banner, 80);
  }
  EXPECT_THROW(run_sweep(s, (m_dir / "zero").string(), one_log, 0), Error);
}

// sweep --jobs on one GPU: the N largest plans (each with the headroom) must fit together.
TEST(SweepPlanTest, ConcurrentPointsMustFitTogether) {
  const int64_t gib = int64_t(1) << 30;
  EXPECT_NO_THROW(check_concurrent_plans({10 * gib, 20 * gib, 5 * gib}, 1, 21 * gib, "GPU"));
  EXPECT_NO_THROW(check_concurrent_plans({10 * gib, 20 * gib, 5 * gib}, 2, 31 * gib, "GPU"));
  try {
    check_concurrent_plans({10 * gib, 20 * gib, 5 * gib}, 2, 30 * gib, "NVIDIA H200");
    FAIL() << "accepted";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::Config);
    const std::string m = e.what();
    EXPECT_NE(m.find("--jobs 2: the 2 largest points need 31"), std::string::npos) << m;
    EXPECT_NE(m.find("NVIDIA H200 has 30"), std::string::npos) << m;
    EXPECT_NE(m.find("lower --jobs"), std::string::npos) << m;
  }
}

// Every config and sweep the repository ships loads: each sweep point's config is validated by
// load_sweep, so a key renamed in the schema, a layer list or a topology that does not fit its
// workers fails here rather than minutes into a study.
TEST(ShippedConfigsTest, EveryConfigAndSweepLoads) {
  int sweeps = 0, runs = 0;
  for (const auto& entry :
       std::filesystem::recursive_directory_iterator(std::string(GOSSAMER_SOURCE_DIR) + "/configs")) {
    if (entry.path().extension() != ".json") continue;
    SCOPED_TRACE(entry.path().string());
    std::ifstream in(entry.path());
    const nlohmann::json j = nlohmann::json::parse(in);
    if (j.contains("grid") || j.contains("points")) {
      const Sweep s = load_sweep(entry.path().string());
      EXPECT_FALSE(s.points.empty());
      ++sweeps;
    } else {
      EXPECT_NO_THROW(load_config_file(entry.path().string(), {}));
      ++runs;
    }
  }
  EXPECT_GE(sweeps, 6);
  EXPECT_GE(runs, 4);
}
