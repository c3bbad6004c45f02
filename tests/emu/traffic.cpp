// The traffic report's bookkeeping (traffic.hpp): accesses recorded a block at a time, grouped
// into warp requests when the block ends.
#include "traffic.hpp"

#include <dlfcn.h>

#include <algorithm>
#include <cstdio>
#include <map>
#include <tuple>
#include <unordered_set>
#include <utility>

namespace gossamer_emu {

namespace {

constexpr int kWarp = 32;
constexpr uintptr_t kSector = 32;

struct Access {
  uint32_t thread;
  uint32_t site = 0;  // its source line's (Sites)
  uint32_t seq = 0;   // how many loads (stores) this thread made at that line before
  uintptr_t pc, address;
  uint32_t bytes;
  bool store;
};

// Call sites by source line: the host compiler may copy one access of the source into several
// places (each arm of `c ? 0.f : x[i]` before the store), which a GPU issues as one instruction;
// so the accesses of a line are one site. Lines come from the traced objects' line tables
// (-g1) by addr2line, a batch of new addresses at a time, and are kept; where addr2line cannot
// say, the address is its own site.
class Sites {
 public:
  // The site of every pc in accesses, resolving those not seen before.
  void assign(std::vector<Access>& accesses) {
    std::vector<uintptr_t> unknown;
    for (const Access& a : accesses)
      if (!by_pc_.count(a.pc)) {
        by_pc_[a.pc] = 0;  // placeholder until resolved below
        unknown.push_back(a.pc);
      }
    if (!unknown.empty()) resolve(unknown);
    for (Access& a : accesses) a.site = by_pc_[a.pc];
  }

 private:
  std::map<uintptr_t, uint32_t> by_pc_;
  std::map<std::string, uint32_t> by_line_;

  uint32_t id(const std::string& line) {
    return by_line_.emplace(line, by_line_.size()).first->second;
  }

