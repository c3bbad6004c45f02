// Minibatch sampling on the device: thread (k, j) draws worker k's j-th index of the step
// from the shared Philox stream, so the GPU sees exactly the CPU backend's minibatches.
#include "device_array.cuh"
#include "gossamer/cuda.hpp"
#include "gossamer/philox.hpp"

namespace gossamer {

static __global__ void sample_minibatches_i64(const int64_t* offsets, const int64_t* shard_indices,
                                              uint64_t seed, uint64_t step, int workers, int batch,
                                              int64_t* out) {
  const int64_t t = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (t >= int64_t(workers) * batch) return;
  const int k = int(t / batch), j = int(t % batch);
  const int64_t base = offsets[k], size = offsets[k + 1] - base;
  out[t] = shard_indices[base + int64_t(minibatch_position(seed, uint32_t(k), step, uint32_t(batch),
                                                           uint32_t(j), uint64_t(size)))];
}

std::vector<int64_t> cuda_sample_minibatches(const Partition& p, uint64_t seed, int64_t step,
                                             int batch) {
  const int m = p.workers();
  const size_t n = size_t(m) * batch;
  std::vector<int64_t> out(n);
  if (n == 0) return out;
  DeviceArray<int64_t> offsets(p.offsets), indices(p.indices), result(n);
  result.poison();  // an unwritten index reads -1
  constexpr int kBlock = 256;
  sample_minibatches_i64<<<CEIL_DIV(n, kBlock), kBlock>>>(offsets.get(), indices.get(), seed,
                                                          uint64_t(step), m, batch, result.get());
  CUDA_CHECK_LAUNCH();
  out = result.fetch();
  return out;
}

}  // namespace gossamer
