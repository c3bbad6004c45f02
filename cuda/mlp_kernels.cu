// The element-wise parts of the batched MLP (cuda/mlp.cu): bias + activation after a forward
// GEMM, the activation's derivative before a backward GEMM, and the bias gradient. Each with
// its R-operator twin (Pearlmutter 1994; the same algebra as host/hvp.cpp), so one launch
// does both the value and its directional derivative.
#include "kernels.cuh"

namespace gossamer {

// z, a, rz, ra: [models][rows][out]
static __global__ void bias_act_f32(float* z, float* a, float* rz, float* ra, const float* w,
                                    int64_t w_stride, const float* v, int64_t v_stride,
                                    int64_t b_offset, int rows, int out, int64_t n,
                                    Activation act) {
  GRID_STRIDE(i, n) {
    const int64_t k = i / (int64_t(rows) * out);
    const int o = int(i % out);
    const float zi = z[i] + w[k * w_stride + b_offset + o];
    z[i] = zi;
    if (a) a[i] = activate(act, zi);
    if (!rz) continue;
    const float rzi = rz[i] + v[k * v_stride + b_offset + o];
    rz[i] = rzi;
    if (ra) ra[i] = activate_derivative(act, zi) * rzi;
  }
}

static __global__ void act_backward_f32(const float* da, const float* rda, const float* z,
                                        const float* rz, float* dz, float* rdz, int64_t n,
                                        Activation act) {
  GRID_STRIDE(i, n) {
    const float d1 = activate_derivative(act, z[i]);
    dz[i] = da[i] * d1;
    if (rdz) rdz[i] = rda[i] * d1 + da[i] * activate_second_derivative(act, z[i]) * rz[i];
  }
}

// One thread a (model, column): the sum over rows runs in row order (deterministic), and
// neighbouring threads read neighbouring columns (coalesced).
static __global__ void column_sums_f32(const float* dz, int rows, int out, int models, float* dst,
                                       int64_t dst_stride, float beta) {
  GRID_STRIDE(t, int64_t(models) * out) {
    const int64_t k = t / out;
    const int o = int(t % out);
    const float* col = dz + k * int64_t(rows) * out + o;
    float sum = 0.f;
    for (int r = 0; r < rows; ++r) sum += col[int64_t(r) * out];
    float* target = dst + k * dst_stride + o;
    *target = beta == 0.f ? sum : beta * *target + sum;  // beta 0 never reads (poisoned) memory
  }
}

void launch_bias_act(float* z, float* a, float* rz, float* ra, const float* w, int64_t w_stride,
                     const float* v, int64_t v_stride, int64_t b_offset, int rows, int out,
                     int models, Activation act, cudaStream_t s) {
  const int64_t n = int64_t(models) * rows * out;
  if (n == 0) return;
  bias_act_f32<<<linear_blocks(n), kLinearBlock, 0, s>>>(z, a, rz, ra, w, w_stride, v, v_stride,
                                                         b_offset, rows, out, n, act);
  CUDA_CHECK_LAUNCH();
}

void launch_act_backward(const float* da, const float* rda, const float* z, const float* rz,
                         float* dz, float* rdz, int64_t n, Activation act, cudaStream_t s) {
  if (n == 0) return;
  act_backward_f32<<<linear_blocks(n), kLinearBlock, 0, s>>>(da, rda, z, rz, dz, rdz, n, act);
  CUDA_CHECK_LAUNCH();
}

void launch_column_sums(const float* dz, int rows, int out, int models, float* dst,
                        int64_t dst_stride, float beta, cudaStream_t s) {
  const int64_t n = int64_t(models) * out;
  if (n == 0) return;
  column_sums_f32<<<linear_blocks(n), kLinearBlock, 0, s>>>(dz, rows, out, models, dst, dst_stride,
                                                            beta);
  CUDA_CHECK_LAUNCH();
}

}  // namespace gossamer