  void resolve(const std::vector<uintptr_t>& pcs) {
    // Group by object file (the program, or a shared object): addr2line takes file offsets.
    std::map<std::string, std::vector<std::pair<uintptr_t, uintptr_t>>> by_file;  // pc, offset
    for (uintptr_t pc : pcs) {
      Dl_info info{};
      // The return address is just past the call: pc - 1 lies in the calling instruction.
      if (dladdr(reinterpret_cast<void*>(pc - 1), &info) && info.dli_fname && info.dli_fname[0])
        by_file[info.dli_fname].push_back(
            {pc, pc - 1 - reinterpret_cast<uintptr_t>(info.dli_fbase)});
      else
        by_pc_[pc] = id("pc " + std::to_string(pc));
    }
    for (const auto& [file, list] : by_file) {
      std::string cmd = "addr2line -e '" + file + "'";
      char hex[32];
      for (const auto& [pc, offset] : list) {
        std::snprintf(hex, sizeof hex, " 0x%llx", (unsigned long long)offset);
        cmd += hex;
      }
      std::vector<std::string> lines;
      if (FILE* f = popen((cmd + " 2>/dev/null").c_str(), "r")) {
        char buf[4096];
        while (std::fgets(buf, sizeof buf, f)) {
          std::string l(buf);
          if (const size_t d = l.find(" (discriminator"); d != std::string::npos) l.resize(d);
          while (!l.empty() && (l.back() == '\n' || l.back() == ' ')) l.pop_back();
          lines.push_back(l);
        }
        pclose(f);
      }
      for (size_t i = 0; i < list.size(); ++i) {
        const bool known = i < lines.size() && lines.size() == list.size() &&
                           lines[i].find("??") == std::string::npos;
        by_pc_[list[i].first] = id(known ? lines[i] : "pc " + std::to_string(list[i].first));
      }
    }
  }
};

struct Tracing {
  bool on = false;
  std::vector<KernelTraffic> kernels;
  std::map<std::string, size_t> index;                        // kernel name -> kernels[i]
  std::map<std::tuple<int, int, int, int>, GemmShape> gemms;  // by (m, n, k, batch)
  std::map<std::string, KernelTraffic> transfers;             // memsets and copies, by kind
  KernelTraffic* current = nullptr;                           // the running launch's, while tracing
  std::vector<Access> block;  // the running block's accesses, each thread's in order
  std::unordered_set<uintptr_t> read, written;  // the launch's distinct sectors
};
Tracing g;
Sites g_sites;  // kept across reports

// f(s) for each 32-byte sector s that bytes at address touch.
template <class F>
void for_each_sector(uintptr_t address, uint32_t bytes, F&& f) {
  for (uintptr_t s = address / kSector; s <= (address + bytes - 1) / kSector; ++s) f(s);
}

// The distinct sectors of one request's lanes, added to a.
void count_request(const Access* first, const Access* last, std::vector<uintptr_t>& sectors,
                   Accesses& a) {
  sectors.clear();
  for (const Access* x = first; x != last; ++x) {
    for_each_sector(x->address, x->bytes, [&](uintptr_t s) { sectors.push_back(s); });
    a.bytes += x->bytes;
  }
  std::sort(sectors.begin(), sectors.end());
  a.sectors += uint64_t(std::unique(sectors.begin(), sectors.end()) - sectors.begin());
  a.requests += 1;
}

}  // namespace

void start_traffic() {
  g = Tracing{};
  g.on = true;
}

TrafficReport stop_traffic() {
  TrafficReport r;
  r.kernels = std::move(g.kernels);
  for (const auto& [shape, gemm] : g.gemms) r.gemms.push_back(gemm);
  for (const auto& [what, t] : g.transfers) r.transfers.push_back(t);
  g = Tracing{};
  return r;
}

void trace_launch_begin(const char* kernel, dim3 grid, dim3 block) {
  if (!g.on) return;
  const auto [it, added] = g.index.emplace(kernel, g.kernels.size());
  if (added) g.kernels.push_back({kernel});
  g.current = &g.kernels[it->second];
  g.current->launches += 1;
  g.current->threads += uint64_t(grid.x) * grid.y * grid.z * block.x * block.y * block.z;
  g.read.clear();
  g.written.clear();
}

void trace_block_begin(int) {
  if (g.current) g.block.clear();
}

void trace_block_end() {
  if (!g.current) return;
  // Each thread's n-th load, or store, at a site (its accesses are in order in g.block).
  g_sites.assign(g.block);
  std::map<std::tuple<uint32_t, uint32_t, bool>, uint32_t> reached;  // (thread, site, store)
  for (Access& a : g.block) a.seq = reached[{a.thread, a.site, a.store}]++;
  // One request: the lanes of one warp at one site, each lane's n-th time there.
  const auto request = [](const Access& a) {
    return std::make_tuple(a.thread / kWarp, a.store, a.site, a.seq);
  };
  std::sort(g.block.begin(), g.block.end(), [&](const Access& a, const Access& b) {
    return std::make_tuple(request(a), a.thread) < std::make_tuple(request(b), b.thread);
  });
  std::vector<uintptr_t> sectors;
  for (size_t i = 0; i < g.block.size();) {
    const Access& a = g.block[i];
    size_t j = i + 1;
    while (j < g.block.size() && request(g.block[j]) == request(a)) ++j;
    count_request(&g.block[i], &g.block[j], sectors,
                  a.store ? g.current->stores : g.current->loads);
    i = j;
  }
  g.block.clear();
}

void trace_launch_end() {
  if (!g.current) return;
  g.current->read_sectors += g.read.size();
  g.current->written_sectors += g.written.size();
  g.current = nullptr;
}

void trace_gemm(int m, int n, int k, int batch, uint64_t bytes_read, uint64_t bytes_written) {
  if (!g.on) return;
  GemmShape& s = g.gemms[{m, n, k, batch}];
  s.m = m, s.n = n, s.k = k, s.batch = batch;
  s.calls += 1;
  s.bytes_read += bytes_read;
  s.bytes_written += bytes_written;
}

void trace_transfer(const char* what, const void* src, const void* dst, size_t bytes) {
  if (!g.on || bytes == 0) return;
  KernelTraffic& t = g.transfers[what];
  t.kernel = what;
  t.launches += 1;
  // Whole sectors, four a 128-byte request: as the copy engines or a coalesced kernel move them.
  const auto count = [&](const void* p, Accesses& a, uint64_t& distinct) {
    if (!p || !is_device_memory(p)) return;
    const uintptr_t first = reinterpret_cast<uintptr_t>(p) / kSector;
    const uintptr_t last = (reinterpret_cast<uintptr_t>(p) + bytes - 1) / kSector;
    a.sectors += last - first + 1;
    a.bytes += bytes;
    a.requests += (last - first + 4) / 4;
    distinct += last - first + 1;
  };
  count(src, t.loads, t.read_sectors);
  count(dst, t.stores, t.written_sectors);
}

void trace_access(const void* address, uint32_t bytes, bool store, uintptr_t pc) {
  if (!g.current || bytes == 0) return;
  const int t = running_thread();
  if (t < 0 || !is_device_memory(address)) return;
  const auto a = reinterpret_cast<uintptr_t>(address);
  Access x;
  x.thread = uint32_t(t);
  x.pc = pc;
  x.address = a;
  x.bytes = bytes;
  x.store = store;
  g.block.push_back(x);
  auto& sectors = store ? g.written : g.read;
  for_each_sector(a, bytes, [&](uintptr_t s) { sectors.insert(s); });
}

}  // namespace gossamer_emu
