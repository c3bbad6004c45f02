// The emulated CUDA runtime and device language of tests/emu/include/cuda_runtime.h: host
// memory, and a grid's blocks run in turn with each block's threads as fibers.
//
// A fiber is entered once by swapcontext and switched from then on by GCC's __builtin_setjmp /
// __builtin_longjmp: unlike swapcontext they leave the signal mask alone, and unlike longjmp
// AddressSanitizer does not intercept them, so a switch makes no system call. No fiber's frame is
// ever abandoned (a fiber is suspended and resumed, never unwound), so AddressSanitizer needs no
// word of the switches to check the heap, which is what the emulated tests ask of it.
#include <ucontext.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "cublas_v2.h"
#include "cuda_runtime.h"
#include "traffic.hpp"

struct CUstream_st {};
struct CUevent_st {
  std::chrono::steady_clock::time_point at;
};
struct CUgraph_st {
  std::vector<std::function<void()>> ops;
};

namespace {

cudaError_t g_last_error = cudaSuccess;
CUgraph_st* g_capture = nullptr;  // the graph being captured, if any
constexpr size_t kDeviceMemory = size_t(16) << 30;  // what the emulated device reports
std::map<uintptr_t, size_t> g_allocations;  // cudaMalloc's: start -> bytes
size_t g_device_bytes = 0;                   // their sum: cudaMemGetInfo's used memory

// 256-byte alignment, as cudaMalloc gives; `device`: counted as device memory (not pinned host).
cudaError_t allocate(void** ptr, size_t bytes, bool device) {
  *ptr = std::aligned_alloc(256, (std::max<size_t>(bytes, 1) + 255) / 256 * 256);
  if (!*ptr) return cudaErrorMemoryAllocation;
  if (device) {
    g_allocations[reinterpret_cast<uintptr_t>(*ptr)] = bytes;
    g_device_bytes += bytes;
  }
  return cudaSuccess;
}

}  // namespace

bool gossamer_emu::is_device_memory(const void* address) {
  const auto a = reinterpret_cast<uintptr_t>(address);
  auto it = g_allocations.upper_bound(a);
  if (it == g_allocations.begin()) return false;
  --it;
  return a < it->first + it->second;
}

void gossamer_emu::submit(std::function<void()> op) {
  if (g_capture)
    g_capture->ops.push_back(std::move(op));
  else
    op();
}

