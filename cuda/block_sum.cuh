// Sum of one double per thread of a block, by a fixed tree (the same bits every run): the
// reductions of reduce.cu and the CNN's channel and group sums (cnn_kernels.cu).
#pragma once

namespace gossamer {

constexpr int kReduceThreads = 256;

// Every thread of a block of kReduceThreads calls it; the total is valid in thread 0.
static __device__ double block_sum(double v) {
  __shared__ double partial[kReduceThreads];
  partial[threadIdx.x] = v;
  __syncthreads();
  for (int half = kReduceThreads / 2; half > 0; half /= 2) {
    if (threadIdx.x < half) partial[threadIdx.x] += partial[threadIdx.x + half];
    __syncthreads();
  }
  const double total = partial[0];
  __syncthreads();  // the buffer may be reused by the next call
  return total;
}

}  // namespace gossamer
