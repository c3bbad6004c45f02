#include "device_array.cuh"
#include "gemm.cuh"
#include "gossamer/cuda.hpp"
#include "gossamer/cuda_plan.hpp"

namespace gossamer {

constexpr size_t kCublasWorkspace = size_t(kCublasWorkspaceBytes);  // core's plan counts it

Gemm::Gemm(cudaStream_t stream, MathMode mode) : m_mode(mode) {
  const DeviceCallLock lock;  // capture_lock.cuh
  CUBLAS_CHECK(cublasCreate(&m_handle));
  try {
    CUBLAS_CHECK(cublasSetStream(m_handle, stream));
    CUDA_CHECK(cudaMalloc(&m_workspace, kCublasWorkspace));
    CUBLAS_CHECK(cublasSetWorkspace(m_handle, m_workspace, kCublasWorkspace));
    CUBLAS_CHECK(cublasSetPointerMode(m_handle, CUBLAS_POINTER_MODE_HOST));
  } catch (...) {
    cudaFree(m_workspace);
    cublasDestroy(m_handle);
    throw;
  }
}

Gemm::~Gemm() {
  const DeviceCallLock lock;
  cublasDestroy(m_handle);
  cudaFree(m_workspace);
}

void Gemm::run(int M, int N, int K, MatrixArg A, MatrixArg B, float beta, float* C, int ldc,
               long long stride_c, int batch, float alpha) const {
  if (M == 0 || N == 0 || batch == 0) return;
  const cublasComputeType_t compute =
      m_mode == MathMode::Tf32 ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F;
  // Row-major C = op(A) op(B)  <=>  column-major C^T = op(B)^T op(A)^T: B goes first.
  CUBLAS_CHECK(cublasGemmStridedBatchedEx(
      m_handle, B.transposed ? CUBLAS_OP_T : CUBLAS_OP_N, A.transposed ? CUBLAS_OP_T : CUBLAS_OP_N,
      N, M, K, &alpha, B.ptr, CUDA_R_32F, B.ld, B.stride, A.ptr, CUDA_R_32F, A.ld, A.stride, &beta,
      C, CUDA_R_32F, ldc, stride_c, batch, compute, CUBLAS_GEMM_DEFAULT));
}

std::vector<float> cuda_gemm(const std::vector<float>& A, const std::vector<float>& B, int M, int N,
                             int K, bool tf32) {
  if (A.size() != size_t(M) * K || B.size() != size_t(K) * N)
    throw runtime_error("cuda_gemm: A must be M x K and B K x N");
  DeviceArray<float> a(A), b(B), c(size_t(M) * N);
  c.poison();
  {
    const Gemm gemm(nullptr, tf32 ? MathMode::Tf32 : MathMode::Fp32);
    gemm.run(M, N, K, MatrixArg{a.get(), K, 0, false}, MatrixArg{b.get(), N, 0, false}, 0.f,
             c.get(), N, 0, 1);
    const DeviceCallLock lock;
    CUDA_CHECK(cudaDeviceSynchronize());
  }
  return c.fetch();
}

}  // namespace gossamer
