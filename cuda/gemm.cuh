// Row-major strided-batched GEMMs over all models at once, through cuBLAS.
//   C_b = op(A_b) op(B_b) + beta C_b,   b = 0 .. batch-1,   X_b = X + b * stride_X
// A stride of 0 shares one matrix across the batch (one data chunk for every worker, or
// one point for every direction). cuBLAS is column-major: a row-major M x N matrix is its
// column-major transpose, so C = op(A) op(B) is computed as C^T = op(B)^T op(A)^T.
#pragma once
#include <cublas_v2.h>

#include "cuda_check.cuh"

namespace gossamer {

// FP32: exact float32 products (CUBLAS_COMPUTE_32F). TF32: tensor cores with 10-bit
// mantissa inputs and float32 accumulation (CUBLAS_COMPUTE_32F_FAST_TF32); about 3e-4
// relative error on a step, so the agreement tests use FP32.
enum class MathMode { Fp32, Tf32 };

struct MatrixArg {
  const float* ptr;
  int ld;            // row stride in elements
  long long stride;  // between batch members, 0 = shared
  bool transposed;   // op(X) = X^T
};

class Gemm {
 public:
  Gemm(cudaStream_t stream, MathMode mode);
  ~Gemm();
  Gemm(const Gemm&) = delete;
  Gemm& operator=(const Gemm&) = delete;

  // C (M x N, row stride ldc, batch stride stride_c) = alpha op(A) (M x K) op(B) (K x N) + beta C.
  void run(int M, int N, int K, MatrixArg A, MatrixArg B, float beta, float* C, int ldc,
           long long stride_c, int batch, float alpha = 1.f) const;
  MathMode mode() const { return m_mode; }

 private:
  cublasHandle_t m_handle = nullptr;
  void* m_workspace = nullptr;  // our own, so cuBLAS allocates nothing inside a graph capture
  MathMode m_mode;
};

}  // namespace gossamer