cudaError_t cudaMalloc(void** ptr, size_t bytes) { return allocate(ptr, bytes, true); }
cudaError_t cudaFree(void* ptr) {
  const auto it = g_allocations.find(reinterpret_cast<uintptr_t>(ptr));
  if (it != g_allocations.end()) {
    g_device_bytes -= it->second;
    g_allocations.erase(it);
  }
  std::free(ptr);
  return cudaSuccess;
}
cudaError_t cudaMallocHost(void** ptr, size_t bytes) { return allocate(ptr, bytes, false); }
cudaError_t cudaFreeHost(void* ptr) {
  std::free(ptr);
  return cudaSuccess;
}
cudaError_t cudaMemcpy(void* dst, const void* src, size_t bytes, cudaMemcpyKind) {
  if (bytes) std::memmove(dst, src, bytes);
  return cudaSuccess;
}
cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind,
                            cudaStream_t) {
  gossamer_emu::submit([=] {
    gossamer_emu::trace_transfer("cudaMemcpyAsync", src, dst, bytes);
    cudaMemcpy(dst, src, bytes, kind);
  });
  return cudaSuccess;
}
cudaError_t cudaMemcpyPeerAsync(void* dst, int, const void* src, int, size_t bytes, cudaStream_t s) {
  return cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, s);
}
cudaError_t cudaMemcpy2DAsync(void* dst, size_t dst_pitch, const void* src, size_t src_pitch,
                              size_t width, size_t height, cudaMemcpyKind, cudaStream_t) {
  if (width > dst_pitch || width > src_pitch) return cudaErrorInvalidValue;
  gossamer_emu::submit([=] {
    for (size_t r = 0; r < height; ++r)
      std::memmove(static_cast<char*>(dst) + r * dst_pitch,
                   static_cast<const char*>(src) + r * src_pitch, width);
  });
  return cudaSuccess;
}
cudaError_t cudaMemset(void* ptr, int value, size_t bytes) {
  if (bytes) std::memset(ptr, value, bytes);
  return cudaSuccess;
}
cudaError_t cudaMemsetAsync(void* ptr, int value, size_t bytes, cudaStream_t) {
  gossamer_emu::submit([=] {
    gossamer_emu::trace_transfer("cudaMemsetAsync", nullptr, ptr, bytes);
    cudaMemset(ptr, value, bytes);
  });
  return cudaSuccess;
}
cudaError_t cudaMemset2DAsync(void* ptr, size_t pitch, int value, size_t width, size_t height,
                              cudaStream_t) {
  if (width > pitch) return cudaErrorInvalidValue;
  gossamer_emu::submit([=] {
    for (size_t r = 0; r < height; ++r) std::memset(static_cast<char*>(ptr) + r * pitch, value, width);
  });
  return cudaSuccess;
}
cudaError_t cudaDeviceSynchronize() { return cudaSuccess; }
cudaError_t cudaGetLastError() {
  const cudaError_t e = g_last_error;
  g_last_error = cudaSuccess;
  return e;
}
cudaError_t cudaGetDevice(int* device) {
  *device = 0;
  return cudaSuccess;
}
cudaError_t cudaGetDeviceCount(int* count) {
  *count = 1;
  return cudaSuccess;
}
cudaError_t cudaGetDeviceProperties(cudaDeviceProp* prop, int device) {
  if (device != 0) return cudaErrorInvalidDevice;
  *prop = {};
  std::strcpy(prop->name, "emulated CUDA device (tests/emu)");
  prop->totalGlobalMem = kDeviceMemory;
  prop->major = 9;
  prop->multiProcessorCount = 1;
  return cudaSuccess;
}
cudaError_t cudaSetDevice(int device) { return device == 0 ? cudaSuccess : cudaErrorInvalidDevice; }
cudaError_t cudaMemGetInfo(size_t* free, size_t* total) {
  *total = kDeviceMemory;
  *free = kDeviceMemory - std::min(g_device_bytes, kDeviceMemory);
  return cudaSuccess;
}
cudaError_t cudaStreamCreate(cudaStream_t* s) {
  *s = new CUstream_st;
  return cudaSuccess;
}
cudaError_t cudaStreamCreateWithFlags(cudaStream_t* s, unsigned) { return cudaStreamCreate(s); }
cudaError_t cudaStreamDestroy(cudaStream_t s) {
  delete s;
  return cudaSuccess;
}
cudaError_t cudaStreamSynchronize(cudaStream_t) { return cudaSuccess; }
cudaError_t cudaStreamWaitEvent(cudaStream_t, cudaEvent_t, unsigned) { return cudaSuccess; }
cudaError_t cudaEventCreate(cudaEvent_t* e) {
  *e = new CUevent_st;
  return cudaSuccess;
}
cudaError_t cudaEventCreateWithFlags(cudaEvent_t* e, unsigned) { return cudaEventCreate(e); }
cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t) {
  gossamer_emu::submit([e] { e->at = std::chrono::steady_clock::now(); });
  return cudaSuccess;
}
cudaError_t cudaEventSynchronize(cudaEvent_t) { return cudaSuccess; }
cudaError_t cudaEventElapsedTime(float* ms, cudaEvent_t start, cudaEvent_t stop) {
  *ms = std::chrono::duration<float, std::milli>(stop->at - start->at).count();
  return cudaSuccess;
}
cudaError_t cudaEventDestroy(cudaEvent_t e) {
  delete e;
  return cudaSuccess;
}
cudaError_t cudaStreamBeginCapture(cudaStream_t, cudaStreamCaptureMode) {
  if (g_capture) return cudaErrorInvalidValue;  // one capture at a time here
  g_capture = new CUgraph_st;
  return cudaSuccess;
}
cudaError_t cudaStreamEndCapture(cudaStream_t, cudaGraph_t* graph) {
  if (!g_capture) return cudaErrorInvalidValue;
  *graph = g_capture;
  g_capture = nullptr;
  return cudaSuccess;
}
cudaError_t cudaGraphInstantiate(cudaGraphExec_t* exec, cudaGraph_t graph, unsigned long long) {
  *exec = new CUgraph_st(*graph);
  return cudaSuccess;
}
cudaError_t cudaGraphLaunch(cudaGraphExec_t exec, cudaStream_t) {
  for (const auto& op : exec->ops) gossamer_emu::submit(op);
  return cudaSuccess;
}
cudaError_t cudaGraphDestroy(cudaGraph_t graph) {
  delete graph;
  return cudaSuccess;
}
cudaError_t cudaGraphExecDestroy(cudaGraphExec_t exec) {
  delete exec;
  return cudaSuccess;
}
const char* cudaGetErrorName(cudaError_t e) {
  switch (e) {
    case cudaSuccess: return "cudaSuccess";
    case cudaErrorInvalidValue: return "cudaErrorInvalidValue";
    case cudaErrorMemoryAllocation: return "cudaErrorMemoryAllocation";
    case cudaErrorInvalidConfiguration: return "cudaErrorInvalidConfiguration";
    case cudaErrorInsufficientDriver: return "cudaErrorInsufficientDriver";
    case cudaErrorInvalidDevice: return "cudaErrorInvalidDevice";
    case cudaErrorNoDevice: return "cudaErrorNoDevice";
  }
  return "cudaErrorUnknown";
}
const char* cudaGetErrorString(cudaError_t e) {
  return e == cudaErrorInvalidConfiguration ? "invalid configuration argument (emulated launch)"
                                            : "emulated CUDA runtime error";
}

