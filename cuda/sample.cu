// Minibatch sampling on the device: thread (k, j) draws worker k's j-th index of the step
// from the shared Philox stream, so the GPU sees exactly the CPU backend's minibatches.
#include "cuda_check.cuh"
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

namespace {
// A device buffer freed on every path.
struct DeviceI64 {
  int64_t* ptr = nullptr;
  explicit DeviceI64(size_t n) {
    CUDA_CHECK(cudaMalloc(&ptr, std::max<size_t>(n, 1) * sizeof(int64_t)));
  }
  ~DeviceI64() { cudaFree(ptr); }
};
}  // namespace

std::vector<int64_t> cuda_sample_minibatches(const Partition& p, uint64_t seed, int64_t step,
                                             int batch) {
  const int m = p.workers();
  const size_t n = size_t(m) * batch;
  std::vector<int64_t> out(n);
  if (n == 0) return out;
  DeviceI64 offsets(p.offsets.size()), indices(p.indices.size()), result(n);
  CUDA_CHECK(cudaMemcpy(offsets.ptr, p.offsets.data(), p.offsets.size() * sizeof(int64_t),
                        cudaMemcpyHostToDevice));
  CUDA_CHECK(cudaMemcpy(indices.ptr, p.indices.data(), p.indices.size() * sizeof(int64_t),
                        cudaMemcpyHostToDevice));
  CUDA_CHECK(
      cudaMemset(result.ptr, 0xFF, n * sizeof(int64_t)));  // poison: an unwritten index reads -1
  constexpr int kBlock = 256;
  sample_minibatches_i64<<<CEIL_DIV(n, kBlock), kBlock>>>(offsets.ptr, indices.ptr, seed,
                                                          uint64_t(step), m, batch, result.ptr);
  CUDA_CHECK_LAUNCH();
  CUDA_CHECK(cudaMemcpy(out.data(), result.ptr, n * sizeof(int64_t), cudaMemcpyDeviceToHost));
  return out;
}

}  // namespace gossamer
