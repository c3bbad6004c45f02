// Row-wise operations on the curvature estimators' vector blocks (rows x ld floats, first d
// columns used, padding zero): probes drawn from Philox as the host draws them, dot products in
// double with a fixed reduction order (the same bits every run), and per-row scaled updates.
#include "gossamer/philox.hpp"
#include "kernels.cuh"

namespace gossamer {

constexpr int kRowThreads = 256;  // row_dots: one block a row, a tree over its threads

static __global__ void fill_probes_f32(float* a, int64_t rows, int64_t ld, int64_t d, Probe kind,
                                       uint64_t seed, uint32_t stream, int64_t repeat) {
  GRID_STRIDE(e, rows * d) {
    const int64_t r = e / d, i = e % d;
    a[r * ld + i] = float(curvature_probe(kind, seed, stream + uint32_t(r / repeat), uint64_t(i)));
  }
}

// One block per row (grid-stride over rows), a fixed tree over the block's threads.
static __global__ void row_dots_f32(const float* a, const float* b, int64_t rows, int64_t ld,
                                    int64_t d, double* out) {
  __shared__ double partial[kRowThreads];
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    double sum = 0;
    for (int64_t i = threadIdx.x; i < d; i += blockDim.x)
      sum += double(a[r * ld + i]) * double(b[r * ld + i]);
    partial[threadIdx.x] = sum;
    __syncthreads();
    for (int half = kRowThreads / 2; half > 0; half /= 2) {
      if (threadIdx.x < half) partial[threadIdx.x] += partial[threadIdx.x + half];
      __syncthreads();
    }
    if (threadIdx.x == 0) out[r] = partial[0];
    __syncthreads();
  }
}

static __global__ void axpy_rows_f32(float* y, const float* x, int64_t x_row_stride,
                                     const double* c, int64_t rows, int64_t ld, int64_t d) {
  GRID_STRIDE(e, rows * d) {
    const int64_t r = e / d, i = e % d;
    y[r * ld + i] += float(c[r]) * x[r * x_row_stride + i];
  }
}

static __global__ void scale_rows_f32(float* x, const double* c, int64_t rows, int64_t ld,
                                      int64_t d) {
  GRID_STRIDE(e, rows * d) {
    const int64_t r = e / d, i = e % d;
    x[r * ld + i] *= float(c[r]);
  }
}

void launch_fill_probes(float* a, int64_t rows, int64_t ld, int64_t d, Probe kind, uint64_t seed,
                        uint32_t stream, int64_t repeat, cudaStream_t s) {
  if (rows * d == 0) return;
  fill_probes_f32<<<linear_blocks(rows * d), kLinearBlock, 0, s>>>(a, rows, ld, d, kind, seed, stream,
                                                               repeat);
  CUDA_CHECK_LAUNCH();
}

void launch_row_dots(const float* a, const float* b, int64_t rows, int64_t ld, int64_t d,
                     double* out, cudaStream_t s) {
  if (rows == 0) return;
  row_dots_f32<<<int(std::min<int64_t>(rows, 65535)), kRowThreads, 0, s>>>(a, b, rows, ld, d, out);
  CUDA_CHECK_LAUNCH();
}

void launch_axpy_rows(float* y, const float* x, bool broadcast, const double* c, int64_t rows,
                      int64_t ld, int64_t d, cudaStream_t s) {
  if (rows * d == 0) return;
  axpy_rows_f32<<<linear_blocks(rows * d), kLinearBlock, 0, s>>>(y, x, broadcast ? 0 : ld, c, rows, ld,
                                                             d);
  CUDA_CHECK_LAUNCH();
}

void launch_scale_rows(float* x, const double* c, int64_t rows, int64_t ld, int64_t d,
                       cudaStream_t s) {
  if (rows * d == 0) return;
  scale_rows_f32<<<linear_blocks(rows * d), kLinearBlock, 0, s>>>(x, c, rows, ld, d);
  CUDA_CHECK_LAUNCH();
}

}  // namespace gossamer
