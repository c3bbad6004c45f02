#include "host_memory.hpp"

#include <sys/resource.h>

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <limits>
#include <sstream>

#include "gossamer/error.hpp"

namespace gossamer {
namespace {

// "Key:   123 kB" from a /proc file, in bytes; -1 if absent.
double proc_kb(const char* file, const std::string& key) {
  std::ifstream in(file);
  for (std::string line; std::getline(in, line);)
    if (line.rfind(key + ":", 0) == 0) {
      std::istringstream fields(line.substr(key.size() + 1));
      double kb = -1;
      fields >> kb;
      return kb * 1024.0;
    }
  return -1;
}

std::string gib(double bytes) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.3g GiB", bytes / 1073741824.0);
  return buf;
}

}  // namespace

double host_memory_available() {
  double available = proc_kb("/proc/meminfo", "MemAvailable");
  if (available < 0) available = std::numeric_limits<double>::max();
  struct rlimit as {};
  if (getrlimit(RLIMIT_AS, &as) == 0 && as.rlim_cur != RLIM_INFINITY) {
    const double used = std::max(0.0, proc_kb("/proc/self/status", "VmSize"));
    available = std::min(available, std::max(0.0, double(as.rlim_cur) - used));
  }
  return available;
}

void check_host_memory(double bytes, const std::string& what, const std::string& knob) {
  const double available = host_memory_available();
  if (bytes > available)
    throw runtime_error(what + " needs " + gib(bytes) + " of host memory, " + gib(available) +
                        " are available; lower " + knob);
}

}  // namespace gossamer
