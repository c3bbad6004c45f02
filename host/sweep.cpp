#include "gossamer/sweep.hpp"

#include <omp.h>

#include <algorithm>
#include <filesystem>
#include <map>
#include <fstream>
#include <mutex>
#include <sstream>
#include <thread>

#include "gossamer/checkpoint.hpp"
#include "gossamer/devices.hpp"
#include "gossamer/simulation.hpp"
#include "gossamer/error.hpp"
#include "gossamer/trainer.hpp"
#include "sinks.hpp"

namespace gossamer {

using nlohmann::json;
using nlohmann::ordered_json;
namespace fs = std::filesystem;

namespace {

std::string point_folder(size_t i) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "point-%03zu", i);
  return buf;
}

// RFC 4180: a field with a comma, quote or line break is quoted, its quotes doubled.
std::string csv_field(const json& v) {
  if (v.is_null()) return "";
  const std::string s = v.is_string() ? v.get<std::string>() : v.dump();
  if (s.find_first_of(",\"\r\n") == std::string::npos) return s;
  std::string quoted = "\"";
  for (char ch : s) quoted += ch == '"' ? std::string("\"\"") : std::string(1, ch);
  return quoted + "\"";
}

json at(const json& j, const std::vector<const char*>& path) {
  const json* p = &j;
  for (const char* key : path) {
    if (!p->is_object() || !p->contains(key)) return nullptr;
    p = &(*p)[key];
  }
  return *p;
}

}  // namespace

Sweep load_sweep(const std::string& path) {
  const ordered_json s = read_ordered_json_file(path, "sweep file");
  if (!s.is_object()) throw config_error(path + ": the sweep file is not a JSON object");
  for (const auto& [key, value] : s.items())
    if (key != "name" && key != "base" && key != "set" && key != "grid" && key != "points")
      throw config_error(path + ": unknown key '" + key +
                         "' (a sweep has name, base, set, grid, points)");
  Sweep sweep;
  sweep.name = s.value("name", fs::path(path).stem().string());
  if (!s.contains("base"))
    throw config_error(path +
                       ": base: expected a config file name or an inline config, found nothing");
  if (s["base"].is_string()) {
    const fs::path base = fs::path(path).parent_path() / s["base"].get<std::string>();
    sweep.base = read_json_file(base.string(), "base config");
  } else if (s["base"].is_object()) {
    sweep.base = json::parse(s["base"].dump());
  } else {
    throw config_error(path + ": base: expected a config file name or an inline config, found " +
                       s["base"].dump());
  }

  // Fixed overrides of every point (not axes).
  std::vector<std::string> fixed;
  if (s.contains("set")) {
    if (!s["set"].is_object())
      throw config_error(path + ": set: expected an object of key path -> value");
    for (const auto& [k, v] : s["set"].items()) fixed.push_back(k + "=" + v.dump());
  }

  // The grid's combinations, first axis slowest.
  std::vector<ordered_json> combos{ordered_json::object()};
  if (s.contains("grid")) {
    if (!s["grid"].is_object() || s["grid"].empty())
      throw config_error(path + ": grid: expected an object of key path -> list of values");
    for (const auto& [key, values] : s["grid"].items()) {
      if (!values.is_array() || values.empty())
        throw config_error(path + ": grid." + key +
                           ": expected a non-empty list of values, found " + values.dump());
      sweep.axes.push_back(key);
      std::vector<ordered_json> next;
      for (const auto& c : combos)
        for (const auto& v : values) {
          ordered_json n = c;
          n[key] = v;
          next.push_back(n);
        }
      combos = next;
    }
  }
  std::vector<ordered_json> listed{ordered_json::object()};
  if (s.contains("points")) {
    if (!s["points"].is_array() || s["points"].empty())
      throw config_error(path + ": points: expected a non-empty list of objects {key path: value}");
    listed.clear();
    for (const auto& p : s["points"]) {
      if (!p.is_object())
        throw config_error(path + ": points: expected objects {key path: value}, found " +
                           p.dump());
      for (const auto& [key, v] : p.items())
        if (std::find(sweep.axes.begin(), sweep.axes.end(), key) == sweep.axes.end())
          sweep.axes.push_back(key);
      listed.push_back(p);
    }
  }
  if (!s.contains("grid") && !s.contains("points"))
    throw config_error(path + ": expected grid or points (or both)");

  sweep.fixed = fixed;
  for (const auto& p : listed)
    for (const auto& g : combos) {
      SweepPoint point;
      point.values = p;
      for (const auto& [k, v] : g.items()) point.values[k] = v;
      point.overrides = fixed;
      for (const auto& [k, v] : point.values.items()) point.overrides.push_back(k + "=" + v.dump());
      point.folder = point_folder(sweep.points.size());
      // Validate now: a bad axis key or value fails before any run starts.
      load_config(sweep.base, point.overrides, path + " (" + point.folder + ")",
                  path + " (set, grid or points)");
      sweep.points.push_back(std::move(point));
    }
  return sweep;
}

