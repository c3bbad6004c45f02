// Minibatch sampling on the device: thread (k, j) draws worker k's j-th index of the step
// from the shared Philox stream, so the GPU sees exactly the CPU backend's minibatches;
// then the drawn rows are gathered into one [m][batch][features] block for the GEMMs.
#include "device_array.cuh"
#include "gossamer/cuda.hpp"
#include "gossamer/augment.hpp"
#include "gossamer/philox.hpp"
#include "kernels.cuh"

namespace gossamer {

static __global__ void sample_minibatches_i64(const int64_t* offsets, const int64_t* shard_indices,
                                              bool shared, uint64_t seed, uint64_t step,
                                              int first_worker, int workers, int batch,
                                              int64_t* out, DeviceLossState* state) {
  if (blockIdx.x == 0 && threadIdx.x == 0 && state) state->step = (long long)step;
  GRID_STRIDE(t, int64_t(workers) * batch) {
    const int k = first_worker + int(t / batch), j = int(t % batch), shard = shared ? 0 : k;
    const int64_t base = offsets[shard], size = offsets[shard + 1] - base;
    out[t] =
        shard_indices[base + int64_t(minibatch_position(seed, uint32_t(k), step, uint32_t(batch),
                                                        uint32_t(j), uint64_t(size)))];
  }
}

static __global__ void gather_rows_f32(const float* x, const int32_t* y, int features,
                                       const int64_t* idx, int64_t rows, float* x_out,
                                       int32_t* y_out) {
  GRID_STRIDE(t, rows * features) {
    const int64_t r = t / features, f = t % features;
    const int64_t src = idx[r];
    x_out[t] = x[src * features + f];
    if (f == 0) y_out[r] = y[src];
  }
}

// The same gather with each row augmented (augment.hpp): row r is worker first + r / batch's
// slot r % batch, at the step the sampler wrote into the state (so a captured graph replays it
// with each step's draws).
static __global__ void gather_augmented_f32(const float* x, const int32_t* y, int features,
                                            const int64_t* idx, int64_t rows, int batch,
                                            int first_worker, AugmentShape a, uint64_t seed,
                                            const DeviceLossState* state, float* x_out,
                                            int32_t* y_out) {
  const uint64_t step = uint64_t(state->step);
  GRID_STRIDE(t, rows * features) {
    const int64_t r = t / features, f = t % features;
    const int64_t src = idx[r];
    const AugmentDraw d = augment_draw(a, seed, uint32_t(first_worker + int(r / batch)), step,
                                       uint32_t(batch), uint32_t(r % batch));
    x_out[t] = augment_value(x + src * features, a, d, f);
    if (f == 0) y_out[r] = y[src];
  }
}

void launch_gather_augmented(const float* x, const int32_t* y, int features, const int64_t* idx,
                             int64_t rows, int batch, int first_worker, const AugmentShape& a,
                             uint64_t seed, const DeviceLossState* state, float* x_out,
                             int32_t* y_out, cudaStream_t s) {
  if (rows == 0 || features == 0) return;
  gather_augmented_f32<<<linear_blocks(rows * features), kLinearBlock, 0, s>>>(
      x, y, features, idx, rows, batch, first_worker, a, seed, state, x_out, y_out);
  CUDA_CHECK_LAUNCH();
}

void launch_sample(const int64_t* offsets, const int64_t* shard_indices, bool shared, uint64_t seed,
                   int64_t step, int first_worker, int workers, int batch, int64_t* idx,
                   DeviceLossState* state, cudaStream_t s) {
  const int64_t n = int64_t(workers) * batch;
  // linear_blocks gives at least one block, so the step is written even for an empty batch.
  sample_minibatches_i64<<<linear_blocks(n), kLinearBlock, 0, s>>>(
      offsets, shard_indices, shared, seed, uint64_t(step), first_worker, workers, batch, idx,
      state);
  CUDA_CHECK_LAUNCH();
}

void launch_gather_rows(const float* x, const int32_t* y, int features, const int64_t* idx,
                        int64_t rows, float* x_out, int32_t* y_out, cudaStream_t s) {
  if (rows == 0 || features == 0) return;
  gather_rows_f32<<<linear_blocks(rows * features), kLinearBlock, 0, s>>>(x, y, features, idx, rows,
                                                                          x_out, y_out);
  CUDA_CHECK_LAUNCH();
}

std::vector<int64_t> cuda_sample_minibatches(const Partition& p, uint64_t seed, int64_t step,
                                             int batch) {
  const int m = p.workers();
  const size_t n = size_t(m) * batch;
  if (n == 0) return {};
  DeviceArray<int64_t> offsets(p.offsets), indices(p.indices), result(n);
  result.poison();  // an unwritten index reads -1
  launch_sample(offsets.get(), indices.get(), p.shared, seed, step, 0, m, batch, result.get(),
                nullptr, nullptr);
  return result.fetch();
}

}  // namespace gossamer
