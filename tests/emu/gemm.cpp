// gossamer's Gemm (cuda/gemm.cuh) for the emulation, without cuBLAS: each batch member's
// C = alpha op(A) op(B) + beta C in row-major terms, summed in double; beta 0 never reads C, and a
// leading dimension cuBLAS would refuse fails as CUBLAS_CHECK reports it there.
#include "gemm.cuh"

namespace gossamer {

Gemm::Gemm(cudaStream_t, MathMode mode) : m_mode(mode) {}

Gemm::~Gemm() = default;

void Gemm::run(int M, int N, int K, MatrixArg A, MatrixArg B, float beta, float* C, int ldc,
               long long stride_c, int batch, float alpha) const {
  if (M == 0 || N == 0 || batch == 0) return;
  // op(A) is M x K: A itself M x K (rows of ld >= K) or, transposed, K x M (ld >= M).
  const bool ok = A.ld >= std::max(1, A.transposed ? M : K) &&
                  B.ld >= std::max(1, B.transposed ? K : N) && ldc >= std::max(1, N) && M > 0 &&
                  N > 0 && K >= 0 && batch > 0;
  CUBLAS_CHECK(ok ? CUBLAS_STATUS_SUCCESS : CUBLAS_STATUS_INVALID_VALUE);
  for (int b = 0; b < batch; ++b) {
    const float* a = A.ptr + b * A.stride;
    const float* bm = B.ptr + b * B.stride;
    float* c = C + b * stride_c;
    for (int i = 0; i < M; ++i)
      for (int j = 0; j < N; ++j) {
        double sum = 0;
        for (int k = 0; k < K; ++k) {
          const float x = A.transposed ? a[int64_t(k) * A.ld + i] : a[int64_t(i) * A.ld + k];
          const float y = B.transposed ? bm[int64_t(j) * B.ld + k] : bm[int64_t(k) * B.ld + j];
          sum += double(x) * double(y);
        }
        float& out = c[int64_t(i) * ldc + j];
        out = float(double(alpha) * sum + (beta == 0.f ? 0.0 : double(beta) * double(out)));
      }
  }
}

}  // namespace gossamer