std::string sweep_csv(const Sweep& sweep, const std::string& out_dir) {
  std::ostringstream o;
  o << "point";
  for (const auto& a : sweep.axes) o << "," << a;
  o << ",status,steps,total_batch,test_acc,test_loss,train_loss,train_loss_wbar,generalization_gap,"
       "consensus_distance,"
       "half_tr_h_xi,hessian_trace,top_eigenvalue,wall_time_s,folder,error\n";
  for (const auto& p : sweep.points) {
    json summary;
    const fs::path file = fs::path(out_dir) / p.folder / "summary.json";
    if (fs::exists(file)) summary = read_json_file(file.string(), "summary");
    // Only a completed point has final figures; a diverged or interrupted one leaves them empty.
    const json final_line =
        at(summary, {"status"}) == "completed" ? at(summary, {"final"}) : json(nullptr);
    o << p.folder;
    for (const auto& a : sweep.axes)
      o << "," << (p.values.contains(a) ? csv_field(json::parse(p.values[a].dump())) : "");
    json top = at(final_line, {"curvature", "top_eigenvalues", "values"});
    o << "," << csv_field(summary.is_null() ? json("pending") : at(summary, {"status"})) << ","
      << csv_field(at(summary, {"steps_done"})) << "," << csv_field(at(summary, {"total_batch"}))
      << "," << csv_field(at(final_line, {"test_acc"})) << ","
      << csv_field(at(final_line, {"test_loss"})) << ","
      << csv_field(at(final_line, {"train_loss"})) << ","
      << csv_field(at(final_line, {"train_loss_wbar"})) << ","
      << csv_field(at(final_line, {"generalization_gap"})) << ","
      << csv_field(at(final_line, {"consensus_distance"})) << ","
      << csv_field(at(final_line, {"curvature", "half_tr_h_xi"})) << ","
      << csv_field(at(final_line, {"curvature", "trace", "value"})) << ","
      << csv_field(top.is_array() && !top.empty() ? top[0] : json(nullptr)) << ","
      << csv_field(at(summary, {"wall_time_s"})) << "," << p.folder << ","
      << csv_field(at(summary, {"error"})) << "\n";
  }
  return o.str();
}

namespace {

// sweep --jobs on a GPU: the points that will run on the CUDA backend (backend "cuda", or "auto"
// for a float32 unsharded run where a GPU is visible) must fit on it `jobs` at a time; each
// data set's shapes are read once.
void check_points_fit_together(const Sweep& sweep, int jobs) {
  const DeviceList gpus = list_devices();
  if (gpus.devices.empty()) return;
  std::map<std::string, DataSplit> data;
  std::vector<int64_t> totals;
  for (const auto& p : sweep.points) {
    const RunConfig c = load_config(sweep.base, p.overrides, p.folder);
    const bool cuda = c.backend == "cuda" ||
                      (c.backend == "auto" && c.precision == "float32" && c.shards == 1);
    if (!cuda) continue;
    const std::string key = c.resolved["data"].dump();
    if (!data.count(key)) data[key] = load_data(c.data, c.seed);
    const DataSplit& d = data[key];
    const ModelSpec model = model_for(c, d);
    totals.push_back(run_plan(run_backends(c, model, d), c.workers).total());
  }
  check_concurrent_plans(totals, jobs, int64_t(gpus.devices[0].free_memory), gpus.devices[0].name);
}

struct PointResult {
  int exit_code = kExitOk;
  bool failed = false;
};

// One point: skipped when finished, resumed from its checkpoint when interrupted, else started.
// A point that fails (bad data, no memory, a full disk) is recorded and the sweep goes on.
PointResult run_point(const Sweep& sweep, size_t i, const std::string& out_dir, std::ostream& log) {
  const SweepPoint& p = sweep.points[i];
  const fs::path dir = fs::path(out_dir) / p.folder;
  log << "sweep " << sweep.name << ": point " << i + 1 << "/" << sweep.points.size() << " "
      << p.values.dump() << "\n";
  std::string status;
  if (fs::exists(dir / "summary.json"))
    status = read_json_file((dir / "summary.json").string(), "summary").value("status", "");
  if (status == "completed" || status == "diverged") {
    log << "  " << status << " before; skipped\n";
    return {};
  }
  RunOptions options;
  options.label = sweep.name + "/" + p.folder;  // the config's name is the base config's
  RunConfig config = load_config(sweep.base, p.overrides, p.folder);
  if (fs::exists(dir / "checkpoint.bin")) {
    options.resume = true;
    config = load_config_file((dir / "config.json").string(), {});
    log << "  resuming from its checkpoint\n";
  } else if (fs::exists(dir)) {
    fs::remove_all(dir);  // a start that left no checkpoint: nothing to keep
  }
  PointResult out;
  try {
    out.exit_code = run_training(config, dir.string(), log, options).exit_code;
  } catch (const std::exception& e) {
    log << "  failed: " << e.what() << "\n";
    out.failed = true;
    std::error_code ec;
    fs::create_directories(dir, ec);
    const fs::path summary = dir / "summary.json";
    const json prior = fs::exists(summary) ? read_json_file(summary.string(), "summary") : json();
    if (!prior.is_object() || prior.value("status", "") != "failed")  // not recorded yet
      write_json_atomic(summary.string(), {{"status", "failed"}, {"error", e.what()}});
  }
  return out;
}

}  // namespace

