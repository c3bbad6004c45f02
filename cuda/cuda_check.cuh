// One check macro family (STYLE.md): the failing expression, file:line, the device and the
// library's error string, thrown as a gossamer::Error.
#pragma once
#include <cuda_runtime.h>

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

#define CUDA_CHECK(expr)                                                          \
  do {                                                                            \
    const cudaError_t cuda_check_rc = (expr);                                     \
    if (cuda_check_rc != cudaSuccess)                                             \
      ::gossamer::cuda_fail("CUDA", #expr, __FILE__, __LINE__,                    \
                            std::string(cudaGetErrorName(cuda_check_rc)) + " (" + \
                                cudaGetErrorString(cuda_check_rc) + ")");         \
  } while (0)

// After every kernel launch.
#define CUDA_CHECK_LAUNCH() CUDA_CHECK(cudaGetLastError())

// Grid size for n elements in blocks of `block` threads.
#define CEIL_DIV(n, block) (((n) + (block)-1) / (block))
