// Sum of one double per thread of a block, by a fixed tree (the same bits every run): the
// reductions of reduce.cu and the CNN's channel and group sums (cnn_kernels.cu); block_sums, many
// sums at once (the CNN's small weight gradient).
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

// The sums of v[0..n) (n <= N, the same n in every thread) over a block of kReduceThreads, each
// by a fixed tree (a warp's lanes by shuffles, then the warps' partials in order) and all with
// one barrier: thread q < n returns the total of v[q] (other threads: 0).
template <int N>
static __device__ double block_sums(const float (&v)[N], int n) {
  constexpr int kWarps = kReduceThreads / 32;
  __shared__ double partial[kWarps][N];
  const int lane = int(threadIdx.x) % 32, warp = int(threadIdx.x) / 32;
#pragma unroll  // v stays in registers: every index is a constant
  for (int q = 0; q < N; ++q) {
    if (q >= n) continue;
    double x = double(v[q]);
    for (int offset = 16; offset > 0; offset /= 2) x += __shfl_down_sync(0xffffffffu, x, offset);
    if (lane == 0) partial[warp][q] = x;
  }
  __syncthreads();
  double total = 0;
  if (int(threadIdx.x) < n)
    for (int w = 0; w < kWarps; ++w) total += partial[w][threadIdx.x];
  __syncthreads();  // the buffer may be reused by the next call
  return total;
}

}  // namespace gossamer