int run_sweep(const Sweep& sweep, const std::string& out_dir, std::ostream& log, int jobs) {
  if (jobs < 1) throw config_error("--jobs: expected at least 1, found " + std::to_string(jobs));
  fs::create_directories(out_dir);
  // The sweep's own record; a rerun into the same folder must be the same sweep.
  const json record = {{"name", sweep.name},
                       {"base", sweep.base},
                       {"axes", sweep.axes},
                       {"set", sweep.fixed},
                       {"points", [&] {
                          json pts = json::array();
                          for (const auto& p : sweep.points)
                            pts.push_back(json::parse(p.values.dump()));
                          return pts;
                        }()}};
  const fs::path record_path = fs::path(out_dir) / "sweep.json";
  if (fs::exists(record_path) && read_json_file(record_path.string(), "sweep record") != record)
    throw config_error(out_dir +
                       ": holds another sweep (sweep.json differs); choose another --out");
  write_json_atomic(record_path.string(), record);

  if (jobs > 1) check_points_fit_together(sweep, jobs);
  // Points are taken in order by `jobs` workers; the log, the table and the counts are shared.
  std::mutex mutex;
  size_t next = 0;
  int code = kExitOk, failed = 0;
  const int threads_each = std::max(1, omp_get_max_threads() / std::max(1, jobs));
  const auto worker = [&] {
    if (jobs > 1) omp_set_num_threads(threads_each);
    for (;;) {
      size_t i;
      {
        std::lock_guard<std::mutex> lock(mutex);
        if (next >= sweep.points.size() || code == kExitInterrupted) return;
        i = next++;
      }
      std::ostringstream point_log;
      std::ostream& out = jobs > 1 ? point_log : log;
      const PointResult r = run_point(sweep, i, out_dir, out);
      std::lock_guard<std::mutex> lock(mutex);
      if (jobs > 1) log << point_log.str() << std::flush;
      failed += r.failed ? 1 : 0;
      write_file_atomic((fs::path(out_dir) / "sweep.csv").string(),
                        sweep_csv(sweep, out_dir));  // kept current
      if (r.exit_code == kExitInterrupted && code != kExitInterrupted) {
        code = kExitInterrupted;
        log << "sweep " << sweep.name << ": interrupted; run it again to continue\n";
      }
    }
  };
  if (jobs <= 1) {
    worker();
  } else {
    log << "sweep " << sweep.name << ": " << jobs << " points at once, " << threads_each
        << " CPU threads each\n";
    std::vector<std::thread> pool;
    for (int j = 0; j < jobs; ++j) pool.emplace_back(worker);
    for (auto& t : pool) t.join();
  }
  write_file_atomic((fs::path(out_dir) / "sweep.csv").string(), sweep_csv(sweep, out_dir));
  log << "sweep " << sweep.name << ": table in " << (fs::path(out_dir) / "sweep.csv").string()
      << "\n";
  if (failed > 0 && code == kExitOk) {
    log << "sweep " << sweep.name << ": " << failed
        << " point(s) failed (status and error in sweep.csv); run the sweep again to retry them\n";
    code = kExitRuntime;
  }
  return code;
}

}  // namespace gossamer
