// Where a run's results go: metrics.jsonl (a line per evaluation, flushed), JSON files
// written whole (temporary file, then rename), and the progress display.
#pragma once
#include <chrono>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <ostream>
#include <string>

namespace gossamer {

// Writes path.tmp, then renames it over path: a reader never sees half a file. On any failure
// (including one `write` throws) the temporary file is removed and path keeps its old content.
void write_file_atomic(const std::string& path, const std::string& text);
void write_file_atomic(const std::string& path, const std::function<void(std::ostream&)>& write);
void write_json_atomic(const std::string& path, const nlohmann::json& value);

class MetricsWriter {
 public:
  explicit MetricsWriter(const std::string& path);
  void write(const nlohmann::json& line);

 private:
  std::string m_path;
  std::ofstream m_out;
  std::streamoff m_size = 0;  // bytes of whole lines in the file
};

// On a terminal: one self-updating bar. Elsewhere: one plain line per evaluation.
class Progress {
 public:
  Progress(std::ostream& out, bool terminal, int64_t total_steps);
  void step(int64_t done, double seconds);  // bar refresh, at most 10 times a second
  void eval(const nlohmann::json& metrics, double seconds);  // a line per evaluation
  // What a pause between steps is doing ("evaluating", "measuring curvature"): on a terminal
  // the bar says it until the next refresh; elsewhere nothing (the next line follows it).
  void busy(int64_t done, const std::string& what);
  void finish();

 private:
  std::string eta(int64_t done, double seconds) const;
  std::string bar(int64_t done) const;
  std::ostream& m_out;
  bool m_terminal;
  int64_t m_total;
  double m_last_draw = -1;
  std::string m_last_metrics;
};

}  // namespace gossamer
