// The CPU backend's factory: one CpuBackend (cpu_backend.hpp), or with `shards` > 1 a
// ShardedBackend of CpuBackends (sharded_backend.hpp).
#include "cpu_backend.hpp"
#include "sharded_backend.hpp"

namespace gossamer {

std::unique_ptr<Backend> make_cpu_backend(const BackendSetup& setup, bool float64) {
  if (setup.shards > 1) {
    if (float64) return std::make_unique<cpu::ShardedBackend<double>>(setup);
    return std::make_unique<cpu::ShardedBackend<float>>(setup);
  }
  if (float64) return std::make_unique<cpu::CpuBackend<double>>(setup);
  return std::make_unique<cpu::CpuBackend<float>>(setup);
}

}  // namespace gossamer
