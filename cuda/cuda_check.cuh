// One check macro family (docs/ARCHITECTURE.md, "Code conventions"): the failing expression, file:line, the device and the
// library's error string, thrown as a gossamer::Error.
#pragma once
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <string>

#include "gossamer/error.hpp"

namespace gossamer {

[[noreturn]] inline void cuda_fail(const char* what, const char* expr, const char* file, int line,
                                   const std::string& detail) {
  int device = -1;
  cudaGetDevice(&device);
  throw runtime_error(std::string(what) + " failed: " + expr + " at " + file + ":" +
                      std::to_string(line) + " on device " + std::to_string(device) + ": " +
                      detail);
}

}  // namespace gossamer

#define GOSSAMER_CHECK_GEN(lib, type, ok, name_of, expr)                                 \
  do {                                                                                   \
    const type gossamer_check_rc = (expr);                                               \
    if (gossamer_check_rc != ok)                                                         \
      ::gossamer::cuda_fail(lib, #expr, __FILE__, __LINE__, name_of(gossamer_check_rc)); \
  } while (0)

namespace gossamer {
inline std::string cuda_error_text(cudaError_t rc) {
  return std::string(cudaGetErrorName(rc)) + " (" + cudaGetErrorString(rc) + ")";
}
inline std::string cublas_error_text(cublasStatus_t rc) {
  return std::string(cublasGetStatusName(rc)) + " (" + cublasGetStatusString(rc) + ")";
}
}  // namespace gossamer

#define CUDA_CHECK(expr) \
  GOSSAMER_CHECK_GEN("CUDA", cudaError_t, cudaSuccess, ::gossamer::cuda_error_text, expr)
#define CUBLAS_CHECK(expr)                                            \
  GOSSAMER_CHECK_GEN("cuBLAS", cublasStatus_t, CUBLAS_STATUS_SUCCESS, \
                     ::gossamer::cublas_error_text, expr)

// After every kernel launch.
#define CUDA_CHECK_LAUNCH() CUDA_CHECK(cudaGetLastError())

// Grid size for n elements in blocks of `block` threads.
#define CEIL_DIV(n, block) (((n) + (block)-1) / (block))

namespace gossamer {
// The one launch-shape rule for element-wise kernels (tiny-cuda-nn's linear_kernel): blocks
// of 256 threads (or `block`), at least 1 and at most 65535 * 16 blocks; kernels loop
// grid-stride over the rest.
constexpr int kLinearBlock = 256;
inline unsigned linear_blocks(int64_t n, int block = kLinearBlock) {
  const int64_t blocks = CEIL_DIV(n, int64_t(block));
  return unsigned(std::max<int64_t>(1, std::min<int64_t>(blocks, 65535 * 16)));
}
}  // namespace gossamer

// A grid-stride loop over [0, n).
#define GRID_STRIDE(i, n)                                                          \
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < int64_t(n); \
       i += int64_t(blockDim.x) * gridDim.x)
