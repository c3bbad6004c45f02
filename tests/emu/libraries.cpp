// The emulated cuBLAS and NCCL of include/cublas_v2.h and include/nccl.h.
#include <algorithm>
#include <cstring>
#include <vector>

#include "cublas_v2.h"
#include "nccl.h"
#include "traffic.hpp"

struct cublasContext {};
struct ncclComm {};

namespace {

// x with its mantissa rounded to TF32's 10 bits (to nearest, ties away), as tensor cores read it.
float tf32(float x) {
  uint32_t u;
  std::memcpy(&u, &x, 4);
  if ((u & 0x7f800000u) != 0x7f800000u) u = (u + 0x1000u) & 0xffffe000u;  // leave Inf and NaN
  std::memcpy(&x, &u, 4);
  return x;
}

}  // namespace

cublasStatus_t cublasCreate(cublasHandle_t* handle) {
  *handle = new cublasContext;
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasDestroy(cublasHandle_t handle) {
  delete handle;
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasSetStream(cublasHandle_t, cudaStream_t) { return CUBLAS_STATUS_SUCCESS; }
cublasStatus_t cublasSetWorkspace(cublasHandle_t, void*, size_t) { return CUBLAS_STATUS_SUCCESS; }
cublasStatus_t cublasSetPointerMode(cublasHandle_t, cublasPointerMode_t) {
  return CUBLAS_STATUS_SUCCESS;
}

// Column-major, as cuBLAS: C (m x n, ldc) = alpha op(A) op(B) + beta C, op(A) m x k; beta 0 never
// reads C.
cublasStatus_t cublasGemmStridedBatchedEx(cublasHandle_t, cublasOperation_t transa,
                                          cublasOperation_t transb, int m, int n, int k,
                                          const void* alpha_p, const void* A, cudaDataType_t,
                                          int lda, long long stride_a, const void* B,
                                          cudaDataType_t, int ldb, long long stride_b,
                                          const void* beta_p, void* C, cudaDataType_t, int ldc,
                                          long long stride_c, int batch,
                                          cublasComputeType_t compute, cublasGemmAlgo_t) {
  const bool ta = transa == CUBLAS_OP_T, tb = transb == CUBLAS_OP_T;
  if (m < 0 || n < 0 || k < 0 || batch < 0 || lda < std::max(1, ta ? k : m) ||
      ldb < std::max(1, tb ? n : k) || ldc < std::max(1, m))
    return CUBLAS_STATUS_INVALID_VALUE;
  const float alpha = *static_cast<const float*>(alpha_p), beta = *static_cast<const float*>(beta_p);
  const bool round = compute == CUBLAS_COMPUTE_32F_FAST_TF32;
  const auto* a0 = static_cast<const float*>(A);
  const auto* b0 = static_cast<const float*>(B);
  auto* c0 = static_cast<float*>(C);
  // The operands' bytes (traffic.hpp, GemmShape): a batch stride of 0 shares one matrix.
  const auto operand = [&](int64_t elems, long long stride) {
    return uint64_t(elems) * (stride == 0 ? 1 : uint64_t(batch)) * sizeof(float);
  };
  const uint64_t c_bytes = operand(int64_t(m) * n, stride_c);
  const uint64_t read = operand(int64_t(m) * k, stride_a) + operand(int64_t(k) * n, stride_b) +
                        (beta == 0.f ? 0 : c_bytes);
  gossamer_emu::submit([=] {
    gossamer_emu::trace_gemm(m, n, k, batch, read, c_bytes);
    for (int q = 0; q < batch; ++q) {
      const float* a = a0 + q * stride_a;
      const float* b = b0 + q * stride_b;
      float* c = c0 + q * stride_c;
      for (int j = 0; j < n; ++j)
        for (int i = 0; i < m; ++i) {
          double sum = 0;
          for (int l = 0; l < k; ++l) {
            float x = ta ? a[l + int64_t(i) * lda] : a[i + int64_t(l) * lda];
            float y = tb ? b[j + int64_t(l) * ldb] : b[l + int64_t(j) * ldb];
            if (round) x = tf32(x), y = tf32(y);
            sum += double(x) * double(y);
          }
          float& out = c[i + int64_t(j) * ldc];
          out = float(double(alpha) * sum + (beta == 0.f ? 0.0 : double(beta) * double(out)));
        }
    }
  });
  return CUBLAS_STATUS_SUCCESS;
}
const char* cublasGetStatusName(cublasStatus_t s) {
  return s == CUBLAS_STATUS_SUCCESS ? "CUBLAS_STATUS_SUCCESS" : "CUBLAS_STATUS_INVALID_VALUE";
}
const char* cublasGetStatusString(cublasStatus_t s) {
  return s == CUBLAS_STATUS_SUCCESS ? "success" : "an invalid value (emulated cuBLAS)";
}

namespace {

struct Transfer {
  void* buf;
  size_t bytes;
};
int g_group = 0;  // ncclGroupStart depth
std::vector<Transfer> g_sends, g_recvs;

size_t bytes_of(size_t count, ncclDataType_t type) { return count * (type == ncclDouble ? 8 : 4); }

// At the outermost group's end: each send to itself into the receive of the same rank (one rank).
ncclResult_t match() {
  if (g_sends.size() != g_recvs.size()) return ncclInvalidUsage;
  for (size_t i = 0; i < g_sends.size(); ++i) {
    if (g_sends[i].bytes != g_recvs[i].bytes) return ncclInvalidUsage;
    const Transfer s = g_sends[i], r = g_recvs[i];
    gossamer_emu::submit([=] { std::memmove(r.buf, s.buf, s.bytes); });
  }
  g_sends.clear();
  g_recvs.clear();
  return ncclSuccess;
}

}  // namespace

ncclResult_t ncclGetUniqueId(ncclUniqueId* id) {
  *id = {};
  return ncclSuccess;
}
ncclResult_t ncclCommInitRank(ncclComm_t* comm, int ranks, ncclUniqueId, int rank) {
  if (ranks != 1 || rank != 0) return ncclInvalidUsage;
  *comm = new ncclComm;
  return ncclSuccess;
}
ncclResult_t ncclCommDestroy(ncclComm_t comm) {
  delete comm;
  return ncclSuccess;
}
ncclResult_t ncclGroupStart() {
  ++g_group;
  return ncclSuccess;
}
ncclResult_t ncclGroupEnd() {
  if (g_group == 0) return ncclInvalidUsage;
  return --g_group == 0 ? match() : ncclSuccess;
}
ncclResult_t ncclSend(const void* buf, size_t count, ncclDataType_t type, int peer, ncclComm_t,
                      cudaStream_t) {
  if (peer != 0) return ncclInvalidUsage;
  g_sends.push_back({const_cast<void*>(buf), bytes_of(count, type)});
  return g_group ? ncclSuccess : match();
}
ncclResult_t ncclRecv(void* buf, size_t count, ncclDataType_t type, int peer, ncclComm_t,
                      cudaStream_t) {
  if (peer != 0) return ncclInvalidUsage;
  g_recvs.push_back({buf, bytes_of(count, type)});
  return g_group ? ncclSuccess : match();
}
ncclResult_t ncclAllReduce(const void* send, void* recv, size_t count, ncclDataType_t type,
                           ncclRedOp_t, ncclComm_t, cudaStream_t) {
  const size_t bytes = bytes_of(count, type);
  gossamer_emu::submit([=] { std::memmove(recv, send, bytes); });  // one rank: the sum is its own
  return ncclSuccess;
}
const char* ncclGetErrorString(ncclResult_t rc) {
  return rc == ncclSuccess ? "no error" : "invalid usage (the emulated NCCL runs one rank)";
}
