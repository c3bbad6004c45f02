// A CPU emulation of the CUDA runtime and device language, as much of them as gossamer's CUDA part
// (cuda/*.cu) uses, so that tests/CMakeLists.txt can compile those very sources with the host
// compiler and run their kernels and the backend on any machine (docs/ARCHITECTURE.md, "Checking
// without a GPU"); cublas_v2.h and nccl.h beside it do the same for the libraries.
//
// How it runs: a launch `kernel<<<grid, block, shm, s>>>(args)` is rewritten at build time
// (translate.cmake) to `kernel * ::gossamer_emu::Launch("kernel", grid, block, shm, s)(args)`; the
// blocks run one after another, the threads of a block as fibers that switch only at __syncthreads
// and at a warp's shuffle, so a __shared__ variable, here a static, is the running block's shared
// memory. Memory is host memory, every call is synchronous and streams and events only keep order;
// a stream capture records the work and a graph launch runs the record.
//
// What it cannot show: speed (traffic.hpp counts the memory a kernel moves, not its time), races
// between blocks or threads (nothing runs concurrently), the memory model, launch limits beyond
// the grid's shape, and cuBLAS's and NCCL's own behaviour. It checks the CUDA code's logic; it is
// no substitute for the GPU suites on a GPU.
#pragma once
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <tuple>
#include <type_traits>
#include <utility>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __shared__ static

struct uint3 {
  unsigned x = 0, y = 0, z = 0;
};
struct dim3 {
  unsigned x = 1, y = 1, z = 1;
  dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};

// A copy moves the 16 bytes at once, as a GPU's 128-bit load and store do (ld.global.v4.f32):
// without it the host compiler may split a float4 built field by field into four float stores,
// and the traffic report (traffic.hpp) would count four uncoalesced accesses where a GPU makes
// one.
struct alignas(16) float4 {
  float x, y, z, w;
  float4() = default;
  constexpr float4(float x_, float y_, float z_, float w_) : x(x_), y(y_), z(z_), w(w_) {}
  float4(const float4& o) { *this = o; }
  float4& operator=(const float4& o) {
    using Bytes16 = float __attribute__((vector_size(16), may_alias));
    *reinterpret_cast<Bytes16*>(this) = *reinterpret_cast<const Bytes16*>(&o);
    return *this;
  }
};
inline float4 make_float4(float x, float y, float z, float w) { return {x, y, z, w}; }
using std::isfinite;

enum cudaError_t {
  cudaSuccess = 0,
  cudaErrorInvalidValue = 1,
  cudaErrorMemoryAllocation = 2,
  cudaErrorInvalidConfiguration = 9,
  cudaErrorInsufficientDriver = 35,
  cudaErrorInvalidDevice = 101,
  cudaErrorNoDevice = 100,
};
enum cudaMemcpyKind {
  cudaMemcpyHostToHost = 0,
  cudaMemcpyHostToDevice = 1,
  cudaMemcpyDeviceToHost = 2,
  cudaMemcpyDeviceToDevice = 3,
  cudaMemcpyDefault = 4,
};
struct CUstream_st;
using cudaStream_t = CUstream_st*;
struct CUevent_st;
using cudaEvent_t = CUevent_st*;
struct CUgraph_st;
using cudaGraph_t = CUgraph_st*;
using cudaGraphExec_t = CUgraph_st*;
enum cudaStreamCaptureMode {
  cudaStreamCaptureModeGlobal = 0,
  cudaStreamCaptureModeThreadLocal = 1,
  cudaStreamCaptureModeRelaxed = 2,
};
constexpr unsigned cudaStreamNonBlocking = 1, cudaEventDefault = 0, cudaEventDisableTiming = 2;
// One emulated device: its name says so, and its memory is what cudaMemGetInfo reports.
struct cudaDeviceProp {
  char name[256];
  size_t totalGlobalMem;
  int major, minor, multiProcessorCount;
};

cudaError_t cudaGetDeviceCount(int* count);
cudaError_t cudaGetDeviceProperties(cudaDeviceProp* prop, int device);
cudaError_t cudaSetDevice(int device);
cudaError_t cudaMemGetInfo(size_t* free, size_t* total);
cudaError_t cudaStreamCreate(cudaStream_t* s);
cudaError_t cudaStreamCreateWithFlags(cudaStream_t* s, unsigned flags);
cudaError_t cudaStreamDestroy(cudaStream_t s);
cudaError_t cudaStreamSynchronize(cudaStream_t s);
cudaError_t cudaStreamWaitEvent(cudaStream_t s, cudaEvent_t e, unsigned flags = 0);
cudaError_t cudaEventCreate(cudaEvent_t* e);
cudaError_t cudaEventCreateWithFlags(cudaEvent_t* e, unsigned flags);
cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t s = nullptr);
cudaError_t cudaEventSynchronize(cudaEvent_t e);
cudaError_t cudaEventElapsedTime(float* ms, cudaEvent_t start, cudaEvent_t stop);
cudaError_t cudaEventDestroy(cudaEvent_t e);
cudaError_t cudaMemcpyPeerAsync(void* dst, int dst_device, const void* src, int src_device,
                                size_t bytes, cudaStream_t s = nullptr);
