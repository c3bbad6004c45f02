// Reductions over workers and over rows, in double and in a fixed order: the same inputs give
// the same bits on every run (no atomics), as the CPU backend's serial worker-order sums.
#include "block_sum.cuh"
#include "gossamer/philox.hpp"
#include "kernels.cuh"

namespace gossamer {

// One thread a column; the m rows summed in worker order, divided by `divisor` (m for the mean,
// 1 for a shard's sum).
static __global__ void row_mean_f32(const float* a, int m, int64_t ld, int64_t d, double divisor,
                                    double* mean64, float* mean32) {
  GRID_STRIDE(i, ld) {
    double sum = 0;
    if (i < d)
      for (int k = 0; k < m; ++k) sum += double(a[int64_t(k) * ld + i]);
    const double mean = i < d ? sum / divisor : 0.0;
    if (mean64 && i < d) mean64[i] = mean;
    if (mean32) mean32[i] = float(mean);
  }
}

static __global__ void divide_row(const double* sum, int64_t ld, int64_t d, double divisor,
                                  double* mean64, float* mean32) {
  GRID_STRIDE(i, ld) {
    const double mean = i < d ? sum[i] / divisor : 0.0;
    if (mean64 && i < d) mean64[i] = mean;
    if (mean32) mean32[i] = float(mean);
  }
}

static __global__ void set_rows_f32(float* a, int m, int64_t ld, int64_t d, const float* row) {
  GRID_STRIDE(t, int64_t(m) * d) {
    const int64_t i = t % d;
    a[(t / d) * ld + i] = row[i];
  }
}

static __global__ void average_rows_f32(float* a, int m, int64_t ld, int64_t d) {
  GRID_STRIDE(i, d) {
    double sum = 0;
    for (int k = 0; k < m; ++k) sum += double(a[int64_t(k) * ld + i]);
    const float mean = float(sum / m);
    for (int k = 0; k < m; ++k) a[int64_t(k) * ld + i] = mean;
  }
}

// Grid of exactly kReduceBlocks blocks: each thread owns a fixed set of columns.
static __global__ void sum_squares_partial_f32(const float* a, const double* mean, int m,
                                               int64_t ld, int64_t d, double* partials) {
  double sum = 0;
  GRID_STRIDE(i, d) {
    const double c = mean ? mean[i] : 0.0;
    for (int k = 0; k < m; ++k) {
      const double e = double(a[int64_t(k) * ld + i]) - c;
      sum += e * e;
    }
  }
  const double total = block_sum(sum);
  if (threadIdx.x == 0) partials[blockIdx.x] = total;
}

static __global__ void sum_partials(const double* partials, int n, double* result) {
  double sum = 0;
  for (int i = threadIdx.x; i < n; i += blockDim.x) sum += partials[i];
  const double total = block_sum(sum);
  if (threadIdx.x == 0) *result = total;
}

static __global__ void any_nonfinite_f32(const float* a, int64_t n, int* flag) {
  GRID_STRIDE(i, n) {
    if (!isfinite(a[i])) *flag = 1;  // every writer writes the same value: no race in effect
  }
}

// One block a model.
static __global__ void model_sums_f32(const float* loss, const unsigned char* correct, int rows,
                                      double* loss_sum, double* correct_sum) {
  const int64_t k = blockIdx.x;
  double l = 0, c = 0;
  for (int r = threadIdx.x; r < rows; r += blockDim.x) {
    l += double(loss[k * rows + r]);
    c += double(correct[k * rows + r]);
  }
  l = block_sum(l);
  c = block_sum(c);
  if (threadIdx.x == 0) {
    loss_sum[k] += l;
    correct_sum[k] += c;
  }
}

static __global__ void record_loss_f32(const float* loss, int64_t n, DeviceLossState* state) {
  double sum = 0;
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) sum += double(loss[i]);
  sum = block_sum(sum);
  if (threadIdx.x != 0) return;
  const double mean = sum / double(n);
  if (!isfinite(mean) && state->first_nonfinite < 0) state->first_nonfinite = state->step;
  state->sum += mean;
  state->steps += 1;
}

