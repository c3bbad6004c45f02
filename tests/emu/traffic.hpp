// The traffic report of the emulated CUDA runtime: how each kernel of gossamer's CUDA part moves
// device memory, counted access by access, as a profiler counts it on a GPU (docs/ARCHITECTURE.md,
// "Memory traffic without a GPU").
//
// The kernels' sources are compiled with GCC's ThreadSanitizer instrumentation, its runtime not
// linked (tests/CMakeLists.txt, gossamer_cuda_traced): every load and store calls a hook
// (traffic_hooks.cpp) with its address, size and call site. Inside a kernel, an access to memory
// from cudaMalloc is recorded with its thread and its call site; when the block ends, the accesses
// of a warp's lanes at one source line (traffic.cpp, Sites), each lane's n-th load (or store)
// there, form one request, as the 32 lanes of a warp issue one instruction together. A request
// touches the distinct 32-byte sectors its lanes' bytes fall in: 4 for 32 consecutive floats, 32
// for floats 128 bytes apart.
//
// What it shows: the coalescing of every global load and store (sectors a request; efficiency,
// the bytes asked for over the sectors' bytes; the L1's view, as ncu's sector counts), and each
// launch's footprint (distinct sectors read and written: what DRAM must move at least, whatever
// the caches do). What it does not: time, caches' hits, shared memory's bank conflicts, cuBLAS's
// kernels (its GEMMs' shapes and operand bytes are listed), and a lane's divergent path is grouped with
// the others' by call site and count, which matches the GPU where the code does not diverge.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "cuda_runtime.h"

namespace gossamer_emu {

struct Accesses {
  uint64_t requests = 0;  // warp-wide accesses
  uint64_t sectors = 0;   // 32-byte sectors those touched, summed over the requests
  uint64_t bytes = 0;     // bytes the lanes asked for
  // Bytes asked for over bytes of the sectors touched: 1 when coalesced.
  double efficiency() const { return sectors ? double(bytes) / (32.0 * double(sectors)) : 1.0; }
};

struct KernelTraffic {
  std::string kernel;
  uint64_t launches = 0, threads = 0;
  Accesses loads, stores;
  // Distinct sectors each launch read and wrote, summed over the launches: a floor on what DRAM
  // moves (a sector both read and written counts in both).
  uint64_t read_sectors = 0, written_sectors = 0;
};

// A GEMM the emulated cuBLAS ran, column-major as cuBLAS sees it; its calls' operand bytes: A
// and B read once (once a call where their batch stride is 0, else once a batch entry), C
// written once and read once where beta is not 0. What the GEMMs move if none of it is in a cache
// when they start (the kernels' distinct sectors are counted alike).
struct GemmShape {
  int m = 0, n = 0, k = 0, batch = 0;
  uint64_t calls = 0;
  uint64_t bytes_read = 0, bytes_written = 0;
};

struct TrafficReport {
  std::vector<KernelTraffic> kernels;  // in the order first launched
  std::vector<GemmShape> gemms;
  // cudaMemsetAsync and cudaMemcpyAsync, a row each (launches: calls; every access whole
  // sectors, 128 bytes a request; only the side in device memory counted).
  std::vector<KernelTraffic> transfers;
};

// From start_traffic to stop_traffic, the kernels' device-memory accesses (in sources compiled
// with the instrumentation) and cuBLAS's GEMM shapes are counted.
void start_traffic();
TrafficReport stop_traffic();

// Called by the emulator (emu.cpp, libraries.cpp) and the hooks (traffic_hooks.cpp).
void trace_launch_begin(const char* kernel, dim3 grid, dim3 block);
void trace_block_begin(int threads);
void trace_block_end();
void trace_launch_end();
void trace_gemm(int m, int n, int k, int batch, uint64_t bytes_read, uint64_t bytes_written);
// A memset (src null) or copy of `bytes` as it runs (in stream order, a graph's replay included).
void trace_transfer(const char* what, const void* src, const void* dst, size_t bytes);
void trace_access(const void* address, uint32_t bytes, bool store, uintptr_t pc);
// The running thread's index in its block (x fastest), or -1 outside a kernel.
int running_thread();
// Whether address lies in memory from cudaMalloc.
bool is_device_memory(const void* address);

}  // namespace gossamer_emu