cudaError_t cudaMemcpy2DAsync(void* dst, size_t dst_pitch, const void* src, size_t src_pitch,
                              size_t width, size_t height, cudaMemcpyKind kind,
                              cudaStream_t s = nullptr);
cudaError_t cudaMemset2DAsync(void* ptr, size_t pitch, int value, size_t width, size_t height,
                              cudaStream_t s = nullptr);
// A capture records what the stream would run (launches, copies, sets, GEMMs) instead of running
// it; a launch of the instantiated graph runs the record.
cudaError_t cudaStreamBeginCapture(cudaStream_t s, cudaStreamCaptureMode mode);
cudaError_t cudaStreamEndCapture(cudaStream_t s, cudaGraph_t* graph);
cudaError_t cudaGraphInstantiate(cudaGraphExec_t* exec, cudaGraph_t graph,
                                 unsigned long long flags = 0);
cudaError_t cudaGraphLaunch(cudaGraphExec_t exec, cudaStream_t s);
cudaError_t cudaGraphDestroy(cudaGraph_t graph);
cudaError_t cudaGraphExecDestroy(cudaGraphExec_t exec);

cudaError_t cudaMalloc(void** ptr, size_t bytes);
cudaError_t cudaFree(void* ptr);
cudaError_t cudaMallocHost(void** ptr, size_t bytes);
cudaError_t cudaFreeHost(void* ptr);
template <class T>
cudaError_t cudaMalloc(T** ptr, size_t bytes) {
  return cudaMalloc(reinterpret_cast<void**>(ptr), bytes);
}
template <class T>
cudaError_t cudaMallocHost(T** ptr, size_t bytes) {
  return cudaMallocHost(reinterpret_cast<void**>(ptr), bytes);
}
cudaError_t cudaMemcpy(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind);
cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind,
                            cudaStream_t s = nullptr);
cudaError_t cudaMemset(void* ptr, int value, size_t bytes);
cudaError_t cudaMemsetAsync(void* ptr, int value, size_t bytes, cudaStream_t s = nullptr);
cudaError_t cudaDeviceSynchronize();
cudaError_t cudaGetLastError();
cudaError_t cudaGetDevice(int* device);
const char* cudaGetErrorName(cudaError_t e);
const char* cudaGetErrorString(cudaError_t e);

namespace gossamer_emu {

// The running thread's indices and its launch's shape.
struct Frame {
  uint3 thread, block;
  dim3 block_dim, grid_dim;
};
extern Frame g_frame;

// Runs body once a thread of the grid (blocks in turn, a block's threads as fibers); a launch
// shape CUDA would refuse (no blocks, more than 1024 threads a block) sets the error
// cudaGetLastError returns instead. `kernel` names it for the traffic report (traffic.hpp).
void run_grid(const char* kernel, dim3 grid, dim3 block, const std::function<void()>& body);
// What a stream runs: now, or, while a capture is on, into the graph being captured.
void submit(std::function<void()> op);
void syncthreads();
// The warp's exchange behind __shfl_down_sync: this lane's value out, lane + delta's back.
uint64_t shuffle_down(uint64_t bits, unsigned delta, int width);

template <class... A>
struct Pending {
  const char* name;
  dim3 grid, block;
  std::tuple<A...> args;
};

struct Launch {
  const char* name;
  dim3 grid, block;
  Launch(const char* n, dim3 g, dim3 b, size_t = 0, cudaStream_t = nullptr)
      : name(n), grid(g), block(b) {}
  template <class... A>
  Pending<std::decay_t<A>...> operator()(A&&... a) const {
    return {name, grid, block, std::tuple<std::decay_t<A>...>(std::forward<A>(a)...)};
  }
};

template <class... P, class... A>
void operator*(void (*kernel)(P...), Pending<A...>&& p) {
  submit([kernel, p = std::move(p)] {
    run_grid(p.name, p.grid, p.block,
             [&] { std::apply([&](const A&... a) { kernel(a...); }, p.args); });
  });
}

}  // namespace gossamer_emu

// The launch's kernel name as written before <<< (translate.cmake).
#define GOSSAMER_EMU_NAME(...) #__VA_ARGS__

#define threadIdx (::gossamer_emu::g_frame.thread)
#define blockIdx (::gossamer_emu::g_frame.block)
#define blockDim (::gossamer_emu::g_frame.block_dim)
#define gridDim (::gossamer_emu::g_frame.grid_dim)

inline void __syncthreads() { ::gossamer_emu::syncthreads(); }

template <class T>
T __shfl_down_sync(unsigned /*mask*/, T v, unsigned delta, int width = 32) {
  static_assert(sizeof(T) <= 8 && std::is_trivially_copyable_v<T>);
  uint64_t bits = 0;
  std::memcpy(&bits, &v, sizeof(T));
  bits = ::gossamer_emu::shuffle_down(bits, delta, width);
  std::memcpy(&v, &bits, sizeof(T));
  return v;
}