static __global__ void add_rows_f32(float* a, const float* eps, bool per_worker, int m,
                                    int64_t ld) {
  GRID_STRIDE(i, int64_t(m) * ld) {
    a[i] += eps[per_worker ? i : i % ld];
  }
}

// One thread a column: one draw, added to every row (the same eps for every worker).
static __global__ void add_gaussian_f32(float* a, int m, int64_t ld, int64_t d, double sigma,
                                        uint64_t seed, uint32_t stream) {
  GRID_STRIDE(i, d) {
    const Philox4 r = philox_draw(seed, RngDomain::Curvature, stream, uint64_t(i));
    const float eps = float(sigma * philox_normal(r.v[0], r.v[1]));
    for (int k = 0; k < m; ++k) a[int64_t(k) * ld + i] += eps;
  }
}

static __global__ void add_scaled_row_f32(float* a, int m, int64_t ld, int64_t d,
                                          const double* mean, const double* norm2, double rho) {
  const double n2 = *norm2;
  GRID_STRIDE(i, d) {
    const float eps = n2 > 0 ? float(rho * mean[i] / sqrt(n2)) : 0.f;
    for (int k = 0; k < m; ++k) a[int64_t(k) * ld + i] += eps;
  }
}

// One thread a row: the mean of the models' softmax in double (as the CPU backend), summed
// over passes of model groups in `probs`; the last pass scores it.
static __global__ void ensemble_rows_f32(const float* logits, const int32_t* y, int rows,
                                         int models, int classes, int total_models, bool first,
                                         bool last, double* probs, double* out) {
  GRID_STRIDE(r, rows) {
    double* p = probs + r * classes;
    if (first)
      for (int c = 0; c < classes; ++c) p[c] = 0;
    for (int k = 0; k < models; ++k) {
      const float* z = logits + (int64_t(k) * rows + r) * classes;
      double zmax = z[0];
      for (int c = 1; c < classes; ++c) zmax = fmax(zmax, double(z[c]));
      double sum = 0;
      for (int c = 0; c < classes; ++c) sum += exp(double(z[c]) - zmax);
      for (int c = 0; c < classes; ++c) p[c] += exp(double(z[c]) - zmax) / sum;
    }
    if (!last) continue;
    int top = 0;
    for (int c = 1; c < classes; ++c)
      if (p[c] > p[top]) top = c;
    out[3 * r] = p[top] / total_models;
    out[3 * r + 1] = top == y[r] ? 1.0 : 0.0;
    out[3 * r + 2] = p[y[r]] / total_models;
  }
}

void launch_row_mean(const float* a, int m, int64_t ld, int64_t d, double* mean64, float* mean32,
                     cudaStream_t s) {
  if (ld == 0) return;
  row_mean_f32<<<linear_blocks(ld), kLinearBlock, 0, s>>>(a, m, ld, d, double(m), mean64, mean32);
  CUDA_CHECK_LAUNCH();
}

void launch_row_sum(const float* a, int m, int64_t ld, int64_t d, double* sum64, cudaStream_t s) {
  if (ld == 0) return;
  row_mean_f32<<<linear_blocks(ld), kLinearBlock, 0, s>>>(a, m, ld, d, 1.0, sum64, nullptr);
  CUDA_CHECK_LAUNCH();
}

void launch_divide_row(const double* sum, int64_t ld, int64_t d, double divisor, double* mean64,
                       float* mean32, cudaStream_t s) {
  if (ld == 0) return;
  divide_row<<<linear_blocks(ld), kLinearBlock, 0, s>>>(sum, ld, d, divisor, mean64, mean32);
  CUDA_CHECK_LAUNCH();
}

