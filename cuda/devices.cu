// Lists the GPUs the CUDA runtime sees. "No GPU" (no driver: cudaErrorInsufficientDriver,
// or cudaErrorNoDevice) is an answer, not an error; other failures say what failed.
#include <cuda_runtime.h>

#include "gossamer/devices.hpp"

namespace gossamer {

DeviceList list_devices() {
  DeviceList out;
  int count = 0;
  const cudaError_t rc = cudaGetDeviceCount(&count);
  if (rc != cudaSuccess) {
    out.why_none = std::string("no GPU visible: cudaGetDeviceCount: ") + cudaGetErrorName(rc) +
                   " (" + cudaGetErrorString(rc) + ")";
    cudaGetLastError();  // clear the sticky-free error so later calls start clean
    return out;
  }
  if (count == 0) out.why_none = "no GPU visible: cudaGetDeviceCount found 0 devices";
  for (int i = 0; i < count; ++i) {
    cudaDeviceProp p{};
    if (cudaGetDeviceProperties(&p, i) != cudaSuccess) continue;
    DeviceInfo d;
    d.index = i;
    d.name = p.name;
    d.total_memory = p.totalGlobalMem;
    d.major = p.major;
    d.minor = p.minor;
    d.multiprocessors = p.multiProcessorCount;
    size_t free_b = 0, total_b = 0;
    if (cudaSetDevice(i) == cudaSuccess && cudaMemGetInfo(&free_b, &total_b) == cudaSuccess)
      d.free_memory = free_b;
    out.devices.push_back(d);
  }
  return out;
}

}  // namespace gossamer
