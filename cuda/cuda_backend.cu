// The CUDA backend's factory: one backend on one GPU (cuda_backend.cuh), or shards of W's rows
// over GPUs and processes (sharded_backend.cu).
#include "cuda_backend.cuh"

namespace gossamer {

std::unique_ptr<Backend> make_cuda_backend(const BackendSetup& setup, const CudaOptions& options) {
  if (setup.devices.size() > 1 || setup.processes.world > 1 || setup.transport == "nccl")
    return make_sharded_cuda_backend(setup, options);
  CudaOptions o = options;
  if (!setup.devices.empty()) o.device = setup.devices[0];
  return std::make_unique<CudaBackend>(setup, o);
}

}  // namespace gossamer
