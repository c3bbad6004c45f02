#include "sinks.hpp"

#include <cmath>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>

#include "gossamer/error.hpp"

namespace gossamer {

void write_json_atomic(const std::string& path, const nlohmann::json& value) {
  write_file_atomic(path, value.dump(2) + "\n");
}

void write_file_atomic(const std::string& path, const std::string& text) {
  write_file_atomic(path, [&](std::ostream& out) {
    out.write(text.data(), std::streamsize(text.size()));
  });
}

void write_file_atomic(const std::string& path, const std::function<void(std::ostream&)>& write) {
  const std::string tmp = path + ".tmp";
  std::error_code ec;
  try {
    std::ofstream out(tmp, std::ios::binary);
    if (!out) throw runtime_error(tmp + ": cannot write (" + std::strerror(errno) + ")");
    write(out);
    if (!out.flush())
      throw runtime_error(path + ": write failed (disk full?); " + path + " is unchanged");
  } catch (...) {
    std::filesystem::remove(tmp, ec);  // no half-written temporary file is left behind
    throw;
  }
  std::filesystem::rename(tmp, path, ec);
  if (ec) {
    std::filesystem::remove(tmp, ec);
    throw runtime_error(path + ": cannot rename " + tmp + " over it: " + ec.message());
  }
}

MetricsWriter::MetricsWriter(const std::string& path)
    : m_path(path), m_out(path, std::ios::app | std::ios::binary) {
  if (!m_out) throw runtime_error(path + ": cannot open for writing");
  m_out.seekp(0, std::ios::end);
  m_size = std::streamoff(m_out.tellp());
}

// A line is written whole or not at all: after a failed write (disk full) the file is cut back
// to its last whole line.
void MetricsWriter::write(const nlohmann::json& line) {
  const std::string text = line.dump() + "\n";
  m_out.write(text.data(), std::streamsize(text.size()));
  if (!m_out.flush()) {
    m_out.close();
    std::error_code ec;
    std::filesystem::resize_file(m_path, std::uintmax_t(m_size), ec);
    throw runtime_error(m_path + ": write failed (disk full?); the file keeps its whole lines");
  }
  m_size += std::streamoff(text.size());
}

Progress::Progress(std::ostream& out, bool terminal, int64_t total)
    : m_out(out), m_terminal(terminal), m_total(total) {}

std::string Progress::eta(int64_t done, double seconds) const {
  if (done <= 0) return "?";
  const double left = seconds / double(done) * double(m_total - done);
  char buf[32];
  if (left >= 3600)
    std::snprintf(buf, sizeof buf, "%dh%02dm", int(left / 3600), int(std::fmod(left, 3600) / 60));
  else if (left >= 60)
    std::snprintf(buf, sizeof buf, "%dm%02ds", int(left / 60), int(std::fmod(left, 60)));
  else
    std::snprintf(buf, sizeof buf, "%.0fs", left);
  return buf;
}

std::string Progress::bar(int64_t done) const {
  constexpr int kWidth = 30;
  const int filled = int(kWidth * double(done) / double(std::max<int64_t>(m_total, 1)));
  return "\r[" + std::string(filled, '=') + std::string(kWidth - filled, ' ') + "] step " +
         std::to_string(done) + "/" + std::to_string(m_total) + m_last_metrics;
}

void Progress::step(int64_t done, double seconds) {
  if (!m_terminal || (seconds - m_last_draw < 0.1 && done < m_total)) return;
  m_last_draw = seconds;
  m_out << bar(done) << "  ETA " << eta(done, seconds) << "\033[K" << std::flush;
}

void Progress::busy(int64_t done, const std::string& what) {
  if (!m_terminal) return;
  m_out << bar(done) << "  " << what << "...\033[K" << std::flush;
  m_last_draw = -1;  // the next step() redraws the bar
}

void Progress::eval(const nlohmann::json& m, double seconds) {
  auto num = [&](const char* key, const char* fmt) {
    char buf[48];
    if (!m.contains(key) || !m[key].is_number()) return std::string("-");
    std::snprintf(buf, sizeof buf, fmt, m[key].get<double>());
    return std::string(buf);
  };
  const int64_t done = m["step"];
  m_last_metrics = "  loss " + num("train_loss", "%.4f") + "  acc " + num("test_acc", "%.4f");
  if (m_terminal) {
    step(done, seconds);
    return;
  }
  m_out << "step " << done << "/" << m_total << " | train_loss " << num("train_loss", "%.4f")
        << " | test_loss " << num("test_loss", "%.4f") << " | test_acc " << num("test_acc", "%.4f")
        << " | consensus " << num("consensus_distance", "%.3e") << " | lr " << num("lr", "%.4g")
        << " | " << num("wall_time_s", "%.1f") << " s | ETA " << eta(done, seconds) << "\n"
        << std::flush;
}

void Progress::finish() {
  if (m_terminal) m_out << "\n" << std::flush;
}

}  // namespace gossamer