namespace gossamer_emu {

Frame g_frame;

namespace {

constexpr int kWarp = 32;
// The order blocks, and a block's threads between barriers, run in. A kernel must not depend on
// it (a GPU promises none): the AddressSanitizer build runs them last to first
// (GOSSAMER_EMU_REVERSED), so that a read of another thread's write without a barrier between
// them, or of another block's, gives a different result in one of the two builds.
#if defined(GOSSAMER_EMU_REVERSED)
constexpr bool kReversed = true;
#else
constexpr bool kReversed = false;
#endif
constexpr size_t kStackBytes = 128 * 1024;

enum class State { Ready, AtBarrier, AtShuffle, Done };

struct Fiber {
  ucontext_t context;  // its first entry
  void* resume[5];     // where it yielded (__builtin_setjmp)
  bool started = false;
  State state = State::Ready;
  uint64_t value = 0;  // a shuffle's: this lane's value, then the source lane's
  unsigned delta = 0;
  int width = kWarp;
};

// The block being run: its fibers, their stacks (kept between launches) and the scheduler's.
struct Block {
  std::vector<Fiber> fibers;  // reserved for 1024 threads: a suspended fiber's references stay
  std::vector<std::unique_ptr<char[]>> stacks;
  void* scheduler[5];
  ucontext_t entry;  // swapcontext's save of the scheduler on a fiber's first entry (not resumed)
  int current = -1;
  const std::function<void()>* body = nullptr;
};
Block g_block;

// __builtin_longjmp may not share a function with its __builtin_setjmp. Not declared noreturn:
// AddressSanitizer would call __asan_handle_no_return (a system call) before each jump, and
// does so before a __builtin_longjmp it instruments.
[[gnu::noinline, gnu::no_sanitize_address]] void jump(void** to) { __builtin_longjmp(to, 1); }

// From the running fiber back to the scheduler; returns when the scheduler resumes it. The
// functions that switch are not instrumented either: AddressSanitizer would unpoison the whole
// stack (a system call and a memset) at each landing of a __builtin_setjmp.
[[gnu::noinline, gnu::no_sanitize_address]] void to_scheduler(Fiber& f) {
  if (!__builtin_setjmp(f.resume)) jump(g_block.scheduler);
}

void yield(State s) {
  Fiber& f = g_block.fibers[size_t(g_block.current)];
  f.state = s;
  to_scheduler(f);
}

// A fiber runs one thread of a block, then waits to run one of the next block, or launch.
void fiber_main() {
  for (;;) {
    (*g_block.body)();
    yield(State::Done);
  }
}

// From the scheduler to fiber t until it yields or finishes its thread.
[[gnu::noinline, gnu::no_sanitize_address]] void resume(int t) {
  Fiber& f = g_block.fibers[size_t(t)];
  g_block.current = t;
  if (__builtin_setjmp(g_block.scheduler)) return;  // it yielded or finished its thread
  if (f.started) jump(f.resume);
  f.started = true;
  swapcontext(&g_block.entry, &f.context);
}

// Releases the warps whose live lanes all wait at a shuffle, each lane getting lane + delta's
// value (its own where that is outside its width segment, as CUDA does); returns whether any.
bool release_shuffles(int threads) {
  bool any = false;
  for (int w0 = 0; w0 < threads; w0 += kWarp) {
    const int w1 = std::min(threads, w0 + kWarp);
    bool all = true, some = false;
    for (int t = w0; t < w1; ++t) {
      const State s = g_block.fibers[size_t(t)].state;
      all = all && (s == State::AtShuffle || s == State::Done);
      some = some || s == State::AtShuffle;
    }
    if (!all || !some) continue;
    std::vector<uint64_t> out(size_t(w1 - w0));
    for (int t = w0; t < w1; ++t) {
      const Fiber& f = g_block.fibers[size_t(t)];
      if (f.state != State::AtShuffle) continue;
      const int lane = t - w0, seg = lane / f.width * f.width;
      const int src = lane + int(f.delta);
      out[size_t(lane)] = f.value;
      if (src < seg + f.width && w0 + src < w1) {
        const Fiber& from = g_block.fibers[size_t(w0 + src)];
        if (from.state != State::AtShuffle)
          throw std::runtime_error("emulated shuffle: lane " + std::to_string(lane) +
                                   " reads a lane that has exited");
        out[size_t(lane)] = from.value;
      }
    }
    for (int t = w0; t < w1; ++t) {
      Fiber& f = g_block.fibers[size_t(t)];
      if (f.state != State::AtShuffle) continue;
      f.value = out[size_t(t - w0)];
      f.state = State::Ready;
    }
    any = true;
  }
  return any;
}

void run_block(int threads) {
  trace_block_begin(threads);
  for (int t = 0; t < threads; ++t) {
    Fiber& f = g_block.fibers[size_t(t)];
    f.state = State::Ready;
    if (f.started) continue;
    getcontext(&f.context);
    f.context.uc_stack.ss_sp = g_block.stacks[size_t(t)].get();
    f.context.uc_stack.ss_size = kStackBytes;
    f.context.uc_link = nullptr;  // fiber_main never returns
    makecontext(&f.context, fiber_main, 0);
  }
  const dim3 bd = g_frame.block_dim;
  for (;;) {
    bool ran = false;
    for (int i = 0; i < threads; ++i) {
      const int t = kReversed ? threads - 1 - i : i;
      if (g_block.fibers[size_t(t)].state != State::Ready) continue;
      g_frame.thread = {unsigned(t) % bd.x, unsigned(t) / bd.x % bd.y, unsigned(t) / (bd.x * bd.y)};
      resume(t);
      ran = true;
    }
    bool all_done = true, all_barrier = true;
    for (int t = 0; t < threads; ++t) {
      const State s = g_block.fibers[size_t(t)].state;
      all_done = all_done && s == State::Done;
      all_barrier = all_barrier && (s == State::AtBarrier || s == State::Done);
    }
    if (all_done) {
      trace_block_end();
      return;
    }
    if (release_shuffles(threads)) continue;
    if (all_barrier) {
      for (int t = 0; t < threads; ++t)
        if (g_block.fibers[size_t(t)].state == State::AtBarrier)
          g_block.fibers[size_t(t)].state = State::Ready;
      continue;
    }
    if (!ran)
      throw std::runtime_error(
          "emulated block: its threads wait at different barriers or shuffles (a deadlock on a "
          "GPU)");
  }
}

}  // namespace

int running_thread() { return g_block.body ? g_block.current : -1; }

void run_grid(const char* kernel, dim3 grid, dim3 block, const std::function<void()>& body) {
  const uint64_t threads = uint64_t(block.x) * block.y * block.z;
  if (grid.x == 0 || grid.y == 0 || grid.z == 0 || threads == 0 || threads > 1024 ||
      grid.x > 2147483647u || grid.y > 65535 || grid.z > 65535) {
    g_last_error = cudaErrorInvalidConfiguration;
    return;
  }
  if (g_block.body) throw std::logic_error("emulated launch inside a kernel");
  g_block.fibers.reserve(1024);
  while (g_block.stacks.size() < threads) {
    g_block.stacks.emplace_back(new char[kStackBytes]);
    g_block.fibers.emplace_back();
  }
  g_block.body = &body;
  trace_launch_begin(kernel, grid, block);
  g_frame.block_dim = block;
  g_frame.grid_dim = grid;
  try {
    const uint64_t blocks = uint64_t(grid.x) * grid.y * grid.z;
    for (uint64_t i = 0; i < blocks; ++i) {
      const uint64_t b = kReversed ? blocks - 1 - i : i;
      g_frame.block = {unsigned(b % grid.x), unsigned(b / grid.x % grid.y),
                       unsigned(b / (uint64_t(grid.x) * grid.y))};
      run_block(int(threads));
    }
  } catch (...) {  // the fibers stopped inside the failed block start afresh
    for (Fiber& f : g_block.fibers) f.started = false;
    g_block.body = nullptr;
    trace_launch_end();
    throw;
  }
  g_block.body = nullptr;
  trace_launch_end();
}

void syncthreads() { yield(State::AtBarrier); }

uint64_t shuffle_down(uint64_t bits, unsigned delta, int width) {
  Fiber& f = g_block.fibers[size_t(g_block.current)];
  f.value = bits;
  f.delta = delta;
  f.width = width;
  yield(State::AtShuffle);
  return g_block.fibers[size_t(g_block.current)].value;
}

}  // namespace gossamer_emu