void launch_set_rows(float* a, int m, int64_t ld, int64_t d, const float* row, cudaStream_t s) {
  const int64_t n = int64_t(m) * d;
  if (n == 0) return;
  set_rows_f32<<<linear_blocks(n), kLinearBlock, 0, s>>>(a, m, ld, d, row);
  CUDA_CHECK_LAUNCH();
}

void launch_average_rows(float* a, int m, int64_t ld, int64_t d, cudaStream_t s) {
  if (d == 0 || m == 0) return;
  average_rows_f32<<<linear_blocks(d), kLinearBlock, 0, s>>>(a, m, ld, d);
  CUDA_CHECK_LAUNCH();
}

void launch_sum_squares(const float* a, const double* mean, int m, int64_t ld, int64_t d,
                        double* partials, double* result, cudaStream_t s) {
  sum_squares_partial_f32<<<kReduceBlocks, kReduceThreads, 0, s>>>(a, mean, m, ld, d, partials);
  CUDA_CHECK_LAUNCH();
  sum_partials<<<1, kReduceThreads, 0, s>>>(partials, kReduceBlocks, result);
  CUDA_CHECK_LAUNCH();
}

void launch_any_nonfinite(const float* a, int64_t n, int* flag, cudaStream_t s) {
  CUDA_CHECK(cudaMemsetAsync(flag, 0, sizeof(int), s));
  if (n == 0) return;
  any_nonfinite_f32<<<linear_blocks(n), kLinearBlock, 0, s>>>(a, n, flag);
  CUDA_CHECK_LAUNCH();
}

void launch_model_sums(const float* loss, const unsigned char* correct, int rows, int models,
                       double* loss_sum, double* correct_sum, cudaStream_t s) {
  if (models == 0) return;
  model_sums_f32<<<unsigned(models), kReduceThreads, 0, s>>>(loss, correct, rows, loss_sum,
                                                             correct_sum);
  CUDA_CHECK_LAUNCH();
}

void launch_record_loss(const float* loss, int64_t n, DeviceLossState* state, cudaStream_t s) {
  record_loss_f32<<<1, kReduceThreads, 0, s>>>(loss, n, state);
  CUDA_CHECK_LAUNCH();
}

void launch_add_rows(float* a, const float* eps, bool per_worker, int m, int64_t ld,
                     cudaStream_t s) {
  if (m == 0 || ld == 0) return;
  add_rows_f32<<<linear_blocks(int64_t(m) * ld), kLinearBlock, 0, s>>>(a, eps, per_worker, m, ld);
  CUDA_CHECK_LAUNCH();
}

void launch_add_gaussian(float* a, int m, int64_t ld, int64_t d, double sigma, uint64_t seed,
                         uint32_t stream, cudaStream_t s) {
  if (d == 0 || m == 0) return;
  add_gaussian_f32<<<linear_blocks(d), kLinearBlock, 0, s>>>(a, m, ld, d, sigma, seed, stream);
  CUDA_CHECK_LAUNCH();
}

void launch_add_scaled_row(float* a, int m, int64_t ld, int64_t d, const double* mean,
                           const double* norm2, double rho, cudaStream_t s) {
  if (d == 0 || m == 0) return;
  add_scaled_row_f32<<<linear_blocks(d), kLinearBlock, 0, s>>>(a, m, ld, d, mean, norm2, rho);
  CUDA_CHECK_LAUNCH();
}

void launch_ensemble_rows(const float* logits, const int32_t* y, int rows, int models, int classes,
                          int total_models, bool first, bool last, double* probs, double* out,
                          cudaStream_t s) {
  if (rows == 0) return;
  ensemble_rows_f32<<<linear_blocks(rows), kLinearBlock, 0, s>>>(
      logits, y, rows, models, classes, total_models, first, last, probs, out);
  CUDA_CHECK_LAUNCH();
}

}  // namespace gossamer
